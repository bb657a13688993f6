/**
 * Runs the BUILT agent (`node dist/programs/agent.js`, so `npm run build` first) as a child process
 * for end-to-end tests. Fast test timings are set through SPILLWAY_* variables (override with `env`).
 *
 *   const agent = await startAgent({ ingester: "127.0.0.1:7777", caCert, tokenFile, bufferDir, tail: ["/tmp/x/*.log"] })
 *   await agent.metric("spillway_agent_events_acked_total")   // reads /metrics
 *   await agent.kill("SIGKILL"); await agent.restart() // same options, same buffer
 *   await agent.stop()                                 // SIGTERM, waits for the exit
 */
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync } from "node:fs"
import { createServer } from "node:net"
import { join } from "node:path"

export const agentEntry = join(import.meta.dirname, "..", "..", "dist", "programs", "agent.js")

export interface AgentProcessOptions {
  /** `host:port` of the ingester. */
  readonly ingester: string
  /** CA certificate file (PEM). */
  readonly caCert: string
  /** Token file (re-read by the agent when it changes). */
  readonly tokenFile: string
  readonly accessKey?: string
  readonly bufferDir: string
  readonly bufferMaxBytes?: number
  /** `--tail` globs. */
  readonly tail?: ReadonlyArray<string>
  readonly stdin?: boolean
  readonly metricsInterval?: number
  /** `--config` file. */
  readonly config?: string
  /** Extra environment (wins over the test defaults). */
  readonly env?: Readonly<Record<string, string>>
  readonly args?: ReadonlyArray<string>
  /** Fixed metrics port; a free one otherwise (kept across restarts). */
  readonly metricsPort?: number
  /** Echo the agent's output to this process's stderr. */
  readonly echo?: boolean
}

export interface AgentProcess {
  readonly metricsPort: number
  readonly child: () => ChildProcess
  /** Sends a signal and waits for the exit; resolves with the exit code (null when killed by a signal). */
  readonly kill: (signal?: NodeJS.Signals) => Promise<number | null>
  /** Starts it again with the same options (SIGTERM first if it still runs). Waits for /healthz. */
  readonly restart: () => Promise<void>
  /** SIGTERM and wait for the exit (code). */
  readonly stop: () => Promise<number | null>
  /** Everything it printed (stdout and stderr) since the first start. */
  readonly output: () => string
  /** JSON log lines it printed, parsed. */
  readonly logs: () => Array<Record<string, unknown>>
  /** `/metrics` text. */
  readonly metrics: () => Promise<string>
  /** The sum of a metric's samples whose labels contain `labels` (0 if absent). */
  readonly metric: (name: string, labels?: Readonly<Record<string, string>>) => Promise<number>
  readonly waitForOutput: (re: RegExp, timeoutMs?: number) => Promise<void>
}

export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const s = createServer()
    s.once("error", reject)
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port
      s.close(() => resolve(port))
    })
  })

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export const testDefaults: Readonly<Record<string, string>> = {
  SPILLWAY_POLL_MS: "100",
  SPILLWAY_BATCH_LINGER_MS: "50",
  SPILLWAY_BATCH_MAX_EVENTS: "200",
  SPILLWAY_RETRY_BASE_MS: "100",
  SPILLWAY_RETRY_CAP_MS: "1000",
  SPILLWAY_AUTH_RETRY_MS: "500",
  SPILLWAY_SHUTDOWN_GRACE_SECONDS: "2",
  SPILLWAY_ACK_TIMEOUT_SECONDS: "10",
  SPILLWAY_CONFIG_REFRESH_SECONDS: "2",
  SPILLWAY_AGENT_ID: "test-agent",
}

export const startAgent = async (options: AgentProcessOptions): Promise<AgentProcess> => {
  if (!existsSync(agentEntry)) throw new Error(`${agentEntry} is missing: run npm run build first`)
  const metricsPort = options.metricsPort ?? (await freePort())
  const args = [
    agentEntry,
    "--ingester",
    options.ingester,
    "--ca-cert",
    options.caCert,
    "--token-file",
    options.tokenFile,
    "--buffer-dir",
    options.bufferDir,
    "--metrics-port",
    String(metricsPort),
    ...(options.bufferMaxBytes ? ["--buffer-max-bytes", String(options.bufferMaxBytes)] : []),
    ...(options.tail ?? []).flatMap((g) => ["--tail", g]),
    ...(options.stdin ? ["--stdin"] : []),
    ...(options.metricsInterval ? ["--metrics-interval", String(options.metricsInterval)] : []),
    ...(options.config ? ["--config", options.config] : []),
    ...(options.args ?? []),
  ]
  const baseEnv: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env))
    if (v !== undefined && !k.startsWith("SPILLWAY_") && !k.startsWith("ACCESS_")) baseEnv[k] = v
  const env = { ...baseEnv, ...testDefaults, ACCESS_KEY: options.accessKey ?? "test-key", ...options.env }
  let out = ""
  let child: ChildProcess | undefined
  let exited: Promise<number | null> = Promise.resolve(null)

  const metrics = async () => {
    const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`)
    return res.text()
  }

  const launch = async () => {
    const c = spawn(process.execPath, args, { env, stdio: ["pipe", "pipe", "pipe"] })
    child = c
    exited = new Promise((resolve) => c.once("exit", (code) => resolve(code)))
    const onData = (d: Buffer) => {
      out += d.toString()
      if (options.echo) process.stderr.write(d)
    }
    c.stdout?.on("data", onData)
    c.stderr?.on("data", onData)
    const end = Date.now() + 15_000
    while (Date.now() < end) {
      if (c.exitCode !== null) throw new Error(`agent exited with ${c.exitCode}:\n${out}`)
      try {
        const r = await fetch(`http://127.0.0.1:${metricsPort}/healthz`)
        if (r.ok) return
      } catch {
        // not listening yet
      }
      await sleep(50)
    }
    throw new Error(`agent did not come up within 15 s:\n${out}`)
  }

  const kill = async (signal: NodeJS.Signals = "SIGTERM") => {
    const c = child
    if (!c || c.exitCode !== null || c.signalCode !== null) return c?.exitCode ?? null
    c.kill(signal)
    const timer = setTimeout(() => c.kill("SIGKILL"), 20_000)
    const code = await exited
    clearTimeout(timer)
    return code
  }

  await launch()
  return {
    metricsPort,
    child: () => child!,
    kill,
    stop: () => kill("SIGTERM"),
    restart: async () => {
      await kill("SIGTERM")
      await launch()
    },
    output: () => out,
    logs: () =>
      out
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .flatMap((l) => {
          try {
            return [JSON.parse(l) as Record<string, unknown>]
          } catch {
            return []
          }
        }),
    metrics,
    metric: async (name, labels = {}) => {
      const text = await metrics()
      let sum = 0
      for (const line of text.split("\n")) {
        const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(line)
        if (!m || m[1] !== name) continue
        const l = m[2] ?? ""
        if (Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`))) sum += Number(m[3])
      }
      return sum
    },
    waitForOutput: async (re, timeoutMs = 15_000) => {
      const end = Date.now() + timeoutMs
      while (!re.test(out)) {
        if (Date.now() > end)
          throw new Error(`agent output did not match ${re} within ${timeoutMs} ms:\n${out.slice(-4000)}`)
        await sleep(50)
      }
    },
  }
}
