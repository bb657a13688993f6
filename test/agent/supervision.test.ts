/** Input supervision and the buffer's append retry, driven by TestClock (no sleeps). */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Context, Effect, Fiber, Layer, TestClock } from "effect"
import { BufferStore, type SyncMode } from "../../src/agent/buffer/BufferStore.js"
import { DiskBuffer } from "../../src/agent/buffer/DiskBuffer.js"
import { registerBufferChecks, supervised } from "../../src/agent/CollectLive.js"
import { Health } from "../../src/shared/Health.js"

const root = mkdtempSync(join(tmpdir(), "spillway-supervision-"))
afterAll(() => rmSync(root, { recursive: true, force: true }))
let n = 0

describe("supervised inputs", () => {
  it.effect("a failing input (error or defect) is restarted after a growing pause; one that ends stays ended", () =>
    Effect.gen(function* () {
      let runs = 0
      const input = Effect.suspend(() => {
        runs++
        if (runs === 1) return Effect.fail("boom")
        if (runs === 2) return Effect.dieMessage("bug")
        return Effect.void // e.g. stdin closed
      })
      const fiber = yield* Effect.fork(supervised("test", input))
      yield* TestClock.adjust("0 millis")
      assert.strictEqual(runs, 1)
      yield* TestClock.adjust("2 seconds") // first pause: about 1 s
      assert.strictEqual(runs, 2)
      yield* TestClock.adjust("5 seconds") // second: about 2 s
      assert.strictEqual(runs, 3)
      yield* Fiber.join(fiber)
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(runs, 3)
    }),
  )
})

describe("disk buffer append retry", () => {
  it.scoped(
    "a failing append is retried on the backoff with the same records; writable() is false until it works",
    () =>
      Effect.gen(function* () {
        let failures = 2
        let store: BufferStore | undefined
        const open = (d: string, m: SyncMode) => {
          const s = new BufferStore(d, m)
          const append = s.append.bind(s)
          s.append = (records, checkpoint) => {
            if (failures > 0) {
              failures--
              throw Object.assign(new Error("database or disk is full"), { code: "SQLITE_FULL" })
            }
            return append(records, checkpoint)
          }
          store = s
          return s
        }
        const layer = DiskBuffer.layer({
          dir: join(root, `b${++n}`),
          maxBytes: 1 << 20,
          open,
          appendRetry: { base: "1 second", cap: "10 seconds" },
        })
        const services = yield* Layer.build(Layer.merge(layer, Health.Default)) // open for the test's scope
        const buffer = Context.get(services, DiskBuffer)
        const health = Context.get(services, Health)
        yield* registerBufferChecks.pipe(Effect.provide(services))
        const writable = health.check.pipe(Effect.map((rs) => rs.find((r) => r.name === "buffer-writable")?.ok))
        const rec = { tag: "t", ts: "1", eventId: "e-1", record: '{"log":"x"}' }
        const fiber = yield* Effect.fork(buffer.append("test", [rec]))
        yield* TestClock.adjust("0 millis")
        assert.strictEqual(failures, 1)
        assert.isFalse(buffer.writable())
        assert.strictEqual(yield* writable, false) // /readyz answers 503
        yield* TestClock.adjust("1500 millis")
        assert.strictEqual(failures, 0)
        assert.isFalse(buffer.writable())
        yield* TestClock.adjust("3 seconds")
        yield* Fiber.join(fiber)
        assert.isTrue(buffer.writable())
        assert.strictEqual(yield* writable, true)
        assert.deepStrictEqual(
          store!.peek(0, 10, Number.POSITIVE_INFINITY).map((r) => r.eventId),
          ["e-1"],
        )
      }),
  )
})
