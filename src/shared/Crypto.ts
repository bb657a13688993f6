/**
 * AES-GCM per the encryption contract (DESIGN.md), interoperable with the proof of concept's Go
 * `gcm.Seal(nonce, nonce, plaintext, nil)`: `Event.message` is lowercase hex of
 * nonce(12) ‖ ciphertext ‖ tag(16); the key is the tenant's EncryptionKey bytes (16/24/32).
 */
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto"
import { Effect, Redacted } from "effect"
import { CryptoError } from "../domain/Errors.js"
import { encryptionKeyBytes } from "../domain/Tenant.js"

const NONCE = 12
const TAG = 16

/** A parsed key; `undefined` bytes mean "no encryption" (an empty EncryptionKey). */
export interface Key {
  readonly bytes: Uint8Array | undefined
}

const algorithm = (bytes: Uint8Array) => `aes-${bytes.length * 8}-gcm` as "aes-128-gcm" | "aes-192-gcm" | "aes-256-gcm"

/**
 * Pure synchronous core, exported for benchmarks and hot loops that already run inside an Effect. `nonce`: 12 fresh
 * random bytes, never used before with this key (a batch takes them from one `randomBytes` call; default: its own).
 */
export const sealHex = (key: Uint8Array, plaintext: Uint8Array, nonce: Uint8Array = randomBytes(NONCE)): string => {
  const { body, tag } = gcmSeal(key, nonce, plaintext)
  return Buffer.concat([nonce, body, tag]).toString("hex")
}

/** AES-GCM of `plaintext` (a string as its UTF-8) under `key` and `iv`: ciphertext and tag (GCM's final adds none). */
const gcmSeal = (key: Uint8Array, iv: Uint8Array, plaintext: string | Uint8Array): { body: Buffer; tag: Buffer } => {
  const cipher = createCipheriv(algorithm(key), key, iv)
  const body = typeof plaintext === "string" ? cipher.update(plaintext, "utf8") : cipher.update(plaintext)
  cipher.final()
  return { body, tag: cipher.getAuthTag() }
}

/**
 * Nonces for a batch of about `count` seals, all from one `randomBytes` call (one call per batch, not per record; a
 * tenth of the OTLP receiver's CPU went to a call per record), drawn at the first nonce asked for (a batch of a tenant
 * without a key draws none): each is handed out once, and past `count` each is a fresh `randomBytes`. The pool is
 * `count` × 12 bytes, so callers bound `count` (a request's record limit).
 */
export const batchNonces = (count: number): (() => Uint8Array) => {
  let pool: Buffer | undefined
  let at = 0
  return () => {
    pool ??= randomBytes(NONCE * Math.max(0, Math.floor(count)))
    if (at + NONCE > pool.length) return randomBytes(NONCE)
    at += NONCE
    return pool.subarray(at - NONCE, at)
  }
}

/**
 * `sealHex` for the records of a batch of about `count`, each plaintext a string (encrypted as its UTF-8 without a
 * Buffer of its own): the nonces from one `batchNonces(count)`, and nonce ‖ ciphertext ‖ tag assembled in one scratch
 * buffer kept for the batch (as large as its largest record) before the hex is made, where `sealHex` concatenates a
 * new Buffer per record.
 */
export const batchSealer = (count: number): ((key: Uint8Array, plaintext: string) => string) => {
  const nonce = batchNonces(count)
  let scratch: Buffer | undefined
  return (key, plaintext) => {
    const iv = nonce()
    const { body, tag } = gcmSeal(key, iv, plaintext)
    const n = NONCE + body.length + TAG
    if (scratch === undefined || scratch.length < n)
      scratch = Buffer.allocUnsafe(Math.max(n, 2 * (scratch?.length ?? 0)))
    scratch.set(iv, 0)
    scratch.set(body, NONCE)
    scratch.set(tag, NONCE + body.length)
    return scratch.toString("hex", 0, n)
  }
}

/**
 * Throws CryptoError (never garbage) on anything but an authentic ciphertext under `key`. Hex is checked by the
 * decoder itself (it stops at the first character that is not hex, so every character was hex exactly when the
 * bytes are half the length): no separate pass over the string. GCM's `final()` returns no bytes (it checks the
 * tag), so the plaintext is `update`'s buffer, not a concatenation.
 */
export const openHex = (key: Uint8Array, hex: string): Buffer => {
  const blob = Buffer.from(hex, "hex")
  if (blob.length * 2 !== hex.length) throw new CryptoError({ reason: "not_hex" })
  if (blob.length < NONCE + TAG) throw new CryptoError({ reason: "too_short" })
  try {
    const decipher = createDecipheriv(algorithm(key), key, blob.subarray(0, NONCE))
    decipher.setAuthTag(blob.subarray(blob.length - TAG))
    const plain = decipher.update(blob.subarray(NONCE, blob.length - TAG))
    const rest = decipher.final()
    return rest.length === 0 ? plain : Buffer.concat([plain, rest])
  } catch {
    throw new CryptoError({ reason: "auth_failed" })
  }
}

export class Crypto extends Effect.Service<Crypto>()("spillway/Crypto", {
  succeed: {
    /** Parses an EncryptionKey (`hex:…`, `base64:…` or UTF-8 text; empty = no encryption). */
    key: (spec: Redacted.Redacted<string> | string): Effect.Effect<Key, CryptoError> =>
      Effect.suspend((): Effect.Effect<Key, CryptoError> => {
        const s = typeof spec === "string" ? spec : Redacted.value(spec)
        if (s === "") return Effect.succeed({ bytes: undefined })
        const bytes = encryptionKeyBytes(s)
        return bytes !== undefined && [16, 24, 32].includes(bytes.length)
          ? Effect.succeed({ bytes })
          : Effect.fail(new CryptoError({ reason: "bad_key" }))
      }),
    /** The `message` string for a plaintext: hex ciphertext, or the plaintext itself without a key. */
    encrypt: (key: Key, plaintext: string): Effect.Effect<string> =>
      Effect.sync(() => (key.bytes === undefined ? plaintext : sealHex(key.bytes, Buffer.from(plaintext, "utf8")))),
    /** The plaintext of a `message` string. */
    decrypt: (key: Key, message: string): Effect.Effect<string, CryptoError> =>
      key.bytes === undefined
        ? Effect.succeed(message)
        : Effect.try({
            try: () => openHex(key.bytes as Uint8Array, message).toString("utf8"),
            catch: (e) => (e instanceof CryptoError ? e : new CryptoError({ reason: "auth_failed" })),
          }),
  },
}) {}
