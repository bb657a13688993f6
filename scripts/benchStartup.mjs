/**
 * The `startup` rows of `npm run bench` (scripts/bench.mjs): how long each built program takes from spawn to ready,
 * on a warm machine with Kafka already up, and the CPU-seconds it used by then (/proc/<pid>/stat). Ready means:
 *  - ingester: `/readyz` answers 200 (gRPC listening, Kafka producer connected, tenants loaded);
 *  - router: the first line of a topic that already holds records is in its output file (consumer joined, fetched,
 *    decrypted, written);
 *  - agent: `/readyz` answers 200 (buffer open and writable, inputs started).
 * Each program is started BENCH_STARTUP_RUNS times (5); the medians are reported with the runs. Readiness is polled
 * every 5 ms, so a figure is at most about 5 ms (plus one request) late.
 *
 * What loading alone costs is measured beside it: `node -e 0` (Node's own start) and `node dist/programs/<p>.js
 * --version` (reading, compiling and evaluating the program's code, and the command line), each run to its exit,
 * with the CPU it used (reported by the child itself at exit).
 */

import { spawnSync } from "node:child_process"
import { randomUUID } from "node:crypto"
import fs from "node:fs"
import path from "node:path"
import { cpuSeconds, createTopic, dist, envInt, freePort, sleep, stopChild } from "./harness.mjs"

const RUNS = envInt("BENCH_STARTUP_RUNS", 5)

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length === 0 ? Number.NaN : s[Math.floor((s.length - 1) / 2)]
}

/** Polls `ready()` every 5 ms until it is true: the milliseconds since `t0` and the CPU the child used by then. */
async function timeToReady(child, t0, ready, timeoutMs = 60_000) {
  while (performance.now() - t0 < timeoutMs) {
    if (child.exitCode !== null) throw new Error(`exited early (${child.exitCode}); see ${child.logFile}`)
    if (await ready()) return { ms: performance.now() - t0, cpuSeconds: cpuSeconds(child.pid) }
    await sleep(5)
  }
  throw new Error(`not ready after ${timeoutMs / 1000}s; see ${child.logFile}`)
}

const readyz = (port) => async () => {
  try {
    return (await fetch(`http://127.0.0.1:${port}/readyz`)).ok
  } catch {
    return false
  }
}

// Preloaded into the child: writes the CPU it used, in microseconds, to stderr as it exits.
const CPU_AT_EXIT =
  'data:text/javascript,import{writeSync}from"node:fs";process.on("exit",()=>{const u=process.cpuUsage();writeSync(2,"\\ncpu-us="+(u.user+u.system)+"\\n")})'

/** One run of `node ...args` to its exit: wall milliseconds and the CPU-seconds it used. */
function timeToExit(args) {
  const t0 = performance.now()
  const r = spawnSync(process.execPath, [`--import=${CPU_AT_EXIT}`, ...args], { encoding: "utf8", env: { PATH: "" } })
  const ms = performance.now() - t0
  const cpu = /cpu-us=(\d+)/.exec(r.stderr ?? "")
  if (r.status !== 0 || cpu === null) throw new Error(`node ${args.join(" ")} failed (${r.status}): ${r.stderr}`)
  return { ms, cpuSeconds: Number(cpu[1]) / 1e6 }
}

const summary = (name, runs) => ({
  name,
  runs,
  medianMs: median(runs.map((r) => r.ms)),
  medianCpuSeconds: median(runs.map((r) => r.cpuSeconds)),
})

/** Starts, times and stops each program RUNS times. `h` is the bench harness, `produce` fills a topic. */
export async function benchStartup({ brokers, harness: h, token, produce, log }) {
  const topic = `bench-startup-${Date.now().toString(36)}`
  await createTopic(brokers, topic)
  await produce(topic, 10)
  const ingester = []
  const router = []
  const agent = []
  const tokenFile = path.join(h.work, "startup.token")
  fs.writeFileSync(tokenFile, token, { mode: 0o600 })
  for (let i = 0; i < RUNS; i++) {
    // ingester
    const port = await freePort()
    const metrics = await freePort()
    const args = ["api", "--port", String(port), "--tls-cert", h.certs.serverCert, "--tls-key", h.certs.serverKey]
    args.push("--tenants", h.tenantsFile, "--brokers", brokers.join(","), "--topic", topic)
    args.push("--metrics-port", String(metrics))
    let t0 = performance.now()
    const ing = h.spawnProgram("ingester", args, { SPILLWAY_JWT_SECRET_FILE: h.secretFile })
    ingester.push(await timeToReady(ing, t0, readyz(metrics)))

    // agent, against that ingester
    const agentMetrics = await freePort()
    const input = path.join(h.work, `startup-${i}.log`)
    fs.writeFileSync(input, "")
    const agentArgs = ["--ingester", `localhost:${port}`, "--ca-cert", h.certs.caCert]
    agentArgs.push("--buffer-dir", path.join(h.work, `startup-buffer-${i}`), "--tail", input)
    agentArgs.push("--metrics-port", String(agentMetrics))
    t0 = performance.now()
    const ag = h.spawnProgram("agent", agentArgs, {
      ACCESS_KEY: "9c60f26f-5b6c-4c80-b5f5-625bf965b6a6",
      ACCESS_TOKEN_FILE: tokenFile,
    })
    agent.push(await timeToReady(ag, t0, readyz(agentMetrics)))
    await stopChild(ag)
    await stopChild(ing)

    // router: first line of the filled topic
    const outputDir = path.join(h.work, `startup-out-${i}`)
    fs.mkdirSync(outputDir)
    const file = path.join(outputDir, "bench.log")
    const routerArgs = ["consumer", "--decrypt-events", "--output-dir", outputDir, "--tenants", h.tenantsFile]
    routerArgs.push("--brokers", brokers.join(","), "--topic", topic, "--group", `bench-startup-${randomUUID()}`)
    routerArgs.push("--metrics-port", "0")
    t0 = performance.now()
    const rt = h.spawnProgram("router", routerArgs)
    router.push(await timeToReady(rt, t0, async () => fs.existsSync(file) && fs.statSync(file).size > 0))
    await stopChild(rt)
  }
  // Loading alone, interleaved so that the machine's load disturbs each alike.
  const loads = { node: [], ingester: [], router: [], agent: [] }
  for (let i = 0; i < RUNS; i++) {
    loads.node.push(timeToExit(["-e", "0"]))
    for (const p of ["ingester", "router", "agent"])
      loads[p].push(timeToExit([dist("programs", `${p}.js`), "--version"]))
  }
  const r = {
    ingester: { ...summary("ingester", ingester), load: summary("ingester --version", loads.ingester) },
    router: { ...summary("router", router), load: summary("router --version", loads.router) },
    agent: { ...summary("agent", agent), load: summary("agent --version", loads.agent) },
    node: summary("node -e 0", loads.node),
  }
  for (const x of [r.ingester, r.router, r.agent])
    log(
      `  ${x.name}: ready in ${x.medianMs.toFixed(0)} ms (median of ${RUNS}), ${x.medianCpuSeconds.toFixed(2)} CPU-s; ` +
        `--version ${x.load.medianMs.toFixed(0)} ms, ${x.load.medianCpuSeconds.toFixed(2)} CPU-s`,
    )
  log(`  node -e 0: ${r.node.medianMs.toFixed(0)} ms, ${r.node.medianCpuSeconds.toFixed(2)} CPU-s`)
  return r
}
