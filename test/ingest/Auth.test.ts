import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { assert, describe, it, layer } from "@effect/vitest"
import { ConfigProvider, Effect, Either, Exit, FastCheck as fc, Layer, TestClock } from "effect"
import { generateKeyPair, SignJWT } from "jose"
import type { AuthFailure } from "../../src/domain/Errors.js"
import { AccessKey } from "../../src/domain/Event.js"
import { Auth, type Secrets } from "../../src/ingest/Auth.js"

// Test secrets only (48 random bytes, base64, as `openssl rand -base64 48` makes them).
const SECRET_A = "q3M0Ybq8kK2n4jW3hR1xYpV6cS9dF2gH7jK1lZ5xC8vB3nM6qW9eR2tY5uI8oP1a"
const SECRET_B = "Zx8Cv7Bn6Mm5Ll4Kk3Jj2Hh1Gg0Ff9Dd8Ss7Aa6Qq5Ww4Ee3Rr2Tt1Yy0Uu9Ii8Oo"
const KEY_A = AccessKey.make("9c60f26f-5b6c-4c80-b5f5-625bf965b6a6")
const KEY_B = AccessKey.make("9c60f26f-5b6c-4c80-b5f5-611bf965c6a8")
const rotatedRing = { current: "new", keys: { new: SECRET_B, old: SECRET_A } }
/** 2025-06-01T00:00:00Z */
const T0 = 1_748_736_000_000

const bytes = (s: string) => new TextEncoder().encode(s)
const b64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url")

/** The service built from other secrets, for one test. */
const authFrom = (secrets: Secrets) => Effect.provide(Auth, Auth.layerFromSecrets(secrets))

/** The reason a verification failed; fails the test if it succeeded. */
const reasonOf = <A>(effect: Effect.Effect<A, { readonly reason: AuthFailure }>) =>
  Effect.flatMap(Effect.either(effect), (r) =>
    Either.isLeft(r) ? Effect.succeed(r.left.reason) : Effect.dieMessage("accepted what should have been refused"),
  )

/** A token signed by hand (HS256 with `secret` unless told otherwise). */
const handSigned = (
  claims: Record<string, unknown>,
  options: { readonly secret?: string; readonly alg?: string; readonly kid?: string } = {},
) =>
  Effect.promise(() =>
    new SignJWT(claims)
      .setProtectedHeader({ alg: options.alg ?? "HS256", ...(options.kid === undefined ? {} : { kid: options.kid }) })
      .sign(bytes(options.secret ?? SECRET_A)),
  )

const nowSeconds = (ms: number) => Math.floor(ms / 1000)

layer(Auth.layerFromSecrets(SECRET_A))("Auth", (it) => {
  it.effect.prop(
    "sign then verify round-trips access keys, roles and expiries",
    [
      AccessKey,
      fc.string({ maxLength: 64 }),
      fc.integer({ min: 1, max: 30 * 86400 }),
      fc.integer({ min: 0, max: 4_000_000_000 }),
    ],
    ([accessKey, role, expirySeconds, at]) =>
      Effect.gen(function* () {
        yield* TestClock.setTime(at * 1000)
        const auth = yield* Auth
        const token = yield* auth.sign(accessKey, { role, expirySeconds })
        const claims = yield* auth.authorize(`Bearer ${token}`)
        assert.strictEqual(claims.sub, accessKey)
        assert.strictEqual(claims.role, role)
        assert.strictEqual(claims.iat, at)
        assert.strictEqual(claims.exp - claims.iat, expirySeconds)
        assert.deepStrictEqual(yield* auth.verify(token), claims)
      }),
    { fastCheck: { numRuns: 100 } },
  )

  it.effect.prop(
    "changing any one character of a token is refused",
    [fc.nat(), fc.constantFrom(..."ABCXYZabcxyz0189-_.=+/ ")],
    ([at, replacement]) =>
      Effect.gen(function* () {
        yield* TestClock.setTime(T0)
        const auth = yield* Auth
        const token = yield* auth.sign(KEY_A, { role: "agent" })
        const index = at % token.length
        if (token[index] === replacement) return
        const changed = token.slice(0, index) + replacement + token.slice(index + 1)
        const reason = yield* reasonOf(auth.verify(changed))
        assert.notStrictEqual(reason, "expired")
      }),
    { fastCheck: { numRuns: 300 } },
  )

  it.effect("a token has one spelling: unused base64url bits changed are refused (jose alone accepts them)", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const auth = yield* Auth
      const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
      const token = yield* auth.sign(KEY_A)
      // The signature is 32 bytes = 43 characters: the last one carries 2 unused bits.
      const last = alphabet.indexOf(token.at(-1)!)
      const respelled = token.slice(0, -1) + alphabet[last ^ 1]
      assert.deepStrictEqual(
        Buffer.from(respelled.split(".")[2]!, "base64url"),
        Buffer.from(token.split(".")[2]!, "base64url"),
      )
      assert.strictEqual(yield* reasonOf(auth.verify(respelled)), "malformed_token")
    }),
  )

  it.effect("a token bound to access key A verifies as sub A (never as B)", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const auth = yield* Auth
      const claims = yield* auth.authorize(`Bearer ${yield* auth.sign(KEY_A)}`)
      assert.strictEqual(claims.sub, KEY_A)
      assert.notStrictEqual(claims.sub, KEY_B)
      assert.strictEqual(claims.exp - claims.iat, 600)
      assert.strictEqual(claims.role, "")
    }),
  )

  it.effect("expiry: accepted up to exp plus 30 s of skew, then expired", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const auth = yield* Auth
      const token = yield* auth.sign(KEY_A, { expirySeconds: 600 })
      yield* TestClock.adjust("629 seconds")
      yield* auth.verify(token)
      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* reasonOf(auth.verify(token)), "expired")
      yield* TestClock.adjust("1 day")
      assert.strictEqual(yield* reasonOf(auth.verify(token)), "expired")
    }),
  )

  it.effect.prop(
    "tokens past exp (beyond skew) are expired, whatever the expiry",
    [fc.integer({ min: 1, max: 86400 }), fc.integer({ min: 31, max: 10 * 86400 })],
    ([expirySeconds, late]) =>
      Effect.gen(function* () {
        yield* TestClock.setTime(T0)
        const auth = yield* Auth
        const token = yield* auth.sign(KEY_A, { expirySeconds })
        yield* TestClock.adjust(`${expirySeconds + late} seconds`)
        assert.strictEqual(yield* reasonOf(auth.verify(token)), "expired")
      }),
    { fastCheck: { numRuns: 30 } },
  )

  it.effect("a token valid longer than the maximum lifetime (30 days by default) is refused: a 100-year token", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const auth = yield* Auth
      assert.strictEqual(auth.maxLifetimeSeconds, 30 * 86400)
      const century = yield* auth.sign(KEY_A, { expirySeconds: 100 * 365 * 86400 })
      assert.strictEqual(yield* reasonOf(auth.verify(century)), "lifetime_too_long")
      const month = yield* auth.sign(KEY_A, { expirySeconds: 30 * 86400 })
      assert.strictEqual((yield* auth.verify(month)).sub, KEY_A)
      const longer = yield* auth.sign(KEY_A, { expirySeconds: 30 * 86400 + 1 })
      assert.strictEqual(yield* reasonOf(auth.verify(longer)), "lifetime_too_long")
    }),
  )

  it.effect("nbf or iat in the future beyond the skew: not_yet_valid", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const auth = yield* Auth
      const now = nowSeconds(T0)
      const base = { sub: KEY_A, iat: now, exp: now + 3600 }
      assert.strictEqual(yield* reasonOf(auth.verify(yield* handSigned({ ...base, nbf: now + 31 }))), "not_yet_valid")
      assert.strictEqual(yield* reasonOf(auth.verify(yield* handSigned({ ...base, iat: now + 31 }))), "not_yet_valid")
      // Within the skew, both are accepted.
      yield* auth.verify(yield* handSigned({ ...base, nbf: now + 30 }))
      yield* auth.verify(yield* handSigned({ ...base, iat: now + 30 }))
      // And once the time comes, the nbf token is valid.
      const later = yield* handSigned({ ...base, nbf: now + 120 })
      assert.strictEqual(yield* reasonOf(auth.verify(later)), "not_yet_valid")
      yield* TestClock.adjust("2 minutes")
      yield* auth.verify(later)
    }),
  )

  it.effect('alg "none" is refused (token crafted by hand)', () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const auth = yield* Auth
      const now = nowSeconds(T0)
      const payload = b64url({ sub: KEY_A, iat: now, exp: now + 600, role: "admin" })
      for (const header of [{ alg: "none" }, { alg: "none", typ: "JWT" }, { alg: "None" }, { alg: "NONE" }]) {
        assert.strictEqual(yield* reasonOf(auth.verify(`${b64url(header)}.${payload}.`)), "alg_not_allowed")
        assert.strictEqual(yield* reasonOf(auth.authorize(`Bearer ${b64url(header)}.${payload}.`)), "alg_not_allowed")
      }
      // A real signature pasted after a `none` header does not help either.
      const genuine = (yield* auth.sign(KEY_A)).split(".")
      assert.strictEqual(
        yield* reasonOf(auth.verify(`${b64url({ alg: "none" })}.${genuine[1]}.${genuine[2]}`)),
        "alg_not_allowed",
      )
    }),
  )

  it.effect("other algorithms (HS384, HS512, RS256) are refused", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const auth = yield* Auth
      const now = nowSeconds(T0)
      const claims = { sub: KEY_A, iat: now, exp: now + 600 }
      for (const alg of ["HS384", "HS512"]) {
        assert.strictEqual(yield* reasonOf(auth.verify(yield* handSigned(claims, { alg }))), "alg_not_allowed")
      }
      const { privateKey } = yield* Effect.promise(() => generateKeyPair("RS256"))
      const rs256 = yield* Effect.promise(() =>
        new SignJWT(claims).setProtectedHeader({ alg: "RS256" }).sign(privateKey),
      )
      assert.strictEqual(yield* reasonOf(auth.verify(rs256)), "alg_not_allowed")
      // A header without alg names no allowed algorithm either.
      const [, body, sig] = (yield* auth.sign(KEY_A)).split(".")
      assert.strictEqual(yield* reasonOf(auth.verify(`${b64url({ typ: "JWT" })}.${body}.${sig}`)), "alg_not_allowed")
    }),
  )

  it.effect("a token signed with another secret: bad_signature", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const auth = yield* Auth
      const other = yield* authFrom(SECRET_B)
      assert.strictEqual(yield* reasonOf(auth.verify(yield* other.sign(KEY_A))), "bad_signature")
      assert.strictEqual(yield* reasonOf(other.verify(yield* auth.sign(KEY_A))), "bad_signature")
      // Claims edited after signing (role escalated): bad_signature.
      const [header, , sig] = (yield* auth.sign(KEY_A)).split(".")
      const now = nowSeconds(T0)
      const forged = `${header}.${b64url({ sub: KEY_B, iat: now, exp: now + 600, role: "admin" })}.${sig}`
      assert.strictEqual(yield* reasonOf(auth.verify(forged)), "bad_signature")
    }),
  )

  it.effect("claims that do not fit the schema: invalid_claims", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const auth = yield* Auth
      const now = nowSeconds(T0)
      const cases: ReadonlyArray<Record<string, unknown>> = [
        { iat: now, exp: now + 600, role: "" }, // the proof of concept's tokens: no sub
        { sub: "not an access key!", iat: now, exp: now + 600 },
        { sub: "", iat: now, exp: now + 600 },
        { sub: KEY_A, exp: now + 600 }, // no iat
        { sub: KEY_A, iat: now }, // no exp
        { sub: KEY_A, iat: now, exp: "later" },
        { sub: KEY_A, iat: now, exp: now + 600.5 },
        { sub: KEY_A, iat: now, exp: now + 600, role: 7 },
        { sub: KEY_A, iat: now, exp: now + 600, role: "r".repeat(65) },
      ]
      for (const claims of cases) {
        assert.strictEqual(
          yield* reasonOf(auth.verify(yield* handSigned(claims))),
          "invalid_claims",
          JSON.stringify(claims),
        )
      }
    }),
  )

  it.effect("malformed and missing authorization values", () =>
    Effect.gen(function* () {
      const auth = yield* Auth
      const cases: ReadonlyArray<readonly [string | undefined, AuthFailure]> = [
        [undefined, "missing_token"],
        ["", "missing_token"],
        ["   ", "missing_token"],
        ["Bearer", "malformed_token"],
        ["Bearer ", "malformed_token"],
        ["Basic dXNlcjpwYXNz", "malformed_token"],
        ["Bearer a.b", "malformed_token"],
        ["Bearer a.b.c", "malformed_token"],
        ["Bearer a.b.c.d", "malformed_token"],
        ["Bearer ...", "malformed_token"],
        ["Bearer x y", "malformed_token"],
        ["bearer !!!.???.***", "malformed_token"],
        ["Token eyJhbGciOiJIUzI1NiJ9.e30.sig", "malformed_token"],
        [`Bearer ${b64url("not an object")}.${b64url({})}.c2ln`, "malformed_token"],
        [`Bearer ${Buffer.from("{not json").toString("base64url")}.${b64url({})}.c2ln`, "malformed_token"],
        [`Bearer ${"a".repeat(9000)}.b.c`, "malformed_token"],
        ["\u0000\u0001garbage", "malformed_token"],
      ]
      for (const [header, reason] of cases) {
        assert.strictEqual(yield* reasonOf(auth.authorize(header)), reason, JSON.stringify(header)?.slice(0, 40))
      }
      assert.strictEqual(yield* reasonOf(auth.verify("")), "missing_token")
      assert.strictEqual(yield* reasonOf(auth.verify("garbage")), "malformed_token")
    }),
  )

  it.effect("an HS256 token whose payload is not JSON is malformed", () =>
    Effect.gen(function* () {
      const auth = yield* Auth
      const header = b64url({ alg: "HS256" })
      const payload = Buffer.from("not json").toString("base64url")
      const { createHmac } = yield* Effect.promise(() => import("node:crypto"))
      const sig = createHmac("sha256", SECRET_A).update(`${header}.${payload}`).digest("base64url")
      assert.strictEqual(yield* reasonOf(auth.verify(`${header}.${payload}.${sig}`)), "malformed_token")
    }),
  )

  it.effect("the scheme is case-insensitive and the token is all that is verified", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const auth = yield* Auth
      const token = yield* auth.sign(KEY_A)
      assert.strictEqual((yield* auth.authorize(`bearer ${token}`)).sub, KEY_A)
      assert.strictEqual((yield* auth.authorize(`BEARER  ${token} `)).sub, KEY_A)
    }),
  )

  it.effect("errors carry a reason, never the token or the secret", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const auth = yield* Auth
      const token = yield* auth.sign(KEY_A)
      yield* TestClock.adjust("1 day")
      const error = yield* Effect.flip(auth.authorize(`Bearer ${token}`))
      const shown = `${String(error)} ${JSON.stringify(error)} ${error.message}`
      assert.notInclude(shown, token.split(".")[2]!)
      assert.notInclude(shown, SECRET_A)
      assert.deepStrictEqual({ ...error }, { _tag: "AuthError", reason: "expired" })
    }),
  )
})

describe("Auth key rotation", () => {
  const oldRing = { current: "2025-01", keys: { "2025-01": SECRET_A } }
  const rotated = { current: "2025-06", keys: { "2025-06": SECRET_B, "2025-01": SECRET_A } }
  const retired = { current: "2025-06", keys: { "2025-06": SECRET_B } }

  it.effect("a token signed with the old kid verifies while the old key is listed; then unknown_kid", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const before = yield* authFrom(oldRing)
      const token = yield* before.sign(KEY_A)
      const header = JSON.parse(Buffer.from(token.split(".")[0]!, "base64url").toString())
      assert.deepStrictEqual(header, { alg: "HS256", typ: "JWT", kid: "2025-01" })

      const during = yield* authFrom(rotated)
      assert.strictEqual((yield* during.verify(token)).sub, KEY_A)
      const fresh = yield* during.sign(KEY_B)
      assert.include(Buffer.from(fresh.split(".")[0]!, "base64url").toString(), '"kid":"2025-06"')
      assert.strictEqual((yield* during.verify(fresh)).sub, KEY_B)

      const after = yield* authFrom(retired)
      assert.strictEqual(yield* reasonOf(after.verify(token)), "unknown_kid")
      assert.strictEqual((yield* after.verify(fresh)).sub, KEY_B)
    }),
  )

  it.effect("a kid naming one key with another key's signature is bad_signature", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const during = yield* authFrom(rotated)
      const now = nowSeconds(T0)
      const token = yield* handSigned({ sub: KEY_A, iat: now, exp: now + 60 }, { kid: "2025-06", secret: SECRET_A })
      assert.strictEqual(yield* reasonOf(during.verify(token)), "bad_signature")
    }),
  )

  it.effect("a token without kid is verified against the current key only", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const single = yield* authFrom(SECRET_A)
      const token = yield* single.sign(KEY_A)
      assert.notInclude(Buffer.from(token.split(".")[0]!, "base64url").toString(), "kid")
      // SECRET_A is listed, but not current: the token is not tried against it.
      assert.strictEqual(yield* reasonOf((yield* authFrom(rotated)).verify(token)), "bad_signature")
      assert.strictEqual((yield* (yield* authFrom(oldRing)).verify(token)).sub, KEY_A)
      // A single secret has no key ids: a token naming one is refused.
      const named = yield* handSigned({ sub: KEY_A, iat: nowSeconds(T0), exp: nowSeconds(T0) + 60 }, { kid: "x" })
      assert.strictEqual(yield* reasonOf(single.verify(named)), "unknown_kid")
    }),
  )
})

describe("Auth configuration", () => {
  const fromEnv = (env: Record<string, string>) =>
    Auth.Default.pipe(Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))))

  /** The failure message of building Auth with this environment. */
  const buildError = (env: Record<string, string>) =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(Effect.provide(Auth, fromEnv(env)))
      assert.isTrue(Exit.isFailure(exit), "the layer should not build")
      return Exit.isFailure(exit) ? String(exit.cause) : ""
    })

  const tempFile = (content: string) =>
    Effect.acquireRelease(
      Effect.sync(() => {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "spillway-auth-"))
        const file = path.join(dir, "jwt-secret")
        fs.writeFileSync(file, content)
        return file
      }),
      (file) => Effect.sync(() => fs.rmSync(path.dirname(file), { recursive: true, force: true })),
    )

  it.effect("SPILLWAY_JWT_SECRET signs and verifies", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const auth = yield* Effect.provide(Auth, fromEnv({ SPILLWAY_JWT_SECRET: SECRET_A }))
      assert.strictEqual((yield* auth.verify(yield* auth.sign(KEY_A))).sub, KEY_A)
      // Same secret, same tokens as layerFromSecrets.
      assert.strictEqual((yield* (yield* authFrom(SECRET_A)).verify(yield* auth.sign(KEY_B))).sub, KEY_B)
    }),
  )

  it.effect("no secret: the layer fails, naming both variables and how to make a secret", () =>
    Effect.gen(function* () {
      const message = yield* buildError({})
      assert.include(message, "SPILLWAY_JWT_SECRET")
      assert.include(message, "SPILLWAY_JWT_SECRET_FILE")
      assert.include(message, "openssl rand -base64 48")
      assert.include(yield* buildError({ SPILLWAY_JWT_SECRET: "" }), "no JWT secret is configured")
    }),
  )

  it.effect("a short secret is refused with how to make one, without echoing it", () =>
    Effect.gen(function* () {
      const message = yield* buildError({ SPILLWAY_JWT_SECRET: "hunter2-is-my-secret" })
      assert.include(message, "at least 32 bytes")
      assert.include(message, "openssl rand -base64 48")
      assert.notInclude(message, "hunter2")
      assert.include(
        String(yield* Effect.flip(Effect.provide(Auth, Auth.layerFromSecrets("short")))),
        "openssl rand -base64 48",
      )
    }),
  )

  it.effect("both variables set is refused", () =>
    Effect.gen(function* () {
      const message = yield* buildError({ SPILLWAY_JWT_SECRET: SECRET_A, SPILLWAY_JWT_SECRET_FILE: "/nonexistent" })
      assert.include(message, "set only one")
    }),
  )

  it.scoped("SPILLWAY_JWT_SECRET_FILE: a plain secret (trailing newline ignored)", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const file = yield* tempFile(`${SECRET_A}\n`)
      const auth = yield* Effect.provide(Auth, fromEnv({ SPILLWAY_JWT_SECRET_FILE: file }))
      const viaEnv = yield* authFrom(SECRET_A)
      assert.strictEqual((yield* viaEnv.verify(yield* auth.sign(KEY_A))).sub, KEY_A)
    }),
  )

  it.scoped("SPILLWAY_JWT_SECRET_FILE: a key ring signs with current and verifies by kid", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const file = yield* tempFile(JSON.stringify(rotatedRing, null, 2))
      const auth = yield* Effect.provide(Auth, fromEnv({ SPILLWAY_JWT_SECRET_FILE: file }))
      const old = yield* (yield* authFrom({ current: "old", keys: { old: SECRET_A } })).sign(KEY_A)
      assert.strictEqual((yield* auth.verify(old)).sub, KEY_A)
      const token = yield* auth.sign(KEY_B)
      assert.include(Buffer.from(token.split(".")[0]!, "base64url").toString(), '"kid":"new"')
    }),
  )

  it.scoped("bad secret files are refused with a message naming the file, not the secret", () =>
    Effect.gen(function* () {
      const cases: ReadonlyArray<readonly [string, string]> = [
        ["{not json", "not valid JSON"],
        [JSON.stringify({ keys: { a: SECRET_A } }), '{"current":"<kid>"'],
        [JSON.stringify({ current: "b", keys: { a: SECRET_A } }), "not one of"],
        [JSON.stringify({ current: "a", keys: { a: "too-short-secret-value" } }), "at least 32 bytes"],
        [JSON.stringify({ current: "a", keys: { a: 42 } }), "must be a string"],
        ["", "0 bytes"],
      ]
      for (const [content, expected] of cases) {
        const file = yield* tempFile(content)
        const message = yield* buildError({ SPILLWAY_JWT_SECRET_FILE: file })
        assert.include(message, expected, content)
        assert.include(message, file)
        assert.notInclude(message, "too-short-secret-value")
      }
      const missing = yield* buildError({ SPILLWAY_JWT_SECRET_FILE: "/nonexistent/jwt-secret" })
      assert.include(missing, "cannot read the secret file /nonexistent/jwt-secret (it does not exist)")
    }),
  )

  it.effect("SPILLWAY_JWT_CLOCK_SKEW_SECONDS sets the tolerance", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const strict = yield* Effect.provide(
        Auth,
        fromEnv({ SPILLWAY_JWT_SECRET: SECRET_A, SPILLWAY_JWT_CLOCK_SKEW_SECONDS: "0" }),
      )
      const token = yield* strict.sign(KEY_A, { expirySeconds: 60 })
      yield* TestClock.adjust("59 seconds")
      yield* strict.verify(token)
      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* reasonOf(strict.verify(token)), "expired")
      assert.include(
        yield* buildError({ SPILLWAY_JWT_SECRET: SECRET_A, SPILLWAY_JWT_CLOCK_SKEW_SECONDS: "-1" }),
        "SPILLWAY_JWT_CLOCK_SKEW_SECONDS",
      )
    }),
  )
})
