/**
 * What `npm run bench` and `npm run soak` share: a work folder with development certificates, a JWT secret and a
 * one-tenant tenants file; the built programs (dist/) started as child processes with their logs in the work
 * folder; readiness, memory and shutdown helpers. Needs `npm run build` first.
 */
import { spawn, spawnSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { Effect } from "effect"
import { Kafka, logLevel } from "kafkajs"

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
export const dist = (...p) => path.join(root, "dist", ...p)
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
export const ACCESS_KEY = "9c60f26f-5b6c-4c80-b5f5-625bf965b6a6"
export const ENC_KEY = "883EC28EBA9A36A386FA351FBC482B34"
export const USER_ID = "2134558"

export const envInt = (name, dflt) => {
  const v = process.env[name]
  if (v === undefined || v === "") return dflt
  const n = Number.parseInt(v, 10)
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name}=${v}: expected a non-negative integer`)
  return n
}

export const kafkaFor = (brokers) => new Kafka({ clientId: "spillway-harness", brokers, logLevel: logLevel.NOTHING })

/** The topics this process created (`createTopic`), for `deleteCreatedTopics`: a few per run. */
const createdTopics = new Set()

export const createTopic = async (brokers, topic, partitions = 3) => {
  const admin = kafkaFor(brokers).admin()
  await admin.connect()
  await admin.createTopics({
    topics: [{ topic, numPartitions: partitions, replicationFactor: 1 }],
    waitForLeaders: true,
  })
  createdTopics.add(topic)
  await admin.disconnect()
}

/**
 * Deletes the topics `createTopic` made in this process, and the topics the programs derived from them (`<topic>-dlq`,
 * `<topic>-retry-<group>`). A benchmark run writes about 0.5 GB into them at the default sizes; kept,
 * a series of runs fills the broker's disk. Best effort: a broker already gone leaves them to its data folder.
 */
export const deleteCreatedTopics = async (brokers) => {
  if (createdTopics.size === 0) return
  const admin = kafkaFor(brokers).admin()
  try {
    await admin.connect()
    const all = await admin.listTopics()
    const topics = all.filter((t) =>
      [...createdTopics].some((c) => t === c || t.startsWith(`${c}-dlq`) || t.startsWith(`${c}-retry-`)),
    )
    if (topics.length > 0) await admin.deleteTopics({ topics, timeout: 10_000 })
    createdTopics.clear()
  } catch {
    // best effort (see above)
  } finally {
    await admin.disconnect().catch(() => undefined)
  }
}

export const freePort = async () => {
  const net = await import("node:net")
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

const TICKS = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim()) || 100

/** User + system CPU seconds of a live process so far (/proc/<pid>/stat), NaN when it cannot be read. */
export const cpuSeconds = (pid) => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return (Number(f[11]) + Number(f[12])) / TICKS
  } catch {
    return Number.NaN
  }
}

/** This process's user + system CPU seconds so far (the bare references run inside the benchmark process). */
export const ownCpuSeconds = () => {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1e6
}

/**
 * Starts a new peak for `pid`: the kernel sets its VmHWM to its RSS now (`/proc/<pid>/clear_refs` "5", Linux 4.0 on;
 * our own children only). So a scenario run after it reports its own peak RSS, not the process's since start. False
 * when the kernel refused: the peak is then the process's since start.
 */
export const resetPeak = (pid) => {
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, "5")
    return true
  } catch {
    return false
  }
}

/**
 * Peaks of `pid` per part of a run: `during(run)` resets the peak (`resetPeak`), runs, and gives `run`'s result with
 * its `peakMiB`; `overall()` is the largest of those, or the process's peak since start when the kernel refused a
 * reset (`own` is then false).
 */
export const peakTracker = (pid) => {
  const peaks = []
  let own = true
  return {
    async during(run) {
      own = resetPeak(pid) && own
      const r = await run()
      const peakMiB = memOf(pid).peakMiB
      peaks.push(peakMiB)
      return { result: r, peakMiB }
    },
    get own() {
      return own
    },
    overall: () => (own && peaks.length > 0 ? Math.max(...peaks) : memOf(pid).peakMiB),
  }
}

/** Peak resident set (VmHWM) and current RSS of a live process, in MiB. */
export const memOf = (pid) => {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, "utf8")
    const kb = (k) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? Number.NaN)
    return { peakMiB: kb("VmHWM") / 1024, rssMiB: kb("VmRSS") / 1024 }
  } catch {
    return { peakMiB: Number.NaN, rssMiB: Number.NaN }
  }
}

export const stopChild = (child, signal = "SIGTERM") =>
  child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve()
    : new Promise((resolve) => {
        const t = setTimeout(() => child.kill("SIGKILL"), 20_000)
        child.once("exit", () => {
          clearTimeout(t)
          resolve()
        })
        child.kill(signal)
      })

export async function waitReady(child, port, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`exited early (${child.exitCode}); see ${child.logFile}`)
    try {
      if ((await fetch(`http://127.0.0.1:${port}/readyz`)).ok) return
    } catch {}
    await sleep(100)
  }
  throw new Error(`not ready after ${timeoutMs / 1000}s; see ${child.logFile}`)
}

/** A work folder with certificates, a JWT secret and the tenants file, and the programs started from it. */
export async function makeHarness(name, { targets = [{ file: `${name}.log` }] } = {}) {
  const { makeDevCerts } = await import(dist("shared", "DevCerts.js"))
  const work = fs.mkdtempSync(path.join(os.tmpdir(), `spillway-${name}-`))
  const certs = await Effect.runPromise(makeDevCerts(path.join(work, "certs")))
  const secretFile = path.join(work, "jwt.secret")
  fs.writeFileSync(secretFile, randomBytes(48).toString("base64"), { mode: 0o600 })
  const tenantsFile = path.join(work, "tenants.json")
  fs.writeFileSync(
    tenantsFile,
    JSON.stringify({ [ACCESS_KEY]: { AccessKey: ACCESS_KEY, EncryptionKey: ENC_KEY, UserID: USER_ID, targets } }),
  )
  const children = new Set()
  // A clean environment: only what the harness sets, plus PATH and HOME, and for experiments BENCH_PROGRAM_ENV
  // ("SPILLWAY_V8_OLD_GROWTH_PERCENT=0 ...": extra environment of every program).
  const programEnv = Object.fromEntries(
    (process.env.BENCH_PROGRAM_ENV ?? "")
      .split(" ")
      .filter((kv) => kv.includes("="))
      .map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]),
  )
  const baseEnv = { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? os.tmpdir(), ...programEnv }

  function spawnProgram(program, args, env = {}) {
    const logFile = path.join(work, `${program}-${children.size}.log`)
    const out = fs.openSync(logFile, "a")
    // BENCH_PROFILE=ingester,router writes V8 CPU profiles of those programs into BENCH_PROFILE_DIR, sampled every
    // BENCH_PROFILE_INTERVAL µs (Node's default 1000).
    const interval = process.env.BENCH_PROFILE_INTERVAL
      ? [`--cpu-prof-interval=${process.env.BENCH_PROFILE_INTERVAL}`]
      : []
    const profile = (process.env.BENCH_PROFILE ?? "").split(",").includes(program)
      ? ["--cpu-prof", `--cpu-prof-dir=${process.env.BENCH_PROFILE_DIR || "/tmp/spillway-prof"}`, ...interval]
      : []
    // BENCH_NODE_FLAGS="--max-semi-space-size=2 ..." passes V8/Node flags to every program (experiments).
    const flags = (process.env.BENCH_NODE_FLAGS ?? "").split(" ").filter((f) => f !== "")
    // BENCH_LOG_LEVEL=Debug keeps the programs' logs at that level (Warning by default: logging costs CPU).
    const child = spawn(process.execPath, [...flags, ...profile, dist("programs", `${program}.js`), ...args], {
      env: { ...baseEnv, SPILLWAY_LOG_LEVEL: process.env.BENCH_LOG_LEVEL || "Warning", ...env },
      stdio: ["ignore", out, out],
    })
    fs.closeSync(out)
    children.add(child)
    child.on("exit", () => children.delete(child))
    child.logFile = logFile
    return child
  }

  async function startIngester(brokers, topic, extraEnv = {}, ports = {}) {
    const port = ports.port ?? (await freePort())
    const metricsPort = ports.metricsPort ?? (await freePort())
    const args = ["api", "--port", String(port), "--tls-cert", certs.serverCert, "--tls-key", certs.serverKey]
    args.push("--tenants", tenantsFile, "--brokers", brokers.join(","), "--topic", topic)
    args.push("--metrics-port", String(metricsPort))
    const child = spawnProgram("ingester", args, { SPILLWAY_JWT_SECRET_FILE: secretFile, ...extraEnv })
    await waitReady(child, metricsPort)
    return { child, port, metricsPort }
  }

  async function startRouter(brokers, topic, { outputDir, group, metricsPort } = {}) {
    const port = metricsPort ?? (await freePort())
    const args = ["consumer", "--decrypt-events", "--output-dir", outputDir, "--tenants", tenantsFile]
    args.push("--brokers", brokers.join(","), "--topic", topic, "--group", group, "--metrics-port", String(port))
    const child = spawnProgram("router", args)
    await waitReady(child, port)
    return { child, metricsPort: port }
  }

  async function startAgent(ingesterPort, { input, bufferDir, tokenFile, metricsPort } = {}) {
    const port = metricsPort ?? (await freePort())
    const args = ["--ingester", `localhost:${ingesterPort}`, "--ca-cert", certs.caCert, "--buffer-dir", bufferDir]
    args.push("--tail", input, "--metrics-port", String(port))
    const child = spawnProgram("agent", args, { ACCESS_KEY, ACCESS_TOKEN_FILE: tokenFile })
    return { child, metricsPort: port }
  }

  function mintToken(expirySeconds = 86_400) {
    return new Promise((resolve, reject) => {
      const args = [dist("programs", "ingester.js"), "access-token", "--access-key", ACCESS_KEY]
      args.push("--expiry", String(expirySeconds))
      const c = spawn(process.execPath, args, { env: { ...baseEnv, SPILLWAY_JWT_SECRET_FILE: secretFile } })
      let out = ""
      c.stdout.on("data", (d) => (out += d))
      c.on("exit", (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`access-token exited ${code}`))))
    })
  }

  const killAll = () => {
    for (const c of children) c.kill("SIGKILL")
  }

  return {
    work,
    certs,
    secretFile,
    tenantsFile,
    children,
    spawnProgram,
    startIngester,
    startRouter,
    startAgent,
    mintToken,
    killAll,
  }
}
