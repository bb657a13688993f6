#!/usr/bin/env node
/**
 * `npm run bench`: Spillway's benchmark against the real local Kafka (not part of the test suite).
 *
 * Runs the built programs (dist/) as child processes and measures, in one run:
 *  - ingest: events/s and MB/s the ingester acknowledges for 512-byte encrypted events from several concurrent
 *    clients, over the batch RPC (SendEventBatches) and over the proof of concept's SendEvent, the latter twice:
 *    from grpc-js clients, from lean clients writing gRPC frames on node:http2 (`leanSendEventClient`) and from
 *    grpc-go clients (scripts/goclient, built when `go` is on PATH), with the cores the ingester and the clients used;
 *  - limit: a bare kafkajs producer writing the same records (same acks, batch sizes, concurrency) to Kafka;
 *  - route: events/s from Kafka into files with decryption by the router, and a bare kafkajs consumer's events/s;
 *  - end-to-end latency p50/p99 from a line appended to a tailed file to the router writing it, at a fixed rate;
 *  - peak RSS (VmHWM) of each program (the ingester's also per ingest scenario and receiver row, its peak reset
 *    before each one: `peakTracker`, scripts/harness.mjs), and the ingester's RSS while its Kafka is stopped and clients
 *    keep pushing;
 *  - route rows s3 and opensearch: the router into one such target against the project's test servers (moto,
 *    OpenSearch; scripts/servers.mjs, started when not running and stopped again), with its CPU-seconds per 100k
 *    events and peak RSS; ingest rows otlp and forward: the ingester's receivers fed by the OpenTelemetry JS SDK's
 *    exporters and by @fluent-org/logger (scripts/benchStores.mjs), next to the bare producer of the same run.
 *  - CPU-seconds per 100k events of the ingester and the router (/proc/<pid>/stat) next to the bare producer's and
 *    consumer's (this process's own CPU while only they ran), and the share of a core each program used in the
 *    latency run.
 * Prints a Markdown table and writes the figures as JSON (default bench-results.json; --out FILE).
 *
 * Options (environment): BENCH_EVENTS (ingest events per scenario, 200000), BENCH_CLIENTS (4), BENCH_BATCH (500),
 * BENCH_WINDOW (8 batches in flight per client), BENCH_RATE (latency run, events/s, 5000), BENCH_LATENCY_SECONDS
 * (10, measured after BENCH_LATENCY_WARMUP_SECONDS, 2, whose lines are reported apart), BENCH_LATENCY_TRACE (file:
 * each line's write time and latency as JSON), BENCH_NODE_FLAGS (Node flags for every program), BENCH_AGENT_ENV
 * (K=V ... for the latency run's agent), BENCH_PROGRAM_ENV (K=V ... for every program), BENCH_OVERLOAD_SECONDS (15), BENCH_RECEIVER_RECORDS (records per otlp/forward row, 50000), BENCH_ROUTE_PARTITIONS (1; 2 or 3 spread the route row's records over that many partitions), BENCH_ROUTERS (1; the route row's router processes, in one consumer group, each writing its own folder: with as many partitions, how the router uses more cores), BENCH_ONLY
 * (comma-separated subset of startup,ingest,route,s3,opensearch,otlp,forward,latency,overload; BENCH_STARTUP_RUNS, 5), BENCH_PROFILE (programs to CPU-profile,
 * e.g. ingester,router; profiles go to BENCH_PROFILE_DIR, default /tmp/spillway-prof, sampled every BENCH_PROFILE_INTERVAL µs, default 1000), BENCH_KEEP_WORK (1: keep the work
 * folder, its routed files and program logs, which a run that succeeded deletes; its topics are deleted either way). Needs `npm run build` first (`npm run bench` does it).
 */
import { spawn, spawnSync } from "node:child_process"
import { randomUUID } from "node:crypto"
import fs from "node:fs"
import http2 from "node:http2"
import os from "node:os"
import path from "node:path"
import * as grpc from "@grpc/grpc-js"
import { benchStartup } from "./benchStartup.mjs"
import { benchReceivers, benchStoreRoute, useServer } from "./benchStores.mjs"
import {
  ACCESS_KEY,
  cpuSeconds,
  createTopic,
  deleteCreatedTopics,
  dist,
  ENC_KEY,
  envInt,
  freePort,
  kafkaFor,
  makeHarness,
  memOf,
  ownCpuSeconds,
  peakTracker,
  root,
  stopChild,
  waitReady,
} from "./harness.mjs"
import * as broker from "./kafka.mjs"
import * as servers from "./servers.mjs"

const { EventServiceClient, EventCodec, EResponseCodec } = await import(dist("wire", "Wire.js"))
const { sealHex } = await import(dist("shared", "Crypto.js"))
const EVENTS = envInt("BENCH_EVENTS", 200_000)
const CLIENTS = envInt("BENCH_CLIENTS", 4)
const BATCH = envInt("BENCH_BATCH", 500)
const WINDOW = envInt("BENCH_WINDOW", 8)
const RATE = envInt("BENCH_RATE", 5000)
const LATENCY_SECONDS = envInt("BENCH_LATENCY_SECONDS", 10)
const WARMUP_SECONDS = envInt("BENCH_LATENCY_WARMUP_SECONDS", 2)
const OVERLOAD_SECONDS = envInt("BENCH_OVERLOAD_SECONDS", 15)
const RECEIVER_RECORDS = envInt("BENCH_RECEIVER_RECORDS", 50_000)
const ROUTE_PARTITIONS = Math.min(3, envInt("BENCH_ROUTE_PARTITIONS", 1))
const ROUTERS = Math.min(3, Math.max(1, envInt("BENCH_ROUTERS", 1)))
const outIdx = process.argv.indexOf("--out")
const OUT = path.resolve(outIdx > 0 ? process.argv[outIdx + 1] : path.join(root, "bench-results.json"))

const log = (m) => process.stderr.write(`[bench] ${m}\n`)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const now = () => performance.now()

// ---- fixtures -------------------------------------------------------------------------------------------------

const harness = await makeHarness("bench")
const { work, certs, children, spawnProgram, startIngester, mintToken } = harness
const tenantsFile = harness.tenantsFile
const keyBytes = Buffer.from(ENC_KEY, "utf8")

/** A 512-character hex message: AES-256-GCM of a 228-byte JSON record. */
const plaintext = (i) => {
  const base = JSON.stringify({ log: `bench line ${i} `, stream: "stdout", pad: "" })
  return JSON.stringify({ log: `bench line ${i} `, stream: "stdout", pad: "x".repeat(228 - Buffer.byteLength(base)) })
}
const makeEvent = (i) => {
  const ms = Date.now()
  return {
    timestamp: { seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 },
    agent_id: os.hostname(),
    tag: "bench",
    message: sealHex(keyBytes, Buffer.from(plaintext(i))),
    UserID: "2134558",
    AccessKey: ACCESS_KEY,
    event_id: randomUUID(),
  }
}
// A pool of pre-encrypted events, reused so that the client's CPU goes to sending, not encrypting.
const POOL = Array.from({ length: BATCH * 4 }, (_, i) => makeEvent(i))
/** The pool's events encoded once (the lean and the Go clients send these bytes). */
const ENCODED = POOL.map((e) => Buffer.from(EventCodec.encode(e)))
const EVENT_BYTES = ENCODED[0].length
/** `bytes` after a `head`-byte prefix whose last 4 bytes are its length, big-endian (gRPC: 5, the Go client's file: 4). */
const lengthPrefixed = (bytes, head) => {
  const prefix = Buffer.alloc(head)
  prefix.writeUInt32BE(bytes.length, head - 4)
  return [prefix, bytes]
}
const batchOf = (n) => {
  const start = (n * BATCH) % POOL.length
  const out = POOL.slice(start, start + BATCH)
  return out.length === BATCH ? out : out.concat(POOL.slice(0, BATCH - out.length))
}

const topicSize = async (brokers, topic) => {
  const admin = kafkaFor(brokers).admin()
  await admin.connect()
  const offsets = await admin.fetchTopicOffsets(topic)
  await admin.disconnect()
  return offsets.reduce((n, o) => n + Number(o.high) - Number(o.low), 0)
}

// ---- gRPC clients ---------------------------------------------------------------------------------------------

const makeClient = (port) =>
  new EventServiceClient(`localhost:${port}`, grpc.credentials.createSsl(fs.readFileSync(certs.caCert)), {
    "grpc.max_send_message_length": 64 * 1024 * 1024,
  })

/**
 * One client on the batch RPC: keeps `WINDOW` batches in flight until `total` events are acked (or `untilMs` passes).
 * Returns acked events and the statuses of failures.
 */
function batchClient(port, token, total, untilMs = Number.POSITIVE_INFINITY) {
  return new Promise((resolve) => {
    const client = makeClient(port)
    const md = new grpc.Metadata()
    md.set("authorization", `Bearer ${token}`)
    const call = client.SendEventBatches(md)
    let sent = 0
    let acked = 0
    let inflight = 0
    let next = 0
    const failures = {}
    let done = false
    const finish = () => {
      if (done) return
      done = true
      call.end()
      client.close()
      resolve({ acked, failures })
    }
    const pump = () => {
      while (!done && inflight < WINDOW && sent < total && Date.now() < untilMs) {
        const id = String(next++)
        inflight += 1
        sent += BATCH
        call.write({ batch_id: id, events: batchOf(next) })
      }
      if (inflight === 0 && (sent >= total || Date.now() >= untilMs)) finish()
    }
    call.on("data", (ack) => {
      inflight -= 1
      if (ack.status === "SUCCESS") acked += BATCH
      else failures[`batch:${ack.code}`] = (failures[`batch:${ack.code}`] ?? 0) + 1
      pump()
    })
    call.on("error", (e) => {
      failures[grpc.status[e.code] ?? String(e.code)] = (failures[grpc.status[e.code] ?? String(e.code)] ?? 0) + 1
      finish()
    })
    call.on("end", finish)
    pump()
  })
}

/** One client on the proof of concept's SendEvent: streams of `BATCH` events, one stream at a time. */
async function sendEventClient(port, token, total) {
  const client = makeClient(port)
  const md = new grpc.Metadata()
  md.set("authorization", `Bearer ${token}`)
  let acked = 0
  const failures = {}
  for (let n = 0; acked < total; n++) {
    const events = batchOf(n)
    const ok = await new Promise((resolve) => {
      const call = client.SendEvent(md, (err, res) => {
        if (err) failures[grpc.status[err.code]] = (failures[grpc.status[err.code]] ?? 0) + 1
        resolve(!err && res.status === "SUCCESS")
      })
      for (const e of events) call.write(e)
      call.end()
    })
    if (ok) acked += events.length
    else if (Object.values(failures).reduce((a, b) => a + b, 0) > 20) break
  }
  client.close()
  return { acked, failures }
}

/**
 * One lean client on SendEvent: the same streams of `BATCH` events as `sendEventClient`, one at a time, but written
 * as gRPC frames straight onto one HTTP/2 connection (node:http2, TLS): each stream's messages framed once, from the
 * pool encoded once, and sent in one write, as a compiled client such as the proof of concept's Go plugin sends them.
 * The ingester reads the same bytes either way; this client spends a fraction of grpc-js' CPU per message, so on a
 * machine the clients share with the ingester and Kafka it shows what the ingester does when its client is cheap.
 */
const FRAMED = Array.from({ length: POOL.length / BATCH }, (_, k) =>
  Buffer.concat(ENCODED.slice(k * BATCH, (k + 1) * BATCH).flatMap((bytes) => lengthPrefixed(bytes, 5))),
)

async function leanSendEventClient(port, token, total) {
  const session = http2.connect(`https://localhost:${port}`, { ca: fs.readFileSync(certs.caCert) })
  session.on("error", () => undefined)
  let acked = 0
  const failures = {}
  const fail = (k) => {
    failures[k] = (failures[k] ?? 0) + 1
  }
  for (let n = 0; acked < total; n++) {
    const ok = await new Promise((resolve) => {
      const req = session.request({
        ":method": "POST",
        ":path": "/api.EventService/SendEvent",
        "content-type": "application/grpc",
        te: "trailers",
        authorization: `Bearer ${token}`,
      })
      const chunks = []
      let status
      req.on("trailers", (t) => {
        status = t["grpc-status"]
      })
      req.on("response", (h) => {
        if (h["grpc-status"] !== undefined) status = h["grpc-status"]
      })
      req.on("data", (c) => chunks.push(c))
      req.on("error", () => {
        fail("stream error")
        resolve(false)
      })
      req.on("end", () => {
        const body = Buffer.concat(chunks)
        if (status !== "0" || body.length < 5) {
          fail(grpc.status[Number(status)] ?? `status ${status}`)
          resolve(false)
        } else resolve(EResponseCodec.decode(body.subarray(5)).status === "SUCCESS")
      })
      req.end(FRAMED[n % FRAMED.length])
    })
    if (ok) acked += BATCH
    else if (Object.values(failures).reduce((a, b) => a + b, 0) > 20) break
  }
  session.close()
  return { acked, failures }
}

/** scripts/goclient built into .cache/goclient (Go's build cache makes a rebuild cheap), or undefined without Go. */
function buildGoClient() {
  const out = path.join(root, ".cache", "goclient")
  const r = spawnSync("go", ["build", "-o", out, "."], {
    cwd: path.join(root, "scripts", "goclient"),
    encoding: "utf8",
  })
  if (r.error?.code === "ENOENT") return undefined
  if (r.status !== 0) throw new Error(`go build of scripts/goclient failed: ${r.stderr}`)
  return out
}

/** SendEvent from `CLIENTS` grpc-go connections (scripts/goclient, a child process), as `scenario` reports it. */
async function goScenario(binary, port, token, pid) {
  const file = path.join(work, "goclient-events.bin")
  fs.writeFileSync(file, Buffer.concat(ENCODED.flatMap((bytes) => lengthPrefixed(bytes, 4))))
  const total = Math.ceil(EVENTS / CLIENTS / BATCH) * BATCH * CLIENTS
  const args = ["-addr", `localhost:${port}`, "-ca", certs.caCert, "-token", token, "-events", file]
  args.push("-clients", String(CLIENTS), "-total", String(total), "-batch", String(BATCH))
  const cpu0 = cpuSeconds(pid)
  const child = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"] })
  let stdout = ""
  let stderr = ""
  child.stdout.on("data", (c) => {
    stdout += c
  })
  child.stderr.on("data", (c) => {
    stderr += c
  })
  const code = await new Promise((resolve) => child.on("close", resolve))
  const cpu = cpuSeconds(pid) - cpu0
  if (code !== 0) throw new Error(`scripts/goclient exited with ${code}: ${stderr.slice(0, 500)}`)
  const out = JSON.parse(stdout.trim())
  return withCpu({ ...rate(out.acked, out.seconds * 1000), failures: out.failures }, cpu, out.cpuSeconds)
}

/** A scenario's result with the ingester's CPU per 100k events and the cores it and the clients used, logged. */
function withCpu(r, ingesterCpu, clientCpu) {
  r.ingesterCpuSecondsPer100k = per100k(ingesterCpu, r.events)
  r.ingesterCores = ingesterCpu / r.seconds
  r.clientCores = clientCpu / r.seconds
  const cores = `cores: ingester ${r.ingesterCores.toFixed(2)}, clients ${r.clientCores.toFixed(2)}`
  log(`  ${r.eventsPerSec.toFixed(0)} events/s, ${r.ingesterCpuSecondsPer100k.toFixed(2)} CPU-s/100k; ${cores}`)
  return r
}

const rate = (events, ms) => ({
  events,
  seconds: ms / 1000,
  eventsPerSec: events / (ms / 1000),
  mbPerSec: (events * EVENT_BYTES) / (ms / 1000) / 1e6,
})

async function runClients(fn) {
  const per = Math.ceil(EVENTS / CLIENTS / BATCH) * BATCH
  const t0 = now()
  const results = await Promise.all(Array.from({ length: CLIENTS }, () => fn(per)))
  const ms = now() - t0
  const failures = {}
  for (const r of results) for (const [k, v] of Object.entries(r.failures)) failures[k] = (failures[k] ?? 0) + v
  return {
    ...rate(
      results.reduce((n, r) => n + r.acked, 0),
      ms,
    ),
    failures,
  }
}

/** Writes `n` of the pool's events to `topic` (the startup rows' router reads them). */
const produceSome = (brokers) => async (topic, n) => {
  const producer = kafkaFor(brokers).producer()
  await producer.connect()
  const messages = POOL.slice(0, n).map((e) => ({ key: ACCESS_KEY, value: Buffer.from(EventCodec.encode(e)) }))
  await producer.send({ topic, acks: -1, messages })
  await producer.disconnect()
}

/** CPU-seconds per 100,000 events. */
const per100k = (cpuSeconds, events) => (cpuSeconds / events) * 100_000

// ---- scenarios ------------------------------------------------------------------------------------------------

async function benchIngest(brokers, token) {
  const topic = `bench-ingest-${Date.now().toString(36)}`
  await createTopic(brokers, topic)
  const ing = await startIngester(brokers, topic)
  // warm up (JIT, connections, producer metadata)
  await batchClient(ing.port, token, BATCH * 20)
  const pid = ing.child.pid
  log("ingest over the batch RPC...")
  // The clients all run in this process: its CPU over the scenario (as cores) says whether they, not the ingester,
  // set the rate (a core's worth means they did).
  // Each scenario starts a new peak (VmHWM) for the ingester: its row says what that scenario took.
  const peaks = peakTracker(pid)
  const peakOf = async (run) => {
    const { result, peakMiB } = await peaks.during(run)
    result.ingesterPeakMiB = peakMiB
    return result
  }
  const scenario = (client) =>
    peakOf(async () => {
      const cpu0 = cpuSeconds(pid)
      const own0 = ownCpuSeconds()
      const r = await runClients(client)
      return withCpu(r, cpuSeconds(pid) - cpu0, ownCpuSeconds() - own0)
    })
  const batchRpc = await scenario((n) => batchClient(ing.port, token, n))
  log("ingest over SendEvent...")
  const sendEvent = await scenario((n) => sendEventClient(ing.port, token, n))
  log("ingest over SendEvent, lean HTTP/2 clients...")
  const sendEventLean = await scenario((n) => leanSendEventClient(ing.port, token, n))
  const goclient = buildGoClient()
  let sendEventGo
  if (goclient === undefined) log("SendEvent, grpc-go clients: skipped (no `go` on PATH to build scripts/goclient)")
  else {
    log("ingest over SendEvent, grpc-go clients...")
    sendEventGo = await peakOf(() => goScenario(goclient, ing.port, token, pid))
  }
  const ingesterPeakMiB = peaks.overall()
  await stopChild(ing.child)
  return { topic, batchRpc, sendEvent, sendEventLean, sendEventGo, ingesterPeakMiB, ownPeaks: peaks.own }
}

async function benchBareProducer(brokers) {
  const topic = `bench-bare-${Date.now().toString(36)}`
  await createTopic(brokers, topic)
  const producer = kafkaFor(brokers).producer({ idempotent: true, maxInFlightRequests: 5 })
  await producer.connect()
  const encoded = POOL.map((e) => Buffer.from(EventCodec.encode(e)))
  const records = (n) => {
    const start = (n * BATCH) % encoded.length
    // BENCH_ROUTE_PARTITIONS=2|3 spreads each send over that many of the topic's partitions (records of one access key,
    // as if its tenants' keys hashed there): the route row then measures the router with partitions to interleave,
    // and the bare producer's own row is measured so too.
    return Array.from({ length: BATCH }, (_, i) => ({
      key: ACCESS_KEY,
      value: encoded[(start + i) % encoded.length],
      ...(ROUTE_PARTITIONS > 1 ? { partition: i % ROUTE_PARTITIONS } : {}),
    }))
  }
  await producer.send({ topic, acks: -1, messages: records(0) })
  log("bare kafkajs producer...")
  const per = Math.ceil(EVENTS / CLIENTS / BATCH) * BATCH
  const cpu0 = ownCpuSeconds()
  const t0 = now()
  let n = 0
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      let sent = 0
      const lanes = Array.from({ length: WINDOW }, async () => {
        while (sent < per) {
          sent += BATCH
          await producer.send({ topic, acks: -1, messages: records(n++) })
        }
      })
      await Promise.all(lanes)
    }),
  )
  const ms = now() - t0
  const cpuSecondsPer100k = per100k(ownCpuSeconds() - cpu0, per * CLIENTS)
  await producer.disconnect()
  const r = rate(per * CLIENTS, ms)
  log(`  ${r.eventsPerSec.toFixed(0)} events/s, ${cpuSecondsPer100k.toFixed(2)} CPU-s/100k`)
  return { topic, ...r, cpuSecondsPer100k }
}

/** A router decrypting `topic` into files in `outputDir` (the bench tenant's `file` target), in consumer group `group`. */
const spawnFileRouter = (brokers, topic, group, outputDir, metricsPort) =>
  spawnProgram("router", [
    "consumer",
    "--decrypt-events",
    "--output-dir",
    outputDir,
    "--tenants",
    tenantsFile,
    "--brokers",
    brokers.join(","),
    "--topic",
    topic,
    "--group",
    group,
    "--metrics-port",
    String(metricsPort),
  ])

/** Router from a filled topic into a file with decryption, and a bare consumer on the same topic. */
async function benchRoute(brokers, topic) {
  const total = await topicSize(brokers, topic)
  log(`route: ${total} records in ${topic}`)
  // bare consumer
  const consumer = kafkaFor(brokers).consumer({ groupId: `bench-bare-${randomUUID()}`, maxBytes: 16 * 1024 * 1024 })
  await consumer.connect()
  await consumer.subscribe({ topic, fromBeginning: true })
  let seen = 0
  let first = 0
  let cpuFirst = 0
  const bare = await new Promise((resolve) => {
    consumer.run({
      eachBatch: async ({ batch }) => {
        if (seen === 0) {
          first = now()
          cpuFirst = ownCpuSeconds()
        }
        for (const m of batch.messages) EventCodec.decode(m.value)
        seen += batch.messages.length
        if (seen >= total)
          resolve({ ...rate(seen, now() - first), cpuSecondsPer100k: per100k(ownCpuSeconds() - cpuFirst, seen) })
      },
    })
  })
  await consumer.disconnect()
  log(`  bare consumer (decode only): ${bare.eventsPerSec.toFixed(0)} events/s`)

  // BENCH_ROUTERS routers share one consumer group (each gets its partitions) and write their own folders; the row's
  // rate counts the lines of all of them, its CPU is theirs together, its peak RSS the largest of them.
  const group = `bench-router-${randomUUID()}`
  const routers = []
  for (let r = 0; r < ROUTERS; r++) {
    const outputDir = path.join(work, `route-out-${Date.now()}-${r}`)
    fs.mkdirSync(outputDir)
    const child = spawnFileRouter(brokers, topic, group, outputDir, await freePort())
    routers.push({ child, file: path.join(outputDir, "bench.log"), pos: 0 })
  }
  const routersCpu = () => routers.reduce((sum, r) => sum + cpuSeconds(r.child.pid), 0)
  let lines = 0
  let t1 = 0
  // Lines already in the files at the first read landed before t1: they are not part of the timed interval.
  let linesAtT1 = 0
  let cpuT1 = 0
  let settled = false
  const deadline = Date.now() + 600_000
  while (lines < total && Date.now() < deadline && routers.every((r) => r.child.exitCode === null)) {
    await sleep(20)
    for (const r of routers) {
      if (!fs.existsSync(r.file)) continue
      const size = fs.statSync(r.file).size
      if (size <= r.pos) continue
      const fd = fs.openSync(r.file, "r")
      const buf = Buffer.alloc(size - r.pos)
      fs.readSync(fd, buf, 0, buf.length, r.pos)
      fs.closeSync(fd)
      r.pos = size
      // The clock starts at the first lines; with several routers, again once every one has written (their group
      // has settled) when that happens: a router without partitions writes nothing.
      const first = lines === 0
      const all = ROUTERS > 1 && !settled && routers.every((x) => x.pos > 0)
      if (first || all) {
        t1 = now()
        cpuT1 = routersCpu()
        settled = all
      }
      // indexOf, not a loop over every byte: this process shares the cores with the router it measures.
      for (let at = buf.indexOf(10); at !== -1; at = buf.indexOf(10, at + 1)) lines++
      if (first || all) linesAtT1 = lines
    }
  }
  const t2 = now()
  const routerCpuSecondsPer100k = per100k(routersCpu() - cpuT1, lines - linesAtT1)
  const routed = { ...rate(lines - linesAtT1, t2 - t1), lines, linesBeforeClock: linesAtT1 }
  // The formula before the fix (every line over the time from the first read), for comparison with older figures.
  const routedAllLines = rate(lines, t2 - t1)
  const peaks = routers.map((r) => memOf(r.child.pid).peakMiB)
  for (const r of routers) await stopChild(r.child)
  log(
    `  ${ROUTERS > 1 ? `${ROUTERS} routers` : "router"} (decrypt + file): ${routed.eventsPerSec.toFixed(0)} events/s (${lines}/${total} lines, ${linesAtT1} before the clock; ${routedAllLines.eventsPerSec.toFixed(0)} counting them)`,
  )
  return {
    records: total,
    router: routed,
    routerAllLines: routedAllLines,
    bareConsumer: bare,
    routers: ROUTERS,
    clockFromAllRouters: settled,
    routerPeakMiB: Math.max(...peaks),
    routerPeaksMiB: peaks,
    routerCpuSecondsPer100k,
  }
}

/** Agent tails a file; lines appended at RATE/s carry their write time; the router's file shows when they land. */
/** BENCH_AGENT_ENV="SPILLWAY_BATCH_LINGER_MS=10 ...": extra environment of the latency run's agent (experiments). */
const agentEnv = () =>
  Object.fromEntries(
    (process.env.BENCH_AGENT_ENV ?? "")
      .split(" ")
      .filter((kv) => kv.includes("="))
      .map((kv) => kv.split("=", 2)),
  )

async function benchLatency(brokers, token) {
  const topic = `bench-e2e-${Date.now().toString(36)}`
  await createTopic(brokers, topic)
  const ing = await startIngester(brokers, topic)
  const outputDir = path.join(work, `e2e-out-${Date.now()}`)
  fs.mkdirSync(outputDir)
  const routerMetrics = await freePort()
  const router = spawnFileRouter(brokers, topic, `bench-e2e-${randomUUID()}`, outputDir, routerMetrics)
  await waitReady(router, routerMetrics)
  const tokenFile = path.join(work, "agent.token")
  fs.writeFileSync(tokenFile, token, { mode: 0o600 })
  const input = path.join(work, "e2e-input.log")
  fs.writeFileSync(input, "")
  const agentMetrics = await freePort()
  const agent = spawnProgram(
    "agent",
    [
      "--ingester",
      `localhost:${ing.port}`,
      "--ca-cert",
      certs.caCert,
      "--buffer-dir",
      path.join(work, "agent-buffer"),
      "--tail",
      input,
      "--metrics-port",
      String(agentMetrics),
    ],
    { ACCESS_KEY, ACCESS_TOKEN_FILE: tokenFile, ...agentEnv() },
  )
  await sleep(3000)
  log(
    `latency: ${RATE} lines/s for ${WARMUP_SECONDS}s (warm-up) + ${LATENCY_SECONDS}s through agent -> ingester -> Kafka -> router`,
  )
  const origin = performance.timeOrigin
  // The first WARMUP_SECONDS of lines are the programs' first work after start (cold code, first connections):
  // their latencies are reported apart from the percentiles of the steady run that follows.
  const warmupTotal = RATE * WARMUP_SECONDS
  const total = warmupTotal + RATE * LATENCY_SECONDS
  const file = path.join(outputDir, "bench.log")
  const latencies = []
  const warmup = []
  const trace = []
  let pos = 0
  let rest = ""
  const readNew = () => {
    if (!fs.existsSync(file)) return
    const size = fs.statSync(file).size
    if (size <= pos) return
    const fd = fs.openSync(file, "r")
    const buf = Buffer.alloc(size - pos)
    fs.readSync(fd, buf, 0, buf.length, pos)
    fs.closeSync(fd)
    pos = size
    const t = origin + now()
    const parts = (rest + buf.toString("utf8")).split("\n")
    rest = parts.pop() ?? ""
    for (const line of parts) {
      const m = /^e2e (\d+) lat=(\d+\.\d+)/.exec(JSON.parse(line).message?.log ?? "")
      if (m) {
        const ms = t - Number(m[2])
        ;(Number(m[1]) < warmupTotal ? warmup : latencies).push(ms)
        if (process.env.BENCH_LATENCY_TRACE) trace.push([Number(m[2]) - origin, ms])
      }
    }
  }
  const fd = fs.openSync(input, "a")
  const pids = { agent: agent.pid, ingester: ing.child.pid, router: router.pid }
  let cpuStart
  // CPU from the first line written to the last routed: all the work for every line, also when a run falls behind
  // (the cores above then miss what was done after the writing ended).
  const cpuFirst = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuSeconds(pid)]))
  const start = now()
  let written = 0
  let measuredFrom = start
  while (written < total) {
    if (cpuStart === undefined && written >= warmupTotal) {
      cpuStart = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuSeconds(pid)]))
      measuredFrom = now()
    }
    const due = Math.min(total, Math.floor(((now() - start) / 1000) * RATE))
    if (due > written) {
      let chunk = ""
      const t = (origin + now()).toFixed(3)
      for (; written < due; written++) chunk += `e2e ${written} lat=${t}\n`
      fs.writeSync(fd, chunk)
    }
    readNew()
    await sleep(2)
  }
  fs.closeSync(fd)
  const writeSeconds = (now() - measuredFrom) / 1000
  // Share of one core each program used while the lines were written (1.0 = one core).
  const cores = Object.fromEntries(
    Object.entries(pids).map(([k, pid]) => [`${k}Cores`, (cpuSeconds(pid) - cpuStart[k]) / writeSeconds]),
  )
  const deadline = Date.now() + 60_000
  while (latencies.length + warmup.length < total && Date.now() < deadline) {
    readNew()
    await sleep(2)
  }
  const cpuPer100k = Object.fromEntries(
    Object.entries(pids).map(([k, pid]) => [
      `${k}CpuSecondsPer100k`,
      per100k(cpuSeconds(pid) - cpuFirst[k], latencies.length + warmup.length),
    ]),
  )
  if (process.env.BENCH_LATENCY_TRACE) fs.writeFileSync(process.env.BENCH_LATENCY_TRACE, JSON.stringify(trace))
  latencies.sort((a, b) => a - b)
  warmup.sort((a, b) => a - b)
  const q = (p, of = latencies) => of[Math.min(of.length - 1, Math.floor(p * of.length))]
  const mems = { agentPeakMiB: memOf(agent.pid).peakMiB, routerPeakMiB: memOf(router.pid).peakMiB }
  mems.ingesterPeakMiB = memOf(ing.child.pid).peakMiB
  await stopChild(agent)
  await stopChild(ing.child)
  await stopChild(router)
  const r = {
    rate: RATE,
    seconds: LATENCY_SECONDS,
    sent: total - warmupTotal,
    received: latencies.length,
    p50Ms: q(0.5),
    p99Ms: q(0.99),
    maxMs: latencies.at(-1),
    warmupSeconds: WARMUP_SECONDS,
    warmupReceived: warmup.length,
    warmupP99Ms: q(0.99, warmup),
    warmupMaxMs: warmup.at(-1),
    ...mems,
    ...cores,
    ...cpuPer100k,
  }
  log(`  p50 ${r.p50Ms?.toFixed(1)} ms, p99 ${r.p99Ms?.toFixed(1)} ms (${latencies.length}/${total})`)
  return r
}

/** The ingester on a private broker that is then stopped while clients keep pushing: RSS over time. */
async function benchOverload(token) {
  const opts = {
    home: path.join(broker.CACHE_DIR, "..", "kafka-private", "bench"),
    port: 19190,
    controllerPort: 19191,
    heap: "512m",
    log: () => undefined,
  }
  await broker.start({ ...opts, owner: "auto" })
  const brokers = [`127.0.0.1:${opts.port}`]
  const topic = `bench-overload-${Date.now().toString(36)}`
  await createTopic(brokers, topic)
  const ing = await startIngester(brokers, topic)
  await batchClient(ing.port, token, BATCH * 10)
  const before = memOf(ing.child.pid).rssMiB
  log(`overload: stopping the ingester's Kafka, ${CLIENTS} clients push for ${OVERLOAD_SECONDS}s`)
  await broker.stop({ ...opts })
  const until = Date.now() + OVERLOAD_SECONDS * 1000
  let maxRss = 0
  const sampler = setInterval(() => {
    maxRss = Math.max(maxRss, memOf(ing.child.pid).rssMiB)
  }, 200)
  const failures = {}
  let acked = 0
  while (Date.now() < until) {
    const rs = await Promise.all(Array.from({ length: CLIENTS }, () => batchClient(ing.port, token, 1e12, until)))
    for (const r of rs) {
      acked += r.acked
      for (const [k, v] of Object.entries(r.failures)) failures[k] = (failures[k] ?? 0) + v
    }
    await sleep(100)
  }
  clearInterval(sampler)
  const alive = ing.child.exitCode === null
  await stopChild(ing.child)
  await broker.stop({ ...opts, forget: true })
  fs.rmSync(opts.home, { recursive: true, force: true })
  const r = {
    seconds: OVERLOAD_SECONDS,
    rssBeforeMiB: before,
    maxRssMiB: maxRss,
    ackedWhileDown: acked,
    failures,
    alive,
  }
  log(`  RSS ${before.toFixed(0)} -> max ${maxRss.toFixed(0)} MiB; statuses ${JSON.stringify(failures)}`)
  return r
}

// ---- main -----------------------------------------------------------------------------------------------------

const fmt = (n, d = 0) => (Number.isFinite(n) ? n.toLocaleString("en-US", { maximumFractionDigits: d }) : "n/a")

async function main() {
  const k = await broker.start({ owner: "manual", log })
  const brokers = [...broker.BROKERS]
  const token = await mintToken()
  const machine = {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memGiB: os.totalmem() / 2 ** 30,
    node: process.version,
    kafka: broker.KAFKA_VERSION,
    host: os.hostname(),
    date: new Date().toISOString(),
  }
  log(`machine: ${JSON.stringify(machine)}`)
  log(
    `events per scenario ${EVENTS}, ${CLIENTS} clients, batches of ${BATCH}, ${WINDOW} in flight, ${EVENT_BYTES} B/event`,
  )
  const results = { machine, settings: { EVENTS, CLIENTS, BATCH, WINDOW, RATE, EVENT_BYTES, RECEIVER_RECORDS } }
  const only = new Set(
    (process.env.BENCH_ONLY || "startup,ingest,route,s3,opensearch,otlp,forward,latency,overload").split(","),
  )
  const stores = ["s3", "opensearch"].filter((k) => only.has(k))
  const receivers = ["otlp", "forward"].filter((k) => only.has(k))
  const startedServers = []
  try {
    if (only.has("startup")) {
      log("startup: each program from spawn to ready")
      results.startup = await benchStartup({ brokers, harness, token, produce: produceSome(brokers), log })
    }
    if (only.has("ingest")) results.ingest = await benchIngest(brokers, token)
    if (receivers.length > 0)
      results.receivers = await benchReceivers(receivers, { brokers, n: RECEIVER_RECORDS, harness, log })
    if (only.has("ingest") || only.has("route") || stores.length > 0 || receivers.length > 0)
      results.bareProducer = await benchBareProducer(brokers)
    if (only.has("route")) results.route = await benchRoute(brokers, results.bareProducer.topic)
    for (const kind of stores) {
      const url = await useServer(kind, startedServers, log)
      const total = await topicSize(brokers, results.bareProducer.topic)
      log(`route -> ${kind} (${url}): ${total} records`)
      results[kind] = await benchStoreRoute(kind, {
        brokers,
        topic: results.bareProducer.topic,
        total,
        url,
        work,
        spawnProgram,
        eventBytes: EVENT_BYTES,
        log,
      })
    }
    if (only.has("latency")) results.latency = await benchLatency(brokers, token)
    if (only.has("overload")) results.overload = await benchOverload(token)
  } finally {
    for (const c of children) c.kill("SIGKILL")
    for (const kind of startedServers) await servers.stop(kind)
    await deleteCreatedTopics(brokers)
    if (k.started) await broker.stop({ log })
    fs.writeFileSync(OUT, `${JSON.stringify(results, null, 2)}\n`)
  }
  // The routed files and the programs' logs (about 80 MB a run); kept when the run failed (its logs are named in the
  // error) or with BENCH_KEEP_WORK=1.
  if (process.env.BENCH_KEEP_WORK !== "1") fs.rmSync(work, { recursive: true, force: true })
  const i = results.ingest
  const b = results.bareProducer
  const r = results.route
  const l = results.latency
  const rc = results.receivers
  const o = results.overload
  const rows = []
  if (results.startup) {
    const s = results.startup
    for (const x of [s.ingester, s.router, s.agent])
      rows.push(
        `| ${x.name} start to ready, median of ${x.runs.length} (ms) | ${fmt(x.medianMs)} | | ${fmt(x.medianCpuSeconds, 2)} CPU-s by then |`,
        `| ${x.name} loading: \`--version\` to exit (ms) | ${fmt(x.load.medianMs)} | ${fmt(s.node.medianMs)} (\`node -e 0\`) | ${fmt(x.load.medianCpuSeconds, 2)} CPU-s (node ${fmt(s.node.medianCpuSeconds, 2)}) |`,
      )
  }
  if (i) {
    const ratio = (x) => fmt(x / b.eventsPerSec, 2)
    rows.push(
      `| ingest, batch RPC (events/s) | ${fmt(i.batchRpc.eventsPerSec)} | ${fmt(b.eventsPerSec)} | ${ratio(i.batchRpc.eventsPerSec)} |`,
      `| ingest, batch RPC (MB/s) | ${fmt(i.batchRpc.mbPerSec, 1)} | ${fmt(b.mbPerSec, 1)} | |`,
      `| ingester CPU-s per 100k events, batch RPC | ${fmt(i.batchRpc.ingesterCpuSecondsPer100k, 2)} | ${fmt(b.cpuSecondsPer100k, 2)} | ${fmt(i.batchRpc.ingesterCpuSecondsPer100k / b.cpuSecondsPer100k, 2)} |`,
      `| ingest, SendEvent (events/s) | ${fmt(i.sendEvent.eventsPerSec)} | ${fmt(b.eventsPerSec)} | ${ratio(i.sendEvent.eventsPerSec)} |`,
      `| ingester CPU-s per 100k events, SendEvent | ${fmt(i.sendEvent.ingesterCpuSecondsPer100k, 2)} | ${fmt(b.cpuSecondsPer100k, 2)} | ${fmt(i.sendEvent.ingesterCpuSecondsPer100k / b.cpuSecondsPer100k, 2)} |`,
      `| ingest, SendEvent, lean HTTP/2 clients (events/s) | ${fmt(i.sendEventLean.eventsPerSec)} | ${fmt(b.eventsPerSec)} | ${ratio(i.sendEventLean.eventsPerSec)} |`,
      `| ingester CPU-s per 100k events, SendEvent, lean clients | ${fmt(i.sendEventLean.ingesterCpuSecondsPer100k, 2)} | ${fmt(b.cpuSecondsPer100k, 2)} | ${fmt(i.sendEventLean.ingesterCpuSecondsPer100k / b.cpuSecondsPer100k, 2)} |`,
      ...(i.sendEventGo
        ? [
            `| ingest, SendEvent, grpc-go clients (events/s) | ${fmt(i.sendEventGo.eventsPerSec)} | ${fmt(b.eventsPerSec)} | ${ratio(i.sendEventGo.eventsPerSec)} |`,
            `| ingester CPU-s per 100k events, SendEvent, grpc-go clients | ${fmt(i.sendEventGo.ingesterCpuSecondsPer100k, 2)} | ${fmt(b.cpuSecondsPer100k, 2)} | ${fmt(i.sendEventGo.ingesterCpuSecondsPer100k / b.cpuSecondsPer100k, 2)} |`,
          ]
        : []),
      `| cores used, batch RPC / SendEvent / lean / grpc-go: ingester | ${[i.batchRpc, i.sendEvent, i.sendEventLean, i.sendEventGo].map((x) => (x ? fmt(x.ingesterCores, 2) : "-")).join(" / ")} | | |`,
      `| cores used, the same: the clients | ${[i.batchRpc, i.sendEvent, i.sendEventLean, i.sendEventGo].map((x) => (x ? fmt(x.clientCores, 2) : "-")).join(" / ")} | | |`,
      `| peak RSS ingester (MiB) | ${fmt(i.ingesterPeakMiB)} | | |`,
      i.ownPeaks
        ? `| peak RSS ingester during batch RPC / SendEvent / lean / grpc-go, in turn (MiB) | ${[i.batchRpc, i.sendEvent, i.sendEventLean, i.sendEventGo].map((x) => (x ? fmt(x.ingesterPeakMiB) : "-")).join(" / ")} | | |`
        : "| peak RSS ingester, per scenario | not measured: the kernel refused to reset the peak | | |",
    )
  }
  if (r)
    rows.push(
      `| route, decrypt + file${r.routers > 1 ? `, ${r.routers} routers in one group` : ""} (events/s) | ${fmt(r.router.eventsPerSec)} | ${fmt(r.bareConsumer.eventsPerSec)} | ${fmt(r.router.eventsPerSec / r.bareConsumer.eventsPerSec, 2)} |`,
      `| router CPU-s per 100k events, decrypt + file | ${fmt(r.routerCpuSecondsPer100k, 2)} | ${fmt(r.bareConsumer.cpuSecondsPer100k, 2)} | ${fmt(r.routerCpuSecondsPer100k / r.bareConsumer.cpuSecondsPer100k, 2)} |`,
      `| peak RSS router (MiB) | ${r.routers > 1 ? r.routerPeaksMiB.map((m) => fmt(m)).join(" / ") : fmt(r.routerPeakMiB)} | | |`,
    )
  for (const kind of stores) {
    const x = results[kind]
    rows.push(
      `| route, decrypt + ${kind} (events/s) | ${fmt(x.eventsPerSec)} | ${r ? `${fmt(r.bareConsumer.eventsPerSec)} (consumer)` : ""} | ${r ? `${fmt(x.eventsPerSec / r.bareConsumer.eventsPerSec, 2)}; ` : ""}${x.delivered}/${x.of} delivered, ${x.deadLetters} dead letters |`,
      `| route, decrypt + ${kind} (MB/s of records) | ${fmt(x.mbPerSec, 1)} | | ${kind === "s3" ? `${fmt(x.objects)} objects, ${fmt(x.storedMB, 1)} MB stored` : ""} |`,
      `| router CPU-seconds per 100k events, ${kind} | ${fmt(x.cpuSecondsPer100k, 1)} | ${r ? `${fmt(r.bareConsumer.cpuSecondsPer100k, 2)} (consumer)` : ""} | ${r ? fmt(x.cpuSecondsPer100k / r.bareConsumer.cpuSecondsPer100k, 2) : ""} |`,
      `| peak RSS router, ${kind} (MiB) | ${fmt(x.routerPeakMiB)} | | |`,
    )
  }
  if (rc) {
    const ratio = (x) => fmt(x / b.eventsPerSec, 2)
    const recv = (name, x) =>
      `| ingest, ${name} (records/s) | ${fmt(x.recordsPerSec)} | ${fmt(b.eventsPerSec)} | ${ratio(x.recordsPerSec)} (${x.stored}/${x.records} in Kafka; ingester ${fmt(x.ingesterCpuSecondsPer100k, 1)} CPU-s/100k${rc.ownPeaks ? `, peak RSS ${fmt(x.ingesterPeakMiB)} MiB` : ""}) |`
    if (rc.otlpGrpc) rows.push(recv("OTLP/gRPC, JS SDK exporter", rc.otlpGrpc))
    if (rc.otlpHttp) rows.push(recv("OTLP/HTTP protobuf, JS SDK exporter", rc.otlpHttp))
    if (rc.forward) rows.push(recv("Forward PackedForward + acks, @fluent-org/logger", rc.forward))
    rows.push(`| peak RSS ingester, receivers (MiB) | ${fmt(rc.ingesterPeakMiB)} | | |`)
  }
  if (l)
    rows.push(
      `| end-to-end latency at ${fmt(l.rate)}/s, p50 / p99 (ms) | ${fmt(l.p50Ms, 1)} / ${fmt(l.p99Ms, 1)} | | ${l.received}/${l.sent} lines |`,
      `| the same, first ${l.warmupSeconds} s after start (not above), p99 / max (ms) | ${fmt(l.warmupP99Ms, 1)} / ${fmt(l.warmupMaxMs, 1)} | | ${l.warmupReceived}/${l.rate * l.warmupSeconds} lines |`,
      `| peak RSS in the latency run, ingester / router / agent (MiB) | ${fmt(l.ingesterPeakMiB)} / ${fmt(l.routerPeakMiB)} / ${fmt(l.agentPeakMiB)} | | |`,
      `| cores used in the latency run, ingester / router / agent | ${fmt(l.ingesterCores, 2)} / ${fmt(l.routerCores, 2)} / ${fmt(l.agentCores, 2)} | | |`,
      `| CPU-seconds per 100k lines in the latency run (first line written to last routed), ingester / router / agent | ${fmt(l.ingesterCpuSecondsPer100k, 2)} / ${fmt(l.routerCpuSecondsPer100k, 2)} / ${fmt(l.agentCpuSecondsPer100k, 2)} | | |`,
    )
  if (o)
    rows.push(
      `| ingester RSS, Kafka down ${o.seconds}s under push (MiB) | ${fmt(o.rssBeforeMiB)} → max ${fmt(o.maxRssMiB)} | | statuses ${JSON.stringify(o.failures)} |`,
    )
  const table = [
    `Spillway benchmark, ${machine.date}: ${machine.cpus} × ${machine.cpuModel}, ${fmt(machine.memGiB)} GiB, Node ${machine.node}, Kafka ${machine.kafka}`,
    `${EVENTS} events per scenario, ${CLIENTS} clients, batches of ${BATCH}, ${WINDOW} in flight, ${EVENT_BYTES} B per encoded event`,
    "",
    "| Measure | Value | Limit (bare kafkajs) | Ratio |",
    "| --- | ---: | ---: | ---: |",
    ...rows,
  ].join("\n")
  process.stdout.write(`${table}\n\nfigures written to ${OUT}\n`)
}

main().catch((e) => {
  for (const c of children) c.kill("SIGKILL")
  process.stderr.write(`[bench] failed: ${e instanceof Error ? e.stack : String(e)}\n`)
  process.exit(1)
})
