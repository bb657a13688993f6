/**
 * The OTLP logs receiver with the OpenTelemetry JS SDK's own exporters (gRPC and HTTP/protobuf), against the real
 * broker, over TLS. The Kafka-outage tests use a private broker (slot 16).
 */
import { mkdirSync, readFileSync } from "node:fs"
import * as https from "node:https"
import * as net from "node:net"
import { join } from "node:path"
import { gzipSync } from "node:zlib"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import { ROOT_CONTEXT, trace } from "@opentelemetry/api"
import { SeverityNumber } from "@opentelemetry/api-logs"
import { OTLPLogExporter as GrpcLogExporter } from "@opentelemetry/exporter-logs-otlp-grpc"
import { OTLPLogExporter as ProtoLogExporter } from "@opentelemetry/exporter-logs-otlp-proto"
import { resourceFromAttributes } from "@opentelemetry/resources"
import {
  BatchLogRecordProcessor,
  LoggerProvider,
  type LogRecordExporter,
  type ReadableLogRecord,
} from "@opentelemetry/sdk-logs"
import { CACHE_DIR } from "../../scripts/kafka.mjs"
import { decodeResponse, encodeRequest } from "../../src/ingest/otlp/OtlpCodec.js"
import { testCerts } from "../support/certs.js"
import { brokers, createSettledTopics, createTopic, privateBroker, uniqueTopic } from "../support/kafka.js"
import {
  decryptFor,
  type Harness,
  readTopic,
  requestsAnswered,
  startHarness,
  type TenantName,
  tenants,
  waitFor,
} from "../support/receivers.js"

type ExportResult = Parameters<Parameters<LogRecordExporter["export"]>[1]>[0]

/**
 * Wraps an SDK exporter and keeps the result of every export. With `retryUnavailable`, an export answered
 * UNAVAILABLE is sent again after a second (for at most a minute), as the OpenTelemetry Collector's
 * `retry_on_failure` does: the JS gRPC exporter itself turns every gRPC error into a failure without retrying
 * (its HTTP exporter does retry 503, honouring Retry-After).
 */
class Recording implements LogRecordExporter {
  readonly results: Array<{ readonly code: number; readonly n: number; readonly error?: Error | undefined }> = []
  unavailable = 0
  constructor(
    private readonly inner: LogRecordExporter,
    private readonly retryUnavailable = false,
  ) {}
  export(logs: Array<ReadableLogRecord>, done: (r: ExportResult) => void) {
    const until = Date.now() + 60_000
    const attempt = () =>
      this.inner.export(logs, (r) => {
        const code = (r.error as { code?: unknown } | undefined)?.code
        if (code === grpc.status.UNAVAILABLE) this.unavailable++
        if (this.retryUnavailable && code === grpc.status.UNAVAILABLE && Date.now() < until) {
          setTimeout(attempt, 1000)
          return
        }
        this.results.push({ code: r.code, n: logs.length, error: r.error })
        done(r)
      })
    attempt()
  }
  shutdown() {
    return this.inner.shutdown()
  }
  forceFlush() {
    return this.inner.forceFlush()
  }
  exported() {
    return this.results.filter((r) => r.code === 0).reduce((n, r) => n + r.n, 0)
  }
  failed() {
    return this.results.filter((r) => r.code !== 0)
  }
}

const traceId = "0af7651916cd43dd8448eb211c80319c"
const spanId = "b7ad6b7169203331"

/** Emits n records through an SDK LoggerProvider and waits until the exporter answered them all. */
const emit = async (
  exporter: LogRecordExporter,
  n: number,
  service: string,
  host: string,
  retryUnavailable = false,
) => {
  const rec = new Recording(exporter, retryUnavailable)
  const provider = new LoggerProvider({
    resource: resourceFromAttributes({ "service.name": service, "host.name": host }),
    processors: [
      new BatchLogRecordProcessor({
        exporter: rec,
        maxExportBatchSize: 100,
        scheduledDelayMillis: 50,
        exportTimeoutMillis: 60_000,
      }),
    ],
  })
  const logger = provider.getLogger("recv-test")
  const ctx = trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId, traceFlags: 1 })
  for (let i = 0; i < n; i++)
    logger.emit({
      body: `line ${i}`,
      severityNumber: SeverityNumber.WARN,
      severityText: "WARN",
      attributes: { i, "http.method": "GET" },
      timestamp: new Date(1_700_000_000_000 + i),
      context: ctx,
      eventName: "bench.line",
    })
  await provider.forceFlush().catch(() => undefined)
  return { rec, provider }
}

type Compression = NonNullable<NonNullable<ConstructorParameters<typeof GrpcLogExporter>[0]>["compression"]>
const GZIP = "gzip" as Compression

const grpcExporter = (port: number, token: string, ca?: Buffer, compression?: Compression) => {
  const metadata = new grpc.Metadata()
  metadata.set("authorization", `Bearer ${token}`)
  return new GrpcLogExporter({
    url: `${ca ? "https" : "http"}://localhost:${port}`,
    credentials: ca ? grpc.credentials.createSsl(ca) : grpc.credentials.createInsecure(),
    metadata,
    timeoutMillis: 60_000,
    ...(compression ? { compression } : {}),
  })
}

const protoExporter = (port: number, token: string, ca?: Buffer, compression?: Compression) =>
  new ProtoLogExporter({
    ...(compression ? { compression } : {}),
    url: `${ca ? "https" : "http"}://localhost:${port}/v1/logs`,
    headers: { authorization: `Bearer ${token}` },
    timeoutMillis: 60_000,
    ...(ca ? { httpAgentOptions: { ca } } : {}),
  })

const checkRecords = (
  records: ReadonlyArray<{
    key: string
    event: { tag: string; agent_id: string; UserID: string; message: string; event_id: string }
    plain: unknown
  }>,
  name: TenantName,
  service: string,
  host: string,
  n: number,
) => {
  const mine = records.filter((r) => r.event.tag === service)
  expect(mine).toHaveLength(n)
  const lines = new Set<string>()
  for (const r of mine) {
    expect(r.key).toBe(tenants[name].AccessKey)
    expect(r.event.UserID).toBe(tenants[name].UserID)
    expect(r.event.agent_id).toBe(host)
    expect(r.event.event_id).toMatch(/^[0-9a-f]{32}$/)
    // Ciphertext in Kafka: the message is hex, and the plain JSON appears only after decryption.
    expect(r.event.message).toMatch(/^[0-9a-f]+$/)
    const plain = JSON.parse(decryptFor(name, r.event.message)) as Record<string, unknown>
    expect(plain.severity_text).toBe("WARN")
    expect(plain.severity_number).toBe(13)
    expect(plain.trace_id).toBe(traceId)
    expect(plain.span_id).toBe(spanId)
    expect(plain.event_name).toBe("bench.line")
    expect((plain.attributes as Record<string, unknown>)["http.method"]).toBe("GET")
    expect((plain.resource as Record<string, unknown>)["service.name"]).toBe(service)
    lines.add(String(plain.body))
  }
  expect(lines.size).toBe(n)
}

describe("OTLP receiver (shared broker, TLS)", () => {
  const topic = uniqueTopic("otlp")
  let h: Harness
  let ca: Buffer

  beforeAll(async () => {
    await createTopic(topic, 3)
    const certs = await testCerts()
    ca = readFileSync(certs.caCert)
    h = await startHarness({
      topic,
      brokers,
      otlp: {
        host: "127.0.0.1",
        grpcPort: 0,
        httpPort: 0,
        tls: { certFile: certs.serverCert, keyFile: certs.serverKey },
        maxEventBytes: 64 * 1024,
      },
    })
  })
  afterAll(async () => {
    await h?.close()
  })

  it("gRPC SDK exporter: N records with A's token arrive as A's events, encrypted with A's key", async () => {
    const { rec, provider } = await emit(grpcExporter(h.grpcPort!, await h.token("A"), ca), 250, "svc-grpc", "host-1")
    await waitFor("250 exported", () => rec.exported() === 250 || rec.failed().length > 0)
    expect(rec.failed()).toEqual([])
    await provider.shutdown()
    checkRecords(await readTopic(brokers, topic, 250), "A", "svc-grpc", "host-1", 250)
  })

  it("HTTP/protobuf SDK exporter: N records with B's token arrive as B's events (never A's key)", async () => {
    const { rec, provider } = await emit(protoExporter(h.httpPort!, await h.token("B"), ca), 180, "svc-http", "host-2")
    await waitFor("180 exported", () => rec.exported() === 180 || rec.failed().length > 0)
    expect(rec.failed()).toEqual([])
    await provider.shutdown()
    const all = await readTopic(brokers, topic, 250 + 180)
    checkRecords(all, "B", "svc-http", "host-2", 180)
    for (const r of all.filter((r) => r.event.tag === "svc-http"))
      expect(() => decryptFor("A", r.event.message)).toThrow()
  })

  it("a bad, expired or unknown-tenant token is refused and nothing reaches Kafka", async () => {
    const before = (await readTopic(brokers, topic, 430)).length
    expect(before).toBe(430)
    const good = await h.token("A")
    const forged = `${good.slice(0, -4)}AAAA`
    const cases = [forged, await h.expiredToken("A"), await h.token("not-a-tenant")]
    for (const token of cases) {
      const g = await emit(grpcExporter(h.grpcPort!, token, ca), 3, "svc-bad", "h")
      await waitFor("refusal (gRPC)", () => g.rec.failed().length > 0)
      expect(g.rec.exported()).toBe(0)
      await g.provider.shutdown()
      const p = await emit(protoExporter(h.httpPort!, token, ca), 3, "svc-bad", "h")
      await waitFor("refusal (HTTP)", () => p.rec.failed().length > 0)
      expect(p.rec.exported()).toBe(0)
      await p.provider.shutdown()
    }
    // Raw HTTPS: the status says why, without echoing the token.
    const raw = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = https.request(
        {
          host: "localhost",
          port: h.httpPort,
          path: "/v1/logs",
          method: "POST",
          ca,
          headers: { "content-type": "application/json", authorization: `Bearer ${forged}` },
        },
        (res) => {
          let body = ""
          res.on("data", (c: Buffer) => {
            body += c.toString()
          })
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body }))
        },
      )
      req.on("error", reject)
      req.end("{}")
    })
    expect(raw.status).toBe(401)
    expect(raw.body).toContain("bad_signature")
    expect(raw.body).not.toContain(forged.slice(-20))
    expect((await readTopic(brokers, topic, before + 1, 3000)).length).toBe(before)
  })

  it("gzip-compressed exports (gRPC and HTTP) are stored like the others", async () => {
    const g = await emit(grpcExporter(h.grpcPort!, await h.token("A"), ca, GZIP), 30, "svc-gzip-grpc", "gz")
    await waitFor("30 exported (gRPC gzip)", () => g.rec.exported() === 30 || g.rec.failed().length > 0)
    expect(g.rec.failed()).toEqual([])
    await g.provider.shutdown()
    const p = await emit(protoExporter(h.httpPort!, await h.token("A"), ca, GZIP), 30, "svc-gzip-http", "gz")
    await waitFor("30 exported (HTTP gzip)", () => p.rec.exported() === 30 || p.rec.failed().length > 0)
    expect(p.rec.failed()).toEqual([])
    await p.provider.shutdown()
    const all = await readTopic(brokers, topic, 430 + 60)
    checkRecords(all, "A", "svc-gzip-grpc", "gz", 30)
    checkRecords(all, "A", "svc-gzip-http", "gz", 30)
  })
})

describe("OTLP receiver (plaintext): JSON bodies, partial success, limits", () => {
  const topic = uniqueTopic("otlp-json")
  let h: Harness

  beforeAll(async () => {
    await createTopic(topic, 1)
    h = await startHarness({
      topic,
      brokers,
      otlp: {
        host: "127.0.0.1",
        grpcPort: 0,
        httpPort: 0,
        maxEventBytes: 4096,
        maxRequestBytes: 256 * 1024,
        maxRecordsPerRequest: 10,
      },
    })
  })
  afterAll(async () => {
    await h?.close()
  })

  const post = async (body: string | Uint8Array, token: string, type = "application/json") =>
    fetch(`http://127.0.0.1:${h.httpPort}/v1/logs`, {
      method: "POST",
      headers: { "content-type": type, authorization: `Bearer ${token}` },
      body,
    })

  it("an OTLP/JSON export is stored; an oversized record is reported in partialSuccess, the others stored", async () => {
    const json = {
      resourceLogs: [
        {
          resource: {
            attributes: [
              { key: "service.name", value: { stringValue: "svc-json" } },
              { key: "host.name", value: { stringValue: "json-host" } },
            ],
          },
          scopeLogs: [
            {
              scope: { name: "s" },
              logRecords: [
                {
                  timeUnixNano: "1700000000000000001",
                  body: { stringValue: "small" },
                  traceId: traceId.toUpperCase(),
                  attributes: [{ key: "__proto__", value: { intValue: "7" } }],
                },
                { observedTimeUnixNano: 1700000000000000, body: { stringValue: "x".repeat(10_000) } },
                {
                  body: {
                    kvlistValue: {
                      values: [
                        { key: "k", value: { arrayValue: { values: [{ boolValue: true }, { doubleValue: 1.5 }] } } },
                      ],
                    },
                  },
                },
              ],
            },
          ],
        },
      ],
    }
    const res = await post(JSON.stringify(json), await h.token("C"))
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({
      partialSuccess: { rejectedLogRecords: "1", errorMessage: expect.stringContaining("event size limit") },
    })
    const got = await readTopic(brokers, topic, 2)
    expect(got).toHaveLength(2)
    const [a, b] = got.map((r) => r.plain as Record<string, unknown>)
    expect(a).toMatchObject({ body: "small", trace_id: traceId, scope: { name: "s", version: "" } })
    expect(Object.getOwnPropertyDescriptor(a!.attributes, "__proto__")?.value).toBe(7)
    expect(b).toMatchObject({ body: { k: [true, 1.5] } })
    expect(got[0]!.event.timestamp).toEqual({ seconds: "1700000000", nanos: 1 })
    expect(got[0]!.event.tag).toBe("svc-json")
    // C has no key: Kafka holds plain JSON.
    expect(got[0]!.event.message.startsWith("{")).toBe(true)
  })

  it("malformed, oversized and over-count requests get the protocol's errors and never echo the body", async () => {
    const token = await h.token("C")
    const bad = await post('{"resourceLogs": [{"scopeLogs": "<script>"}]}', token)
    expect(bad.status).toBe(400)
    expect(await bad.text()).not.toContain("<script>")
    expect((await post(new Uint8Array([0xff, 0xff, 0xff]), token, "application/x-protobuf")).status).toBe(400)
    expect((await post("x".repeat(300 * 1024), token)).status).toBe(413)
    expect((await post("{}", token, "text/plain")).status).toBe(415)
    const many = {
      resourceLogs: [
        { scopeLogs: [{ logRecords: Array.from({ length: 11 }, () => ({ body: { stringValue: "m" } })) }] },
      ],
    }
    expect((await post(JSON.stringify(many), token)).status).toBe(400)
    const deep = `${'{"arrayValue":{"values":['.repeat(200)}${"]}}".repeat(200)}`
    const deepReq = `{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":${deep}}]}]}]}`
    expect((await post(deepReq, token)).status).toBe(400)
    // gzip bodies are read, bounded after decompression too.
    const gz = await fetch(`http://127.0.0.1:${h.httpPort}/v1/logs`, {
      method: "POST",
      headers: { "content-type": "application/json", "content-encoding": "gzip", authorization: `Bearer ${token}` },
      body: gzipSync(
        JSON.stringify({ resourceLogs: [{ scopeLogs: [{ logRecords: [{ body: { stringValue: "gz" } }] }] }] }),
      ),
    })
    expect(gz.status).toBe(200)
    const bomb = await fetch(`http://127.0.0.1:${h.httpPort}/v1/logs`, {
      method: "POST",
      headers: { "content-type": "application/json", "content-encoding": "gzip", authorization: `Bearer ${token}` },
      body: gzipSync(Buffer.alloc(10 * 1024 * 1024, 0x20)),
    })
    expect(bomb.status).toBe(413)
    // Protobuf path, raw: the response is an ExportLogsServiceResponse.
    const ok = await post(
      encodeRequest({ resourceLogs: [{ scopeLogs: [{ logRecords: [{ body: { stringValue: "via protobuf" } }] }] }] }),
      token,
      "application/x-protobuf",
    )
    expect(ok.status).toBe(200)
    expect(decodeResponse(new Uint8Array(await ok.arrayBuffer()))).toEqual({})
  })
})

describe("OTLP receiver with Kafka stopped (private broker 16)", () => {
  // kafka.mjs resolves the real path of a broker's folder only once it exists: make it first, so that stop() finds
  // the broker that start() launched (.cache is a link in a worktree).
  mkdirSync(join(CACHE_DIR, "..", "kafka-private", "slot-16"), { recursive: true })
  const broker = privateBroker(16)
  const topic = uniqueTopic("otlp-outage")
  let h: Harness

  beforeAll(async () => {
    await broker.start()
    await createSettledTopics(broker.brokers, [{ topic, numPartitions: 1, replicationFactor: 1 }])
    h = await startHarness({
      topic,
      brokers: broker.brokers,
      otlp: { host: "127.0.0.1", grpcPort: 0, httpPort: 0, retryAfterSeconds: 3 },
    })
    // One record first, so the topic exists and the producer is connected.
    const warm = await emit(grpcExporter(h.grpcPort!, await h.token("A")), 1, "warm", "h")
    await waitFor("warm-up", () => warm.rec.exported() === 1 || warm.rec.failed().length > 0, 60_000)
    expect(warm.rec.failed()).toEqual([])
    await warm.provider.shutdown()
  })
  afterAll(async () => {
    await h?.close()
    await broker.destroy()
  })

  for (const transport of ["grpc", "http"] as const) {
    it(`${transport}: the exporter is told to retry (UNAVAILABLE / 503) and once Kafka is back every record arrives`, async () => {
      const receiver = transport === "grpc" ? "otlp_grpc" : "otlp_http"
      const before = await requestsAnswered(receiver, "unavailable")
      await broker.stop()
      const token = await h.token("B")
      const exporter = transport === "grpc" ? grpcExporter(h.grpcPort!, token) : protoExporter(h.httpPort!, token)
      const run = emit(exporter, 40, `outage-${transport}`, "h", transport === "grpc")
      await waitFor(
        "a retryable refusal",
        async () => (await requestsAnswered(receiver, "unavailable")) > before,
        60_000,
      )
      await broker.start()
      const { rec, provider } = await run
      await waitFor("40 exported after the outage", () => rec.exported() === 40 || rec.failed().length > 0, 90_000)
      expect(rec.failed()).toEqual([])
      if (transport === "grpc") expect(rec.unavailable).toBeGreaterThan(0)
      await provider.shutdown()
      const got = (await readTopic(broker.brokers, topic, 1000, 10_000)).filter(
        (r) => r.event.tag === `outage-${transport}`,
      )
      expect(new Set(got.map((r) => (r.plain as { body: string }).body)).size).toBe(40)
    })
  }
})

describe("OTLP receiver: connection limits", () => {
  let h: Harness

  beforeAll(async () => {
    h = await startHarness({
      topic: uniqueTopic("otlp-limits"),
      brokers,
      otlp: { host: "127.0.0.1", grpcPort: 0, httpPort: 0, maxConnections: 1, idleTimeout: "1 second" },
    })
  })
  afterAll(async () => {
    await h?.close()
  })

  const connect = async (port: number) => {
    const socket = net.connect(port, "127.0.0.1")
    const closed = new Promise<number>((r) => socket.once("close", () => r(Date.now())))
    socket.on("error", () => undefined)
    await new Promise((r) => socket.once("connect", r))
    return { socket, closed }
  }

  for (const which of ["grpc", "http"] as const) {
    it(`${which}: a connection over the limit is closed at accept`, async () => {
      const port = which === "grpc" ? h.grpcPort! : h.httpPort!
      const first = await connect(port)
      const t0 = Date.now()
      const second = await connect(port)
      expect((await second.closed) - t0).toBeLessThan(900)
      first.socket.destroy()
      await first.closed
    })
  }

  it("http: an idle connection is closed after the idle timeout", async () => {
    const t0 = Date.now()
    const c = await connect(h.httpPort!)
    const closedAt = await c.closed
    expect(closedAt - t0).toBeGreaterThanOrEqual(900)
    expect(closedAt - t0).toBeLessThan(5000)
  })
})
