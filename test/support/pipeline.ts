/**
 * End-to-end harness: the real built programs (dist/programs/*.js) as child processes, with real Kafka, real TLS
 * and real files. An agent tails an input file; lines carry unique ids; the router writes each tenant's NDJSON file;
 * `check` reads the routed file and compares the set of ids.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { randomBytes, randomUUID } from "node:crypto"
import {
  appendFileSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { testCerts } from "./certs.js"
import { createSettledTopics, uniqueTopic } from "./kafka.js"

const root = join(import.meta.dirname, "..", "..")
const program = (name: string) => join(root, "dist", "programs", `${name}.js`)

export const TENANT = {
  key: "9c60f26f-5b6c-4c80-b5f5-625bf965b6a6",
  user: "2134558",
  encryptionKey: "883EC28EBA9A36A386FA351FBC482B34",
} as const

export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const s = createServer()
    s.on("error", reject)
    s.listen(0, "127.0.0.1", () => {
      const a = s.address()
      const port = typeof a === "object" && a !== null ? a.port : 0
      s.close(() => resolve(port))
    })
  })

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** A program run as a child process that can be killed and started again with the same arguments. */
export class Proc {
  child: ChildProcess | undefined
  starts = 0
  constructor(
    readonly name: string,
    readonly args: ReadonlyArray<string>,
    readonly env: Record<string, string>,
    readonly logFile: string,
    readonly readyPort?: number,
  ) {}

  async start(): Promise<void> {
    const out = openSync(this.logFile, "a")
    this.starts += 1
    this.child = spawn(process.execPath, [program(this.name), ...this.args], {
      env: { ...process.env, SPILLWAY_LOG_LEVEL: "Info", ...this.env },
      stdio: ["ignore", out, out],
    })
    closeSync(out)
    if (this.readyPort !== undefined) await this.waitReady()
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null
  }

  async waitReady(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (Date.now() < deadline) {
      if (!this.running) throw new Error(`${this.name} exited early:\n${this.logs(40)}`)
      try {
        if ((await fetch(`http://127.0.0.1:${this.readyPort}/readyz`)).ok) return
      } catch {}
      await sleep(100)
    }
    throw new Error(`${this.name} not ready after ${timeoutMs} ms:\n${this.logs(40)}`)
  }

  /** Sends `signal` and waits for the exit (SIGKILL after 20 s). Resolves to the exit code or signal. */
  async kill(signal: NodeJS.Signals = "SIGTERM"): Promise<number | string | null> {
    const child = this.child
    if (child === undefined || !this.running) return child?.exitCode ?? null
    return new Promise((resolve) => {
      const t = setTimeout(() => child.kill("SIGKILL"), 20_000)
      child.once("exit", (code, sig) => {
        clearTimeout(t)
        resolve(code ?? sig)
      })
      child.kill(signal)
    })
  }

  logs(lines = 200): string {
    if (!existsSync(this.logFile)) return ""
    return readFileSync(this.logFile, "utf8").split("\n").slice(-lines).join("\n")
  }
}

export interface PipelineOptions {
  readonly brokers: ReadonlyArray<string>
  /** Extra environment for the agent. */
  readonly extraAgentEnv?: Record<string, string>
}

export interface Check {
  readonly expected: number
  readonly missing: ReadonlyArray<string>
  readonly duplicates: number
  readonly unexpected: number
}

export class Pipeline {
  readonly work = mkdtempSync(join(tmpdir(), "spillway-e2e-"))
  readonly topic = uniqueTopic("e2e")
  readonly outputDir = join(this.work, "output")
  readonly inputFile = join(this.work, "input", "app.log")
  readonly tenantsFile = join(this.work, "tenants.json")
  readonly secretFile = join(this.work, "jwt.secret")
  readonly tokenFile = join(this.work, "agent.token")
  readonly ids: Array<string> = []
  ingester!: Proc
  router!: Proc
  agent!: Proc
  ingesterPort = 0
  caCert = ""

  constructor(readonly options: PipelineOptions) {}

  get routedFile(): string {
    return join(this.outputDir, `${TENANT.key}.log`)
  }

  async setup(): Promise<void> {
    const certs = await testCerts()
    this.caCert = certs.caCert
    mkdirSync(this.outputDir, { recursive: true })
    mkdirSync(join(this.work, "input"), { recursive: true })
    writeFileSync(this.inputFile, "")
    writeFileSync(this.secretFile, randomBytes(48).toString("base64"), { mode: 0o600 })
    writeFileSync(
      this.tenantsFile,
      JSON.stringify({
        [TENANT.key]: {
          AccessKey: TENANT.key,
          EncryptionKey: TENANT.encryptionKey,
          UserID: TENANT.user,
          targets: [{ file: `${TENANT.key}.log` }],
        },
      }),
    )
    await createSettledTopics(this.options.brokers, [{ topic: this.topic, numPartitions: 3, replicationFactor: 1 }])
    writeFileSync(this.tokenFile, this.mintToken(TENANT.key), { mode: 0o600 })
    const brokers = this.options.brokers.join(",")
    this.ingesterPort = await freePort()
    const ingesterMetrics = await freePort()
    this.ingester = new Proc(
      "ingester",
      [
        "api",
        "--port",
        String(this.ingesterPort),
        "--tls-cert",
        certs.serverCert,
        "--tls-key",
        certs.serverKey,
        "--tenants",
        this.tenantsFile,
        "--brokers",
        brokers,
        "--topic",
        this.topic,
        "--metrics-port",
        String(ingesterMetrics),
      ],
      { SPILLWAY_JWT_SECRET_FILE: this.secretFile },
      join(this.work, "ingester.log"),
      ingesterMetrics,
    )
    const routerMetrics = await freePort()
    this.router = new Proc(
      "router",
      [
        "consumer",
        "--decrypt-events",
        "--output-dir",
        this.outputDir,
        "--tenants",
        this.tenantsFile,
        "--brokers",
        brokers,
        "--topic",
        this.topic,
        "--group",
        `${this.topic}-router`,
        "--metrics-port",
        String(routerMetrics),
      ],
      // A killed router's partitions move to its restarted self once the session times out: keep that short.
      { SPILLWAY_ROUTER_SESSION_TIMEOUT_MS: "8000" },
      join(this.work, "router.log"),
      routerMetrics,
    )
    const agentMetrics = await freePort()
    this.agent = new Proc(
      "agent",
      [
        "--ingester",
        `localhost:${this.ingesterPort}`,
        "--ca-cert",
        certs.caCert,
        "--buffer-dir",
        join(this.work, "agent-buffer"),
        "--tail",
        this.inputFile,
        "--metrics-port",
        String(agentMetrics),
      ],
      { ACCESS_KEY: TENANT.key, ACCESS_TOKEN_FILE: this.tokenFile, ...this.options.extraAgentEnv },
      join(this.work, "agent.log"),
    )
    // The Kafka client in the ingester needs the topic's metadata before the first batch; the router joins its
    // group from the earliest offset of a fresh group.
    await Promise.all([this.ingester.start(), this.router.start()])
    await this.agent.start()
  }

  mintToken(accessKey: string, expirySeconds = 3600): string {
    return execFileSync(
      process.execPath,
      [program("ingester"), "access-token", "--access-key", accessKey, "--expiry", String(expirySeconds)],
      { env: { ...process.env, SPILLWAY_JWT_SECRET_FILE: this.secretFile }, encoding: "utf8" },
    ).trim()
  }

  /** Appends `n` lines with fresh unique ids to the tailed file. */
  write(n: number): void {
    let chunk = ""
    for (let i = 0; i < n; i++) {
      const id = randomUUID()
      this.ids.push(id)
      chunk += `e2e line id=${id} ${"x".repeat(64)}\n`
    }
    appendFileSync(this.inputFile, chunk)
  }

  /** Writes `total` lines spread over `ms` milliseconds (in chunks of ~20 ms). */
  async writeOver(total: number, ms: number): Promise<void> {
    const steps = Math.max(1, Math.floor(ms / 20))
    let written = 0
    for (let s = 1; s <= steps; s++) {
      const due = Math.floor((total * s) / steps)
      this.write(due - written)
      written = due
      await sleep(20)
    }
  }

  /** Counts of each id found in the routed file. */
  routed(): Map<string, number> {
    const counts = new Map<string, number>()
    if (!existsSync(this.routedFile)) return counts
    for (const m of readFileSync(this.routedFile, "utf8").matchAll(/id=([0-9a-f-]{36})/g)) {
      const id = m[1] as string
      counts.set(id, (counts.get(id) ?? 0) + 1)
    }
    return counts
  }

  check(): Check {
    const counts = this.routed()
    const expected = new Set(this.ids)
    let duplicates = 0
    let unexpected = 0
    for (const [id, n] of counts) {
      if (!expected.has(id)) unexpected += n
      else if (n > 1) duplicates += n - 1
    }
    return { expected: this.ids.length, missing: this.ids.filter((id) => !counts.has(id)), duplicates, unexpected }
  }

  /** Waits until every id is routed (or the timeout), then returns the comparison. */
  async waitAll(timeoutMs = 90_000): Promise<Check> {
    const deadline = Date.now() + timeoutMs
    let c = this.check()
    while (c.missing.length > 0 && Date.now() < deadline) {
      await sleep(250)
      c = this.check()
    }
    return c
  }

  diagnostics(): string {
    return ["ingester", "router", "agent"]
      .map((n) => `---- ${n} ----\n${(this as unknown as Record<string, Proc>)[n]?.logs(30) ?? ""}`)
      .join("\n")
  }

  async stop(): Promise<void> {
    await Promise.all([this.agent?.kill(), this.ingester?.kill(), this.router?.kill()])
    if (process.env.SPILLWAY_KEEP_E2E !== "1") rmSync(this.work, { recursive: true, force: true })
  }
}
