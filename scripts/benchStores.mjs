/**
 * The rows of `npm run bench` (scripts/bench.mjs) for the object-store and search targets and for the collector
 * receivers, with the built programs and the project's own test servers (scripts/servers.mjs):
 *  - route `s3` / `opensearch`: the router (decrypting) from a filled topic into one `s3` or `opensearch` target
 *    (moto / a single OpenSearch 2.19 node on loopback): events/s and MB/s (of Kafka records) from the first event
 *    delivered to the last, the router's CPU-seconds per 100,000 events over that interval (/proc/<pid>/stat) and
 *    its peak RSS (VmHWM);
 *  - ingest `otlp` / `forward`: the built ingester's receivers fed by clients written by others (the OpenTelemetry
 *    JS SDK's OTLP/gRPC and OTLP/HTTP-protobuf log exporters over TLS, @fluent-org/logger in PackedForward mode
 *    with acks): records acknowledged per second, each checked against what the topic then holds.
 */
import { spawnSync } from "node:child_process"
import fs from "node:fs"
import path from "node:path"
import { FluentClient } from "@fluent-org/logger"
import * as grpc from "@grpc/grpc-js"
import { OTLPLogExporter as GrpcLogExporter } from "@opentelemetry/exporter-logs-otlp-grpc"
import { OTLPLogExporter as ProtoLogExporter } from "@opentelemetry/exporter-logs-otlp-proto"
import { resourceFromAttributes } from "@opentelemetry/resources"
import { BatchLogRecordProcessor, LoggerProvider } from "@opentelemetry/sdk-logs"
import {
  ACCESS_KEY,
  cpuSeconds,
  createTopic,
  dist,
  ENC_KEY,
  freePort,
  kafkaFor,
  memOf,
  peakTracker,
  stopChild,
  USER_ID,
  waitReady,
} from "./harness.mjs"
import * as servers from "./servers.mjs"

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const now = () => performance.now()
/** The sum of a counter's series on a program's /metrics. */
const scrape = async (port, name) => {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
    let sum = 0
    for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "gm"))) sum += Number(m[1])
    return sum
  } catch {
    return Number.NaN
  }
}

export const topicRecords = async (brokers, topic) => {
  const admin = kafkaFor(brokers).admin()
  await admin.connect()
  const offsets = await admin.fetchTopicOffsets(topic)
  await admin.disconnect()
  return offsets.reduce((n, o) => n + Number(o.high) - Number(o.low), 0)
}

// ---- route: s3 and opensearch -----------------------------------------------------------------------------------

const S3_ENV = { AWS_ACCESS_KEY_ID: "bench", AWS_SECRET_ACCESS_KEY: "bench-secret", AWS_REGION: "us-east-1" }

/** Starts the test server (remembering whether this run did, in `started`) and returns its url. */
export async function useServer(kind, started, log) {
  const r = await servers.start(kind, { log })
  if (r.started) started.push(kind)
  return r.url
}

const storeTarget = async (kind, url, run) => {
  if (kind === "opensearch") return { opensearch: { urls: [url], index: `bench-${run}-{user_id}` } }
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true"
  const { S3Client, CreateBucketCommand } = await import("@aws-sdk/client-s3")
  const client = new S3Client({
    endpoint: url,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: S3_ENV.AWS_ACCESS_KEY_ID, secretAccessKey: S3_ENV.AWS_SECRET_ACCESS_KEY },
  })
  await client.send(new CreateBucketCommand({ Bucket: `bench-${run}` }))
  client.destroy()
  return { s3: { bucket: `bench-${run}`, endpoint: url, forcePathStyle: true, credentials: { from: "env" } } }
}

/**
 * The router from `topic` (already holding `total` records of the bench tenant) into one `kind` target. The clock
 * starts at the first scrape that shows delivered events (those are not counted) and stops when all are delivered.
 */
export async function benchStoreRoute(kind, { brokers, topic, total, url, work, spawnProgram, eventBytes, log }) {
  const run = `${kind}-${Date.now().toString(36)}`
  const tenantsFile = path.join(work, `tenants-${run}.json`)
  const target = await storeTarget(kind, url, run)
  fs.writeFileSync(
    tenantsFile,
    JSON.stringify({
      [ACCESS_KEY]: { AccessKey: ACCESS_KEY, EncryptionKey: ENC_KEY, UserID: USER_ID, targets: [target] },
    }),
  )
  const metricsPort = await freePort()
  const args = ["consumer", "--decrypt-events", "--output-dir", work, "--tenants", tenantsFile]
  args.push("--brokers", brokers.join(","), "--topic", topic, "--group", `bench-${run}`)
  args.push("--metrics-port", String(metricsPort))
  const child = spawnProgram("router", args, kind === "s3" ? S3_ENV : {})
  await waitReady(child, metricsPort)
  let t1 = 0
  let cpu1 = 0
  let atT1 = 0
  let out = 0
  const deadline = Date.now() + 900_000
  while (out < total && Date.now() < deadline && child.exitCode === null) {
    await sleep(100)
    out = await scrape(metricsPort, "spillway_router_events_out_total")
    if (t1 === 0 && out > 0) {
      t1 = now()
      cpu1 = cpuSeconds(child.pid)
      atT1 = out
    }
  }
  const t2 = now()
  const cpu = cpuSeconds(child.pid) - cpu1
  const deadLetters = await scrape(metricsPort, "spillway_router_dead_letters_total")
  const storedBytes = await scrape(metricsPort, "spillway_router_s3_object_bytes_total")
  const objects = await scrape(metricsPort, "spillway_router_s3_objects_total")
  const mem = memOf(child.pid)
  await stopChild(child)
  if (kind === "opensearch") await fetch(`${url}/bench-${run}-*`, { method: "DELETE" }).catch(() => undefined)
  const events = out - atT1
  const seconds = (t2 - t1) / 1000
  const r = {
    target: kind,
    delivered: out,
    of: total,
    timed: events,
    seconds,
    eventsPerSec: events / seconds,
    mbPerSec: (events * eventBytes) / seconds / 1e6,
    cpuSecondsPer100k: (cpu / events) * 100_000,
    routerPeakMiB: mem.peakMiB,
    deadLetters,
    ...(kind === "s3" ? { objects, storedMB: storedBytes / 1e6 } : {}),
  }
  log(
    `  router -> ${kind}: ${r.eventsPerSec.toFixed(0)} events/s, ${r.cpuSecondsPer100k.toFixed(1)} CPU-s/100k, ` +
      `peak ${r.routerPeakMiB.toFixed(0)} MiB (${out}/${total} delivered, ${deadLetters} dead letters)`,
  )
  return r
}

// ---- ingest: otlp and forward -----------------------------------------------------------------------------------

const WAVE = 2000
const body = (i) => `bench line ${i} GET /api/v1/items?page=${i % 97} 200 in ${i % 13} ms from 10.0.${i % 251}.7`

/** N records through an OpenTelemetry SDK logger with its batch processor, in waves of WAVE, each flushed. */
async function otlpEmit(exporter, n) {
  const provider = new LoggerProvider({
    resource: resourceFromAttributes({ "service.name": "bench", "host.name": "bench-host" }),
    processors: [
      new BatchLogRecordProcessor({ exporter, maxExportBatchSize: 512, maxQueueSize: WAVE, scheduledDelayMillis: 20 }),
    ],
  })
  const logger = provider.getLogger("bench")
  const t0 = now()
  for (let sent = 0; sent < n; sent += WAVE) {
    for (let i = 0; i < WAVE && sent + i < n; i++)
      logger.emit({ body: body(sent + i), severityText: "INFO", attributes: { i: sent + i, path: "/api/v1/items" } })
    await provider.forceFlush()
  }
  const ms = now() - t0
  await provider.shutdown()
  return ms
}

async function forwardEmit(port, security, n) {
  const fc = new FluentClient("bench", {
    eventMode: "PackedForward",
    socket: { host: "127.0.0.1", port },
    security,
    ack: { ackTimeout: 60_000 },
    flushInterval: 20,
    sendQueueIntervalFlushLimit: { length: 1000 },
  })
  const t0 = now()
  for (let sent = 0; sent < n; sent += WAVE)
    await Promise.all(
      Array.from({ length: Math.min(WAVE, n - sent) }, (_, i) => fc.emit("app", { log: body(sent + i), i: sent + i })),
    )
  const ms = now() - t0
  await fc.disconnect()
  return ms
}

/**
 * The built ingester with its OTLP and Forward receivers (TLS for OTLP, as deployed; Forward on plain TCP with the
 * handshake), one topic per row; a row counts only the records the topic holds afterwards.
 */
export async function benchReceivers(which, { brokers, n, harness, log }) {
  const { certs, secretFile, work, startIngester, mintToken } = harness
  const [grpcPort, httpPort, forwardPort] = [await freePort(), await freePort(), await freePort()]
  const keyFile = path.join(work, "forward.key")
  fs.writeFileSync(keyFile, "bench-shared-key", { mode: 0o600 })
  const topic = `bench-recv-${Date.now().toString(36)}`
  await createTopic(brokers, topic)
  const ing = await startIngester(brokers, topic, {
    SPILLWAY_OTLP_GRPC_PORT: String(grpcPort),
    SPILLWAY_OTLP_HTTP_PORT: String(httpPort),
    SPILLWAY_FORWARD_PORT: String(forwardPort),
    SPILLWAY_FORWARD_SHARED_KEY_FILE: keyFile,
  })
  const token = await mintToken()
  const ca = fs.readFileSync(certs.caCert)
  const rows = {}
  let before = await topicRecords(brokers, topic)
  // Each row starts a new peak (VmHWM) for the ingester: it reports what that receiver took.
  const peaks = peakTracker(ing.child.pid)
  const row = async (name, send) => {
    const cpu0 = cpuSeconds(ing.child.pid)
    const { result: ms, peakMiB } = await peaks.during(send)
    const cpu = cpuSeconds(ing.child.pid) - cpu0
    const after = await topicRecords(brokers, topic)
    const stored = after - before
    before = after
    rows[name] = {
      records: n,
      stored,
      seconds: ms / 1000,
      recordsPerSec: stored / (ms / 1000),
      ingesterCpuSecondsPer100k: (cpu / stored) * 100_000,
      ingesterPeakMiB: peakMiB,
    }
    log(`  ${name}: ${rows[name].recordsPerSec.toFixed(0)} records/s (${stored}/${n} in Kafka)`)
  }
  if (which.includes("otlp")) {
    const metadata = new grpc.Metadata()
    metadata.set("authorization", `Bearer ${token}`)
    const grpcExporter = () =>
      new GrpcLogExporter({
        url: `https://localhost:${grpcPort}`,
        credentials: grpc.credentials.createSsl(ca),
        metadata,
      })
    const httpExporter = () =>
      new ProtoLogExporter({
        url: `https://localhost:${httpPort}/v1/logs`,
        headers: { authorization: `Bearer ${token}` },
        httpAgentOptions: { ca },
      })
    await otlpEmit(grpcExporter(), 1000) // warm-up: connections, JIT
    await otlpEmit(httpExporter(), 1000)
    before = await topicRecords(brokers, topic)
    log(`ingest: OTLP/gRPC and OTLP/HTTP protobuf, JS SDK exporters, ${n} records each`)
    await row("otlpGrpc", () => otlpEmit(grpcExporter(), n))
    await row("otlpHttp", () => otlpEmit(httpExporter(), n))
  }
  if (which.includes("forward")) {
    const r = spawnSync(
      process.execPath,
      [dist("programs", "ingester.js"), "forward-password", "--access-key", ACCESS_KEY],
      {
        env: { PATH: process.env.PATH ?? "", SPILLWAY_JWT_SECRET_FILE: secretFile },
        encoding: "utf8",
      },
    )
    if (r.status !== 0) throw new Error(`forward-password failed: ${r.stderr}`)
    const security = {
      clientHostname: "bench-host",
      sharedKey: "bench-shared-key",
      username: ACCESS_KEY,
      password: r.stdout.trim(),
    }
    await forwardEmit(forwardPort, security, 1000)
    before = await topicRecords(brokers, topic)
    log(`ingest: Fluent Forward, PackedForward with acks (@fluent-org/logger), ${n} records`)
    await row("forward", () => forwardEmit(forwardPort, security, n))
  }
  rows.ingesterPeakMiB = peaks.overall()
  rows.ownPeaks = peaks.own
  await stopChild(ing.child)
  return rows
}
