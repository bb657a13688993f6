/**
 * An in-process harness for the OTLP and Forward receivers: their layers with the real KafkaSink.layerKafka against a
 * real broker, the real Auth with a test secret and the real ConfigStore on a temporary tenants file.
 */
import { randomBytes } from "node:crypto"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Layer, Logger, LogLevel, ManagedRuntime, Redacted } from "effect"
import { SignJWT } from "jose"
import type { AccessKey } from "../../src/domain/Event.js"
import { Auth } from "../../src/ingest/Auth.js"
import { forwardPassword } from "../../src/ingest/forward/ForwardPassword.js"
import { ForwardReceiver, type ForwardReceiverOptions } from "../../src/ingest/forward/ForwardReceiver.js"
import { KafkaSink } from "../../src/ingest/KafkaSink.js"
import { OtlpReceiver, type OtlpReceiverOptions } from "../../src/ingest/otlp/OtlpReceiver.js"
import { receiverRequests } from "../../src/ingest/receivers/TenantRecords.js"
import { ConfigStore } from "../../src/shared/ConfigStore.js"
import { openHex } from "../../src/shared/Crypto.js"
import { KafkaClient } from "../../src/shared/Kafka.js"
import { EventCodec } from "../../src/wire/Wire.js"
import { makeKafka } from "./kafka.js"

export const tenants = {
  A: { AccessKey: "recv-tenant-a", EncryptionKey: "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6", UserID: "user-a" },
  B: { AccessKey: "recv-tenant-b", EncryptionKey: "Zz9Yy8Xx7Ww6Vv5U", UserID: "user-b" },
  C: { AccessKey: "recv-tenant-c", EncryptionKey: "", UserID: "user-c" },
} as const
export type TenantName = keyof typeof tenants

export const writeTenantsFile = (): string => {
  const dir = mkdtempSync(join(tmpdir(), "spillway-recv-"))
  const file = join(dir, "tenants.json")
  const content: Record<string, unknown> = {}
  for (const t of Object.values(tenants)) content[t.AccessKey] = { ...t, targets: [{ file: `${t.AccessKey}.log` }] }
  writeFileSync(file, JSON.stringify(content, null, 2))
  return file
}

export interface HarnessOptions {
  readonly topic: string
  readonly brokers: ReadonlyArray<string>
  readonly otlp?: Omit<OtlpReceiverOptions, "tls"> & { readonly tls?: OtlpReceiverOptions["tls"] }
  readonly forward?: Omit<ForwardReceiverOptions, "sharedKey"> & { readonly sharedKey?: string }
}

export interface Harness {
  readonly grpcPort: number | undefined
  readonly httpPort: number | undefined
  readonly forwardPort: number | undefined
  readonly token: (name: TenantName | string, expirySeconds?: number) => Promise<string>
  /** A token for `name` that expired a minute ago (signed with the harness's secret). */
  readonly expiredToken: (name: TenantName) => Promise<string>
  readonly forwardPassword: (name: TenantName) => Promise<string>
  readonly close: () => Promise<void>
}

export const startHarness = async (o: HarnessOptions): Promise<Harness> => {
  const secret = randomBytes(48).toString("base64")
  const tenantsFile = writeTenantsFile()
  const Kafka = KafkaClient.layer({
    brokers: [...o.brokers],
    clientId: "spillway-recv-test",
    connectionTimeoutMs: 1000,
    requestTimeoutMs: 5000,
  })
  const Sink = KafkaSink.layerKafka({
    topic: o.topic,
    produceTimeout: "3 seconds",
    reconnectCap: "1 second",
    probeInterval: "1 second",
  }).pipe(Layer.provide(Kafka))
  const Deps = Layer.mergeAll(Sink, Auth.layerFromSecrets(secret), ConfigStore.layerFile(tenantsFile))
  const Otlp = o.otlp
    ? OtlpReceiver.layer({ tls: undefined, ...o.otlp })
    : Layer.succeed(OtlpReceiver, { grpcPort: undefined, httpPort: undefined })
  const Forward = o.forward
    ? ForwardReceiver.layer({
        ...o.forward,
        sharedKey: o.forward.sharedKey === undefined ? undefined : Redacted.make(o.forward.sharedKey),
      })
    : Layer.succeed(ForwardReceiver, { port: -1 })
  const Live = Layer.mergeAll(Otlp, Forward).pipe(
    Layer.provideMerge(Deps),
    Layer.provide(Logger.minimumLogLevel(process.env.RECV_TEST_LOGS ? LogLevel.Debug : LogLevel.None)),
  )
  const rt = ManagedRuntime.make(Live)
  // Ready as the ingester's /readyz would say: the producer is connected and the broker answers.
  await waitFor("the Kafka producer", () => rt.runPromise(Effect.flatMap(KafkaSink, (s) => s.ready)), 60_000)
  const otlp = await rt.runPromise(OtlpReceiver)
  const fwd = await rt.runPromise(ForwardReceiver)
  const key = (name: TenantName | string) => (name in tenants ? tenants[name as TenantName].AccessKey : name)
  return {
    grpcPort: otlp.grpcPort,
    httpPort: otlp.httpPort,
    forwardPort: fwd.port === -1 ? undefined : fwd.port,
    token: (name, expirySeconds = 600) =>
      rt.runPromise(Effect.flatMap(Auth, (a) => a.sign(key(name) as AccessKey, { expirySeconds }))),
    expiredToken: (name) => {
      const now = Math.floor(Date.now() / 1000)
      return new SignJWT({ role: "" })
        .setProtectedHeader({ alg: "HS256", typ: "JWT" })
        .setSubject(key(name))
        .setIssuedAt(now - 600)
        .setExpirationTime(now - 60)
        .sign(new Uint8Array(Buffer.from(secret, "utf8")))
    },
    forwardPassword: (name) => rt.runPromise(Effect.flatMap(Auth, (a) => forwardPassword(a, key(name) as AccessKey))),
    close: () => rt.dispose(),
  }
}

/** A record of the topic, decoded; `plain` is the decrypted message (with the key of the tenant the key names). */
export interface TopicRecord {
  readonly key: string
  readonly event: {
    readonly timestamp?: { readonly seconds: string; readonly nanos: number }
    readonly agent_id: string
    readonly tag: string
    readonly message: string
    readonly UserID: string
    readonly AccessKey: string
    readonly event_id: string
  }
  readonly plain: unknown
}

export const tenantOfKey = (key: string) => Object.values(tenants).find((t) => t.AccessKey === key)

export const decryptFor = (name: TenantName, message: string): string => {
  const k = tenants[name].EncryptionKey
  return k === "" ? message : openHex(Buffer.from(k, "utf8"), message).toString("utf8")
}

/** Reads `topic` from the beginning until `n` records arrived or `timeoutMs` passed (then returns what came). */
export const readTopic = async (
  brokers: ReadonlyArray<string>,
  topic: string,
  n: number,
  timeoutMs = 30_000,
): Promise<Array<TopicRecord>> => {
  const consumer = makeKafka("spillway-recv-reader", { brokers: [...brokers] }).consumer({
    groupId: `${topic}-r-${randomBytes(3).toString("hex")}`,
    maxWaitTimeInMs: 200,
  })
  const out: Array<TopicRecord> = []
  await consumer.connect()
  try {
    await consumer.subscribe({ topic, fromBeginning: true })
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(resolve, timeoutMs)
      consumer
        .run({
          eachMessage: async ({ message }) => {
            const event = EventCodec.decode(message.value ?? Buffer.alloc(0)) as TopicRecord["event"]
            const key = message.key?.toString() ?? ""
            const t = Object.entries(tenants).find(([, v]) => v.AccessKey === key)
            let plain: unknown
            try {
              plain = t === undefined ? undefined : JSON.parse(decryptFor(t[0] as TenantName, event.message))
            } catch {
              plain = undefined
            }
            out.push({ key, event, plain })
            if (out.length >= n) {
              clearTimeout(timer)
              resolve()
            }
          },
        })
        .catch(reject)
      if (n <= 0) resolve()
    })
  } finally {
    await consumer.disconnect()
  }
  return out
}

/** How many answers a receiver gave with a result (from the process's metrics). */
export const requestsAnswered = async (receiver: string, result: string): Promise<number> => {
  const m = await receiverRequests.get()
  return m.values
    .filter((v) => v.labels.receiver === receiver && v.labels.result === result)
    .reduce((n, v) => n + v.value, 0)
}

export const waitFor = async (what: string, check: () => Promise<boolean> | boolean, timeoutMs = 30_000) => {
  const until = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}
