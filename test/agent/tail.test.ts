/**
 * The tailer in process: an inode reused by another file while the agent was down (fingerprint of the first
 * bytes), Kubernetes CRI partial lines joined into one event, and one agent per buffer folder.
 */

import { spawnSync } from "node:child_process"
import { createHash } from "node:crypto"
import { appendFileSync, mkdirSync, mkdtempSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Either, Exit, Fiber, Layer, Scope } from "effect"
import { BufferStore, type SyncMode } from "../../src/agent/buffer/BufferStore.js"
import { DiskBuffer } from "../../src/agent/buffer/DiskBuffer.js"
import { criJoiner, kubernetesParser, tailParser } from "../../src/agent/inputs/Parsers.js"
import { runTail, type TailSpec } from "../../src/agent/inputs/Tail.js"

const root = mkdtempSync(join(tmpdir(), "spillway-tail-"))
afterAll(() => rmSync(root, { recursive: true, force: true }))
let n = 0
const fresh = () => {
  const dir = join(root, `c${++n}`)
  mkdirSync(join(dir, "logs"), { recursive: true })
  return dir
}

const eventually = (cond: () => boolean, what: string, ms = 10_000) =>
  Effect.gen(function* () {
    const end = Date.now() + ms
    while (!cond()) {
      if (Date.now() > end) return yield* Effect.dieMessage(`timed out waiting for ${what}`)
      yield* Effect.sleep("20 millis")
    }
  })

/** A buffer on `dir` whose store the test can read; `seed` runs on the store before the buffer opens. */
const bufferOn = (dir: string, seed: (s: BufferStore) => void = () => undefined) => {
  const ref: { store?: BufferStore } = {}
  const open = (d: string, m: SyncMode) => {
    const s = new BufferStore(d, m)
    seed(s)
    ref.store = s
    return s
  }
  return { layer: DiskBuffer.layer({ dir: join(dir, "buffer"), maxBytes: 1 << 24, open }), ref }
}

const logsIn = (s: BufferStore) => s.peek(0, 100_000, Number.POSITIVE_INFINITY).map((r) => JSON.parse(r.record))

/** Runs the tailer until `cond` holds on the store, stops it, then runs `after` on the store (still open). */
const tailUntil = (
  spec: TailSpec,
  b: ReturnType<typeof bufferOn>,
  cond: (s: BufferStore) => boolean,
  after: (s: BufferStore) => void,
) =>
  Effect.gen(function* () {
    const fiber = yield* Effect.fork(runTail(spec))
    yield* eventually(() => b.ref.store !== undefined && cond(b.ref.store), "the tailer")
    yield* Effect.sleep("300 millis") // a few more scans: nothing else may arrive
    yield* Fiber.interrupt(fiber)
    after(b.ref.store!)
  }).pipe(Effect.provide(b.layer))

const lines = (prefix: string, k: number) => Array.from({ length: k }, (_, i) => `${prefix}-${i}\n`).join("")
const fpOf = (text: string) => {
  const bytes = Buffer.from(text).subarray(0, 1024)
  return `${bytes.length}:${createHash("sha256").update(bytes).digest("hex").slice(0, 32)}`
}

describe("tail: an inode reused while the agent was down", () => {
  it.live("a file under a checkpointed identity but with other first bytes is read from the start", () => {
    const dir = fresh()
    const file = join(dir, "logs", "app.log")
    writeFileSync(file, lines("new", 10))
    const st = statSync(file)
    // The checkpoint of the file that had this inode before: 30 bytes read, other first bytes.
    const seed = (s: BufferStore) =>
      s.setCheckpoint({
        fileId: `tail:${st.dev}:${st.ino}`,
        path: file,
        offset: 30,
        fingerprint: fpOf("old-0\nold-1\nold-2\nold-3\nold-4\n"),
      })
    const b = bufferOn(dir, seed)
    const spec: TailSpec = { input: "tail", globs: [join(dir, "logs", "*.log")], parse: tailParser("t"), pollMs: 50 }
    return Effect.gen(function* () {
      yield* tailUntil(
        spec,
        b,
        (s) => s.eventCount >= 10,
        (s) =>
          assert.deepStrictEqual(
            logsIn(s).map((r) => r.log),
            Array.from({ length: 10 }, (_, i) => `new-${i}`),
          ),
      )
    })
  })

  it.live("the same file (same first bytes) resumes from its checkpoint: nothing read twice", () => {
    const dir = fresh()
    const file = join(dir, "logs", "app.log")
    writeFileSync(file, lines("x", 10)) // x-0\n … 4 bytes each
    const st = statSync(file)
    const seed = (s: BufferStore) =>
      s.setCheckpoint({
        fileId: `tail:${st.dev}:${st.ino}`,
        path: file,
        offset: 16,
        fingerprint: fpOf("x-0\nx-1\nx-2\nx-3\n"),
      })
    const b = bufferOn(dir, seed)
    const spec: TailSpec = { input: "tail", globs: [join(dir, "logs", "*.log")], parse: tailParser("t"), pollMs: 50 }
    return Effect.gen(function* () {
      yield* tailUntil(
        spec,
        b,
        (s) => s.eventCount >= 6,
        (s) => {
          assert.deepStrictEqual(
            logsIn(s).map((r) => r.log),
            ["x-4", "x-5", "x-6", "x-7", "x-8", "x-9"],
          )
          // and the checkpoint it writes carries the fingerprint of the first bytes
          const cp = s.checkpoint(`tail:${st.dev}:${st.ino}`)!
          assert.strictEqual(cp.offset, 40)
          assert.strictEqual(cp.fingerprint, fpOf(lines("x", 10)))
        },
      )
    })
  })
})

describe("tail: a plain path (no glob syntax)", () => {
  it.live("is read once it appears, and after a rotation the new file under its name is read too", () => {
    const dir = fresh()
    const file = join(dir, "logs", "app.log")
    const b = bufferOn(dir)
    // Spelled with a doubled slash: still the one file, as the glob would name it.
    const spec: TailSpec = {
      input: "tail",
      globs: [`${join(dir, "logs")}//app.log`],
      parse: tailParser("t"),
      pollMs: 50,
    }
    return Effect.gen(function* () {
      const fiber = yield* Effect.fork(runTail(spec))
      yield* Effect.sleep("150 millis") // scans of a path that does not exist yet
      writeFileSync(file, lines("a", 3))
      yield* eventually(() => b.ref.store !== undefined && b.ref.store.eventCount >= 3, "the first file")
      renameSync(file, join(dir, "logs", "app.log.1"))
      writeFileSync(file, lines("b", 2))
      yield* eventually(() => b.ref.store!.eventCount >= 5, "the file under the name after the rotation")
      yield* Fiber.interrupt(fiber)
      assert.deepStrictEqual(
        logsIn(b.ref.store!).map((r) => r.log),
        ["a-0", "a-1", "a-2", "b-0", "b-1"],
      )
    }).pipe(Effect.provide(b.layer))
  })
})

describe("kubernetes: CRI partial lines", () => {
  const cid = "d".repeat(64)
  const t = "2024-01-02T03:04:05.000000001Z"

  it.live("P lines are joined with the F line that ends them; the checkpoint waits at a pending first part", () => {
    const dir = fresh()
    const file = join(dir, "logs", `web-1_shop_nginx-${cid}.log`)
    const before = `${t} stdout P part one, \n${t} stdout P part two, \n${t} stdout F the end\n${t} stderr F alone\n`
    writeFileSync(file, `${before}${t} stdout P pending \n`)
    const b = bufferOn(dir)
    const spec: TailSpec = {
      input: "kubernetes",
      globs: [join(dir, "logs", "*.log")],
      parse: kubernetesParser,
      join: criJoiner(256 * 1024),
      pollMs: 50,
    }
    const st = statSync(file)
    return Effect.gen(function* () {
      yield* tailUntil(
        spec,
        b,
        (s) => s.eventCount >= 2,
        (s) => {
          const recs = logsIn(s)
          assert.deepStrictEqual(
            recs.map((r) => [r.log, r.logtag, r.stream]),
            [
              ["part one, part two, the end", "F", "stdout"],
              ["alone", "F", "stderr"],
            ],
          )
          assert.strictEqual(recs[0].parts, 3)
          assert.strictEqual(s.checkpoint(`kubernetes:${st.dev}:${st.ino}`)!.offset, Buffer.byteLength(before))
        },
      )
      // the rest arrives: the pending part is completed on the next run, from the checkpoint
      appendFileSync(file, `${t} stdout F done\n`)
      const again = bufferOn(dir)
      yield* tailUntil(
        spec,
        again,
        (s) => s.eventCount >= 3,
        (s) => assert.deepStrictEqual(logsIn(s).at(-1).log, "pending done"),
      )
    })
  })

  it("the join is capped: past the cap the event goes out as it is (logtag P) and the next parts start a new one", () => {
    const join10 = criJoiner(10)
    const p = (tag: "P" | "F", log: string) => ({ tag: "k", record: { logtag: tag, log } })
    const a = join10(undefined, p("P", "12345"), 0)
    assert.isUndefined(a.event)
    const b = join10(a.pending, p("P", "67890"), 10)
    assert.deepStrictEqual(b.event?.record, { logtag: "P", log: "1234567890", parts: 2 })
    assert.isUndefined(b.pending)
    const c = join10(b.pending, p("F", "x"), 20)
    assert.deepStrictEqual(c.event?.record, { logtag: "F", log: "x" })
  })
})

describe("tail: reading on file changes between polls", () => {
  it.live("with a one-hour poll, lines appended to a tracked file are read all the same (woken by the change)", () => {
    const dir = fresh()
    const file = join(dir, "logs", "app.log")
    writeFileSync(file, lines("a", 3))
    const b = bufferOn(dir)
    const spec: TailSpec = {
      input: "tail",
      globs: [join(dir, "logs", "*.log")],
      parse: tailParser("t"),
      pollMs: 3_600_000,
    }
    return Effect.gen(function* () {
      const fiber = yield* Effect.fork(runTail(spec))
      yield* eventually(() => b.ref.store !== undefined && b.ref.store.eventCount >= 3, "the first scan")
      appendFileSync(file, lines("b", 2))
      yield* eventually(() => b.ref.store!.eventCount >= 5, "the appended lines")
      appendFileSync(file, lines("c", 1))
      yield* eventually(() => b.ref.store!.eventCount >= 6, "a line appended later")
      yield* Fiber.interrupt(fiber)
      assert.deepStrictEqual(
        logsIn(b.ref.store!).map((r) => r.log),
        ["a-0", "a-1", "a-2", "b-0", "b-1", "c-0"],
      )
    }).pipe(Effect.provide(b.layer))
  })
})

describe("one agent per buffer folder", () => {
  it.live("a second buffer on the same folder is refused with a clear error; after the first closes it opens", () =>
    Effect.gen(function* () {
      const dir = join(fresh(), "buffer")
      const first = yield* Scope.make()
      yield* Layer.buildWithScope(DiskBuffer.layer({ dir, maxBytes: 1 << 20 }), first)
      const second = yield* Effect.either(Effect.scoped(Layer.build(DiskBuffer.layer({ dir, maxBytes: 1 << 20 }))))
      assert.isTrue(Either.isLeft(second))
      const e = Either.isLeft(second) ? second.left : undefined
      assert.strictEqual(e?._tag, "BufferLocked")
      assert.match(e?.message ?? "", /in use by another agent \(pid \d+\).*--buffer-dir/)
      yield* Scope.close(first, Exit.void)
      yield* Effect.scoped(Layer.build(DiskBuffer.layer({ dir, maxBytes: 1 << 20 })))
    }),
  )

  it.live("a lock held by another live process refuses; one left by a dead process is taken over", () =>
    Effect.gen(function* () {
      const dir = join(fresh(), "buffer")
      mkdirSync(dir, { recursive: true })
      writeFileSync(join(dir, "buffer.lock"), `${process.ppid}\n`) // the test runner: alive
      const held = yield* Effect.either(Effect.scoped(Layer.build(DiskBuffer.layer({ dir, maxBytes: 1 << 20 }))))
      assert.isTrue(Either.isLeft(held) && held.left._tag === "BufferLocked" && held.left.pid === process.ppid)
      const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"]).stdout.toString()
      writeFileSync(join(dir, "buffer.lock"), `${dead}\n`)
      yield* Effect.scoped(Layer.build(DiskBuffer.layer({ dir, maxBytes: 1 << 20 })))
    }),
  )
})
