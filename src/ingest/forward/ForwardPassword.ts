/**
 * The Forward password of a tenant. The Forward handshake never sends the password: the client proves it with
 * sha512_hex(auth_salt + username + password), so the server must be able to compute the password itself. A
 * tenant's Forward password is therefore derived from a JWT that Auth signs for its access key with a fixed
 * issue time (deterministic: HS256 with the current secret of the key ring): the SHA-256 (base64url) of that token,
 * prefixed `sfp1.`. It is not itself a bearer token (the gRPC API refuses it), so a Fluent Bit config that holds it
 * cannot fetch the tenant's encryption key; rotating the JWT secret changes every Forward password.
 */
import { createHash } from "node:crypto"
import { Clock, Duration, Effect } from "effect"
import type { AccessKey } from "../../domain/Event.js"
import type { Auth } from "../Auth.js"

/** 2023-11-14T22:13:20Z: the `iat` of every Forward token. */
const FIXED_MS = 1_700_000_000_000
const HUNDRED_YEARS_SECONDS = 100 * 365 * 24 * 3600

const fixedClock: Clock.Clock = {
  [Clock.ClockTypeId]: Clock.ClockTypeId,
  unsafeCurrentTimeMillis: () => FIXED_MS,
  currentTimeMillis: Effect.succeed(FIXED_MS),
  unsafeCurrentTimeNanos: () => BigInt(FIXED_MS) * 1_000_000n,
  currentTimeNanos: Effect.succeed(BigInt(FIXED_MS) * 1_000_000n),
  sleep: (d: Duration.Duration) =>
    Effect.async<void>((resume) => {
      const t = setTimeout(() => resume(Effect.void), Duration.toMillis(d))
      return Effect.sync(() => clearTimeout(t))
    }),
}

/** The Forward password of `accessKey` (what an operator puts into Fluent Bit's `Password`). */
export const forwardPassword = (auth: Auth, accessKey: AccessKey): Effect.Effect<string> =>
  auth.sign(accessKey, { expirySeconds: HUNDRED_YEARS_SECONDS, role: "fluent-forward" }).pipe(
    Effect.withClock(fixedClock),
    Effect.map((token) => `sfp1.${createHash("sha256").update(token).digest("base64url")}`),
  )
