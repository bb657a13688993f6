/**
 * `opensearch` targets against a real single-node OpenSearch 2.19 (scripts/servers.mjs): documents
 * counted with `_count` after `_refresh`, read back with `_search`; replays; a mapping conflict; the
 * server stopped and started again while a delivery retries on the shared backoff.
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Either, Fiber, Schema, type Scope } from "effect"
import { OpenSearchTarget } from "../../../src/domain/Tenant.js"
import { type DeliveryBatch, type Destination, deliverRetrying } from "../../../src/route/destinations/Delivery.js"
import { makeOpenSearchDestination } from "../../../src/route/destinations/OpenSearch.js"
import { backoff } from "../../../src/shared/Retry.js"
import { makeBatch, paddedMessage, reportThroughput, restart, runId, stopServer, useServer } from "./support.js"

const run = runId()
let url = ""
let release: () => Promise<void> = async () => {}

beforeAll(async () => {
  const s = await useServer("opensearch")
  url = s.url
  release = s.release
})
afterAll(async () => {
  await fetch(`${url}/it-${run}-*`, { method: "DELETE" }).catch(() => undefined)
  await release()
})

const build = (over: object = {}): Effect.Effect<Destination, never, Scope.Scope> =>
  makeOpenSearchDestination(
    Either.getOrThrow(
      Schema.decodeUnknownEither(OpenSearchTarget)({
        opensearch: { urls: [url], index: `it-${run}-{user_id}-{yyyy.MM.dd}`, timeoutMs: 10_000, ...over },
      }),
    ),
  ).pipe(Effect.orDie)

const os = (path: string, init?: RequestInit) =>
  Effect.promise(async () => {
    const r = await fetch(`${url}${path}`, init)
    return (await r.json()) as Record<string, unknown>
  })

const countOf = (index: string) =>
  Effect.gen(function* () {
    yield* os(`/${index}/_refresh`, { method: "POST" })
    return (yield* os(`/${index}/_count`)).count as number
  })

const sourcesOf = (index: string) =>
  Effect.gen(function* () {
    const r = yield* os(`/${index}/_search?size=10000`)
    const hits = (r.hits as { hits: Array<{ _id: string; _source: unknown }> }).hits
    return hits.map((h) => ({ id: h._id, line: JSON.stringify(h._source) }))
  })

const sameLines = (got: ReadonlyArray<string>, batches: ReadonlyArray<DeliveryBatch>) =>
  assert.deepStrictEqual([...got].sort(), batches.flatMap((b) => [...b.lines]).sort())

describe("opensearch target (real OpenSearch 2.19)", () => {
  it.scopedLive("N events of two tenants land as exactly N documents each in their index, as given", () =>
    Effect.gen(function* () {
      const d = yield* build()
      for (const user of ["tenant-a", "tenant-b"]) {
        const batches = [0, 500].map((first) => makeBatch({ userId: user, firstOffset: first, count: 500 }))
        for (const b of batches) assert.deepStrictEqual(yield* d.deliver(b), { failures: [] })
        const index = `it-${run}-${user}-2026.12.01`
        assert.strictEqual(yield* countOf(index), 1000)
        const docs = yield* sourcesOf(index)
        sameLines(
          docs.map((x) => x.line),
          batches,
        )
        const withId = docs.find((x) => x.line.includes(`"event_id":"${user}-0"`))
        assert.strictEqual(withId?.id, `${user}-0`)
      }
    }),
  )

  it.scopedLive("a replay overwrites: the same N documents, with and without event_id", () =>
    Effect.gen(function* () {
      const d = yield* build()
      const b = makeBatch({ userId: "tenant-r", partition: 4, firstOffset: 7000, count: 300 })
      yield* d.deliver(b)
      yield* d.deliver(b)
      yield* d.deliver(structuredClone(b))
      const index = `it-${run}-tenant-r-2026.12.01`
      assert.strictEqual(yield* countOf(index), 300)
      sameLines(
        (yield* sourcesOf(index)).map((x) => x.line),
        [b],
      )
    }),
  )

  it.scopedLive(
    "a mapping conflict is a permanent failure of that line only, with the server's reason and no content",
    () =>
      Effect.gen(function* () {
        const d = yield* build({ index: `it-${run}-conflict` })
        const good = makeBatch({ userId: "tenant-c", firstOffset: 0, count: 3, message: () => ({ n: 1 }) })
        yield* d.deliver(good)
        const mixed = makeBatch({
          userId: "tenant-c",
          firstOffset: 3,
          count: 3,
          message: (i) => ({ n: i === 1 ? "secret-not-a-number" : 2 }),
        })
        const r = yield* d.deliver(mixed)
        assert.strictEqual(r.failures.length, 1)
        const f = r.failures[0]!
        assert.strictEqual(f.index, 1)
        assert.isFalse(f.retryable)
        assert.match(f.reason, /^400 mapper_parsing_exception: failed to parse field \[message\.n\] of type \[long\]/)
        assert.notInclude(f.reason, "secret-not-a-number")
        assert.strictEqual(yield* countOf(`it-${run}-conflict`), 5)
      }),
  )

  it.scopedLive("20 000 events in 4 bulk requests of 5 000 (measured)", () =>
    Effect.gen(function* () {
      const d = yield* build()
      const batches = [0, 1, 2, 3].map((k) =>
        makeBatch({ userId: "tenant-t", firstOffset: k * 5000, count: 5000, message: paddedMessage(300) }),
      )
      const bytes = batches.reduce((n, b) => n + b.lines.reduce((m, l) => m + l.length + 1, 0), 0)
      const t0 = performance.now()
      for (const b of batches) assert.deepStrictEqual(yield* d.deliver(b), { failures: [] })
      reportThroughput("opensearch 2.19 (1 node)", 20_000, bytes, performance.now() - t0)
      assert.strictEqual(yield* countOf(`it-${run}-tenant-t-2026.12.01`), 20_000)
    }),
  )

  it.scopedLive("the server stopped: retryable; a delivery retrying on the shared backoff lands once it is back", () =>
    Effect.gen(function* () {
      const d = yield* build({ urls: [url], timeoutMs: 5000 })
      const b = makeBatch({ userId: "tenant-o", firstOffset: 0, count: 200 })
      yield* Effect.promise(() => stopServer("opensearch"))
      const e = yield* Effect.flip(d.deliver(b))
      assert.isTrue(e.retryable)
      assert.strictEqual(e.detail, "opensearch unreachable: ECONNREFUSED")
      const retrying = yield* Effect.fork(deliverRetrying(d, b, backoff({ base: "200 millis", cap: "2 seconds" })))
      yield* Effect.promise(() => restart("opensearch"))
      assert.deepStrictEqual(yield* Fiber.join(retrying), [])
      assert.strictEqual(yield* countOf(`it-${run}-tenant-o-2026.12.01`), 200)
    }),
  )
})
