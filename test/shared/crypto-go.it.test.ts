/**
 * Interoperability with the proof of concept's Go AES-GCM code in both directions, with real Go
 * (test/interop/gcm/main.go, built with the `go` on PATH). Without Go the suite fails loudly rather than skip:
 * set SPILLWAY_SKIP_GO=1 to skip it on a machine without Go (the fixtures in Crypto.test.ts still cover Go output).
 */
import { execFileSync } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, FastCheck as fc } from "effect"
import { Crypto } from "../../src/shared/Crypto.js"

const POC_KEY = "883EC28EBA9A36A386FA351FBC482B34"
const dir = mkdtempSync(join(tmpdir(), "spillway-go-"))
const bin = join(dir, "gcm")
const go = (...args: Array<string>) => execFileSync(bin, args, { encoding: "utf8" })
const crypto = Effect.runSync(Crypto.pipe(Effect.provide(Crypto.Default)))

describe.skipIf(process.env.SPILLWAY_SKIP_GO === "1")("AES-GCM interoperability with Go", () => {
  beforeAll(() => {
    execFileSync("go", ["build", "-o", bin, "."], {
      cwd: join(import.meta.dirname, "..", "interop", "gcm"),
      env: { ...process.env, GOFLAGS: "-mod=mod", GOTOOLCHAIN: "local", CGO_ENABLED: "0" },
    })
  }, 120_000)
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  const keys = fc.constantFrom(POC_KEY, "0123456789abcdef", "0123456789abcdef01234567")
  const texts = fc.string({ unit: "grapheme", minLength: 1, maxLength: 200 }).filter((s) => !s.includes("\0"))

  it("Go decrypts what Spillway encrypts", () => {
    fc.assert(
      fc.property(keys, texts, (key, text) => {
        const k = Effect.runSync(crypto.key(key))
        const hex = Effect.runSync(crypto.encrypt(k, text))
        expect(go("open", key, hex)).toBe(text)
      }),
      { numRuns: 25 },
    )
  })

  it("Spillway decrypts what Go encrypts, and refuses it under another key", () => {
    fc.assert(
      fc.property(keys, texts, (key, text) => {
        const hex = go("seal", key, text)
        const k = Effect.runSync(crypto.key(key))
        expect(Effect.runSync(crypto.decrypt(k, hex))).toBe(text)
        const other = Effect.runSync(crypto.key(key === POC_KEY ? "0123456789abcdef" : POC_KEY))
        expect(Effect.runSync(Effect.either(crypto.decrypt(other, hex)))._tag).toBe("Left")
      }),
      { numRuns: 25 },
    )
  })
})
