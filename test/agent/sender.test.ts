/**
 * The sender in process (no build needed) against the fake ingester over real TLS: the SendEvent fallback,
 * first sends and resends counted apart, an event too large for any message, a failed delete.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Layer, Logger, Redacted } from "effect"
import { BufferStore, type NewRecord, type SyncMode } from "../../src/agent/buffer/BufferStore.js"
import { DiskBuffer } from "../../src/agent/buffer/DiskBuffer.js"
import { makeSender, type SenderOptions } from "../../src/agent/sender/Sender.js"
import { Crypto } from "../../src/shared/Crypto.js"
import { registry } from "../../src/shared/Metrics.js"
import { testCerts } from "../support/certs.js"
import { type FakeIngester, type FakeIngesterOptions, startFakeIngester } from "../support/fakeIngester.js"

const root = mkdtempSync(join(tmpdir(), "spillway-sender-"))
afterAll(() => rmSync(root, { recursive: true, force: true }))
let n = 0

const record = (prefix: string, i: number, size = 20): NewRecord => ({
  tag: "t",
  ts: `${1_700_000_000_000_000_000n + BigInt(i)}`,
  eventId: `${prefix}-${i}`,
  record: JSON.stringify({ log: `${prefix}-${i}`, pad: "x".repeat(size) }),
})
const records = (prefix: string, from: number, to: number) =>
  Array.from({ length: to - from }, (_, i) => record(prefix, from + i))

/** A metric's value in the shared prom-client registry (0 when absent), summed over matching labels. */
const metric = (name: string, labels: Record<string, string> = {}) =>
  Effect.promise(async () => {
    const m = registry.getSingleMetric(name)
    if (m === undefined) return 0
    const v = await m.get()
    return v.values
      .filter((x) => Object.entries(labels).every(([k, l]) => x.labels[k] === l))
      .reduce((s, x) => s + x.value, 0)
  })

const waitFor = (ing: FakeIngester, pred: () => boolean, what: string, ms = 15_000) =>
  Effect.promise(() => ing.waitFor(pred, ms, what))

interface Harness {
  readonly ingester: FakeIngester
  readonly dir: string
  readonly logs: Array<string>
}

/**
 * Starts a fake ingester and the sender (in this process, on a fresh buffer), runs `body`, then stops both.
 * `open` wraps the buffer's store (to inject failures).
 */
const withSender = <A, E>(
  options: {
    readonly ingester?: FakeIngesterOptions
    readonly sender?: Partial<SenderOptions>
    readonly open?: (dir: string, sync: SyncMode) => BufferStore
  },
  body: (h: Harness) => Effect.Effect<A, E, DiskBuffer>,
) =>
  Effect.gen(function* () {
    const certs = yield* Effect.promise(() => testCerts())
    const ingester = yield* Effect.acquireRelease(
      Effect.promise(() => startFakeIngester({ tokens: ["good-token"], ...options.ingester })),
      (i) => Effect.promise(() => i.stop()),
    )
    const dir = join(root, `case-${++n}`)
    const logs: Array<string> = []
    const logger = Logger.make(({ message }) => {
      logs.push(Array.isArray(message) ? message.join(" ") : String(message))
      if (process.env.SENDER_DEBUG) console.error(logs.at(-1))
    })
    const senderOptions: SenderOptions = {
      address: ingester.address,
      caCert: readFileSync(certs.caCert),
      insecure: false,
      serverName: undefined,
      accessKey: "test-key",
      token: { _tag: "value", token: Redacted.make("good-token") },
      agentId: "test-agent",
      batch: { maxEvents: 100, maxBytes: 1024 * 1024, lingerMs: 10 },
      window: 4,
      configRefresh: Duration.hours(1),
      ackTimeout: Duration.seconds(10),
      retryBase: Duration.millis(50),
      retryCap: Duration.millis(300),
      authRetry: Duration.millis(100),
      shutdownGrace: Duration.seconds(1),
      maxMessageBytes: 8 * 1024 * 1024,
      ...options.sender,
    }
    const layer = Layer.mergeAll(
      DiskBuffer.layer({ dir, maxBytes: 64 * 1024 * 1024, ...(options.open ? { open: options.open } : {}) }),
      Crypto.Default,
      Logger.replace(Logger.defaultLogger, logger),
    )
    return yield* Effect.gen(function* () {
      const sender = yield* makeSender(senderOptions)
      yield* Effect.forkScoped(sender.run)
      return yield* body({ ingester, dir, logs })
    }).pipe(Effect.scoped, Effect.provide(layer))
  }).pipe(Effect.scoped)

const append = (rs: ReadonlyArray<NewRecord>) => Effect.flatMap(DiskBuffer, (b) => b.append("test", rs))

const bufferEmpty = (ing: FakeIngester) =>
  Effect.gen(function* () {
    const b = yield* DiskBuffer
    yield* waitFor(ing, () => b.eventCount() === 0, "an empty buffer")
  })

const expectOnce = (ing: FakeIngester, ids: ReadonlyArray<string>) => {
  const got = ing.ids.filter((id) => ids.includes(id))
  assert.deepStrictEqual([...new Set(got)].sort(), [...ids].sort())
}

describe("sender: an ingester without the batch RPC (the proof of concept's)", () => {
  it.live(
    "falls back to SendEvent (a stream per batch), says so once, and tries the batch RPC again on reconnect",
    () =>
      withSender({ ingester: { batchRpc: false } }, ({ ingester, logs }) =>
        Effect.gen(function* () {
          const first = records("a", 0, 450)
          yield* append(first)
          yield* waitFor(ingester, () => ingester.received.length >= 450, "450 events over SendEvent")
          yield* bufferEmpty(ingester)
          expectOnce(
            ingester,
            first.map((r) => r.eventId),
          )
          assert.isAtLeast(ingester.streamsSeen, 5) // batches of at most 100: one stream each
          assert.strictEqual(ingester.batchesSeen, 0)
          yield* append(records("b", 0, 50))
          yield* waitFor(ingester, () => ingester.received.length >= 500, "50 more over SendEvent")
          const fallbacks = logs.filter((l) => /SendEventBatches/.test(l) && /UNIMPLEMENTED/.test(l))
          assert.strictEqual(fallbacks.length, 1, logs.join("\n"))
          assert.match(fallbacks[0]!, /SendEvent/)
          // The ingester is upgraded: after the reconnect the batch RPC is used again.
          yield* Effect.promise(() => ingester.stop())
          ingester.batchRpc = true
          yield* Effect.promise(() => ingester.start())
          yield* append(records("c", 0, 100))
          yield* waitFor(ingester, () => ingester.ids.filter((id) => id.startsWith("c-")).length >= 100, "c-*")
          assert.isAbove(ingester.batchesSeen, 0)
        }),
      ),
    30_000,
  )
})

describe("sender: counters", () => {
  it.live(
    "first sends and resends are counted apart",
    () =>
      withSender({ sender: { ackTimeout: Duration.millis(700) } }, ({ ingester }) =>
        Effect.gen(function* () {
          const sent0 = yield* metric("spillway_agent_events_sent_total")
          const resent0 = yield* metric("spillway_agent_events_resent_total")
          const acked0 = yield* metric("spillway_agent_events_acked_total")
          ingester.holdAcks = true
          yield* append(records("r", 0, 200))
          yield* waitFor(ingester, () => ingester.batchesSeen >= 2, "2 batches seen")
          // no ack: the ack timeout ends the stream and everything is sent again
          yield* waitFor(ingester, () => ingester.batchesSeen >= 4, "the batches sent again")
          ingester.releaseAcks()
          yield* bufferEmpty(ingester)
          assert.strictEqual((yield* metric("spillway_agent_events_sent_total")) - sent0, 200)
          assert.isAtLeast((yield* metric("spillway_agent_events_resent_total")) - resent0, 200)
          assert.strictEqual((yield* metric("spillway_agent_events_acked_total")) - acked0, 200)
        }),
      ),
    30_000,
  )
})

describe("sender: what can never be sent, and a failed delete", () => {
  it.live(
    "an event too large for the ingester's message limit goes to rejected/; the others arrive",
    () =>
      withSender({ ingester: { maxMessageBytes: 8 * 1024 * 1024 } }, ({ ingester, dir }) =>
        Effect.gen(function* () {
          const rejected0 = yield* metric("spillway_agent_events_rejected_total")
          const big: NewRecord = { ...record("big", 0), record: JSON.stringify({ log: "y".repeat(5 * 1024 * 1024) }) }
          const rest = records("s", 0, 50)
          yield* append([record("s", -1), big])
          yield* append(rest)
          yield* waitFor(ingester, () => ingester.ids.filter((id) => id.startsWith("s-")).length >= 51, "s-*")
          yield* bufferEmpty(ingester)
          expectOnce(ingester, [...rest.map((r) => r.eventId), "s--1"])
          assert.isFalse(ingester.ids.includes("big-0"))
          const files = readdirSync(join(dir, "rejected"))
          assert.strictEqual(files.length, 1)
          const saved = JSON.parse(readFileSync(join(dir, "rejected", files[0]!), "utf8"))
          assert.deepStrictEqual(
            saved.events.map((e: { event_id: string }) => e.event_id),
            ["big-0"],
          )
          assert.strictEqual((yield* metric("spillway_agent_events_rejected_total")) - rejected0, 1)
        }),
      ),
    30_000,
  )

  it.live(
    "a delete that fails after an ack: the rows are sent again without a restart and then deleted",
    () => {
      let failures = 1
      const open = (d: string, m: SyncMode) => {
        const store = new BufferStore(d, m)
        const remove = store.remove.bind(store)
        store.remove = (first, last) => {
          if (failures > 0) {
            failures--
            throw Object.assign(new Error("disk I/O error"), { code: "SQLITE_IOERR" })
          }
          return remove(first, last)
        }
        return store
      }
      return withSender({ open }, ({ ingester }) =>
        Effect.gen(function* () {
          const rs = records("d", 0, 50)
          yield* append(rs)
          yield* bufferEmpty(ingester)
          assert.strictEqual(failures, 0)
          expectOnce(
            ingester,
            rs.map((r) => r.eventId),
          )
          assert.isAtLeast(ingester.received.length, 100) // the first batch arrived twice
        }),
      )
    },
    30_000,
  )
})

describe("sender: a batch that fills during its linger", () => {
  it.live(
    "each row is read from the buffer once, however many looks the batch took",
    () => {
      let peeked = 0
      const open = (d: string, m: SyncMode) => {
        const store = new BufferStore(d, m)
        const peek = store.peek.bind(store)
        store.peek = (afterId, maxEvents, maxBytes) => {
          const rows = peek(afterId, maxEvents, maxBytes)
          peeked += rows.length
          return rows
        }
        return store
      }
      const sender = { batch: { maxEvents: 100, maxBytes: 1024 * 1024, lingerMs: 1000 } }
      return withSender({ open, sender }, ({ ingester }) =>
        Effect.gen(function* () {
          const rs = records("l", 0, 100)
          yield* append(rs.slice(0, 10))
          yield* waitFor(ingester, () => peeked >= 10, "the first rows read") // the batch now lingers
          yield* append(rs.slice(10))
          yield* bufferEmpty(ingester)
          expectOnce(
            ingester,
            rs.map((r) => r.eventId),
          )
          assert.strictEqual(ingester.batchesSeen, 1)
          assert.strictEqual(peeked, 100)
        }),
      )
    },
    30_000,
  )
})

describe("sender: the rejected folder exists only when needed", () => {
  it.live("nothing rejected, no folder", () =>
    withSender({}, ({ ingester, dir }) =>
      Effect.gen(function* () {
        yield* append(records("e", 0, 10))
        yield* bufferEmpty(ingester)
        assert.isFalse(existsSync(join(dir, "rejected")))
      }),
    ),
  )
})

describe("sender: TLS by IP", () => {
  it.live("the certificate is still checked against the IP: one without it is refused", () =>
    withSender({ sender: { serverName: "10.9.9.9" } }, ({ ingester, logs }) =>
      Effect.gen(function* () {
        yield* append(records("tls", 0, 5))
        yield* waitFor(
          ingester,
          () => logs.some((l) => /connection to the ingester failed/.test(l)),
          "a refused connection",
        )
        assert.strictEqual(ingester.received.length, 0)
        assert.strictEqual(ingester.exchanges, 0)
      }),
    ),
  )
})

describe("sender: batches within the message limit", () => {
  it.live("a batch byte limit set above the ingester's message limit is cut to fit (encrypted size)", () =>
    withSender(
      {
        ingester: { maxMessageBytes: 1024 * 1024 },
        sender: { maxMessageBytes: 1024 * 1024, batch: { maxEvents: 1000, maxBytes: 64 * 1024 * 1024, lingerMs: 10 } },
      },
      ({ ingester }) =>
        Effect.gen(function* () {
          const rs = Array.from({ length: 20 }, (_, i) => record("w", i, 100_000)) // ~200 KB each as hex
          yield* append(rs)
          yield* bufferEmpty(ingester)
          expectOnce(
            ingester,
            rs.map((r) => r.eventId),
          )
          assert.isAtLeast(ingester.batchesSeen, 4)
        }),
    ),
  )
})
