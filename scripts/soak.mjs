#!/usr/bin/env node
/**
 * `npm run soak`: the whole pipeline (agent -> ingester -> Kafka -> router -> file) at a steady rate for a long time,
 * with faults: every SOAK_KILL_EVERY_SECONDS a random program is SIGKILLed and started again, and once, half-way,
 * the Kafka broker is restarted. Not part of the tests.
 *
 * At the end it prints, per window of SOAK_WINDOW_SECONDS: lines written and routed, p50/p99 latency (line appended
 * to the tailed file -> line in the routed file) and each program's RSS; and in total: lost (must be 0) and
 * duplicates. It exits 1 when anything was lost, or when a program's RSS keeps growing after warm-up: the largest
 * RSS of the last quarter of the run above 1.25 x (the largest of the second quarter) + 32 MiB.
 *
 * Settings (environment): SOAK_RATE (lines/s, 2000), SOAK_MINUTES (20), SOAK_KILL_EVERY_SECONDS (180),
 * SOAK_WINDOW_SECONDS (60), SOAK_OUT (JSON figures, soak-results.json). The broker is a private one
 * (.cache/kafka-private/soak, port 19292), so a running development broker is not disturbed.
 */
import { randomInt, randomUUID } from "node:crypto"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { createTopic, envInt, makeHarness, memOf, root, sleep } from "./harness.mjs"
import * as broker from "./kafka.mjs"

const RATE = envInt("SOAK_RATE", 2000)
const MINUTES = envInt("SOAK_MINUTES", 20)
const KILL_EVERY = envInt("SOAK_KILL_EVERY_SECONDS", 180)
const WINDOW = envInt("SOAK_WINDOW_SECONDS", 60)
const OUT = path.resolve(process.env.SOAK_OUT || path.join(root, "soak-results.json"))
const log = (m) => process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${m}\n`)

const kafkaOpts = {
  home: path.join(broker.CACHE_DIR, "..", "kafka-private", "soak"),
  port: 19292,
  controllerPort: 19293,
  heap: "512m",
  log: () => undefined,
}
const brokers = [`127.0.0.1:${kafkaOpts.port}`]

const h = await makeHarness("soak")
const topic = `soak-${Date.now().toString(36)}`
const outputDir = path.join(h.work, "out")
const input = path.join(h.work, "input.log")
const bufferDir = path.join(h.work, "agent-buffer")
const tokenFile = path.join(h.work, "agent.token")
const routedFile = path.join(outputDir, "soak.log")
const group = `soak-${randomUUID()}`

/** The three programs, each restartable on the same ports and folders. */
const programs = {}
async function startAll() {
  programs.ingester = await h.startIngester(brokers, topic, {}, programs.ingester ?? {})
  programs.router = await h.startRouter(brokers, topic, { outputDir, group })
  programs.agent = await h.startAgent(programs.ingester.port, { input, bufferDir, tokenFile })
}
async function restart(name) {
  const p = programs[name]
  if (name === "ingester") programs.ingester = await h.startIngester(brokers, topic, {}, p)
  if (name === "router")
    programs.router = await h.startRouter(brokers, topic, { outputDir, group, metricsPort: p.metricsPort })
  if (name === "agent")
    programs.agent = await h.startAgent(programs.ingester.port, {
      input,
      bufferDir,
      tokenFile,
      metricsPort: p.metricsPort,
    })
}

/** Reads what the router appended since the last call: sequence numbers seen and latencies. */
const reader = { pos: 0, rest: "", seen: new Map(), lines: 0 }
function readRouted(window) {
  if (!fs.existsSync(routedFile)) return
  const size = fs.statSync(routedFile).size
  if (size <= reader.pos) return
  const fd = fs.openSync(routedFile, "r")
  const buf = Buffer.alloc(size - reader.pos)
  fs.readSync(fd, buf, 0, buf.length, reader.pos)
  fs.closeSync(fd)
  reader.pos = size
  const t = Date.now()
  const parts = (reader.rest + buf.toString("utf8")).split("\n")
  reader.rest = parts.pop() ?? ""
  for (const line of parts) {
    const m = /soak (\d+) at=(\d+)/.exec(line)
    if (!m) continue
    reader.lines++
    const seq = Number(m[1])
    reader.seen.set(seq, (reader.seen.get(seq) ?? 0) + 1)
    window.latencies.push(t - Number(m[2]))
    window.routed++
  }
}

const quantile = (xs, p) => {
  if (xs.length === 0) return Number.NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]
}

async function main() {
  const k = await broker.start({ ...kafkaOpts, owner: "auto" })
  log(`broker on ${brokers[0]} (pid ${k.pid}); ${RATE} lines/s for ${MINUTES} min, a SIGKILL every ${KILL_EVERY} s`)
  await createTopic(brokers, topic)
  fs.mkdirSync(outputDir, { recursive: true })
  fs.writeFileSync(input, "")
  fs.writeFileSync(tokenFile, await h.mintToken(7 * 86_400), { mode: 0o600 })
  await startAll()

  const windows = []
  const newWindow = () => ({ start: Date.now(), written: 0, routed: 0, latencies: [], rss: {}, events: [] })
  let win = newWindow()
  const fd = fs.openSync(input, "a")
  const t0 = Date.now()
  const end = t0 + MINUTES * 60_000
  let written = 0
  let nextKill = t0 + KILL_EVERY * 1000
  let brokerRestarted = false
  const sampleRss = () => {
    for (const [name, p] of Object.entries(programs)) {
      const rss = memOf(p.child.pid).rssMiB
      if (Number.isFinite(rss)) win.rss[name] = Math.max(win.rss[name] ?? 0, rss)
    }
  }
  while (Date.now() < end) {
    const due = Math.min(Math.floor(((Date.now() - t0) / 1000) * RATE), Math.floor(MINUTES * 60 * RATE))
    if (due > written) {
      let chunk = ""
      const at = Date.now()
      win.written += due - written
      for (; written < due; written++) chunk += `soak ${written} at=${at}\n`
      fs.writeSync(fd, chunk)
    }
    readRouted(win)
    sampleRss()
    if (Date.now() >= nextKill) {
      const names = Object.keys(programs)
      const name = names[randomInt(names.length)]
      log(`SIGKILL ${name} (pid ${programs[name].child.pid})`)
      win.events.push(`kill ${name}`)
      programs[name].child.kill("SIGKILL")
      await new Promise((r) => programs[name].child.once("exit", r))
      await restart(name)
      nextKill += KILL_EVERY * 1000
    }
    if (!brokerRestarted && Date.now() >= t0 + (MINUTES * 60_000) / 2) {
      brokerRestarted = true
      log("restarting the Kafka broker")
      win.events.push("broker restart")
      await broker.restart(kafkaOpts)
    }
    if (Date.now() - win.start >= WINDOW * 1000) {
      windows.push(win)
      log(summary(win, windows.length))
      win = newWindow()
    }
    await sleep(20)
  }
  fs.closeSync(fd)
  log(`writing stopped at ${written} lines; waiting up to 180 s for the rest`)
  const drainUntil = Date.now() + 180_000
  while (reader.seen.size < written && Date.now() < drainUntil) {
    readRouted(win)
    await sleep(200)
  }
  windows.push(win)
  return { windows, written }
}

const fmt = (n, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : "n/a")
const summary = (w, i) =>
  `window ${i}: routed ${w.routed}, p50 ${fmt(quantile(w.latencies, 0.5))} ms, p99 ${fmt(quantile(w.latencies, 0.99))} ms, ` +
  `RSS ${Object.entries(w.rss)
    .map(([k, v]) => `${k} ${fmt(v)}`)
    .join(" / ")} MiB${w.events.length ? `; ${w.events.join(", ")}` : ""}`

function verdict({ windows, written }) {
  let missing = 0
  for (let i = 0; i < written; i++) if (!reader.seen.has(i)) missing++
  const duplicates = reader.lines - reader.seen.size
  const q = Math.max(1, Math.floor(windows.length / 4))
  const growth = {}
  for (const name of ["ingester", "router", "agent"]) {
    const second = Math.max(...windows.slice(q, 2 * q).map((w) => w.rss[name] ?? 0))
    const last = Math.max(...windows.slice(-q).map((w) => w.rss[name] ?? 0))
    growth[name] = { secondQuarterMaxMiB: second, lastQuarterMaxMiB: last, grows: last > 1.25 * second + 32 }
  }
  return { written, lost: missing, duplicates, growth }
}

let result
try {
  result = await main()
} finally {
  h.killAll()
  await broker.stop({ ...kafkaOpts, forget: true })
}
const v = verdict(result)
const table = [
  `Spillway soak, ${new Date().toISOString()}: ${os.cpus().length} × ${os.cpus()[0]?.model}, Node ${process.version}`,
  `${RATE} lines/s for ${MINUTES} min, a random SIGKILL every ${KILL_EVERY} s, one broker restart`,
  "",
  "| window | routed | p50 ms | p99 ms | RSS ingester / router / agent (MiB) | faults |",
  "| ---: | ---: | ---: | ---: | --- | --- |",
  ...result.windows.map(
    (w, i) =>
      `| ${i + 1} | ${w.routed} | ${fmt(quantile(w.latencies, 0.5))} | ${fmt(quantile(w.latencies, 0.99))} | ${fmt(w.rss.ingester)} / ${fmt(w.rss.router)} / ${fmt(w.rss.agent)} | ${w.events.join(", ")} |`,
  ),
  "",
  `written ${v.written}, lost ${v.lost}, duplicates ${v.duplicates}; RSS growth: ${JSON.stringify(v.growth)}`,
].join("\n")
process.stdout.write(`${table}\n`)
fs.writeFileSync(
  OUT,
  `${JSON.stringify({ settings: { RATE, MINUTES, KILL_EVERY, WINDOW }, ...v, windows: result.windows.map((w) => ({ ...w, latencies: undefined, p50: quantile(w.latencies, 0.5), p99: quantile(w.latencies, 0.99) })) }, null, 2)}\n`,
)
const failed = v.lost > 0 || Object.values(v.growth).some((g) => g.grows)
process.exit(failed ? 1 : 0)
