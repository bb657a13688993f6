/**
 * Isolation (docs/isolation.md): a tenant whose destination keeps failing is set aside in the retry topic, the other
 * tenants of its partition keep flowing, and it goes back to direct delivery only once the retry path caught up.
 * In-memory layers (Destinations, DeadLetters, RetryTopic) and TestClock: the retries' waits are stepped, not slept.
 */
import { assert, describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Layer, Logger, LogLevel, Schema, TestClock } from "effect"
import { DestinationError } from "../../src/domain/Errors.js"
import { type Target, TenantsFile } from "../../src/domain/Tenant.js"
import { Destinations } from "../../src/route/Destinations.js"
import type { MemoryLog, RecordBatch, SourceRecord } from "../../src/route/EventStream.js"
import { memoryLog } from "../../src/route/EventStream.js"
import { makeIsolationState, noteDiverted, noteFailure, planBatch, routeOf } from "../../src/route/Isolation.js"
import { originOf, sourceOf } from "../../src/route/RecordBatch.js"
import { RetryTopic, retryMemoryLog, retryTopicName } from "../../src/route/RetryTopic.js"
import { defaultRouterOptions, makeRouter } from "../../src/route/Router.js"
import { ConfigStore } from "../../src/shared/ConfigStore.js"
import { Crypto } from "../../src/shared/Crypto.js"
import { type DeadLetter, DeadLetters } from "../../src/shared/DeadLetter.js"
import { EventCodec } from "../../src/wire/Wire.js"

const A = "tenant-a"
const B = "tenant-b"
const tenants = Schema.decodeUnknownSync(TenantsFile)({
  [A]: { AccessKey: A, EncryptionKey: "", UserID: "u-a", targets: [{ http: { url: "http://a.example/in" } }] },
  [B]: { AccessKey: B, EncryptionKey: "", UserID: "u-b", targets: [{ file: "b.log" }] },
})

const wire = (accessKey: string, n: number) =>
  EventCodec.encode({
    timestamp: { seconds: "1621322656", nanos: 0 },
    agent_id: "agent-1",
    agentId: "agent-1",
    tag: "t",
    message: JSON.stringify({ n }),
    UserID: `u-${accessKey.slice(-1)}`,
    AccessKey: accessKey,
  } as never)

const rec = (offset: number, accessKey: string, n: number): SourceRecord => ({
  offset: String(offset),
  key: Buffer.from(accessKey),
  value: wire(accessKey, n),
  timestamp: "0",
})

const batchOf = (log: MemoryLog, topic: string, records: ReadonlyArray<SourceRecord>): RecordBatch => ({
  topic,
  partition: 0,
  records,
  highWatermark: String(Number(records.at(-1)!.offset) + 1),
  commit: (offset) => Effect.sync(() => log.commits.push({ partition: 0, offset })),
  retryFrom: (offset, delay) =>
    Effect.sync(() => log.rewinds.push({ partition: 0, offset, delayMs: Duration.toMillis(Duration.decode(delay)) })),
  heartbeat: Effect.void,
  isStale: Effect.succeed(false),
  done: Effect.sync(() => {
    log.released++
  }),
})

/** Runs `effect`, stepping the TestClock 50 ms at a time until it ends (the retries' delays pass, nothing sleeps). */
const stepped = <A>(effect: Effect.Effect<A>) =>
  Effect.gen(function* () {
    const fiber = yield* Effect.fork(effect)
    for (let i = 0; i < 10_000; i++) {
      const done = yield* Fiber.poll(fiber)
      if (done._tag === "Some") break
      yield* TestClock.adjust("50 millis")
    }
    return yield* Fiber.join(fiber)
  })

const ns = (lines: ReadonlyArray<string> | undefined) =>
  (lines ?? []).map((l) => JSON.parse(JSON.parse(l).message).n as number)
const retriedNs = (written: ReadonlyArray<{ record: SourceRecord }>) =>
  written.map((w) => JSON.parse((EventCodec.decode(w.record.value!) as unknown as { message: string }).message).n)

/** A router over in-memory layers; `aDown()` decides whether A's http target fails. */
const setup = (aDown: () => boolean, options: { readonly retryDown?: () => boolean } = {}) => {
  const delivered = new Map<string, Array<string>>()
  const attempts = { a: 0 }
  const letters: Array<DeadLetter> = []
  const retryLog = retryMemoryLog()
  const outcome = (target: Target) => {
    if (!("http" in target)) return undefined
    attempts.a++
    return aDown() ? new DestinationError({ target: "http", retryable: true, detail: "503" }) : undefined
  }
  const layer = Layer.mergeAll(
    ConfigStore.layerMemory(tenants),
    Crypto.Default,
    Destinations.layerMemory({ delivered, outcome }),
    DeadLetters.layerMemory(letters),
    RetryTopic.layerMemory(retryLog, options.retryDown === undefined ? {} : { fail: options.retryDown }),
  )
  const router = makeRouter({
    ...defaultRouterOptions,
    retryBase: "50 millis",
    retryCap: "200 millis",
    retryBudget: "10 seconds",
    isolateAfter: "1 second",
    drainMax: "5 seconds",
  })
  return { delivered, attempts, letters, retryLog, layer, router }
}

const quiet = <A, E, R>(e: Effect.Effect<A, E, R>) => e.pipe(Logger.withMinimumLogLevel(LogLevel.None))

describe("Isolation (decisions)", () => {
  it("routes a diverted tenant: divert while failing, drain while the retry path lags, direct once caught up", () => {
    const s = makeIsolationState({ isolateAfterMs: 1000, drainMaxMs: 500 })
    assert.strictEqual(routeOf(s, A, false, undefined, 0), "direct", "not diverted: direct")
    noteDiverted(s, A, 0, 9n)
    assert.strictEqual(routeOf(s, A, false, new Map([[0, 10n]]), 0), "divert", "failing: divert")
    assert.strictEqual(routeOf(s, A, true, new Map([[0, 5n]]), 100), "drain", "healthy, lagging: drain")
    assert.strictEqual(routeOf(s, A, true, new Map([[0, 9n]]), 700), "divert", "drain longer than drainMax")
    assert.strictEqual(routeOf(s, A, true, new Map([[0, 9n]]), 750), "divert", "gave up: stays diverted")
    assert.strictEqual(routeOf(s, A, true, new Map([[0, 10n]]), 800), "direct", "caught up: direct")
    assert.isFalse(s.diverted.has(A))
  })

  it("plans a batch: a diverted tenant's records marked, the others kept, a drain cuts before its first record", () => {
    const s = makeIsolationState({ isolateAfterMs: 1000, drainMaxMs: 500 })
    noteDiverted(s, A, 0, 3n)
    const order = [B, A, B, A]
    const failing = s.diverted.size > 0 ? (t: string) => t !== A : () => true
    const p1 = planBatch(s, 4, (i) => order[i], failing, undefined, 0)
    assert.deepStrictEqual([...p1.divert], [0, 1, 0, 1])
    assert.strictEqual(p1.cut, 4)
    const p2 = planBatch(
      s,
      4,
      (i) => order[i],
      () => true,
      new Map([[0, 2n]]),
      10,
    )
    assert.strictEqual(p2.cut, 1, "cut at A's first record")
    const p3 = planBatch(
      s,
      4,
      (i) => order[i],
      () => true,
      new Map([[0, 4n]]),
      20,
    )
    assert.deepStrictEqual([p3.cut, [...p3.divert], p3.undiverted], [4, [0, 0, 0, 0], [A]])
  })

  it("bounds the failing targets and names the retry topic safely", () => {
    const s = makeIsolationState({ isolateAfterMs: 1, drainMaxMs: 1 })
    for (let i = 0; i < 5000; i++) noteFailure(s, `t${i}`, i)
    assert.strictEqual(s.failing.size, 4096)
    assert.strictEqual(retryTopicName("fb-kafka", "routers/eu 1"), "fb-kafka-retry-routers_eu_1")
    assert.isAtMost(retryTopicName("t".repeat(240), "g".repeat(50)).length, 249)
  })
})

describe("Isolation (router, in memory)", () => {
  it.effect("a tenant failing past the threshold goes to the retry topic; the partition commits and B flows", () => {
    let down = true
    const { delivered, attempts, retryLog, layer, router } = setup(() => down)
    const log = memoryLog()
    return quiet(
      Effect.gen(function* () {
        const r = yield* router
        yield* stepped(r.handle(batchOf(log, "src", [rec(0, A, 1), rec(1, B, 1), rec(2, A, 2), rec(3, B, 2)])))
        assert.deepStrictEqual(log.commits, [{ partition: 0, offset: "3" }], "the whole batch committed")
        assert.deepStrictEqual(log.rewinds, [], "no pause")
        assert.deepStrictEqual(ns(delivered.get("file:b.log")), [1, 2])
        assert.deepStrictEqual(retriedNs(retryLog.written), [1, 2], "A's records set aside, in order")
        const tried = attempts.a
        // A diverted: its next records go straight to the retry topic, without trying its destination.
        yield* stepped(r.handle(batchOf(log, "src", [rec(4, A, 3), rec(5, B, 3)])))
        assert.strictEqual(attempts.a, tried, "A's destination not tried on the source path")
        assert.deepStrictEqual(retriedNs(retryLog.written), [1, 2, 3])
        assert.deepStrictEqual(ns(delivered.get("file:b.log")), [1, 2, 3])
        assert.deepStrictEqual(log.commits.at(-1), { partition: 0, offset: "5" })
        // The retry path: fails while A is down (pauses its partition), delivers in order once A is back.
        const retryLogs = memoryLog()
        const retried = retryLog.written.map((w, i) => ({ ...w.record, offset: String(i) }))
        yield* stepped(r.handleRetry(batchOf(retryLogs, "retry", retried)))
        assert.strictEqual(retryLogs.rewinds[0]?.offset, "0", "the retry partition paused at its head")
        down = false
        yield* stepped(r.handleRetry(batchOf(retryLogs, "retry", retried)))
        assert.deepStrictEqual(retryLogs.commits.at(-1), { partition: 0, offset: "2" })
        assert.deepStrictEqual(ns(delivered.get("http:a.example")), [1, 2, 3])
        // A healthy, the retry group not committed past A's last diverted offset yet: a short drain cut before A.
        yield* stepped(r.handle(batchOf(log, "src", [rec(6, B, 4), rec(7, A, 4), rec(8, B, 5)])))
        assert.deepStrictEqual(log.commits.at(-1), { partition: 0, offset: "6" })
        assert.deepStrictEqual(log.rewinds.at(-1), { partition: 0, offset: "7", delayMs: 200 })
        assert.deepStrictEqual(ns(delivered.get("file:b.log")), [1, 2, 3, 4])
        // Caught up: A delivered directly again, after everything of the retry path.
        retryLog.committed.set(0, 3n)
        yield* TestClock.adjust("1 second")
        yield* stepped(r.handle(batchOf(log, "src", [rec(7, A, 4), rec(8, B, 5)])))
        assert.deepStrictEqual(ns(delivered.get("http:a.example")), [1, 2, 3, 4])
        assert.deepStrictEqual(ns(delivered.get("file:b.log")), [1, 2, 3, 4, 5])
        assert.deepStrictEqual(log.commits.at(-1), { partition: 0, offset: "8" })
        assert.strictEqual(r.isolation?.state.diverted.size, 0)
      }).pipe(Effect.provide(layer)),
    )
  })

  it.effect(
    "a router new to a partition learns from the retry topic who is set aside: A stays behind its backlog",
    () => {
      // Another router (or this one before a restart) set A's records 1 and 2 aside; the retry path delivered none yet.
      const { delivered, retryLog, layer, router } = setup(() => false)
      retryLog.written.push({ partition: 0, record: rec(0, A, 1) }, { partition: 0, record: rec(2, A, 2) })
      retryLog.committed.set(0, 0n)
      const log = memoryLog()
      return quiet(
        Effect.gen(function* () {
          const r = yield* router
          // A's destination works, but its new record 3 must wait for 1 and 2: a drain cuts the batch before it.
          yield* stepped(r.handle(batchOf(log, "src", [rec(3, B, 1), rec(4, A, 3), rec(5, B, 2)])))
          assert.deepStrictEqual(delivered.get("http:a.example"), undefined, "A's new record not delivered first")
          assert.deepStrictEqual(ns(delivered.get("file:b.log")), [1])
          assert.deepStrictEqual(log.commits.at(-1), { partition: 0, offset: "3" })
          assert.deepStrictEqual(log.rewinds.at(-1), { partition: 0, offset: "4", delayMs: 200 })
          // The retry path delivers the backlog and commits past it: A goes direct, after its set-aside records.
          const retryLogs = memoryLog()
          const retried = retryLog.written.map((w, i) => ({ ...w.record, offset: String(i) }))
          yield* stepped(r.handleRetry(batchOf(retryLogs, "retry", retried)))
          retryLog.committed.set(0, 2n)
          yield* TestClock.adjust("1 second")
          yield* stepped(r.handle(batchOf(log, "src", [rec(4, A, 3), rec(5, B, 2)])))
          assert.deepStrictEqual(ns(delivered.get("http:a.example")), [1, 2, 3])
          assert.deepStrictEqual(ns(delivered.get("file:b.log")), [1, 2])
          assert.strictEqual(r.isolation?.state.diverted.size, 0)
        }).pipe(Effect.provide(layer)),
      )
    },
  )

  it.effect("a blip under the threshold keeps the pause and rewind; nothing goes to the retry topic", () => {
    const { retryLog, layer, router } = setup(() => true)
    const log = memoryLog()
    return quiet(
      Effect.gen(function* () {
        const r = yield* makeRouter({
          ...defaultRouterOptions,
          retryBase: "50 millis",
          retryCap: "100 millis",
          retryBudget: "300 millis",
          isolateAfter: "1 minute",
        })
        yield* stepped(r.handle(batchOf(log, "src", [rec(0, B, 1), rec(1, A, 1), rec(2, B, 2)])))
        assert.deepStrictEqual(log.commits, [{ partition: 0, offset: "0" }], "the prefix before A")
        assert.strictEqual(log.rewinds[0]?.offset, "1")
        assert.deepStrictEqual(retryLog.written, [])
        void router
      }).pipe(Effect.provide(layer)),
    )
  })

  it.effect("a retry topic that refuses the records: nothing committed past them (read again), nothing lost", () => {
    const { retryLog, layer, router } = setup(() => true, { retryDown: () => true })
    const log = memoryLog()
    return quiet(
      Effect.gen(function* () {
        const r = yield* router
        yield* stepped(r.handle(batchOf(log, "src", [rec(0, B, 1), rec(1, A, 1), rec(2, B, 2)])))
        assert.deepStrictEqual(retryLog.written, [])
        assert.isTrue(
          log.commits.every((c) => Number(c.offset) < 1),
          "no commit at or past A's record",
        )
        assert.strictEqual(log.rewinds[0]?.offset, "1")
      }).pipe(Effect.provide(layer)),
    )
  })
})

describe("a record set aside keeps its source place", () => {
  it("sourceOf reads the retry topic's headers, and refuses malformed ones", () => {
    const h = { "source-topic": Buffer.from("fb-kafka"), "source-partition": Buffer.from("2"), "source-offset": "41" }
    expect(sourceOf(h)).toEqual({ topic: "fb-kafka", partition: 2, offset: "41" })
    expect(sourceOf(undefined)).toBeUndefined()
    expect(sourceOf({ ...h, "source-offset": "-1" })).toBeUndefined()
    expect(sourceOf({ ...h, "source-topic": "bad topic/" })).toBeUndefined()
    expect(sourceOf({ "source-topic": "t", "source-partition": "0" })).toBeUndefined()
  })

  it("originOf names a retry group by the source's place, so keys and ids match a direct delivery", () => {
    const rec = (offset: string, source?: { topic: string; partition: number; offset: string }) => ({
      offset,
      key: null,
      value: null,
      timestamp: "0",
      ...(source === undefined ? {} : { source }),
    })
    const retry = { topic: "fb-kafka-retry-g", partition: 2 }
    const fromSource = [
      rec("7", { topic: "fb-kafka", partition: 2, offset: "150" }),
      rec("8", { topic: "fb-kafka", partition: 2, offset: "151" }),
    ]
    expect(originOf(retry, fromSource)).toEqual({ topic: "fb-kafka", partition: 2, offsets: ["150", "151"] })
    // No headers (or mixed partitions): the batch's own place.
    expect(originOf(retry, [rec("7"), rec("8")])).toEqual({
      topic: "fb-kafka-retry-g",
      partition: 2,
      offsets: ["7", "8"],
    })
    const mixed = [fromSource[0]!, rec("9", { topic: "fb-kafka", partition: 1, offset: "3" })]
    expect(originOf(retry, mixed).topic).toBe("fb-kafka-retry-g")
  })
})
