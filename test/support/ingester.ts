/**
 * Test helpers around the ingester, for its own tests and for the agent's and end-to-end tests.
 *
 * `startIngester(opts)` spawns the BUILT program (`node dist/programs/ingester.js api …`; run
 * `npm run build` first) with real TLS certificates (testCerts()), a temporary tenants file, a
 * random SPILLWAY_JWT_SECRET, the given topic and brokers and two free ports (gRPC, operations),
 * and resolves once `/readyz` answers 200 (Kafka reachable, tenants loaded).
 *
 * Client helpers (`connect`, `sendEvents`, `exchangeConfig`, `sendBatches`) speak the wire
 * contract with grpc-js and the service definition of src/services/Wire.ts.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as grpc from "@grpc/grpc-js"
import { Effect } from "effect"
import { AccessKey } from "../../src/domain/Event.js"
import { Auth } from "../../src/ingest/Auth.js"
import type { DevCertPaths } from "../../src/shared/DevCerts.js"
import { EventServiceClient, type WireBatchAck, type WireConfig, type WireEResponse } from "../../src/wire/Wire.js"
import { testCerts } from "./certs.js"
import { brokers as sharedBrokers } from "./kafka.js"

/**
 * `client.SendEvent` as a writable stream: the proof of concept's client-streaming RPC, which grpc-js' generic client
 * does not type. `cb` gets the single answer (or the call's error).
 */
export const openSendEvent = <M = unknown>(
  client: object,
  md: grpc.Metadata,
  cb: (error: grpc.ServiceError | null, value?: WireEResponse) => void,
): grpc.ClientWritableStream<M> =>
  (
    client as {
      SendEvent: (
        m: grpc.Metadata,
        cb: (e: grpc.ServiceError | null, v?: WireEResponse) => void,
      ) => grpc.ClientWritableStream<M>
    }
  ).SendEvent(md, cb)

export const ingesterScript = join(import.meta.dirname, "..", "..", "dist", "programs", "ingester.js")
export const fixtureTenantsFile = join(import.meta.dirname, "..", "fixtures", "access-tokens-db.json")

/** The two tenants of test/fixtures/access-tokens-db.json. */
export const tenantA = "9c60f26f-5b6c-4c80-b5f5-625bf965b6a6"
export const tenantB = "9c60f26f-5b6c-4c80-b5f5-611bf965c6a8"

export const randomSecret = (): string => randomBytes(48).toString("base64")

/** A free TCP port on 127.0.0.1 (closed again before it is returned). */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const s = createServer()
    s.once("error", reject)
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port
      s.close(() => resolve(port))
    })
  })

/** Signs a token like the ingester does (HS256 with `secret`, sub = accessKey). */
export const signToken = (secret: string, accessKey: string, expirySeconds = 600, role = ""): Promise<string> =>
  Effect.runPromise(
    Effect.flatMap(Auth, (auth) => auth.sign(AccessKey.make(accessKey), { expirySeconds, role })).pipe(
      Effect.provide(Auth.layerFromSecrets(secret)),
    ),
  )

export interface StartIngesterOptions {
  /** Kafka topic (use uniqueTopic()). */
  readonly topic: string
  /** Default: the shared local broker. */
  readonly brokers?: ReadonlyArray<string>
  /** Tenants file content (an object in the tenants-file shape); default test/fixtures/access-tokens-db.json. */
  readonly tenants?: unknown
  /** Default: a random 48-byte secret. */
  readonly secret?: string
  /** Require client certificates signed by the test CA (use `certs.clientCert`/`clientKey`). */
  readonly mtls?: boolean
  /** More `api` arguments (e.g. receivers' ports). */
  readonly extraArgs?: ReadonlyArray<string>
  /** Own certificate and key files (default: the shared test certificates). */
  readonly tlsFiles?: { readonly cert: string; readonly key: string }
  /** Serve plaintext (`--insecure`) instead of TLS. */
  readonly insecure?: boolean
  readonly printEvents?: boolean
  /** Extra environment, e.g. SPILLWAY_KAFKA_PRODUCE_TIMEOUT_MS. */
  readonly env?: Readonly<Record<string, string>>
  /** Default: free ports. */
  readonly port?: number
  readonly metricsPort?: number
  /** Wait for /readyz 200 (default true); false waits only until the gRPC port listens. */
  readonly waitReady?: boolean
  /** Default 60 s. */
  readonly readyTimeoutMs?: number
}

export interface RunningIngester {
  /** `127.0.0.1:<port>` (the test server certificate is valid for 127.0.0.1 and localhost). */
  readonly address: string
  readonly port: number
  readonly metricsPort: number
  /** PEM of the CA that signed the server (and client) certificates. */
  readonly caCert: Buffer
  readonly certs: DevCertPaths
  readonly secret: string
  readonly tenantsFile: string
  /** A valid token for `accessKey` (default expiry 600 s). */
  readonly tokenFor: (accessKey: string, expirySeconds?: number) => Promise<string>
  /** A grpc-js client for this ingester (TLS with the test CA; client certificate when mtls). */
  readonly client: (options?: grpc.ChannelOptions) => InstanceType<typeof EventServiceClient>
  /** Everything the process printed so far (stdout and stderr). */
  readonly output: () => string
  readonly readyz: () => Promise<{ readonly status: number; readonly body: string }>
  readonly metrics: () => Promise<string>
  /** Sends `signal` (default SIGTERM) and resolves with the exit code (or the signal name). */
  readonly kill: (signal?: NodeJS.Signals) => Promise<number | string | null>
  /** The process id while it runs (for /proc/<pid>/status). */
  readonly pid: () => number | undefined
  /** Sends `signal` without waiting (e.g. SIGHUP). */
  readonly signal: (signal: NodeJS.Signals) => void
  /** Stops (SIGTERM) if running and starts again on the same ports, with the same secret and files. */
  readonly restart: () => Promise<void>
  /** SIGTERM, wait for exit, remove the temporary files. */
  readonly stop: () => Promise<void>
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const httpGet = async (url: string): Promise<{ status: number; body: string }> => {
  const res = await fetch(url, { signal: AbortSignal.timeout(3000) })
  return { status: res.status, body: await res.text() }
}

export async function startIngester(opts: StartIngesterOptions): Promise<RunningIngester> {
  if (!existsSync(ingesterScript)) throw new Error(`${ingesterScript} is missing: run \`npm run build\` first`)
  const certs = await testCerts()
  const dir = mkdtempSync(join(tmpdir(), "spillway-ingester-"))
  const tenantsFile = join(dir, "tenants.json")
  writeFileSync(
    tenantsFile,
    opts.tenants === undefined ? readFileSync(fixtureTenantsFile, "utf8") : JSON.stringify(opts.tenants),
  )
  const secret = opts.secret ?? randomSecret()
  const port = opts.port ?? (await freePort())
  const metricsPort = opts.metricsPort ?? (await freePort())
  const brokers = opts.brokers ?? sharedBrokers
  const args = [
    ingesterScript,
    "api",
    "--host",
    "127.0.0.1",
    "--port",
    String(port),
    "--metrics-host",
    "127.0.0.1",
    "--metrics-port",
    String(metricsPort),
    "--tenants",
    tenantsFile,
    "--brokers",
    brokers.join(","),
    "--topic",
    opts.topic,
    ...(opts.insecure
      ? ["--insecure"]
      : ["--tls-cert", opts.tlsFiles?.cert ?? certs.serverCert, "--tls-key", opts.tlsFiles?.key ?? certs.serverKey]),
    ...(opts.mtls ? ["--tls-client-ca", certs.caCert] : []),
    ...(opts.extraArgs ?? []),
    ...(opts.printEvents ? ["--print-events"] : []),
  ]
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    SPILLWAY_CONFIG: "",
    SPILLWAY_JWT_SECRET: secret,
    SPILLWAY_JWT_SECRET_FILE: "",
    KAFKAJS_NO_PARTITIONER_WARNING: "1",
    ...opts.env,
  }

  let child: ChildProcess | undefined
  let out = ""
  let exited: Promise<number | string | null> = Promise.resolve(null)

  const launch = async () => {
    const c = spawn(process.execPath, args, { env, stdio: ["ignore", "pipe", "pipe"] })
    child = c
    c.stdout?.on("data", (d: Buffer) => (out += d.toString()))
    c.stderr?.on("data", (d: Buffer) => (out += d.toString()))
    exited = new Promise((resolve) => c.once("exit", (code, signal) => resolve(code ?? signal)))
    let gone = false
    void exited.then(() => (gone = true))
    const deadline = Date.now() + (opts.readyTimeoutMs ?? 60_000)
    while (Date.now() < deadline) {
      if (gone) throw new Error(`the ingester exited before it was ready:\n${out}`)
      const ok =
        opts.waitReady === false
          ? out.includes('"ingester listening"')
          : await httpGet(`http://127.0.0.1:${metricsPort}/readyz`).then(
              (r) => r.status === 200,
              () => false,
            )
      if (ok) return
      await sleep(100)
    }
    c.kill("SIGKILL")
    throw new Error(`the ingester was not ready within ${opts.readyTimeoutMs ?? 60_000} ms:\n${out}`)
  }

  const kill = async (signal: NodeJS.Signals = "SIGTERM") => {
    const c = child
    if (c === undefined || c.exitCode !== null || c.signalCode !== null) return exited
    c.kill(signal)
    const timer = setTimeout(() => c.kill("SIGKILL"), 30_000)
    const code = await exited
    clearTimeout(timer)
    return code
  }

  await launch()
  const caCert = readFileSync(certs.caCert)
  return {
    address: `127.0.0.1:${port}`,
    port,
    metricsPort,
    caCert,
    certs,
    secret,
    tenantsFile,
    tokenFor: (accessKey, expirySeconds) => signToken(secret, accessKey, expirySeconds),
    client: (options) =>
      connect(`127.0.0.1:${port}`, {
        ...(opts.insecure ? { insecure: true } : { caCert }),
        ...(opts.mtls ? { clientCert: readFileSync(certs.clientCert), clientKey: readFileSync(certs.clientKey) } : {}),
        ...(options ? { options } : {}),
      }),
    output: () => out,
    readyz: () => httpGet(`http://127.0.0.1:${metricsPort}/readyz`),
    metrics: async () => (await httpGet(`http://127.0.0.1:${metricsPort}/metrics`)).body,
    kill,
    pid: () => child?.pid,
    signal: (signal) => {
      child?.kill(signal)
    },
    restart: async () => {
      await kill("SIGTERM")
      await launch()
    },
    stop: async () => {
      await kill("SIGTERM")
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

// ---------------------------------------------------------------------------------------------
// Clients

export interface ConnectOptions {
  readonly caCert?: Buffer
  readonly clientCert?: Buffer
  readonly clientKey?: Buffer
  readonly insecure?: boolean
  readonly options?: grpc.ChannelOptions
}

export const connect = (address: string, o: ConnectOptions): InstanceType<typeof EventServiceClient> =>
  new EventServiceClient(
    address,
    o.insecure
      ? grpc.credentials.createInsecure()
      : grpc.credentials.createSsl(o.caCert ?? null, o.clientKey ?? null, o.clientCert ?? null),
    {
      "grpc.max_send_message_length": 64 * 1024 * 1024,
      // The test certificate names localhost and 127.0.0.1; an IP as TLS server name is deprecated in Node.
      ...(o.insecure ? {} : { "grpc.ssl_target_name_override": "localhost" }),
      ...o.options,
    },
  )

export const bearer = (token: string | undefined): grpc.Metadata => {
  const m = new grpc.Metadata()
  if (token !== undefined) m.set("authorization", `Bearer ${token}`)
  return m
}

/** `api.Event` as protobufjs' fromObject takes it (int64 seconds as a decimal string). */
export interface WireEvent {
  readonly timestamp?: { readonly seconds: string; readonly nanos: number } | null
  readonly agent_id: string
  readonly tag: string
  readonly message: string
  readonly UserID: string
  readonly AccessKey: string
  readonly event_id?: string
}

/** A wire event of `accessKey`, numbered `i` (message is JSON holding `i`). */
export const wireEvent = (accessKey: string, i: number, extra: Partial<WireEvent> = {}): WireEvent => ({
  timestamp: { seconds: String(1_700_000_000 + i), nanos: i },
  agent_id: "test-agent",
  tag: "test",
  message: JSON.stringify({ n: i }),
  UserID: "2134558",
  AccessKey: accessKey,
  event_id: `ev-${i}`,
  ...extra,
})

export interface CallResult<A> {
  readonly value?: A
  readonly error?: grpc.ServiceError
}

type Client = InstanceType<typeof EventServiceClient>
type Callback<A> = (error: grpc.ServiceError | null, value?: A) => void
interface RawClient {
  SendEvent(metadata: grpc.Metadata, cb: Callback<WireEResponse>): grpc.ClientWritableStream<unknown>
  ExchangeConfig(req: unknown, metadata: grpc.Metadata, cb: Callback<WireConfig>): void
  SendEventBatches(metadata: grpc.Metadata): grpc.ClientDuplexStream<unknown, WireBatchAck>
}
const raw = (client: Client) => client as unknown as RawClient

/** Streams `events` with SendEvent (honouring write() backpressure) and resolves with the answer. */
export const sendEvents = (
  client: Client,
  token: string | undefined,
  events: Iterable<WireEvent | Uint8Array>,
): Promise<CallResult<WireEResponse>> =>
  new Promise((resolve) => {
    let settled = false
    const call = raw(client).SendEvent(bearer(token), (error, value) => {
      settled = true
      resolve(error ? { error } : value === undefined ? {} : { value })
    })
    call.on("error", () => undefined)
    const it = events[Symbol.iterator]()
    const pump = () => {
      while (!settled) {
        const next = it.next()
        if (next.done) {
          call.end()
          return
        }
        if (!call.write(next.value)) {
          call.once("drain", pump)
          return
        }
      }
    }
    pump()
  })

export const exchangeConfig = (
  client: Client,
  token: string | undefined,
  accessKey: string,
): Promise<CallResult<WireConfig>> =>
  new Promise((resolve) => {
    raw(client).ExchangeConfig({ AccessKey: accessKey }, bearer(token), (error, value) =>
      resolve(error ? { error } : value === undefined ? {} : { value }),
    )
  })

export interface BatchRun {
  readonly acks: ReadonlyArray<WireBatchAck>
  /** The call's final status (OK = 0). */
  readonly status: grpc.StatusObject | undefined
  readonly error?: grpc.ServiceError
}

/**
 * Sends `batches` on one SendEventBatches stream with at most `maxInFlight` unacknowledged,
 * half-closes after the last one and resolves with every ack and the final status.
 */
export const sendBatches = (
  client: Client,
  token: string | undefined,
  batches: ReadonlyArray<{ readonly batch_id: string; readonly events: ReadonlyArray<WireEvent> }>,
  maxInFlight = 32,
): Promise<BatchRun> =>
  new Promise((resolve) => {
    const call = raw(client).SendEventBatches(bearer(token))
    const acks: Array<WireBatchAck> = []
    let next = 0
    let inFlight = 0
    let status: grpc.StatusObject | undefined
    let error: grpc.ServiceError | undefined
    const pump = () => {
      while (inFlight < maxInFlight && next < batches.length) {
        inFlight++
        call.write(batches[next++])
      }
      if (next === batches.length && inFlight === 0) call.end()
    }
    call.on("data", (a: WireBatchAck) => {
      acks.push(a)
      inFlight--
      pump()
    })
    // 'status' comes last (after every 'data' and any 'error'), also when the server ends the call early.
    call.on("status", (s) => {
      status = s
      setImmediate(() => resolve({ acks, status, ...(error ? { error } : {}) }))
    })
    call.on("error", (e: grpc.ServiceError) => {
      error = e
    })
    pump()
  })
