/**
 * Auth: HS256 access tokens bound to an access key (jose), per DESIGN.md "Auth contract".
 *
 * Secrets come from `SPILLWAY_JWT_SECRET`, or from the file named by `SPILLWAY_JWT_SECRET_FILE`
 * holding either one secret or a key ring for rotation:
 *   {"current": "2025-06", "keys": {"2025-06": "<secret>", "2025-01": "<old secret>"}}
 * Tokens are signed with `current` (its id in the `kid` header) and verified with the key their
 * `kid` names; a token without `kid` is verified against the current key only. Every secret is at
 * least 32 bytes and stays Redacted until it is handed to jose. Refusals carry a reason
 * (`AuthFailure`) and never the token or the secret. Accepted tokens are kept (VerifiedTokens.ts, bounded) and not
 * verified again; their time claims are checked on every use.
 */

import type { PlatformError } from "@effect/platform/Error"
import * as FileSystem from "@effect/platform/FileSystem"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Clock, Config, ConfigError, Effect, Either, Layer, Option, Redacted, Schema } from "effect"
import { decodeProtectedHeader, errors, jwtVerify, SignJWT } from "jose"
import { Claims } from "../domain/Claims.js"
import { AuthError, type AuthFailure } from "../domain/Errors.js"
import type { AccessKey } from "../domain/Event.js"
import { makeVerifiedTokens } from "./VerifiedTokens.js"

export interface SignOptions {
  /** Seconds until `exp` (default 600, as in the proof of concept). */
  readonly expirySeconds?: number
  readonly role?: string
}

/** The secrets in force. `currentKid` is None for a single secret (tokens then carry no `kid`). */
export interface Keyring {
  readonly currentKid: Option.Option<string>
  readonly current: Redacted.Redacted<Uint8Array>
  readonly byKid: ReadonlyMap<string, Redacted.Redacted<Uint8Array>>
}

/** What `layerFromSecrets` accepts: one secret, or a key ring as in the secret file. */
export type Secrets =
  | string
  | Redacted.Redacted<string>
  | { readonly current: string; readonly keys: Readonly<Record<string, string | Redacted.Redacted<string>>> }

export const SECRET_ENV = "SPILLWAY_JWT_SECRET"
export const SECRET_FILE_ENV = "SPILLWAY_JWT_SECRET_FILE"
export const CLOCK_SKEW_ENV = "SPILLWAY_JWT_CLOCK_SKEW_SECONDS"
export const MAX_LIFETIME_ENV = "SPILLWAY_JWT_MAX_LIFETIME_SECONDS"
/** Tokens valid longer than this (exp - iat) are refused: 30 days. */
export const DEFAULT_MAX_LIFETIME_SECONDS = 30 * 86400
export const MIN_SECRET_BYTES = 32
const MAKE_ONE = "make one with: openssl rand -base64 48"
const MAX_SECRET_FILE_BYTES = 64 * 1024
/** Longer "tokens" are refused before any parsing. */
const MAX_TOKEN_CHARS = 8 * 1024
const DEFAULT_EXPIRY_SECONDS = 600
const ALGORITHM = "HS256"
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/
const BEARER = /^Bearer +([^\s]+)$/i

/**
 * Base64url decoders ignore the unused low bits of a segment's last character, so several strings
 * decode to one token: refusing all but the canonical one means a token has exactly one spelling
 * (changing any character of it is refused, and denylists or caches keyed by it cannot be dodged).
 */
const isCanonicalBase64url = (segment: string) => Buffer.from(segment, "base64url").toString("base64url") === segment

// ---------------------------------------------------------------------------------------------
// Key rings (pure)

const byteLength = (s: string) => Buffer.byteLength(s, "utf8")

const checkSecret = (what: string, secret: string): string | undefined => {
  const n = byteLength(secret)
  return n >= MIN_SECRET_BYTES
    ? undefined
    : `${what} is ${n} bytes; a JWT secret must be at least ${MIN_SECRET_BYTES} bytes (${MAKE_ONE})`
}

const secretBytes = (secret: string) => Redacted.make(new Uint8Array(Buffer.from(secret, "utf8")))

const reveal = (s: string | Redacted.Redacted<string>) => (typeof s === "string" ? s : Redacted.value(s))

/** Validates secrets into a Keyring; Left is a message that names no secret. */
export const makeKeyring = (secrets: Secrets, what = "the JWT secret"): Either.Either<Keyring, string> => {
  if (typeof secrets === "string" || Redacted.isRedacted(secrets)) {
    const secret = reveal(secrets)
    const bad = checkSecret(what, secret)
    if (bad !== undefined) return Either.left(bad)
    const key = secretBytes(secret)
    return Either.right({ currentKid: Option.none(), current: key, byKid: new Map() })
  }
  const byKid = new Map<string, Redacted.Redacted<Uint8Array>>()
  for (const [kid, value] of Object.entries(secrets.keys)) {
    if (kid.length === 0 || kid.length > 128) return Either.left(`${what}: a key id must be 1 to 128 characters`)
    if (typeof value !== "string" && !Redacted.isRedacted(value))
      return Either.left(`${what}: key ${JSON.stringify(kid)} must be a string`)
    const bad = checkSecret(`${what}: key ${JSON.stringify(kid)}`, reveal(value))
    if (bad !== undefined) return Either.left(bad)
    byKid.set(kid, secretBytes(reveal(value)))
  }
  const current = byKid.get(secrets.current)
  if (current === undefined)
    return Either.left(`${what}: "current" is ${JSON.stringify(secrets.current)}, which is not one of "keys"`)
  return Either.right({ currentKid: Option.some(secrets.current), current, byKid })
}

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

/** The content of a secret file: a key ring if it is JSON (starts with `{`), else one secret. */
export const parseSecretFile = (path: string, content: string): Either.Either<Keyring, string> => {
  const text = content.trim()
  const what = `the secret file ${path}`
  if (!text.startsWith("{")) return makeKeyring(text, what)
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    return Either.left(`${what} starts with "{" but is not valid JSON (expected {"current":"<kid>","keys":{…}})`)
  }
  if (!isObject(json) || typeof json.current !== "string" || !isObject(json.keys))
    return Either.left(`${what} must be {"current":"<kid>","keys":{"<kid>":"<secret>", …}}`)
  const keys: Record<string, string> = {}
  for (const [kid, value] of Object.entries(json.keys)) {
    if (typeof value !== "string") return Either.left(`${what}: key ${JSON.stringify(kid)} must be a string`)
    keys[kid] = value
  }
  return makeKeyring({ current: json.current, keys }, what)
}

// ---------------------------------------------------------------------------------------------
// Configuration

const noSecret = `no JWT secret is configured: set ${SECRET_ENV} to a secret of at least ${MIN_SECRET_BYTES} bytes, or ${SECRET_FILE_ENV} to a file holding one (or a key ring {"current":"<kid>","keys":{"<kid>":"<secret>"}}); ${MAKE_ONE}`

const nonEmpty = <A>(o: Option.Option<A>, value: (a: A) => string) => Option.filter(o, (a) => value(a).length > 0)

const readSecretFile = (path: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const invalid = (message: string) => ConfigError.InvalidData([SECRET_FILE_ENV], message)
    // The platform error's text is not echoed: only why, in words that cannot hold file content.
    const unreadable = (e: PlatformError) =>
      invalid(
        `cannot read the secret file ${path}${
          e._tag === "SystemError" && e.reason === "NotFound"
            ? " (it does not exist)"
            : e._tag === "SystemError" && e.reason === "PermissionDenied"
              ? " (permission denied)"
              : ""
        }`,
      )
    const info = yield* fs.stat(path).pipe(Effect.mapError(unreadable))
    if (info.type !== "File" || Number(info.size) > MAX_SECRET_FILE_BYTES)
      return yield* Effect.fail(
        invalid(`the secret file ${path} must be a regular file of at most ${MAX_SECRET_FILE_BYTES} bytes`),
      )
    const content = yield* fs.readFileString(path).pipe(Effect.mapError(unreadable))
    return yield* Either.mapLeft(parseSecretFile(path, content), invalid)
  })

/** The key ring from `SPILLWAY_JWT_SECRET` or `SPILLWAY_JWT_SECRET_FILE` (exactly one of them). */
export const keyringConfig: Effect.Effect<Keyring, ConfigError.ConfigError, FileSystem.FileSystem> = Effect.gen(
  function* () {
    const secret = nonEmpty(yield* Config.option(Config.redacted(SECRET_ENV)), Redacted.value)
    const file = nonEmpty(yield* Config.option(Config.string(SECRET_FILE_ENV)), (s) => s)
    if (Option.isSome(secret) && Option.isSome(file))
      return yield* Effect.fail(
        ConfigError.InvalidData(
          [SECRET_ENV],
          `both ${SECRET_ENV} and ${SECRET_FILE_ENV} are set; set only one of them`,
        ),
      )
    if (Option.isSome(secret))
      return yield* Either.mapLeft(makeKeyring(secret.value, SECRET_ENV), (m) =>
        ConfigError.InvalidData([SECRET_ENV], m),
      )
    if (Option.isSome(file)) return yield* readSecretFile(file.value)
    return yield* Effect.fail(ConfigError.MissingData([SECRET_ENV], noSecret))
  },
)

export const clockSkewConfig = Config.integer(CLOCK_SKEW_ENV).pipe(
  Config.validate({ message: "must be 0 to 600 seconds", validation: (n) => n >= 0 && n <= 600 }),
  Config.withDefault(30),
)

export const maxLifetimeConfig = Config.integer(MAX_LIFETIME_ENV).pipe(
  Config.validate({ message: "must be a positive number of seconds", validation: (n) => n > 0 }),
  Config.withDefault(DEFAULT_MAX_LIFETIME_SECONDS),
)

// ---------------------------------------------------------------------------------------------
// The service

const fail = (reason: AuthFailure) => new AuthError({ reason })

/** jose's refusal → our reason. Signature is checked before claims, so time reasons imply a good signature. */
const joseReason = (e: unknown): AuthFailure => {
  if (e instanceof errors.JWTExpired) return "expired"
  if (e instanceof errors.JWTClaimValidationFailed)
    return e.claim === "nbf" && e.reason === "check_failed" ? "not_yet_valid" : "invalid_claims"
  if (e instanceof errors.JOSEAlgNotAllowed || e instanceof errors.JOSENotSupported) return "alg_not_allowed"
  if (e instanceof errors.JWSSignatureVerificationFailed) return "bad_signature"
  return "malformed_token"
}

const decodeClaims = Schema.decodeUnknown(Claims)

/** The service for a key ring and a clock skew tolerance (seconds). */
export const make = (
  keyring: Keyring,
  clockSkewSeconds: number,
  maxLifetimeSeconds: number = DEFAULT_MAX_LIFETIME_SECONDS,
) => {
  const sign = Effect.fn("Auth.sign")(function* (accessKey: AccessKey, options?: SignOptions) {
    const expiry = options?.expirySeconds ?? DEFAULT_EXPIRY_SECONDS
    const role = options?.role ?? ""
    const iat = Math.floor((yield* Clock.currentTimeMillis) / 1000)
    if (!Number.isSafeInteger(expiry) || expiry <= 0 || !Number.isSafeInteger(iat + expiry))
      return yield* Effect.dieMessage("Auth.sign: expirySeconds must be a positive integer")
    if (role.length > 64) return yield* Effect.dieMessage("Auth.sign: role must be at most 64 characters")
    const jwt = new SignJWT({ role })
      .setProtectedHeader(
        Option.match(keyring.currentKid, {
          onNone: () => ({ alg: ALGORITHM, typ: "JWT" }),
          onSome: (kid) => ({ alg: ALGORITHM, typ: "JWT", kid }),
        }),
      )
      .setSubject(accessKey)
      .setIssuedAt(iat)
      .setExpirationTime(iat + expiry)
    return yield* Effect.tryPromise({
      try: () => jwt.sign(Redacted.value(keyring.current)),
      catch: () => new Error("signing an HS256 token failed"),
    }).pipe(Effect.orDie)
  })

  const verified = makeVerifiedTokens(clockSkewSeconds)
  const verify = Effect.fn("Auth.verify")(function* (token: string) {
    if (token.length === 0) return yield* fail("missing_token")
    const nowMs = yield* Clock.currentTimeMillis
    const known = verified.lookup(token, nowMs)
    if (typeof known === "string") return yield* fail(known)
    if (known !== undefined) return known
    if (token.length > MAX_TOKEN_CHARS || !COMPACT_JWS.test(token) || !token.split(".").every(isCanonicalBase64url))
      return yield* fail("malformed_token")
    const header = yield* Effect.try({
      try: () => decodeProtectedHeader(token),
      catch: () => fail("malformed_token"),
    })
    if (header.alg !== ALGORITHM) return yield* fail("alg_not_allowed")
    const kid: unknown = header.kid
    if (kid !== undefined && typeof kid !== "string") return yield* fail("malformed_token")
    const key = kid === undefined ? keyring.current : keyring.byKid.get(kid)
    if (key === undefined) return yield* fail("unknown_kid")
    const { payload } = yield* Effect.tryPromise({
      try: () =>
        jwtVerify(token, Redacted.value(key), {
          algorithms: [ALGORITHM],
          currentDate: new Date(nowMs),
          clockTolerance: clockSkewSeconds,
        }),
      catch: (e) => fail(joseReason(e)),
    })
    const claims = yield* decodeClaims(payload).pipe(Effect.mapError(() => fail("invalid_claims")))
    // jose checks `iat` only with maxTokenAge: a token issued in the future is not valid yet.
    if (claims.iat > Math.floor(nowMs / 1000) + clockSkewSeconds) return yield* fail("not_yet_valid")
    if (claims.exp - claims.iat > maxLifetimeSeconds) return yield* fail("lifetime_too_long")
    verified.add(token, claims)
    return claims
  })

  const authorizeFully = Effect.fn("Auth.authorize")(function* (header: string | undefined) {
    const value = header?.trim() ?? ""
    if (value.length === 0) return yield* fail("missing_token")
    const match = BEARER.exec(value)
    if (match?.[1] === undefined) return yield* fail("malformed_token")
    return yield* verify(match[1])
  })
  /** A kept token whose time claims still hold is answered without the two spans (one per SendEvent call). */
  const authorize = (header: string | undefined): Effect.Effect<Claims, AuthError> =>
    Effect.flatMap(Clock.currentTimeMillis, (nowMs) => {
      const token = header === undefined ? undefined : BEARER.exec(header.trim())?.[1]
      const known = token === undefined ? undefined : verified.lookup(token, nowMs)
      return known === undefined || typeof known === "string" ? authorizeFully(header) : Effect.succeed(known)
    })

  return {
    /** A signed token for `accessKey` with the current secret (its `kid` in the header). */
    sign: (accessKey: AccessKey, options?: SignOptions): Effect.Effect<string> => sign(accessKey, options),
    /** Verifies a bare JWT. */
    verify: (token: string): Effect.Effect<Claims, AuthError> => verify(token),
    /** Verifies the value of the `authorization` metadata/header: `Bearer <jwt>`. */
    authorize: (header: string | undefined): Effect.Effect<Claims, AuthError> => authorize(header),
    /** The clock skew tolerated on `exp`, `nbf` and `iat` (seconds): a stream ends at `exp` plus this. */
    clockSkewSeconds,
    /** The longest `exp - iat` accepted (seconds). */
    maxLifetimeSeconds,
  }
}

export class Auth extends Effect.Service<Auth>()("spillway/Auth", {
  effect: Effect.gen(function* () {
    const keyring = yield* keyringConfig
    const skew = yield* clockSkewConfig
    const maxLifetime = yield* maxLifetimeConfig
    return make(keyring, skew, maxLifetime)
  }),
  dependencies: [NodeFileSystem.layer],
}) {
  /** Auth from given secrets (tests, tools); fails like the configured layer on a bad secret. */
  static readonly layerFromSecrets = (
    secrets: Secrets,
    options?: { readonly clockSkewSeconds?: number; readonly maxLifetimeSeconds?: number },
  ): Layer.Layer<Auth, ConfigError.ConfigError> =>
    Layer.effect(
      Auth,
      Effect.map(
        Either.mapLeft(makeKeyring(secrets), (m) => ConfigError.InvalidData([SECRET_ENV], m)),
        (keyring) =>
          Auth.make(
            make(keyring, options?.clockSkewSeconds ?? 30, options?.maxLifetimeSeconds ?? DEFAULT_MAX_LIFETIME_SECONDS),
          ),
      ),
    )
}
