#!/usr/bin/env node
/**
 * `npm start`: the whole pipeline on this machine, for a first look.
 *
 * Starts the local Kafka broker (scripts/kafka.mjs) unless one runs; creates, where missing, development
 * certificates, a JWT secret, a demo tenants file and a demo log under `.run/` (outside git); starts the ingester,
 * the router and an agent that tails the demo log and samples host metrics; appends a line to the demo log every
 * second. Ctrl-C (or SIGTERM) stops the agent, the ingester, the router and then the broker if it started it.
 *
 * Environment: SPILLWAY_RUN_DIR (default .run), SPILLWAY_INGESTER_PORT (7777), SPILLWAY_DEMO_INTERVAL_MS (1000,
 * 0 = no demo lines), and, off unless given (scripts/demo.mjs):
 *   SPILLWAY_DEMO_TARGETS=s3,opensearch  starts moto and/or OpenSearch (scripts/servers.mjs; fetched beforehand with
 *       `npm run s3 -- fetch` / `npm run opensearch -- fetch`) and gives both demo tenants those targets next to their
 *       file target (tenants file .run/tenants-demo.json, rewritten at each start); stops what it started on Ctrl-C;
 *   SPILLWAY_DEMO_RECEIVERS=otlp,forward  the ingester's OTLP/gRPC (4317), OTLP/HTTP (4318) and Fluent Forward
 *       (24224) receivers (ports from SPILLWAY_OTLP_GRPC_PORT, SPILLWAY_OTLP_HTTP_PORT, SPILLWAY_FORWARD_PORT), with a
 *       token and a Fluent Bit output block printed.
 * The broker is the one of scripts/kafka.mjs (SPILLWAY_KAFKA_PORT moves it; the programs are given its address).
 */
import { spawn, spawnSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import fs from "node:fs"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { checkFetched, demoList, demoReceivers, describeTargets, startDemoTargets, stopDemoTargets } from "./demo.mjs"
import * as kafka from "./kafka.mjs"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const runDir = path.resolve(root, process.env.SPILLWAY_RUN_DIR || ".run")
const ingesterPort = Number(process.env.SPILLWAY_INGESTER_PORT || 7777)
const demoIntervalMs = Number(process.env.SPILLWAY_DEMO_INTERVAL_MS ?? 1000)
const dist = (name) => path.join(root, "dist", "programs", `${name}.js`)
const say = (m) => process.stdout.write(`[start] ${m}\n`)

const TENANTS = [
  { key: "9c60f26f-5b6c-4c80-b5f5-625bf965b6a6", user: "2134558", enc: "883EC28EBA9A36A386FA351FBC482B34" },
  { key: "9c60f26f-5b6c-4c80-b5f5-611bf965c6a8", user: "1134412", enc: "883EC28EBA9A36A386FA351FBC482B34" },
]

const children = []
let stopping = false

function prefixLines(name, stream, out) {
  let rest = ""
  stream.setEncoding("utf8")
  stream.on("data", (chunk) => {
    const lines = (rest + chunk).split("\n")
    rest = lines.pop() ?? ""
    for (const line of lines) out.write(`[${name}] ${line}\n`)
  })
}

function launch(name, args, env = {}) {
  const child = spawn(process.execPath, [dist(name), ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  })
  prefixLines(name, child.stdout, process.stdout)
  prefixLines(name, child.stderr, process.stderr)
  child.on("exit", (code, signal) => {
    if (!stopping) {
      say(`${name} exited (${signal ?? code}); stopping everything`)
      void shutdown(1)
    }
  })
  children.push({ name, child })
  return child
}

function stopChild({ name, child }, timeoutMs = 20_000) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      say(`${name} did not stop in ${timeoutMs / 1000}s; killing it`)
      child.kill("SIGKILL")
    }, timeoutMs)
    child.once("exit", () => {
      clearTimeout(timer)
      resolve()
    })
    child.kill("SIGTERM")
  })
}

let startedKafka = false
const startedServers = []
let demoTimer
let tokenTimer

async function shutdown(code = 0) {
  if (stopping) return
  stopping = true
  clearInterval(demoTimer)
  clearInterval(tokenTimer)
  say("stopping: agent, then ingester, then router")
  for (const name of ["agent", "ingester", "router"]) {
    const c = children.find((x) => x.name === name)
    if (c) await stopChild(c)
  }
  await stopDemoTargets(startedServers, say).catch((e) => say(`could not stop a test server: ${e.message}`))
  if (startedKafka) {
    say("stopping the Kafka broker started for this run")
    await kafka.stop({ log: say })
  }
  say("stopped")
  process.exit(code)
}

function writeIfMissing(file, make, mode = 0o600) {
  if (fs.existsSync(file)) return false
  fs.writeFileSync(file, make(), { mode })
  return true
}

function ingesterCommand(args, what) {
  const r = spawnSync(process.execPath, [dist("ingester"), ...args], {
    env: { ...process.env, SPILLWAY_JWT_SECRET_FILE: path.join(runDir, "jwt.secret") },
    encoding: "utf8",
  })
  if (r.status !== 0) throw new Error(`could not make ${what}: ${r.stderr || r.stdout}`)
  return r.stdout.trim()
}
const mintToken = (accessKey, expirySeconds) =>
  ingesterCommand(["access-token", "--access-key", accessKey, "--expiry", String(expirySeconds)], "a token")
const forwardPassword = (accessKey) =>
  ingesterCommand(["forward-password", "--access-key", accessKey], "a Forward password")

async function waitReady(name, port, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/readyz`)
      if (res.ok) return
    } catch {}
    await new Promise((r) => setTimeout(r, 250))
  }
  throw new Error(`${name} was not ready on :${port}/readyz after ${timeoutMs / 1000}s`)
}

async function main() {
  if (process.argv.includes("--help") || process.argv.includes("-h")) {
    process.stdout.write(`${fs.readFileSync(fileURLToPath(import.meta.url), "utf8").split("*/")[0]}*/\n`)
    return
  }
  for (const name of ["ingester", "router", "agent"])
    if (!fs.existsSync(dist(name))) throw new Error(`${dist(name)} is missing: run \`npm run build\` first`)
  const demoTargets = demoList("SPILLWAY_DEMO_TARGETS", ["s3", "opensearch"])
  const receivers = demoList("SPILLWAY_DEMO_RECEIVERS", ["otlp", "forward"])
  await checkFetched(demoTargets)

  const k = await kafka.start({ owner: "manual", log: say })
  startedKafka = k.started
  say(k.started ? `Kafka started (pid ${k.pid})` : `using the running Kafka (pid ${k.pid})`)
  const brokers = ["--brokers", kafka.BROKERS.join(",")]
  const stores = await startDemoTargets(demoTargets, say, startedServers)

  fs.mkdirSync(runDir, { recursive: true, mode: 0o700 })
  const certDir = path.join(runDir, "certs")
  const { makeDevCerts } = await import(path.join(root, "dist", "shared", "DevCerts.js"))
  const { Effect } = await import("effect")
  const certs = await Effect.runPromise(makeDevCerts(certDir))
  if (writeIfMissing(path.join(runDir, "jwt.secret"), () => randomBytes(48).toString("base64")))
    say(`made a JWT secret in ${path.join(runDir, "jwt.secret")}`)
  const tenantsOf = (extra) =>
    JSON.stringify(
      Object.fromEntries(
        TENANTS.map((t) => [
          t.key,
          { AccessKey: t.key, EncryptionKey: t.enc, UserID: t.user, targets: [{ file: `${t.key}.log` }, ...extra] },
        ]),
      ),
      null,
      2,
    )
  // With demo targets, a file of its own (their urls depend on this run's ports); .run/tenants.json stays as it is.
  const tenantsFile = path.join(runDir, stores.targets.length > 0 ? "tenants-demo.json" : "tenants.json")
  if (stores.targets.length > 0) fs.writeFileSync(tenantsFile, tenantsOf(stores.targets), { mode: 0o644 })
  else writeIfMissing(tenantsFile, () => tenantsOf([]), 0o644)
  const outputDir = path.join(runDir, "output")
  const bufferDir = path.join(runDir, "agent-buffer")
  const demoLog = path.join(runDir, "demo", "app.log")
  fs.mkdirSync(outputDir, { recursive: true })
  fs.mkdirSync(path.dirname(demoLog), { recursive: true })

  const tenant = TENANTS[0]
  const tokenFile = path.join(runDir, "agent.token")
  const refreshToken = () => fs.writeFileSync(tokenFile, mintToken(tenant.key, 3600), { mode: 0o600 })
  refreshToken()
  tokenTimer = setInterval(refreshToken, 30 * 60_000)

  const common = { SPILLWAY_JWT_SECRET_FILE: path.join(runDir, "jwt.secret") }
  const recv = demoReceivers(receivers, { runDir, certs, mintToken, forwardPassword, accessKey: tenant.key })
  launch(
    "ingester",
    [
      "api",
      "--port",
      String(ingesterPort),
      "--tls-cert",
      certs.serverCert,
      "--tls-key",
      certs.serverKey,
      "--tenants",
      tenantsFile,
      "--metrics-port",
      "9464",
      ...brokers,
      ...recv.args,
    ],
    common,
  )
  launch(
    "router",
    [
      "consumer",
      "--decrypt-events",
      "--output-dir",
      outputDir,
      "--tenants",
      tenantsFile,
      "--metrics-port",
      "9466",
    ].concat(brokers),
    stores.env,
  )
  await waitReady("ingester", 9464)
  await waitReady("router", 9466)
  launch(
    "agent",
    [
      "--ingester",
      `localhost:${ingesterPort}`,
      "--ca-cert",
      certs.caCert,
      "--buffer-dir",
      bufferDir,
      "--tail",
      demoLog,
      "--metrics-interval",
      "10",
      "--metrics-port",
      "9465",
    ],
    { ACCESS_KEY: tenant.key, ACCESS_TOKEN_FILE: tokenFile },
  )

  let n = 0
  if (demoIntervalMs > 0)
    demoTimer = setInterval(() => {
      n += 1
      fs.appendFileSync(demoLog, `${new Date().toISOString()} demo line ${n} from npm start\n`)
    }, demoIntervalMs)

  say("pipeline running:")
  say(`  demo log tailed by the agent:  ${demoLog} (append your own lines too)`)
  say(`  routed files (NDJSON):          ${outputDir}/<access key>.log`)
  if (stores.targets.length > 0) say(`  tenants file with the demo targets: ${tenantsFile}`)
  describeTargets(demoTargets, say)
  for (const line of recv.help) say(line)
  say(`  metrics: ingester :9464/metrics, router :9466/metrics, agent :9465/metrics`)
  say("  press Ctrl-C to stop everything")
}

process.on("SIGINT", () => void shutdown(0))
process.on("SIGTERM", () => void shutdown(0))
main().catch((e) => {
  process.stderr.write(`[start] ${e instanceof Error ? e.message : String(e)}\n`)
  void shutdown(1)
})
