/**
 * The stdin input in process over a PassThrough: a buffer that cannot be written (SQLITE_FULL) does not kill
 * it (nothing lost, stdin read again afterwards, readiness red meanwhile), and long lines are cut like the tailer's.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { PassThrough } from "node:stream"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { BufferStore, type SyncMode } from "../../src/agent/buffer/BufferStore.js"
import { DiskBuffer } from "../../src/agent/buffer/DiskBuffer.js"
import { runStdin } from "../../src/agent/inputs/StdinInput.js"

const root = mkdtempSync(join(tmpdir(), "spillway-stdin-"))
afterAll(() => rmSync(root, { recursive: true, force: true }))
let n = 0

/** Polls `cond` every 20 ms (real clock), for at most `ms`. */
const eventually = (cond: () => boolean, what: string, ms = 10_000) =>
  Effect.gen(function* () {
    const end = Date.now() + ms
    while (!cond()) {
      if (Date.now() > end) return yield* Effect.dieMessage(`timed out waiting for ${what}`)
      yield* Effect.sleep("20 millis")
    }
  })

const allRows = (store: BufferStore) => store.peek(0, 1_000_000, Number.POSITIVE_INFINITY)

describe("stdin input", () => {
  it.live(
    "a full disk: the lines not yet stored are kept and retried, stdin keeps being read, readiness is red meanwhile",
    () => {
      let failures = 3
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
      const input = new PassThrough()
      return Effect.gen(function* () {
        const buffer = yield* DiskBuffer
        const fiber = yield* Effect.fork(runStdin({ tag: "stdin", input }))
        input.write("l-0\nl-1\nl-2\n")
        yield* eventually(() => failures < 3, "a failed append")
        assert.isFalse(buffer.writable())
        yield* eventually(() => failures === 0 && store!.eventCount === 3, "the first lines stored after retries")
        assert.isTrue(buffer.writable())
        input.write("l-3\nl-4\n")
        yield* eventually(() => store!.eventCount === 5, "lines written after the failure")
        input.end("l-5\n")
        yield* Fiber.join(fiber)
        const logs = allRows(store!).map((r) => JSON.parse(r.record).log)
        assert.deepStrictEqual(logs, ["l-0", "l-1", "l-2", "l-3", "l-4", "l-5"])
      }).pipe(Effect.provide(DiskBuffer.layer({ dir: join(root, `b${++n}`), maxBytes: 1 << 20, open })))
    },
    20_000,
  )

  it.live("a line longer than the cap (256 KiB) is cut into pieces, like the tailer does", () => {
    let store: BufferStore | undefined
    const open = (d: string, m: SyncMode) => {
      store = new BufferStore(d, m)
      return store
    }
    const input = new PassThrough()
    return Effect.gen(function* () {
      const fiber = yield* Effect.fork(runStdin({ tag: "stdin", input }))
      const long = "z".repeat(600 * 1024)
      input.write(`${long.slice(0, 100_000)}`)
      input.write(`${long.slice(100_000)}\nshort\n`)
      input.end()
      yield* Fiber.join(fiber)
      const logs: Array<string> = allRows(store!).map((r) => JSON.parse(r.record).log)
      assert.deepStrictEqual(
        logs.map((l) => l.length),
        [256 * 1024, 256 * 1024, 600 * 1024 - 512 * 1024, 5],
      )
      assert.strictEqual(logs.slice(0, 3).join(""), long)
    }).pipe(Effect.provide(DiskBuffer.layer({ dir: join(root, `b${++n}`), maxBytes: 64 << 20, open })))
  })
})
