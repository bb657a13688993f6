/**
 * The pure side of opensearch targets (index names, document ids, bulk body, bulk answers), its config,
 * secrets by reference, and the HTTP edge against a local stand-in server that answers what a real
 * one would (auth headers, whole-request statuses, an oversized answer). The real server is in
 * OpenSearch.it.test.ts.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { createServer, type IncomingHttpHeaders } from "node:http"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Either, FastCheck as fc, Redacted, Schedule, Schema } from "effect"
import { DestinationError } from "../../../src/domain/Errors.js"
import { OpenSearchTarget, targetName } from "../../../src/domain/Tenant.js"
import { type DeliveryBatch, type Destination, deliverRetrying } from "../../../src/route/destinations/Delivery.js"
import {
  authorizationOf,
  makeOpenSearchDestination,
  statusFailure,
} from "../../../src/route/destinations/OpenSearch.js"
import {
  bulkFailures,
  bulkRequest,
  documentId,
  indexName,
  indexSegment,
  serverReason,
  validIndexName,
} from "../../../src/route/destinations/OpenSearchBulk.js"
import { resolveSecret } from "../../../src/route/destinations/Secrets.js"
import { openSearchItems } from "../../../src/route/destinations/StoreMetrics.js"

const decode = Schema.decodeUnknownEither(OpenSearchTarget)
const ts = Date.UTC(2026, 11, 1, 10, 30)
const ev = (offset: string, eventId?: string, userId = "tenant-a") => ({ eventId, userId, timestampMs: ts, offset })
const batch = (n: number): DeliveryBatch => ({
  topic: "fb-kafka",
  partition: 0,
  firstOffset: "0",
  lastOffset: String(n - 1),
  lines: Array.from({ length: n }, (_, i) => JSON.stringify({ i })),
  events: Array.from({ length: n }, (_, i) => ev(String(i), i % 2 === 0 ? `id-${i}` : undefined)),
})

describe("opensearch names and ids", () => {
  it("fills the index template from the event (UTC date) and keeps user ids apart", () => {
    assert.strictEqual(indexName("logs-{user_id}-{yyyy.MM.dd}", "t", ev("1")), "logs-tenant-a-2026.12.01")
    assert.strictEqual(indexName("{topic}_{yyyy}-{MM}-{dd}T{HH}", "fb-kafka", ev("1")), "fb-kafka_2026-12-01T10")
    assert.notStrictEqual(indexSegment("Alice"), indexSegment("alice"))
    assert.match(indexSegment("Al/ice"), /^al_ice-[0-9a-f]{8}$/)
    assert.isFalse(validIndexName("_x"))
    assert.isTrue(validIndexName(indexName("logs-{user_id}", "t", ev("1", undefined, "A B*C"))))
  })

  it.prop("index names from a valid template are valid for any user id", [fc.string({ maxLength: 256 })], ([user]) =>
    validIndexName(indexName("logs-{user_id}-{yyyy.MM.dd}", "fb-kafka", ev("1", undefined, user))),
  )

  it.prop(
    "_id is the event_id, else a digest of topic/partition/offset: same record, same id",
    [
      fc.string(),
      fc.nat(),
      fc.bigInt({ min: 0n, max: 2n ** 63n }),
      fc.option(fc.string({ minLength: 1, maxLength: 128 }), { nil: undefined }),
    ],
    ([topic, partition, offset, eventId]) => {
      const e = ev(String(offset), eventId)
      const id = documentId(topic, partition, e)
      if (eventId !== undefined) return id === eventId
      return (
        /^[0-9a-f]{64}$/.test(id) &&
        id === documentId(topic, partition, { ...e }) &&
        id !== documentId(topic, partition + 1, e)
      )
    },
  )

  it("builds index actions then lines; refuses lines whose index name is invalid", () => {
    const b = batch(2)
    const r = bulkRequest("logs-{user_id}", b)
    const lines = r.body.toString().split("\n")
    assert.deepStrictEqual(JSON.parse(lines[0]!), { index: { _index: "logs-tenant-a", _id: "id-0" } })
    assert.strictEqual(lines[1], '{"i":0}')
    assert.strictEqual(JSON.parse(lines[2]!).index._id, documentId("fb-kafka", 0, b.events[1]!))
    assert.strictEqual(lines[4], "")
    const bad = bulkRequest("{user_id}", { ...b, events: [ev("0", "x", "-dash"), ev("1", "y")] })
    assert.deepStrictEqual(bad.indexes, [1])
    assert.deepStrictEqual(bad.refused, [
      { index: 0, retryable: false, reason: "the index template gives an invalid index name" },
    ])
  })
})

describe("opensearch bulk answers", () => {
  const req = bulkRequest("logs", batch(3))
  it("maps item statuses: 429/5xx retryable, other 4xx permanent with the reason, without document content", () => {
    const answer = JSON.stringify({
      errors: true,
      items: [
        { index: { status: 201 } },
        {
          index: {
            status: 400,
            error: {
              type: "mapper_parsing_exception",
              reason:
                "failed to parse field [message.a] of type [long] in document with id 'x'. Preview of field's value: 'secret'",
              caused_by: { type: "illegal_argument_exception" },
            },
          },
        },
        { index: { status: 429, error: { type: "es_rejected_execution_exception", reason: "queue full" } } },
      ],
    })
    const f = Either.getOrThrow(bulkFailures(req, answer))
    assert.deepStrictEqual(f, [
      {
        index: 1,
        retryable: false,
        reason:
          "400 mapper_parsing_exception: failed to parse field [message.a] of type [long] in document with id 'x' (caused by illegal_argument_exception)",
      },
      { index: 2, retryable: true, reason: "429 es_rejected_execution_exception: queue full" },
    ])
    assert.deepStrictEqual(Either.getOrThrow(bulkFailures(req, '{"errors":false}')), [])
  })

  it("refuses answers it cannot use (not JSON, wrong shape, item count) and bounds reasons", () => {
    assert.isTrue(Either.isLeft(bulkFailures(req, "<html>")))
    assert.isTrue(Either.isLeft(bulkFailures(req, '{"errors":"yes"}')))
    assert.isTrue(Either.isLeft(bulkFailures(req, '{"errors":true,"items":[]}')))
    assert.isAtMost(serverReason("t", "x".repeat(10_000)).length, 300)
    assert.notInclude(serverReason("t", "a\u0000b\nc"), "\n")
  })

  it("maps whole-request statuses", () => {
    assert.isTrue(statusFailure(503, undefined).retryable)
    assert.isTrue(statusFailure(429, "").retryable)
    assert.deepStrictEqual(
      statusFailure(401, '{"error":{"type":"security_exception","reason":"missing authentication"}}'),
      {
        retryable: false,
        detail: "opensearch refused the credentials (http 401): security_exception: missing authentication",
      },
    )
    assert.isFalse(statusFailure(413, undefined).retryable)
  })
})

describe("opensearch config and secrets", () => {
  const dir = mkdtempSync(join(tmpdir(), "spillway-os-"))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it("decodes with defaults and refuses credentials in urls and bad templates", () => {
    const t = Either.getOrThrow(decode({ opensearch: { urls: ["http://127.0.0.1:9201"] } }))
    assert.strictEqual(t.opensearch.index, "logs-{user_id}-{yyyy.MM.dd}")
    assert.deepStrictEqual(t.opensearch.batch, { maxBytes: 5 * 1024 * 1024, maxEvents: 5000 })
    assert.strictEqual(targetName(t), "opensearch:127.0.0.1:9201/logs-{user_id}-{yyyy.MM.dd}")
    for (const opensearch of [
      { urls: [] },
      { urls: ["http://u:p@h:9200"] },
      { urls: ["http://h"], index: "Logs" },
      { urls: ["http://h"], index: "logs-{unknown}" },
      { urls: ["http://h"], index: "_logs" },
      { urls: ["http://h"], auth: { basic: { username: "u", password: "plain" } } },
    ])
      assert.isTrue(Either.isLeft(decode({ opensearch })), JSON.stringify(opensearch))
  })

  it.effect("resolves secrets from a variable or a file when the target is built; errors never show them", () =>
    Effect.gen(function* () {
      const file = join(dir, "pw")
      writeFileSync(file, "s3cr3t\n")
      assert.strictEqual(Redacted.value(yield* resolveSecret("t", { file })), "s3cr3t")
      assert.strictEqual(Redacted.value(yield* resolveSecret("t", { env: "PW" }, { PW: "x" })), "x")
      const unset = yield* Effect.flip(resolveSecret("t", { env: "PW" }, {}))
      assert.strictEqual(unset.detail, "environment variable PW is not set")
      const big = join(dir, "big")
      writeFileSync(big, "x".repeat(70_000))
      assert.include((yield* Effect.flip(resolveSecret("t", { file: big }))).detail, "is not a file of at most")
      const t = Either.getOrThrow(
        decode({ opensearch: { urls: ["http://h"], auth: { basic: { username: "u", password: { env: "PW" } } } } }),
      )
      const header = yield* authorizationOf(t, { PW: "pw" })
      assert.strictEqual(String(header), "<redacted>")
      assert.strictEqual(Redacted.value(header!), `Basic ${Buffer.from("u:pw").toString("base64")}`)
    }),
  )
})

describe("opensearch over HTTP (stand-in server)", () => {
  const seen: Array<{ headers: IncomingHttpHeaders; url: string | undefined; body: string; port: number }> = []
  let reply: (body: string) => { status: number; body: string } = () => ({ status: 200, body: '{"errors":false}' })
  const server = createServer((req, res) => {
    let body = ""
    req.on("data", (d) => {
      body += d
    })
    req.on("end", () => {
      seen.push({ headers: req.headers, url: req.url, body, port: req.socket.remotePort ?? 0 })
      const r = reply(body)
      res.writeHead(r.status, { "content-type": "application/json" }).end(r.body)
    })
  })
  let url = ""
  beforeAll(
    () =>
      new Promise<void>((resolve) =>
        server.listen(0, "127.0.0.1", () => {
          url = `http://127.0.0.1:${(server.address() as { port: number }).port}/base/`
          resolve()
        }),
      ),
  )
  afterAll(() => server.close())
  const build = (extra: object = {}) =>
    makeOpenSearchDestination(Either.getOrThrow(decode({ opensearch: { urls: [url], ...extra } })), { KEY: "k3y" })

  it.scopedLive("sends the ApiKey header, NDJSON, filter_path; whole-request 5xx is retryable, 400 permanent", () =>
    Effect.gen(function* () {
      const d = yield* build({ auth: { apiKey: { env: "KEY" } } })
      assert.deepStrictEqual(yield* d.deliver(batch(2)), { failures: [] })
      const r = seen.at(-1)!
      assert.strictEqual(r.headers.authorization, "ApiKey k3y")
      assert.strictEqual(r.headers["content-type"], "application/x-ndjson")
      assert.match(r.url ?? "", /^\/base\/_bulk\?filter_path=errors,items/)
      assert.strictEqual(r.body.split("\n").length, 5)
      reply = () => ({ status: 503, body: "" })
      const e503 = yield* Effect.flip(d.deliver(batch(2)))
      assert.isTrue(e503.retryable)
      reply = () => ({ status: 400, body: '{"error":{"type":"parse_exception","reason":"bad"},"status":400}' })
      const e400 = yield* Effect.flip(d.deliver(batch(2)))
      assert.deepStrictEqual(
        [e400.retryable, e400.detail],
        [false, "opensearch refused the bulk request (http 400): parse_exception: bad"],
      )
    }),
  )

  it.scopedLive("keeps one connection open across bulk requests of a target", () =>
    Effect.gen(function* () {
      reply = () => ({ status: 200, body: '{"errors":false}' })
      const d = yield* build()
      const before = seen.length
      for (let i = 0; i < 4; i++) assert.deepStrictEqual(yield* d.deliver(batch(2)), { failures: [] })
      assert.strictEqual(new Set(seen.slice(before).map((r) => r.port)).size, 1, "four requests, one connection")
    }),
  )

  it.scopedLive("an answer larger than its cap is not read and is retryable", () =>
    Effect.gen(function* () {
      const d = yield* build()
      reply = () => ({ status: 200, body: `{"errors":false,"pad":"${"x".repeat(200_000)}"}` })
      const e = yield* Effect.flip(d.deliver(batch(1)))
      assert.isTrue(e.retryable)
      assert.include(e.detail, "larger than")
    }),
  )

  it.scopedLive("deliverRetrying retries only the lines that failed retryably and returns the refused ones", () =>
    Effect.gen(function* () {
      const d = yield* build()
      const sizes: Array<number> = []
      reply = (body) => {
        const actions = body.split("\n").filter((_, i) => i % 2 === 0 && _ !== "")
        sizes.push(actions.length)
        const items = actions.map((a) => {
          const id = JSON.parse(a).index._id as string
          if (id === "id-0") return { index: { status: 400, error: { type: "mapper_parsing_exception", reason: "r" } } }
          if (id === "id-2" && sizes.length === 1) return { index: { status: 429, error: { type: "rejected" } } }
          return { index: { status: 201 } }
        })
        return { status: 200, body: JSON.stringify({ errors: items.some((i) => i.index.status !== 201), items }) }
      }
      const refused = yield* deliverRetrying(d, batch(4), Schedule.spaced("10 millis"))
      assert.deepStrictEqual(sizes, [4, 1])
      assert.deepStrictEqual(refused, [{ index: 0, retryable: false, reason: "400 mapper_parsing_exception: r" }])
      const failing: Destination = {
        ...d,
        deliver: () => Effect.fail(new DestinationError({ target: "x", retryable: false, detail: "gone" })),
      }
      assert.deepStrictEqual(yield* deliverRetrying(failing, batch(2), Schedule.forever), [
        { index: 0, retryable: false, reason: "gone" },
        { index: 1, retryable: false, reason: "gone" },
      ])
      const down: Destination = {
        ...d,
        deliver: () => Effect.fail(new DestinationError({ target: "x", retryable: true, detail: "down" })),
      }
      assert.strictEqual((yield* Effect.flip(deliverRetrying(down, batch(1), Schedule.recurs(2)))).detail, "down")
    }),
  )

  it.scopedLive(
    "a batch above the target's limits goes in several bulk requests; failures keep their batch index",
    () =>
      Effect.gen(function* () {
        const d = yield* build({ batch: { maxEvents: 2 } })
        const sizes: Array<number> = []
        reply = (body) => {
          const actions = body.split("\n").filter((_, i) => i % 2 === 0 && _ !== "")
          sizes.push(actions.length)
          const items = actions.map((a) =>
            JSON.parse(a).index._id === "id-4"
              ? { index: { status: 400, error: { type: "mapper_parsing_exception", reason: "r" } } }
              : { index: { status: 201 } },
          )
          return { status: 200, body: JSON.stringify({ errors: items.some((i) => i.index.status !== 201), items }) }
        }
        const r = yield* d.deliver(batch(5))
        assert.deepStrictEqual(sizes, [2, 2, 1])
        assert.deepStrictEqual(r.failures, [{ index: 4, retryable: false, reason: "400 mapper_parsing_exception: r" }])
        const items = yield* Effect.promise(() => openSearchItems.get())
        const count = (result: string) =>
          items.values.find((v) => v.labels.destination === d.name && v.labels.result === result)?.value ?? 0
        assert.isAtLeast(count("written"), 4)
        assert.isAtLeast(count("permanent"), 1)
      }),
  )
})
