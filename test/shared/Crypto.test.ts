import { assert, describe, it, layer } from "@effect/vitest"
import { Effect, Either, FastCheck as fc, Redacted } from "effect"
import type { CryptoError } from "../../src/domain/Errors.js"
import { batchNonces, batchSealer, Crypto, openHex, sealHex } from "../../src/shared/Crypto.js"

/** The proof of concept's key: 32 ASCII bytes, so AES-256. */
const POC_KEY = "883EC28EBA9A36A386FA351FBC482B34"

/**
 * Made by real Go (go1.26.8, crypto/aes + crypto/cipher) with the proof of concept's code:
 *   block, _ := aes.NewCipher([]byte("883EC28EBA9A36A386FA351FBC482B34"))
 *   gcm, _ := cipher.NewGCM(block); nonce := make([]byte, gcm.NonceSize()); rand.Read(nonce)
 *   hex.EncodeToString(gcm.Seal(nonce, nonce, []byte(plaintext), nil))
 * run in a scratch directory outside the repository. The same program's `gcm.Open` decrypted a
 * ciphertext made by this Crypto service (`{"log":"sealed by spillway","n":1}`), so both
 * directions interoperate.
 */
const GO_FIXTURES: ReadonlyArray<{ readonly plaintext: string; readonly hex: string }> = [
  {
    plaintext: '{"log":"hello from fluent-bit","stream":"stdout"}',
    hex: "4be9b8646b227eb42079494815fda53a65b2dc12837a3b3c5d48269977a2337ecce397a599af606cfc8075670add804705664ccc7a904cfc791e0e651c4862c143251b9fc20c80439a3b2c9a32",
  },
  { plaintext: "", hex: "11c739e4543507d63ce5693389ff69de24882350613e5cc664f71148" },
  {
    plaintext: "héllo wörld ✓ 日本語 🚀",
    hex: "ab2e75f78bb73045f81cfae1f1891195e8be085608a107a85783761c621be489aa561aaa961db704d22d3b4e9ccfdbafaf6dfafc045c2a312d83694f",
  },
]

/**
 * McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)" (the spec NIST SP 800-38D refers
 * to), Test Cases 3 (AES-128) and 15 (AES-256): 96-bit IV, no AAD. Laid out as the wire does:
 * hex of IV ‖ ciphertext ‖ tag.
 */
const GCM_PLAINTEXT =
  "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
const GCM_VECTORS = [
  {
    name: "Test Case 3 (AES-128)",
    key: "hex:feffe9928665731c6d6a8f9467308308",
    message:
      "cafebabefacedbaddecaf888" +
      "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985" +
      "4d5c2af327cd64a62cf35abd2ba6fab4",
  },
  {
    name: "Test Case 15 (AES-256)",
    key: "hex:feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
    message:
      "cafebabefacedbaddecaf888" +
      "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad" +
      "b094dac5d93471bdec1a502270e3cc6c",
  },
] as const

/** A key spec of 16, 24 or 32 bytes in each of the three notations. */
const keySpec = fc.tuple(fc.constantFrom(16, 24, 32), fc.constantFrom("utf8", "hex", "base64")).chain(([n, notation]) =>
  fc.uint8Array({ minLength: n, maxLength: n }).map((bytes) => {
    const b = Buffer.from(bytes)
    if (notation === "hex") return `hex:${b.toString("hex")}`
    if (notation === "base64") return `base64:${b.toString("base64")}`
    return b.toString("hex").slice(0, n) // n ASCII characters = n UTF-8 bytes
  }),
)

const anyText = fc.oneof(fc.string({ unit: "grapheme" }), fc.string({ unit: "binary" }), fc.constant(""))

/** The reason a decryption failed; fails the test if it succeeded. */
const refusal = (effect: Effect.Effect<string, CryptoError>) =>
  Effect.flatMap(Effect.either(effect), (r) =>
    Either.isLeft(r) ? Effect.succeed(r.left.reason) : Effect.dieMessage("decrypted what should have been refused"),
  )

const flipByte = (hex: string, index: number, mask: number): string => {
  const bytes = Buffer.from(hex, "hex")
  bytes[index] = (bytes[index] ?? 0) ^ mask
  return bytes.toString("hex")
}

layer(Crypto.Default)("Crypto", (it) => {
  it.effect.prop(
    "decrypt(encrypt(m)) = m for any text and any key size/notation",
    [anyText, keySpec],
    ([text, spec]) =>
      Effect.gen(function* () {
        const crypto = yield* Crypto
        const key = yield* crypto.key(spec)
        const message = yield* crypto.encrypt(key, text)
        assert.match(message, /^[0-9a-f]+$/)
        assert.strictEqual(message.length, 2 * (12 + Buffer.byteLength(text, "utf8") + 16))
        assert.strictEqual(yield* crypto.decrypt(key, message), text)
      }),
    { fastCheck: { numRuns: 200 } },
  )

  it.effect.prop(
    "round-trips large messages (up to 1 MiB)",
    [fc.string({ unit: "grapheme", minLength: 1, maxLength: 16 }), fc.integer({ min: 256 * 1024, max: 1024 * 1024 })],
    ([unit, bytes]) =>
      Effect.gen(function* () {
        const crypto = yield* Crypto
        const key = yield* crypto.key(POC_KEY)
        const text = unit.repeat(Math.max(1, Math.floor(bytes / Buffer.byteLength(unit, "utf8"))))
        assert.strictEqual(yield* crypto.decrypt(key, yield* crypto.encrypt(key, text)), text)
      }),
    { fastCheck: { numRuns: 3 } },
  )

  it.effect.prop(
    "two encryptions of one message differ (random nonce)",
    [anyText],
    ([text]) =>
      Effect.gen(function* () {
        const crypto = yield* Crypto
        const key = yield* crypto.key(POC_KEY)
        const a = yield* crypto.encrypt(key, text)
        const b = yield* crypto.encrypt(key, text)
        assert.notStrictEqual(a, b)
        assert.notStrictEqual(a.slice(0, 24), b.slice(0, 24))
      }),
    { fastCheck: { numRuns: 50 } },
  )

  it.effect.prop(
    "flipping any bit pattern of any byte (nonce, body or tag) is refused",
    [anyText, fc.nat(), fc.integer({ min: 1, max: 255 })],
    ([text, at, mask]) =>
      Effect.gen(function* () {
        const crypto = yield* Crypto
        const key = yield* crypto.key(POC_KEY)
        const message = yield* crypto.encrypt(key, text)
        const index = at % (message.length / 2)
        assert.strictEqual(yield* refusal(crypto.decrypt(key, flipByte(message, index, mask))), "auth_failed")
      }),
    { fastCheck: { numRuns: 200 } },
  )

  it.effect.prop(
    "a non-hex character anywhere is refused as not_hex",
    [anyText, fc.nat(), fc.constantFrom("g", "z", " ", "-", "é", "\n", "G")],
    ([text, at, bad]) =>
      Effect.gen(function* () {
        const crypto = yield* Crypto
        const key = yield* crypto.key(POC_KEY)
        const message = yield* crypto.encrypt(key, text)
        const index = at % message.length
        const tampered = message.slice(0, index) + bad + message.slice(index + 1)
        assert.strictEqual(yield* refusal(crypto.decrypt(key, tampered)), "not_hex")
      }),
    { fastCheck: { numRuns: 100 } },
  )

  it.effect.prop(
    "truncating from either end is refused",
    [anyText, fc.integer({ min: 1, max: 200 }), fc.boolean()],
    ([text, cut, fromStart]) =>
      Effect.gen(function* () {
        const crypto = yield* Crypto
        const key = yield* crypto.key(POC_KEY)
        const message = yield* crypto.encrypt(key, text)
        const n = Math.min(cut, message.length)
        const truncated = fromStart ? message.slice(n) : message.slice(0, message.length - n)
        const reason = yield* refusal(crypto.decrypt(key, truncated))
        assert.include(["not_hex", "too_short", "auth_failed"], reason)
      }),
    { fastCheck: { numRuns: 100 } },
  )

  it.effect.prop(
    "a wrong key is refused",
    [anyText, keySpec, keySpec],
    ([text, a, b]) =>
      Effect.gen(function* () {
        const crypto = yield* Crypto
        const key = yield* crypto.key(a)
        const other = yield* crypto.key(b === a ? POC_KEY : b)
        const message = yield* crypto.encrypt(key, text)
        assert.strictEqual(yield* refusal(crypto.decrypt(other, message)), "auth_failed")
      }),
    { fastCheck: { numRuns: 50 } },
  )

  describe("inputs that are not ciphertexts", () => {
    it.effect("not hex, odd length and too short", () =>
      Effect.gen(function* () {
        const crypto = yield* Crypto
        const key = yield* crypto.key(POC_KEY)
        assert.strictEqual(yield* refusal(crypto.decrypt(key, '{"log":"plain json"}')), "not_hex")
        assert.strictEqual(yield* refusal(crypto.decrypt(key, "abc")), "not_hex")
        assert.strictEqual(yield* refusal(crypto.decrypt(key, "")), "too_short")
        assert.strictEqual(yield* refusal(crypto.decrypt(key, "00".repeat(27))), "too_short")
        assert.strictEqual(yield* refusal(crypto.decrypt(key, "00".repeat(28))), "auth_failed")
      }),
    )
  })

  describe("keys", () => {
    it.effect("16, 24 and 32 bytes in UTF-8, hex: and base64: notation, redacted or not", () =>
      Effect.gen(function* () {
        const crypto = yield* Crypto
        const specs = [
          "0123456789abcdef",
          "0123456789abcdef01234567",
          POC_KEY,
          `hex:${"ab".repeat(16)}`,
          `hex:${"AB".repeat(24)}`,
          `hex:${"0f".repeat(32)}`,
          `base64:${Buffer.alloc(16, 7).toString("base64")}`,
          `base64:${Buffer.alloc(24, 7).toString("base64")}`,
          `base64:${Buffer.alloc(32, 7).toString("base64url")}`,
        ]
        for (const spec of specs) {
          const key = yield* crypto.key(Redacted.make(spec))
          assert.strictEqual(yield* crypto.decrypt(key, yield* crypto.encrypt(key, "x")), "x", spec)
        }
      }),
    )

    it.effect("bad lengths and malformed notations fail with bad_key", () =>
      Effect.gen(function* () {
        const crypto = yield* Crypto
        const bad = [
          "short",
          "0123456789abcde", // 15
          "0123456789abcdef0", // 17
          "0123456789abcdef0123456789abcdef0", // 33
          "é".repeat(9), // 9 characters, 18 bytes
          "hex:",
          "hex:00",
          `hex:${"a".repeat(31)}`, // odd
          `hex:${"zz".repeat(16)}`,
          "base64:AAAA",
          `base64:${Buffer.alloc(20).toString("base64")}`,
          `base64:${"!".repeat(24)}`,
        ]
        for (const spec of bad) {
          const result = yield* Effect.either(crypto.key(spec))
          assert.isTrue(Either.isLeft(result), spec)
          if (Either.isLeft(result)) assert.strictEqual(result.left.reason, "bad_key", spec)
        }
      }),
    )

    it.effect("an empty key means plain JSON both ways", () =>
      Effect.gen(function* () {
        const crypto = yield* Crypto
        const key = yield* crypto.key("")
        assert.strictEqual(yield* crypto.encrypt(key, '{"a":1}'), '{"a":1}')
        assert.strictEqual(yield* crypto.decrypt(key, '{"a":1}'), '{"a":1}')
      }),
    )
  })

  describe("known answers", () => {
    for (const vector of GCM_VECTORS) {
      it.effect(`GCM spec ${vector.name} decrypts`, () =>
        Effect.gen(function* () {
          const crypto = yield* Crypto
          const key = yield* crypto.key(vector.key)
          // The plaintext is binary (not UTF-8): compare bytes through the pure core.
          assert.isDefined(key.bytes)
          assert.strictEqual(openHex(key.bytes!, vector.message).toString("hex"), GCM_PLAINTEXT)
          // The service accepts it too (its string result is lossy for non-UTF-8 bytes).
          yield* crypto.decrypt(key, vector.message)
          assert.strictEqual(yield* refusal(crypto.decrypt(key, flipByte(vector.message, 70, 0x80))), "auth_failed")
        }),
      )
    }

    for (const fixture of GO_FIXTURES) {
      it.effect(`decrypts Go gcm.Seal output: ${JSON.stringify(fixture.plaintext).slice(0, 40)}`, () =>
        Effect.gen(function* () {
          const crypto = yield* Crypto
          const key = yield* crypto.key(POC_KEY)
          assert.strictEqual(yield* crypto.decrypt(key, fixture.hex), fixture.plaintext)
          assert.strictEqual(yield* refusal(crypto.decrypt(key, flipByte(fixture.hex, 12, 1))), "auth_failed")
        }),
      )
    }
  })
})

describe("batchNonces", () => {
  it("hands out 12-byte nonces, each once, from one pool and past it", () => {
    const next = batchNonces(3)
    const seen = new Set<string>()
    for (let i = 0; i < 5; i++) {
      const n = next()
      assert.strictEqual(n.length, 12)
      seen.add(Buffer.from(n).toString("hex"))
    }
    assert.strictEqual(seen.size, 5)
    assert.strictEqual(batchNonces(0)().length, 12)
  })

  it("a batch's seals under one key never share a nonce, and each opens", () => {
    const key = new Uint8Array(32).fill(7)
    const next = batchNonces(200)
    const sealed = Array.from({ length: 200 }, (_, i) => sealHex(key, Buffer.from(`record ${i}`), next()))
    assert.strictEqual(new Set(sealed.map((h) => h.slice(0, 24))).size, 200)
    for (const [i, h] of sealed.entries()) assert.strictEqual(openHex(key, h).toString(), `record ${i}`)
  })

  it("batchSealer: each record opens to its UTF-8 text under its key, whatever the sizes before it", () => {
    const keys = [new Uint8Array(16).fill(1), new Uint8Array(24).fill(2), new Uint8Array(32).fill(3)]
    // larger and smaller records in turn (the scratch buffer grows, then holds more than a record), an empty one,
    // and text outside ASCII
    const texts = ["a", "é".repeat(300), "", '{"n":1}', "x".repeat(5000), "日本語", "b"]
    const seal = batchSealer(4) // fewer nonces than records: the rest are fresh
    const sealed = texts.map((t, i) => seal(keys[i % 3]!, t))
    for (const [i, h] of sealed.entries()) {
      assert.strictEqual(h.length, 2 * (12 + Buffer.byteLength(texts[i]!) + 16))
      assert.strictEqual(openHex(keys[i % 3]!, h).toString("utf8"), texts[i])
    }
    assert.strictEqual(new Set(sealed.map((h) => h.slice(0, 24))).size, texts.length)
  })
})
