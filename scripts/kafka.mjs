#!/usr/bin/env node
/**
 * A real local Apache Kafka 4.x broker (single-node KRaft, combined broker+controller) for development and tests,
 * run from the jars Maven Central serves: no Docker, no tarball.
 *
 *   npm run kafka -- start        fetch jars (first time), format storage (first time), start, wait until ready
 *   npm run kafka -- stop         SIGTERM the broker this script started (SIGKILL after 30 s)
 *   npm run kafka -- restart      stop + start, same data
 *   npm run kafka -- status       prints running/starting/stopped; exit 0 only when running and the port answers, else 1
 *   npm run kafka -- logs [N]     last N (default 100) lines of the broker log
 *   npm run kafka -- fetch        only download the jars
 *   npm run kafka -- reset        stop and delete the data dir (topics, offsets)
 *   npm run kafka -- cluster start|stop|status|reset
 *                                 a three-node KRaft cluster on 29092/29094/29096 (RF 3, min.insync.replicas 2)
 *
 * Layout (all under .cache/kafka/, outside git): pom.xml, libs/ (jars + .complete marker), data/ (KRaft log dir),
 * server.properties, log4j2.properties, broker.log, broker.pid, broker.owner, leases/. A broker started with
 * SPILLWAY_KAFKA_PORT other than 9092 has its own of each (`broker-<port>.pid`, …), so several checkouts sharing one
 * .cache run their brokers side by side.
 *
 * Environment: SPILLWAY_KAFKA_PORT (9092), SPILLWAY_KAFKA_CONTROLLER_PORT (9093), SPILLWAY_KAFKA_DIR (data dir),
 * SPILLWAY_KAFKA_PARTITIONS (num.partitions, 3), SPILLWAY_KAFKA_HEAP (max heap, 768m),
 * SPILLWAY_KAFKA_START_TIMEOUT_MS (120000), SPILLWAY_KAFKA_VERSION (override the pinned version; testing only),
 * JAVA_HOME (else `java` on PATH).
 *
 * Also a module: the vitest global setup and test helpers import start/stop/status from here (types in kafka.d.mts).
 */
import { spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import fs from "node:fs"
import net from "node:net"
import path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

/** Newest 4.x on Maven Central at the time of writing that was verified end to end with kafkajs 2.2.4. */
export const KAFKA_VERSION = process.env.SPILLWAY_KAFKA_VERSION || "4.4.0"
/** Kafka 4.x logs through SLF4J 1.7.36, so the binding is log4j-slf4j-impl (not log4j-slf4j2-impl). */
export const LOG4J_VERSION = "2.25.3"
const DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
/** Through a symlinked `.cache` (git worktrees share the main checkout's), by its real path: the broker's command line
 * names its files by real path, and `isBrokerProcess` compares them. */
const realCache = (dir) => {
  try {
    return fs.realpathSync(dir)
  } catch {
    return dir
  }
}
export const CACHE_DIR = path.join(realCache(path.join(repoRoot, ".cache")), "kafka")
export const LIBS_DIR = path.join(CACHE_DIR, "libs")
const LIBS_MARKER = ".complete"

const envInt = (name, fallback, min, max) => {
  const raw = process.env[name]
  if (raw === undefined || raw === "") return fallback
  const n = Number(raw)
  if (!Number.isInteger(n) || n < min || n > max)
    throw new Error(`${name}=${raw}: expected an integer in ${min}..${max}`)
  return n
}

/** Host and ports live here and nowhere else. */
export const KAFKA_HOST = "127.0.0.1"
export const KAFKA_PORT = envInt("SPILLWAY_KAFKA_PORT", 9092, 1, 65535)
export const KAFKA_CONTROLLER_PORT = envInt("SPILLWAY_KAFKA_CONTROLLER_PORT", 9093, 1, 65535)
export const BROKERS = [`${KAFKA_HOST}:${KAFKA_PORT}`]

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const defaultLog = (msg) => process.stderr.write(`[kafka] ${msg}\n`)

/** Paths and ports of one broker instance. Options override the environment (a test may run a private broker). */
export function resolveInstance(opts = {}) {
  // SPILLWAY_KAFKA_DIR applies to the default instance only; a private instance (opts.home) keeps its data inside.
  const envDir = opts.home === undefined ? process.env.SPILLWAY_KAFKA_DIR || undefined : undefined
  // The real path: a checkout whose .cache is a link to another's must recognise that checkout's broker. A broker
  // with a data folder of its own (SPILLWAY_KAFKA_DIR) also keeps its pid, owner, config and log files beside it
  // (`<dir>-home`), not in the shared .cache/kafka, so that two of them on one machine never take each other's pid.
  const wanted = path.resolve(opts.home ?? (envDir === undefined ? CACHE_DIR : `${path.resolve(envDir)}-home`))
  const home = fs.existsSync(wanted) ? fs.realpathSync(wanted) : wanted
  const port = opts.port ?? KAFKA_PORT
  const controllerPort = opts.controllerPort ?? KAFKA_CONTROLLER_PORT
  if (port === controllerPort) throw new Error(`broker port and controller port are both ${port}`)
  // Brokers of the default home on another port (one per checkout sharing this .cache) keep their own pid, config,
  // log, data, leases and lock, so that one's start, status or stop never takes another's pid for its own.
  const own = opts.home === undefined && port !== 9092 ? `-${port}` : ""
  const dataDir = path.resolve(opts.dataDir ?? envDir ?? path.join(home, `data${own}`))
  return {
    home,
    dataDir,
    host: KAFKA_HOST,
    port,
    controllerPort,
    // A test may put a TCP proxy in front of the broker: clients then reach the broker only through it.
    advertisedPort: opts.advertisedPort ?? port,
    brokers: [`${KAFKA_HOST}:${opts.advertisedPort ?? port}`],
    partitions: opts.partitions ?? envInt("SPILLWAY_KAFKA_PARTITIONS", 3, 1, 1000),
    // A node of a cluster (see cluster() below): its id, the static voters, the shared cluster id, replication.
    nodeId: opts.nodeId ?? 1,
    voters: opts.voters,
    clusterId: opts.clusterId,
    replication: opts.replication ?? 1,
    minInsync: opts.minInsync ?? 1,
    heap: opts.heap ?? process.env.SPILLWAY_KAFKA_HEAP ?? "768m",
    pidFile: path.join(home, `broker${own}.pid`),
    ownerFile: path.join(home, `broker${own}.owner`),
    logFile: path.join(home, `broker${own}.log`),
    propsFile: path.join(home, `server${own}.properties`),
    log4jFile: path.join(home, `log4j2${own}.properties`),
    leasesDir: path.join(home, `leases${own}`),
    lockDir: path.join(home, `.lock${own}`),
  }
}

// ---------------------------------------------------------------------------------------------------------------
// processes and ports

const javaBin = () => (process.env.JAVA_HOME ? path.join(process.env.JAVA_HOME, "bin", "java") : "java")

/** Alive and not a zombie; on Linux also checks that the command line is a Kafka broker using our config. */
export function isBrokerProcess(pid, inst) {
  if (!Number.isInteger(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
  } catch (e) {
    if (e.code !== "EPERM") return false
  }
  if (!fs.existsSync("/proc")) return true
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3)
    if (state === "Z" || state === "X") return false
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")
    return cmdline.includes("kafka.Kafka") && (inst === undefined || cmdline.includes(inst.propsFile))
  } catch {
    return false
  }
}

/** True when something accepts TCP connections on host:port. */
export function portOpen(host, port, timeoutMs = 1000) {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port })
    const done = (ok) => {
      socket.removeAllListeners()
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(timeoutMs, () => done(false))
    socket.once("connect", () => done(true))
    socket.once("error", () => done(false))
  })
}

const readPid = (inst) => {
  try {
    const pid = Number.parseInt(fs.readFileSync(inst.pidFile, "utf8").trim(), 10)
    return Number.isInteger(pid) ? pid : undefined
  } catch {
    return undefined
  }
}

/** `{ state: "running" | "starting" | "stopped", pid?, port }`: running = our broker process alive and port answering. */
export async function status(opts = {}) {
  const inst = resolveInstance(opts)
  const pid = readPid(inst)
  if (pid === undefined || !isBrokerProcess(pid, inst)) return { state: "stopped", port: inst.port }
  const open = await portOpen(inst.host, inst.port)
  return { state: open ? "running" : "starting", pid, port: inst.port }
}

export function readOwner(opts = {}) {
  try {
    const owner = fs.readFileSync(resolveInstance(opts).ownerFile, "utf8").trim()
    return owner === "manual" || owner === "auto" ? owner : undefined
  } catch {
    return undefined
  }
}

export function setOwner(owner, opts = {}) {
  const inst = resolveInstance(opts)
  fs.mkdirSync(inst.home, { recursive: true })
  fs.writeFileSync(inst.ownerFile, `${owner}\n`)
}

/** Last `lines` lines of the broker log ("" if there is none). */
export function tail(opts = {}, lines = 100) {
  const inst = resolveInstance(opts)
  let text
  try {
    const fd = fs.openSync(inst.logFile, "r")
    try {
      const size = fs.fstatSync(fd).size
      const len = Math.min(size, 256 * 1024)
      const buf = Buffer.alloc(len)
      fs.readSync(fd, buf, 0, len, size - len)
      text = buf.toString("utf8")
    } finally {
      fs.closeSync(fd)
    }
  } catch {
    return ""
  }
  return text
    .split("\n")
    .slice(-lines - 1)
    .join("\n")
}

// ---------------------------------------------------------------------------------------------------------------
// a cross-process lock (mkdir is atomic); stale when its holder is dead

async function withLock(lockDir, timeoutMs, fn) {
  const deadline = Date.now() + timeoutMs
  fs.mkdirSync(path.dirname(lockDir), { recursive: true })
  for (;;) {
    try {
      fs.mkdirSync(lockDir)
      fs.writeFileSync(path.join(lockDir, "pid"), `${process.pid}\n`)
      break
    } catch (e) {
      if (e.code !== "EEXIST") throw e
      let holder
      try {
        holder = Number.parseInt(fs.readFileSync(path.join(lockDir, "pid"), "utf8"), 10)
      } catch {
        holder = undefined
      }
      const age = (() => {
        try {
          return Date.now() - fs.statSync(lockDir).mtimeMs
        } catch {
          return 0
        }
      })()
      const holderDead =
        holder !== undefined &&
        (() => {
          try {
            process.kill(holder, 0)
            return false
          } catch (err) {
            return err.code !== "EPERM"
          }
        })()
      // A lock without a pid file older than 5 s was left by a process killed between mkdir and write.
      if (holderDead || (Number.isNaN(holder) && age > 5000) || (holder === undefined && age > 5000)) {
        fs.rmSync(lockDir, { recursive: true, force: true })
        continue
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for lock ${lockDir} (held by pid ${holder})`)
      await sleep(200)
    }
  }
  try {
    return await fn()
  } finally {
    fs.rmSync(lockDir, { recursive: true, force: true })
  }
}

// ---------------------------------------------------------------------------------------------------------------
// jars

const pomXml = () => `<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by scripts/kafka.mjs: the runtime classpath of an Apache Kafka broker, fetched from Maven Central. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.spillway</groupId>
  <artifactId>kafka-libs</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <properties>
    <kafka.version>${KAFKA_VERSION}</kafka.version>
    <log4j.version>${LOG4J_VERSION}</log4j.version>
  </properties>
  <dependencies>
    <!-- broker (kafka.Kafka) and storage tool (kafka.tools.StorageTool); kafka-server, -storage, -raft... come transitively -->
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>\${kafka.version}</version></dependency>
    <!-- not in Kafka's POM (the tarball adds them): SLF4J 1.x binding + log4j2 backend -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>\${log4j.version}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>\${log4j.version}</version></dependency>
  </dependencies>
</project>
`

const libsKey = () => `kafka_2.13-${KAFKA_VERSION} log4j-${LOG4J_VERSION}\n`

export function jarsReady() {
  try {
    return (
      fs.readFileSync(path.join(LIBS_DIR, LIBS_MARKER), "utf8") === libsKey() &&
      fs.existsSync(path.join(LIBS_DIR, `kafka_2.13-${KAFKA_VERSION}.jar`))
    )
  } catch {
    return false
  }
}

function run(cmd, args, { cwd } = {}) {
  return new Promise((resolve, reject) => {
    let out = ""
    const child = spawn(cmd, args, { cwd, stdio: ["ignore", "pipe", "pipe"] })
    child.stdout.on("data", (d) => {
      out += d
    })
    child.stderr.on("data", (d) => {
      out += d
    })
    child.once("error", (e) =>
      reject(e.code === "ENOENT" ? new Error(`'${cmd}' not found on PATH (needed to run the local Kafka broker)`) : e),
    )
    child.once("close", (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), out }))
  })
}

/**
 * Downloads the broker's runtime jars into .cache/kafka/libs with Maven (into libs.tmp, then renamed, with a
 * marker written last: an interrupted download is redone). No-op when complete. Returns the seconds it took.
 */
export async function ensureJars({ log = defaultLog } = {}) {
  if (jarsReady()) return 0
  return withLock(path.join(CACHE_DIR, ".libs.lock"), 30 * 60_000, async () => {
    if (jarsReady()) return 0
    const t0 = Date.now()
    log(`fetching Kafka ${KAFKA_VERSION} jars from Maven Central into ${path.relative(repoRoot, LIBS_DIR)} (once)...`)
    fs.mkdirSync(CACHE_DIR, { recursive: true })
    const pom = path.join(CACHE_DIR, "pom.xml")
    fs.writeFileSync(pom, pomXml())
    const tmp = `${LIBS_DIR}.tmp`
    fs.rmSync(tmp, { recursive: true, force: true })
    const { code, out } = await run("mvn", [
      "-B",
      "-q",
      "-f",
      pom,
      `${DEPENDENCY_PLUGIN}:copy-dependencies`,
      "-DincludeScope=runtime",
      `-DoutputDirectory=${tmp}`,
    ])
    if (code !== 0 || !fs.existsSync(path.join(tmp, `kafka_2.13-${KAFKA_VERSION}.jar`))) {
      const lines = out.trim().split("\n").slice(-40).join("\n")
      throw new Error(
        `could not download the Kafka ${KAFKA_VERSION} jars with Maven (exit ${code}). ` +
          `Maven Central must be reachable; retry with 'npm run kafka -- fetch'. Maven said:\n${lines}`,
      )
    }
    fs.writeFileSync(path.join(tmp, LIBS_MARKER), libsKey())
    fs.rmSync(LIBS_DIR, { recursive: true, force: true })
    fs.renameSync(tmp, LIBS_DIR)
    const secs = (Date.now() - t0) / 1000
    const jars = fs.readdirSync(LIBS_DIR).filter((f) => f.endsWith(".jar"))
    const mb = jars.reduce((n, f) => n + fs.statSync(path.join(LIBS_DIR, f)).size, 0) / 1e6
    log(`fetched ${jars.length} jars (${mb.toFixed(1)} MB) in ${secs.toFixed(1)} s`)
    return secs
  })
}

// ---------------------------------------------------------------------------------------------------------------
// configuration and storage

const serverProperties = (inst) => `# Written by scripts/kafka.mjs on each start: edit the script, not this file.
process.roles=broker,controller
node.id=${inst.nodeId}
${inst.voters ? `controller.quorum.voters=${inst.voters}` : `controller.quorum.bootstrap.servers=${inst.host}:${inst.controllerPort}`}
listeners=PLAINTEXT://${inst.host}:${inst.port},CONTROLLER://${inst.host}:${inst.controllerPort}
advertised.listeners=PLAINTEXT://${inst.host}:${inst.advertisedPort},CONTROLLER://${inst.host}:${inst.controllerPort}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=${inst.dataDir}
num.partitions=${inst.partitions}
default.replication.factor=${inst.replication}
min.insync.replicas=${inst.minInsync}
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=${inst.replication}
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=${inst.replication}
transaction.state.log.min.isr=${inst.minInsync}
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=${inst.replication}
share.coordinator.state.topic.min.isr=${inst.minInsync}
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0
# After a crash (SIGKILL) the restarted broker can only re-register once its old session expired (default 9 s).
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=1000
`

const log4jProperties =
  () => `# Written by scripts/kafka.mjs. Console (= broker.log); WARN except the startup/shutdown lines.
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = ${process.env.SPILLWAY_KAFKA_LOG_LEVEL || "WARN"}
rootLogger.appenderRef.out.ref = STDOUT
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = INFO
`

/** Kafka's Uuid.randomUuid(): 16 random bytes, base64url without padding, never starting with '-'. */
export function randomClusterId() {
  for (;;) {
    const id = randomBytes(16).toString("base64url")
    if (!id.startsWith("-")) return id
  }
}

const FORMAT_MARKER = "spillway-format.json"

async function formatStorage(inst, log) {
  const want = {
    kafkaVersion: KAFKA_VERSION,
    port: inst.port,
    controllerPort: inst.controllerPort,
    ...(inst.voters ? { voters: inst.voters, clusterId: inst.clusterId, nodeId: inst.nodeId } : {}),
  }
  const markerPath = path.join(inst.dataDir, FORMAT_MARKER)
  if (fs.existsSync(path.join(inst.dataDir, "meta.properties"))) {
    let have
    try {
      have = JSON.parse(fs.readFileSync(markerPath, "utf8"))
    } catch {
      return // formatted by someone else: use as is
    }
    if (JSON.stringify(have) === JSON.stringify(want)) return
    log(`data dir was formatted for ${JSON.stringify(have)}, now ${JSON.stringify(want)}: wiping ${inst.dataDir}`)
    fs.rmSync(inst.dataDir, { recursive: true, force: true })
  }
  fs.mkdirSync(inst.dataDir, { recursive: true })
  const clusterId = inst.clusterId ?? randomClusterId()
  const { code, out } = await run(javaBin(), [
    "-Xmx256m",
    "-XX:TieredStopAtLevel=1",
    `-Dlog4j2.configurationFile=${inst.log4jFile}`,
    "-cp",
    path.join(LIBS_DIR, "*"),
    "kafka.tools.StorageTool",
    "format",
    // A cluster node formats against the static voters (controller.quorum.voters); a single broker standalone.
    ...(inst.voters ? [] : ["--standalone"]),
    "-g",
    "-t",
    clusterId,
    "-c",
    inst.propsFile,
  ])
  if (code !== 0) throw new Error(`kafka.tools.StorageTool format failed (exit ${code}):\n${out.trim()}`)
  fs.writeFileSync(markerPath, `${JSON.stringify(want)}\n`)
  log(`formatted ${inst.dataDir} (cluster ${clusterId})`)
}

// ---------------------------------------------------------------------------------------------------------------
// readiness: a kafkajs admin client creates a topic and sees it with a leader

async function probe(inst) {
  const { Kafka, logLevel } = (await import("kafkajs")).default
  const kafka = new Kafka({
    clientId: "spillway-kafka-script",
    brokers: inst.brokers,
    logLevel: logLevel.NOTHING,
    connectionTimeout: 2000,
    requestTimeout: 10_000,
    retry: { retries: 2, initialRetryTime: 200, maxRetryTime: 1000 },
  })
  const admin = kafka.admin()
  await admin.connect()
  try {
    const topic = `spillway-ready-${randomBytes(6).toString("hex")}`
    await admin.createTopics({
      topics: [{ topic, numPartitions: 1, replicationFactor: 1 }],
      waitForLeaders: true,
      timeout: 10_000,
    })
    const md = await admin.fetchTopicMetadata({ topics: [topic] })
    const leader = md.topics[0]?.partitions[0]?.leader
    if (leader === undefined || leader < 0) throw new Error(`topic ${topic} has no leader yet`)
    await admin.deleteTopics({ topics: [topic], timeout: 5000 }).catch(() => undefined)
  } finally {
    await admin.disconnect()
  }
}

async function waitReady(inst, pid, timeoutMs) {
  const deadline = Date.now() + timeoutMs
  let lastError = "port not open yet"
  for (;;) {
    if (!isBrokerProcess(pid, inst)) {
      throw new Error(
        `the Kafka broker (pid ${pid}) exited during startup. Tail of ${inst.logFile}:\n${tail(inst, 60)}`,
      )
    }
    if (await portOpen(inst.host, inst.port, 500)) {
      try {
        await probe(inst)
        return
      } catch (e) {
        lastError = e instanceof Error ? e.message : String(e)
      }
    }
    if (Date.now() > deadline) {
      throw new Error(
        `the Kafka broker (pid ${pid}) was not ready on ${inst.brokers[0]} after ${timeoutMs / 1000} s ` +
          `(last: ${lastError}). Tail of ${inst.logFile}:\n${tail(inst, 60)}`,
      )
    }
    await sleep(300)
  }
}

// ---------------------------------------------------------------------------------------------------------------
// start / stop

function launch(inst) {
  fs.mkdirSync(path.join(inst.home, "logs"), { recursive: true })
  try {
    if (fs.statSync(inst.logFile).size > 20e6) fs.renameSync(inst.logFile, `${inst.logFile}.1`)
  } catch {
    // no log yet
  }
  const fd = fs.openSync(inst.logFile, "a")
  fs.writeSync(fd, `\n===== ${new Date().toISOString()} scripts/kafka.mjs: starting Kafka ${KAFKA_VERSION} =====\n`)
  const args = [
    "-Xms256m",
    `-Xmx${inst.heap}`,
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
    // Kafka's own shutdown hook logs until the end; log4j's would race it ("Unable to register Log4j shutdown hook").
    "-Dlog4j2.shutdownHookEnabled=false",
    `-Dkafka.logs.dir=${path.join(inst.home, "logs")}`,
    `-Dlog4j2.configurationFile=${inst.log4jFile}`,
    "-cp",
    path.join(LIBS_DIR, "*"),
    "kafka.Kafka",
    inst.propsFile,
  ]
  const child = spawn(javaBin(), args, { detached: true, stdio: ["ignore", fd, fd], cwd: inst.home })
  fs.closeSync(fd)
  return new Promise((resolve, reject) => {
    child.once("error", (e) =>
      reject(e.code === "ENOENT" ? new Error(`'${javaBin()}' not found: Kafka needs Java 17+ (set JAVA_HOME)`) : e),
    )
    child.once("spawn", () => {
      child.unref()
      resolve(child.pid)
    })
  })
}

/**
 * Starts the broker unless it is already running, and resolves once a kafkajs admin can create a topic on it.
 * `owner`: "manual" (CLI; the vitest teardown never stops it), "auto" (vitest global setup), or undefined (keep the
 * owner recorded before, e.g. a fault test restarting the broker). Returns `{ started, pid, seconds }`.
 */
export async function start(opts = {}) {
  const log = opts.log ?? defaultLog
  const inst = resolveInstance(opts)
  const timeoutMs = opts.timeoutMs ?? envInt("SPILLWAY_KAFKA_START_TIMEOUT_MS", 120_000, 1000, 3_600_000)
  await ensureJars({ log })
  fs.mkdirSync(inst.home, { recursive: true })
  return withLock(inst.lockDir, timeoutMs + 60_000, async () => {
    const t0 = Date.now()
    const pid = readPid(inst)
    if (pid !== undefined && isBrokerProcess(pid, inst)) {
      if (!(await portOpen(inst.host, inst.port))) await waitReady(inst, pid, timeoutMs)
      if (opts.owner === "manual") setOwner("manual", inst)
      return { started: false, pid, seconds: (Date.now() - t0) / 1000 }
    }
    fs.rmSync(inst.pidFile, { force: true })
    for (const port of [inst.port, inst.controllerPort]) {
      if (await portOpen(inst.host, port)) {
        throw new Error(
          `port ${inst.host}:${port} is in use by another process, not the broker started by scripts/kafka.mjs ` +
            `(no live pid in ${inst.pidFile}). Stop it, or set SPILLWAY_KAFKA_PORT / SPILLWAY_KAFKA_CONTROLLER_PORT.`,
        )
      }
    }
    fs.writeFileSync(inst.propsFile, serverProperties(inst))
    fs.writeFileSync(inst.log4jFile, log4jProperties())
    await formatStorage(inst, log)
    const newPid = await launch(inst)
    fs.writeFileSync(inst.pidFile, `${newPid}\n`)
    setOwner(opts.owner ?? readOwner(inst) ?? "auto", inst)
    try {
      await waitReady(inst, newPid, timeoutMs)
    } catch (e) {
      await stopPid(inst, newPid, "SIGKILL", 5000)
      fs.rmSync(inst.pidFile, { force: true })
      throw e
    }
    return { started: true, pid: newPid, seconds: (Date.now() - t0) / 1000 }
  })
}

async function stopPid(inst, pid, signal, timeoutMs) {
  const gone = async (ms) => {
    const until = Date.now() + ms
    while (Date.now() < until) {
      if (!isBrokerProcess(pid, inst)) return true
      await sleep(100)
    }
    return !isBrokerProcess(pid, inst)
  }
  try {
    process.kill(pid, signal)
  } catch {
    return
  }
  if (await gone(timeoutMs)) return
  try {
    process.kill(pid, "SIGKILL")
  } catch {
    return
  }
  if (!(await gone(10_000))) throw new Error(`Kafka broker pid ${pid} did not exit after SIGKILL`)
}

/** A killed JVM's main thread shows as a zombie while its other threads still hold the sockets: wait for them. */
async function waitPortsClosed(inst, timeoutMs) {
  const until = Date.now() + timeoutMs
  while (Date.now() < until) {
    const open = (await portOpen(inst.host, inst.port, 300)) || (await portOpen(inst.host, inst.controllerPort, 300))
    if (!open) return
    await sleep(100)
  }
}

/**
 * Stops the broker this script started (by the pid in broker.pid): `signal` (default SIGTERM, a clean shutdown;
 * SIGKILL simulates a crash), then SIGKILL after `timeoutMs` (30 s). `forget: true` also drops the owner record.
 * Returns `{ stopped, pid?, seconds }`.
 */
export async function stop(opts = {}) {
  const inst = resolveInstance(opts)
  const signal = opts.signal ?? "SIGTERM"
  return withLock(inst.lockDir, 300_000, async () => {
    const t0 = Date.now()
    const pid = readPid(inst)
    if (opts.forget) fs.rmSync(inst.ownerFile, { force: true })
    if (pid === undefined || !isBrokerProcess(pid, inst)) {
      fs.rmSync(inst.pidFile, { force: true })
      return { stopped: false, seconds: 0 }
    }
    await stopPid(inst, pid, signal, opts.timeoutMs ?? 30_000)
    await waitPortsClosed(inst, 10_000)
    fs.rmSync(inst.pidFile, { force: true })
    return { stopped: true, pid, seconds: (Date.now() - t0) / 1000 }
  })
}

/** stop (keeping the owner) then start, same data dir. */
export async function restart(opts = {}) {
  const { owner: _owner, ...rest } = opts
  await stop(rest)
  return start(rest)
}

// ---------------------------------------------------------------------------------------------------------------
// leases: each vitest run that needs the broker holds one; the last one out stops an "auto" broker

export function acquireLease(opts = {}) {
  const inst = resolveInstance(opts)
  fs.mkdirSync(inst.leasesDir, { recursive: true })
  const id = `${process.pid}-${randomBytes(4).toString("hex")}`
  fs.writeFileSync(path.join(inst.leasesDir, id), `${new Date().toISOString()}\n`)
  return id
}

/** Drops the lease and the leases of dead processes; returns how many live leases remain. */
export function releaseLease(id, opts = {}) {
  const inst = resolveInstance(opts)
  fs.rmSync(path.join(inst.leasesDir, id), { force: true })
  let live = 0
  let names = []
  try {
    names = fs.readdirSync(inst.leasesDir)
  } catch {
    return 0
  }
  for (const name of names) {
    const pid = Number.parseInt(name, 10)
    let alive = false
    try {
      process.kill(pid, 0)
      alive = true
    } catch (e) {
      alive = e.code === "EPERM"
    }
    if (alive) live++
    else fs.rmSync(path.join(inst.leasesDir, name), { force: true })
  }
  return live
}

// ---------------------------------------------------------------------------------------------------------------
// a three-node cluster: each node a combined broker+controller, static voters, RF 3, min.insync.replicas 2

/**
 * The three nodes of the local cluster (under .cache/kafka-cluster/node-N). Node N listens on base+2(N-1) (clients)
 * and base+2(N-1)+1 (controller); base is SPILLWAY_KAFKA_CLUSTER_PORT (29092). Topics default to 3 partitions,
 * replication factor 3 and min.insync.replicas 2.
 */
export function clusterNodes(opts = {}) {
  const base = opts.basePort ?? envInt("SPILLWAY_KAFKA_CLUSTER_PORT", 29092, 1, 65000)
  const home = path.resolve(opts.home ?? path.join(repoRoot, ".cache", "kafka-cluster"))
  const ids = [1, 2, 3]
  const voters = ids.map((i) => `${i}@${KAFKA_HOST}:${base + 2 * (i - 1) + 1}`).join(",")
  fs.mkdirSync(home, { recursive: true })
  const idFile = path.join(home, "cluster.id")
  if (!fs.existsSync(idFile)) fs.writeFileSync(idFile, `${randomClusterId()}\n`)
  const clusterId = fs.readFileSync(idFile, "utf8").trim()
  return ids.map((nodeId) => ({
    home: path.join(home, `node-${nodeId}`),
    port: base + 2 * (nodeId - 1),
    controllerPort: base + 2 * (nodeId - 1) + 1,
    nodeId,
    voters,
    clusterId,
    replication: 3,
    minInsync: 2,
    partitions: 3,
    heap: opts.heap ?? "512m",
    log: opts.log,
  }))
}

/** Bootstrap list of the cluster. */
export const clusterBrokers = (opts = {}) => clusterNodes(opts).map((n) => `${KAFKA_HOST}:${n.port}`)

/** Starts every node that is not running (together: a lone node has no quorum) and waits until each is ready. */
export async function startCluster(opts = {}) {
  const nodes = clusterNodes(opts)
  const t0 = Date.now()
  const results = await Promise.all(nodes.map((n) => start({ ...n, owner: opts.owner ?? "manual" })))
  return { brokers: clusterBrokers(opts), pids: results.map((r) => r.pid), seconds: (Date.now() - t0) / 1000 }
}

/** Stops every node (SIGTERM unless `signal`). */
export async function stopCluster(opts = {}) {
  const nodes = clusterNodes(opts)
  await Promise.all(nodes.map((n) => stop({ ...n, signal: opts.signal, forget: true })))
}

/** `[{ nodeId, port, state, pid }]` for the three nodes. */
export async function clusterStatus(opts = {}) {
  return Promise.all(clusterNodes(opts).map(async (n) => ({ nodeId: n.nodeId, port: n.port, ...(await status(n)) })))
}

// ---------------------------------------------------------------------------------------------------------------
// CLI

async function clusterMain(sub) {
  const opts = { log: defaultLog }
  switch (sub) {
    case "start": {
      const r = await startCluster(opts)
      console.log(
        `Kafka ${KAFKA_VERSION} cluster on ${r.brokers.join(",")}: pids ${r.pids.join(", ")} (${r.seconds.toFixed(1)} s)`,
      )
      return 0
    }
    case "stop":
      await stopCluster(opts)
      console.log("Kafka cluster stopped")
      return 0
    case "status": {
      const nodes = await clusterStatus(opts)
      for (const n of nodes)
        console.log(`node ${n.nodeId} on ${KAFKA_HOST}:${n.port}: ${n.state}${n.pid ? ` (pid ${n.pid})` : ""}`)
      return nodes.every((n) => n.state === "running") ? 0 : 1
    }
    case "reset":
      await stopCluster(opts)
      fs.rmSync(path.join(repoRoot, ".cache", "kafka-cluster"), { recursive: true, force: true })
      console.log("Kafka cluster stopped and its data deleted")
      return 0
    default:
      console.error("usage: npm run kafka -- cluster start|stop|status|reset")
      return 2
  }
}

async function main(argv) {
  const [cmd, arg] = argv
  const inst = resolveInstance()
  const what = `Kafka ${KAFKA_VERSION} on ${inst.brokers[0]}`
  if (cmd === "cluster") return clusterMain(arg)
  switch (cmd) {
    case "start": {
      const r = await start({ owner: "manual" })
      console.log(
        r.started
          ? `${what}: started (pid ${r.pid}) in ${r.seconds.toFixed(1)} s`
          : `${what}: already running (pid ${r.pid})`,
      )
      return 0
    }
    case "stop": {
      const r = await stop({ forget: true })
      console.log(r.stopped ? `${what}: stopped (pid ${r.pid}) in ${r.seconds.toFixed(1)} s` : `${what}: not running`)
      return 0
    }
    case "restart": {
      await stop({})
      const r = await start({ owner: "manual" })
      console.log(`${what}: restarted (pid ${r.pid}) in ${r.seconds.toFixed(1)} s`)
      return 0
    }
    case "status": {
      const s = await status()
      console.log(s.state === "stopped" ? `${what}: stopped` : `${what}: ${s.state} (pid ${s.pid})`)
      return s.state === "running" ? 0 : 1
    }
    case "logs": {
      const n = arg === undefined ? 100 : Number.parseInt(arg, 10)
      const text = tail({}, Number.isInteger(n) && n > 0 ? n : 100)
      process.stdout.write(text ? `${text}${text.endsWith("\n") ? "" : "\n"}` : `no broker log at ${inst.logFile}\n`)
      return 0
    }
    case "fetch": {
      await ensureJars()
      console.log(`Kafka ${KAFKA_VERSION} jars in ${LIBS_DIR}`)
      return 0
    }
    case "reset": {
      await stop({ forget: true })
      fs.rmSync(inst.dataDir, { recursive: true, force: true })
      console.log(`${what}: stopped, data dir ${inst.dataDir} deleted`)
      return 0
    }
    default:
      console.error("usage: npm run kafka -- start|stop|restart|status|logs [N]|fetch|reset")
      console.error("  status exits 0 when the broker is running and its port answers, 1 otherwise")
      return 2
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code
    },
    (e) => {
      console.error(`[kafka] error: ${e instanceof Error ? e.message : String(e)}`)
      process.exitCode = 1
    },
  )
}
