#!/usr/bin/env node
/**
 * Real destination servers for development and tests, on loopback, without Docker:
 *
 *   npm run opensearch -- start|stop|status|logs|fetch|reset
 *       a single-node OpenSearch 2.19.6 from its Maven Central jars (Java 17), HTTP on 127.0.0.1:9201
 *       (SPILLWAY_OPENSEARCH_PORT; transport on the next port). Jars in .cache/opensearch/libs, data in
 *       .cache/opensearch/home.
 *   npm run s3 -- start|stop|status|logs|fetch|reset
 *       an S3-compatible server: moto 5.2.5 in server mode (PyPI, installed into .cache/py), on 127.0.0.1:9300
 *       (SPILLWAY_S3_PORT). Data in memory: a restart empties it.
 *
 * `start` is idempotent and returns once the server answers; `stop` stops only the process this script started,
 * by the pid in its pid file. Also a module: tests import start/stop/status (types in servers.d.mts).
 */
import { spawn, spawnSync } from "node:child_process"
import fs from "node:fs"
import net from "node:net"
import path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const cache = path.join(repoRoot, ".cache")
export const OPENSEARCH_VERSION = "2.19.6"
export const MOTO_VERSION = "5.2.5"
const LOG4J = "2.25.4"
const DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const envPort = (name, fallback) => {
  const raw = process.env[name]
  const n = raw === undefined || raw === "" ? fallback : Number(raw)
  if (!Number.isInteger(n) || n < 1 || n > 65534) throw new Error(`${name}=${raw}: expected a port number`)
  return n
}

const portOpen = (port, timeoutMs = 500) =>
  new Promise((resolve) => {
    const s = net.connect({ host: "127.0.0.1", port })
    const done = (ok) => {
      s.destroy()
      resolve(ok)
    }
    s.setTimeout(timeoutMs, () => done(false))
    s.once("connect", () => done(true))
    s.once("error", () => done(false))
  })

const alive = (pid, marker) => {
  try {
    process.kill(pid, 0)
    const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8")
    const state = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.[0]
    // The command line is empty for a moment while a launcher (the pyenv shim) execs the real program.
    return (cmd === "" || cmd.includes(marker)) && state !== "Z"
  } catch {
    return false
  }
}

// ---------------------------------------------------------------------------------------------------------------
// the two servers

const pomXml = () => `<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by scripts/servers.mjs: a single-node OpenSearch from Maven Central. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.spillway</groupId><artifactId>opensearch-libs</artifactId><version>1</version><packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.opensearch</groupId><artifactId>opensearch</artifactId><version>${OPENSEARCH_VERSION}</version></dependency>
    <dependency><groupId>org.opensearch.plugin</groupId><artifactId>transport-netty4-client</artifactId><version>${OPENSEARCH_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>${LOG4J}</version></dependency>
  </dependencies>
</project>
`

const log4j = `status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = STDOUT
`

const javaBin = () => (process.env.JAVA_HOME ? path.join(process.env.JAVA_HOME, "bin", "java") : "java")

const opensearch = () => {
  const dir = path.join(cache, "opensearch")
  const port = envPort("SPILLWAY_OPENSEARCH_PORT", 9201)
  return {
    name: "OpenSearch",
    dir,
    port,
    url: `http://127.0.0.1:${port}`,
    marker: "SpillwayOpenSearch",
    pidFile: path.join(dir, "server.pid"),
    logFile: path.join(dir, "server.log"),
    dataDir: path.join(dir, "home"),
    ready: async () => {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/_cluster/health?wait_for_status=yellow&timeout=1s`, {
          signal: AbortSignal.timeout(3000),
        })
        return res.ok
      } catch {
        return false
      }
    },
    fetched: () => fs.existsSync(path.join(dir, "libs", `.complete-${OPENSEARCH_VERSION}`)),
    fetch: async (log) => {
      const libs = path.join(dir, "libs")
      const marker = path.join(libs, `.complete-${OPENSEARCH_VERSION}`)
      if (fs.existsSync(marker)) return
      log(`fetching OpenSearch ${OPENSEARCH_VERSION} jars from Maven Central into ${libs} (once)...`)
      fs.rmSync(libs, { recursive: true, force: true })
      fs.mkdirSync(dir, { recursive: true })
      fs.writeFileSync(path.join(dir, "pom.xml"), pomXml())
      const r = spawnSync(
        "mvn",
        [
          "-B",
          "-q",
          "-f",
          path.join(dir, "pom.xml"),
          `${DEPENDENCY_PLUGIN}:copy-dependencies`,
          "-DincludeScope=runtime",
          `-DoutputDirectory=${libs}`,
        ],
        { encoding: "utf8" },
      )
      if (r.status !== 0) throw new Error(`mvn could not fetch the OpenSearch jars:\n${r.stdout}${r.stderr}`)
      fs.writeFileSync(marker, "")
    },
    command: (inst) => {
      const home = inst.dataDir
      fs.mkdirSync(path.join(home, "config"), { recursive: true })
      fs.writeFileSync(path.join(home, "config", "log4j2.properties"), log4j)
      fs.writeFileSync(path.join(home, "config", "opensearch.yml"), "")
      return [
        javaBin(),
        [
          "-Xms256m",
          `-Xmx${process.env.SPILLWAY_OPENSEARCH_HEAP || "512m"}`,
          "-XX:+UseG1GC",
          "-Djava.awt.headless=true",
          `-Dlog4j2.configurationFile=${path.join(home, "config", "log4j2.properties")}`,
          "-cp",
          path.join(dir, "libs", "*"),
          path.join(repoRoot, "scripts", "opensearch", "SpillwayOpenSearch.java"),
          home,
          String(port),
          String(port + 1),
        ],
      ]
    },
  }
}

const s3 = () => {
  const dir = path.join(cache, "s3")
  const port = envPort("SPILLWAY_S3_PORT", 9300)
  const py = path.join(cache, "py")
  return {
    name: "S3 (moto)",
    dir,
    port,
    url: `http://127.0.0.1:${port}`,
    marker: "moto.server",
    pidFile: path.join(dir, "server.pid"),
    logFile: path.join(dir, "server.log"),
    dataDir: dir,
    ready: async () => {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/moto-api/`, { signal: AbortSignal.timeout(3000) })
        return res.status < 500
      } catch {
        return false
      }
    },
    fetched: () => fs.existsSync(path.join(py, "moto", `.spillway-${MOTO_VERSION}`)),
    fetch: async (log) => {
      if (fs.existsSync(path.join(py, "moto", `.spillway-${MOTO_VERSION}`))) return
      log(`installing moto[server]==${MOTO_VERSION} from PyPI into ${py} (once)...`)
      const r = spawnSync(
        "python3",
        [
          "-m",
          "pip",
          "install",
          "--quiet",
          "--disable-pip-version-check",
          "--upgrade",
          "--target",
          py,
          `moto[server]==${MOTO_VERSION}`,
        ],
        { encoding: "utf8" },
      )
      if (r.status !== 0) throw new Error(`pip could not install moto:\n${r.stdout}${r.stderr}`)
      fs.writeFileSync(path.join(py, "moto", `.spillway-${MOTO_VERSION}`), "")
    },
    command: () => ["python3", ["-m", "moto.server", "-H", "127.0.0.1", "-p", String(port)], { PYTHONPATH: py }],
  }
}

const servers = { opensearch, s3 }

// ---------------------------------------------------------------------------------------------------------------
// start / stop / status

const readPid = (inst) => {
  try {
    const pid = Number.parseInt(fs.readFileSync(inst.pidFile, "utf8"), 10)
    return Number.isInteger(pid) ? pid : undefined
  } catch {
    return undefined
  }
}

export async function status(which) {
  const inst = servers[which]()
  const pid = readPid(inst)
  if (pid === undefined || !alive(pid, inst.marker)) return { state: "stopped", url: inst.url }
  return { state: (await inst.ready()) ? "running" : "starting", pid, url: inst.url }
}

export async function start(
  which,
  { log = (m) => process.stderr.write(`[${which}] ${m}\n`), timeoutMs = 120_000 } = {},
) {
  const inst = servers[which]()
  const t0 = Date.now()
  const pid = readPid(inst)
  if (pid !== undefined && alive(pid, inst.marker)) {
    while (!(await inst.ready())) {
      if (Date.now() - t0 > timeoutMs) throw new Error(`${inst.name} (pid ${pid}) is not ready at ${inst.url}`)
      await sleep(250)
    }
    return { started: false, pid, url: inst.url, seconds: (Date.now() - t0) / 1000 }
  }
  if (await portOpen(inst.port))
    throw new Error(`port 127.0.0.1:${inst.port} is in use by a process this script did not start`)
  await inst.fetch(log)
  fs.mkdirSync(inst.dir, { recursive: true })
  const [bin, args, env] = inst.command(inst)
  const fd = fs.openSync(inst.logFile, "a")
  const child = spawn(bin, args, {
    detached: true,
    stdio: ["ignore", fd, fd],
    cwd: inst.dir,
    env: { ...process.env, ...(env ?? {}) },
  })
  fs.closeSync(fd)
  child.unref()
  fs.writeFileSync(inst.pidFile, `${child.pid}\n`)
  while (!(await inst.ready())) {
    if (!alive(child.pid, inst.marker)) {
      fs.rmSync(inst.pidFile, { force: true })
      throw new Error(`${inst.name} exited during start-up; log tail:\n${tail(which, 40)}`)
    }
    if (Date.now() - t0 > timeoutMs) {
      await stop(which)
      throw new Error(`${inst.name} was not ready at ${inst.url} after ${timeoutMs / 1000} s`)
    }
    await sleep(250)
  }
  return { started: true, pid: child.pid, url: inst.url, seconds: (Date.now() - t0) / 1000 }
}

export async function stop(which, { signal = "SIGTERM", timeoutMs = 20_000 } = {}) {
  const inst = servers[which]()
  const pid = readPid(inst)
  fs.rmSync(inst.pidFile, { force: true })
  if (pid === undefined || !alive(pid, inst.marker)) return { stopped: false }
  process.kill(pid, signal)
  const until = Date.now() + timeoutMs
  while (alive(pid, inst.marker) && Date.now() < until) await sleep(100)
  if (alive(pid, inst.marker)) process.kill(pid, "SIGKILL")
  while (await portOpen(inst.port, 200)) await sleep(100)
  return { stopped: true, pid }
}

export function tail(which, lines = 50) {
  try {
    return fs.readFileSync(servers[which]().logFile, "utf8").split("\n").slice(-lines).join("\n")
  } catch {
    return ""
  }
}

export const url = (which) => servers[which]().url

/** Whether the server's jars / package are in .cache (so that `start` would not download them). */
export const fetched = (which) => servers[which]().fetched()

async function main([which, cmd, arg]) {
  if (!(which in servers) || cmd === undefined) {
    console.error("usage: node scripts/servers.mjs opensearch|s3 start|stop|status|logs [N]|fetch|reset")
    return 2
  }
  const inst = servers[which]()
  switch (cmd) {
    case "start": {
      const r = await start(which)
      console.log(`${inst.name} on ${r.url}: ${r.started ? "started" : "already running"} (pid ${r.pid})`)
      return 0
    }
    case "stop": {
      const r = await stop(which)
      console.log(`${inst.name}: ${r.stopped ? `stopped (pid ${r.pid})` : "not running"}`)
      return 0
    }
    case "status": {
      const s = await status(which)
      console.log(`${inst.name} on ${s.url}: ${s.state}${s.pid ? ` (pid ${s.pid})` : ""}`)
      return s.state === "running" ? 0 : 1
    }
    case "logs":
      console.log(tail(which, Number(arg ?? 50)))
      return 0
    case "fetch":
      await inst.fetch((m) => process.stderr.write(`[${which}] ${m}\n`))
      return 0
    case "reset":
      await stop(which)
      fs.rmSync(inst.dataDir, { recursive: true, force: true })
      console.log(`${inst.name}: stopped, data deleted`)
      return 0
    default:
      console.error(`unknown command ${cmd}`)
      return 2
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      console.error(e instanceof Error ? e.message : String(e))
      process.exit(1)
    },
  )
}
