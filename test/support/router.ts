/**
 * Runs the BUILT router (`node dist/programs/router.js consumer ...`) as a child process, for
 * end-to-end tests. Build first (`npm run build`).
 *
 * ```ts
 * const router = await startRouter({ topic, group, tenantsFile, decrypt: true })
 * await waitFor(async () => (await readNdjson(join(router.outputDir, "a.log"))).length === 100)
 * await router.kill("SIGKILL"); await router.restart(); await router.stop()
 * ```
 */
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll } from "@effect/vitest"
import { brokers as sharedBrokers } from "./kafka.js"

export const routerBin = fileURLToPath(new URL("../../dist/programs/router.js", import.meta.url))

export interface RouterProcessOptions {
  readonly topic: string
  readonly group: string
  readonly tenantsFile: string
  /** Default: a new temporary folder. */
  readonly outputDir?: string
  /** Default: the shared local broker. */
  readonly brokers?: ReadonlyArray<string>
  readonly decrypt?: boolean
  readonly printEvents?: boolean
  /** Extra environment (e.g. SPILLWAY_ROUTER_RETRY_BUDGET). */
  readonly env?: Readonly<Record<string, string>>
  readonly extraArgs?: ReadonlyArray<string>
  /** How long start/restart wait for /readyz (default 60 s). */
  readonly readyTimeoutMs?: number
}

export interface RouterProcess {
  readonly outputDir: string
  readonly metricsPort: number
  /** The running child's pid (undefined when it is not running). */
  readonly pid: () => number | undefined
  /** Everything the current and earlier children wrote (stdout and stderr). */
  readonly output: () => string
  /** Sends `signal` (default SIGTERM) and waits for the exit; resolves with the exit code (null if killed by a signal). */
  readonly kill: (signal?: NodeJS.Signals) => Promise<number | null>
  /** Starts a new child with the same options and waits until it is ready. */
  readonly restart: () => Promise<void>
  /** SIGTERM, wait up to 30 s (then SIGKILL); resolves with the exit code. */
  readonly stop: () => Promise<number | null>
  /** The /metrics text. */
  readonly metrics: () => Promise<string>
  /** Sum of a metric's samples whose labels include `labels` (0 when absent). */
  readonly metric: (name: string, labels?: Readonly<Record<string, string>>) => Promise<number>
  /** GET /readyz status (0 when it does not answer). */
  readonly readyz: () => Promise<number>
}

export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

/**
 * Temporary folders and routers of one test file: folders removed and routers SIGKILLed after the file's tests.
 * Call it at the file's top level.
 */
export const testScratch = () => {
  const scratch: Array<string> = []
  const routers: Array<RouterProcess> = []
  afterAll(async () => {
    for (const r of routers) await r.kill("SIGKILL")
    for (const d of scratch) rmSync(d, { recursive: true, force: true })
  })
  const tempDir = (prefix: string) => {
    const d = mkdtempSync(join(tmpdir(), `spillway-${prefix}-`))
    scratch.push(d)
    return d
  }
  return { tempDir, routers }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** Polls `predicate` every `intervalMs` until it holds; throws with `what` after `timeoutMs`. */
export async function waitFor(
  predicate: () => boolean | Promise<boolean>,
  timeoutMs = 30_000,
  what = "condition",
  intervalMs = 200,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await predicate()) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(intervalMs)
  }
}

/** The JSON objects of an NDJSON file ([] when it does not exist); a torn last line is ignored. */
export const readNdjson = (file: string): Array<Record<string, unknown>> => {
  if (!existsSync(file)) return []
  const out: Array<Record<string, unknown>> = []
  for (const line of readFileSync(file, "utf8").split("\n")) {
    if (line.trim() === "") continue
    try {
      out.push(JSON.parse(line))
    } catch {
      // a line being written
    }
  }
  return out
}

const argsOf = (o: RouterProcessOptions, outputDir: string, port: number): Array<string> => [
  routerBin,
  "consumer",
  "--topic",
  o.topic,
  "--group",
  o.group,
  "--tenants",
  o.tenantsFile,
  "--output-dir",
  outputDir,
  "--brokers",
  (o.brokers ?? sharedBrokers).join(","),
  "--metrics-port",
  String(port),
  "--metrics-host",
  "127.0.0.1",
  ...(o.decrypt ? ["--decrypt-events"] : []),
  ...(o.printEvents ? ["--print-events"] : []),
  ...(o.extraArgs ?? []),
]

/** Runs the router to its end (for command line / config errors): exit code and output. */
export function runRouterOnce(
  args: ReadonlyArray<string>,
  env: Readonly<Record<string, string>> = {},
  timeoutMs = 20_000,
): Promise<{ readonly code: number | null; readonly output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [routerBin, ...args], {
      env: { ...process.env, KAFKAJS_NO_PARTITIONER_WARNING: "1", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    })
    let output = ""
    child.stdout.on("data", (d) => {
      output += d
    })
    child.stderr.on("data", (d) => {
      output += d
    })
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      reject(new Error(`router did not exit within ${timeoutMs} ms:\n${output}`))
    }, timeoutMs)
    child.on("exit", (code) => {
      clearTimeout(timer)
      resolve({ code, output })
    })
  })
}

/** Starts the router and waits until /readyz answers 200 (its consumer joined the group). */
export async function startRouter(options: RouterProcessOptions): Promise<RouterProcess> {
  if (!existsSync(routerBin)) throw new Error(`${routerBin} is missing: run \`npm run build\` first`)
  const outputDir = options.outputDir ?? mkdtempSync(join(tmpdir(), "spillway-router-out-"))
  const metricsPort = await freePort()
  let child: ChildProcess | undefined
  let output = ""
  let exited: Promise<number | null> = Promise.resolve(null)
  const base = `http://127.0.0.1:${metricsPort}`

  const readyz = async () => {
    try {
      return (await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(2_000) })).status
    } catch {
      return 0
    }
  }

  const spawnOne = async () => {
    const c = spawn(process.execPath, argsOf(options, outputDir, metricsPort), {
      env: {
        ...process.env,
        KAFKAJS_NO_PARTITIONER_WARNING: "1",
        SPILLWAY_LOG_LEVEL: "Info",
        ...options.env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    })
    child = c
    c.stdout?.on("data", (d) => {
      output += d
    })
    c.stderr?.on("data", (d) => {
      output += d
    })
    let alive = true
    exited = new Promise((resolve) =>
      c.on("exit", (code) => {
        alive = false
        resolve(code)
      }),
    )
    const timeout = options.readyTimeoutMs ?? 60_000
    const deadline = Date.now() + timeout
    for (;;) {
      if (!alive) throw new Error(`router exited before it was ready:\n${output.slice(-4000)}`)
      if ((await readyz()) === 200) return
      if (Date.now() > deadline) {
        c.kill("SIGKILL")
        throw new Error(`router not ready within ${timeout} ms:\n${output.slice(-4000)}`)
      }
      await sleep(200)
    }
  }

  const kill = async (signal: NodeJS.Signals = "SIGTERM") => {
    const c = child
    if (c === undefined || c.exitCode !== null || c.signalCode !== null) return c?.exitCode ?? null
    c.kill(signal)
    return exited
  }

  const metrics = async () => {
    const res = await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(5_000) })
    return res.text()
  }

  await spawnOne()
  return {
    outputDir,
    metricsPort,
    pid: () => (child && child.exitCode === null && child.signalCode === null ? child.pid : undefined),
    output: () => output,
    kill,
    restart: spawnOne,
    stop: async () => {
      const c = child
      if (c === undefined || c.exitCode !== null || c.signalCode !== null) return c?.exitCode ?? null
      const timer = setTimeout(() => c.kill("SIGKILL"), 30_000)
      const code = await kill("SIGTERM")
      clearTimeout(timer)
      return code
    },
    metrics,
    metric: async (name, labels = {}) => {
      const text = await metrics()
      let sum = 0
      for (const line of text.split("\n")) {
        if (line.startsWith("#")) continue
        const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(line)
        if (m === null || m[1] !== name) continue
        const ls = m[2] ?? ""
        if (Object.entries(labels).every(([k, v]) => ls.includes(`${k}="${v}"`))) sum += Number(m[3])
      }
      return sum
    },
    readyz,
  }
}
