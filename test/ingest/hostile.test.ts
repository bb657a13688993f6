/**
 * The ingester in process (real TLS, in-memory KafkaSink) against hostile but authenticated clients: a message of
 * millions of empty events, streams held past their token's expiry or their tenant's removal, too many streams,
 * connections that never authenticate.
 */
import { readFileSync } from "node:fs"
import { connect as http2Connect } from "node:http2"
import * as grpc from "@grpc/grpc-js"
import { Effect, Layer, ManagedRuntime, Schema, SubscriptionRef } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { TenantNotFound } from "../../src/domain/Errors.js"
import type { AccessKey } from "../../src/domain/Event.js"
import { TenantsFile } from "../../src/domain/Tenant.js"
import { Auth } from "../../src/ingest/Auth.js"
import { Budget } from "../../src/ingest/Budget.js"
import { IngesterServer } from "../../src/ingest/IngesterServer.js"
import { KafkaSink, type MemorySink } from "../../src/ingest/KafkaSink.js"
import { ConfigStore } from "../../src/shared/ConfigStore.js"
import type { WireBatchAck, WireEResponse } from "../../src/wire/Wire.js"
import { testCerts } from "../support/certs.js"
import {
  bearer,
  connect,
  exchangeConfig,
  fixtureTenantsFile,
  openSendEvent,
  randomSecret,
  sendBatches,
  signToken,
  tenantA,
  tenantB,
  wireEvent,
} from "../support/ingester.js"

const secret = randomSecret()
const MiB = 1024 * 1024
const tenants = Schema.decodeUnknownSync(TenantsFile)(JSON.parse(readFileSync(fixtureTenantsFile, "utf8")))

let runtime: ManagedRuntime.ManagedRuntime<IngesterServer | MemorySink, unknown>
let ref: SubscriptionRef.SubscriptionRef<TenantsFile>
let client: ReturnType<typeof connect>
let caCert: Buffer
let address: string
let port: number

/** A ConfigStore over a SubscriptionRef the tests change. */
const refStore = (r: SubscriptionRef.SubscriptionRef<TenantsFile>) =>
  Layer.succeed(ConfigStore, {
    get: (accessKey: string) =>
      Effect.flatMap(SubscriptionRef.get(r), (file) =>
        Object.hasOwn(file, accessKey)
          ? Effect.succeed(file[accessKey as AccessKey]!)
          : Effect.fail(new TenantNotFound({ accessKey })),
      ),
    current: SubscriptionRef.get(r),
    changes: r.changes,
  })

beforeAll(async () => {
  const certs = await testCerts()
  caCert = readFileSync(certs.caCert)
  ref = await Effect.runPromise(SubscriptionRef.make(tenants))
  runtime = ManagedRuntime.make(
    IngesterServer.layer({
      host: "127.0.0.1",
      port: 0,
      tls: { certFile: certs.serverCert, keyFile: certs.serverKey },
      maxMessageBytes: 8 * MiB,
      maxStreams: 6,
      maxStreamsPerTenant: 2,
      idleTimeout: "1 second",
    }).pipe(
      Layer.provideMerge(
        Layer.mergeAll(
          KafkaSink.layerMemory,
          refStore(ref),
          Auth.layerFromSecrets(secret, { clockSkewSeconds: 0 }),
          Budget.layer({ processBytes: 64 * MiB, streamBytes: 16 * MiB, wait: "1 second" }),
        ),
      ),
    ),
  )
  const server = await runtime.runPromise(IngesterServer)
  port = server.port
  address = `127.0.0.1:${port}`
  client = connect(address, { caCert })
})

afterAll(async () => {
  client?.close()
  await runtime?.dispose()
})

/** A batch stream held open: send batches, read acks, end it, await its status. */
const openBatches = (c: ReturnType<typeof connect>, token: string) => {
  const call = (
    c as unknown as { SendEventBatches: (m: grpc.Metadata) => grpc.ClientDuplexStream<unknown, WireBatchAck> }
  ).SendEventBatches(bearer(token))
  const acks: Array<WireBatchAck> = []
  const waiters: Array<() => void> = []
  call.on("data", (a: WireBatchAck) => {
    acks.push(a)
    for (const w of waiters.splice(0)) w()
  })
  call.on("error", () => undefined)
  const status = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve))
  const acked = (n: number) =>
    new Promise<void>((resolve) => {
      const check = () => (acks.length >= n ? resolve() : waiters.push(check))
      check()
    })
  return { call, acks, acked, status }
}

const within = <A>(p: Promise<A>, ms: number, what: string) =>
  Promise.race([
    p,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)),
  ])

describe("a message of ~4 million empty events (0x12 0x00 repeated, under 8 MiB)", () => {
  it("is answered quickly with a bounded FAILURE ack, and another tenant is unaffected", async () => {
    const n = Math.floor((8 * MiB - 64) / 2)
    const events = Buffer.alloc(n * 2)
    for (let i = 0; i < n; i++) events[i * 2] = 0x12
    const message = Buffer.concat([Buffer.from([(1 << 3) | 2, 4, 0x62, 0x6f, 0x6d, 0x62]), events])
    const RawBatches = grpc.makeGenericClientConstructor(
      {
        SendEventBatches: {
          path: "/api.EventService/SendEventBatches",
          requestStream: true,
          responseStream: true,
          requestSerialize: (b: Buffer) => b,
          requestDeserialize: (b: Buffer) => b,
          responseSerialize: (b: Buffer) => b,
          responseDeserialize: (b: Buffer) => b,
        },
      },
      "api.EventService",
    )
    const raw = new RawBatches(address, grpc.credentials.createSsl(caCert), {
      "grpc.ssl_target_name_override": "localhost",
      "grpc.max_send_message_length": 16 * MiB,
    })
    const other = connect(address, { caCert })
    try {
      const tokenA = await signToken(secret, tenantA)
      const tokenB = await signToken(secret, tenantB)
      const started = Date.now()
      const answer = new Promise<{ ack: Buffer | undefined; ms: number }>((resolve) => {
        const call = (
          raw as unknown as { SendEventBatches: (m: grpc.Metadata) => grpc.ClientDuplexStream<Buffer, Buffer> }
        ).SendEventBatches(bearer(tokenA))
        call.on("data", (b: Buffer) => {
          resolve({ ack: b, ms: Date.now() - started })
          call.end()
        })
        call.on("error", () => resolve({ ack: undefined, ms: Date.now() - started }))
        call.write(message)
      })
      const config = await within(exchangeConfig(other, tokenB, tenantB), 5_000, "tenant B's ExchangeConfig")
      expect(config.value?.AccessKey).toBe(tenantB)
      const { ack, ms } = await within(answer, 10_000, "the batch's ack")
      expect(ack).toBeDefined()
      const { BatchAckCodec } = await import("../../src/wire/Wire.js")
      const decoded = BatchAckCodec.decode(ack!) as WireBatchAck
      expect(decoded).toMatchObject({ batch_id: "bomb", status: "FAILURE", code: grpc.status.INVALID_ARGUMENT })
      expect(decoded.detail).toBe("a batch may hold at most 10000 events")
      expect(ms).toBeLessThan(5_000)
      console.log(`4,194,272 empty events: FAILURE ack after ${ms} ms`)
    } finally {
      raw.close()
      other.close()
    }
  }, 30_000)
})

describe("open streams end when the caller may no longer send", () => {
  it("at the token's expiry (plus skew): a batch stream gets its acks, then UNAUTHENTICATED; SendEvent too", async () => {
    const token = await signToken(secret, tenantA, 2)
    const s = openBatches(client, token)
    s.call.write({ batch_id: "e-1", events: [wireEvent(tenantA, 1)] })
    await s.acked(1)
    expect(s.acks[0]?.status).toBe("SUCCESS")
    const status = await within(s.status, 6_000, "the expired stream's end")
    expect(status.code).toBe(grpc.status.UNAUTHENTICATED)
    expect(status.details).toMatch(/expired/)

    const token2 = await signToken(secret, tenantA, 2)
    const r = await within(
      new Promise<{ error?: grpc.ServiceError; value?: WireEResponse }>((resolve) => {
        const call = openSendEvent<unknown>(client, bearer(token2), (error, value) =>
          resolve(error ? { error } : value ? { value } : {}),
        )
        call.on("error", () => undefined)
        call.write(wireEvent(tenantA, 2))
      }),
      6_000,
      "the expired SendEvent's end",
    )
    expect(r.error?.code).toBe(grpc.status.UNAUTHENTICATED)
  }, 20_000)

  it("when the tenant leaves the tenants file (NOT_FOUND) or its entry changes (UNAVAILABLE)", async () => {
    const token = await signToken(secret, tenantA)
    try {
      const s = openBatches(client, token)
      s.call.write({ batch_id: "t-1", events: [wireEvent(tenantA, 1)] })
      await s.acked(1)
      const { [tenantA as AccessKey]: _gone, ...rest } = tenants
      await Effect.runPromise(SubscriptionRef.set(ref, rest as TenantsFile))
      expect((await within(s.status, 5_000, "the removed tenant's stream")).code).toBe(grpc.status.NOT_FOUND)
      expect(
        (await sendBatches(client, token, [{ batch_id: "t-2", events: [wireEvent(tenantA, 2)] }])).status?.code,
      ).toBe(grpc.status.NOT_FOUND)

      await Effect.runPromise(SubscriptionRef.set(ref, tenants))
      const s2 = openBatches(client, token)
      s2.call.write({ batch_id: "t-3", events: [wireEvent(tenantA, 3)] })
      await s2.acked(1)
      const changed = Schema.decodeUnknownSync(TenantsFile)({
        ...JSON.parse(readFileSync(fixtureTenantsFile, "utf8")),
        [tenantA]: {
          AccessKey: tenantA,
          EncryptionKey: "00000000000000000000000000000000",
          UserID: "2134558",
          targets: [],
        },
      })
      await Effect.runPromise(SubscriptionRef.set(ref, changed))
      expect((await within(s2.status, 5_000, "the changed tenant's stream")).code).toBe(grpc.status.UNAVAILABLE)
    } finally {
      await Effect.runPromise(SubscriptionRef.set(ref, tenants))
    }
  }, 20_000)
})

describe("caps", () => {
  it("a tenant's streams past its cap get RESOURCE_EXHAUSTED; another tenant still gets in", async () => {
    const tokenA = await signToken(secret, tenantA)
    const open = [openBatches(client, tokenA), openBatches(client, tokenA)]
    try {
      for (const [i, s] of open.entries()) s.call.write({ batch_id: `c-${i}`, events: [wireEvent(tenantA, i)] })
      await Promise.all(open.map((s) => s.acked(1)))
      const third = await sendBatches(client, tokenA, [{ batch_id: "c-3", events: [wireEvent(tenantA, 3)] }])
      expect(third.status?.code).toBe(grpc.status.RESOURCE_EXHAUSTED)
      expect(third.acks).toHaveLength(0)
      const b = await sendBatches(client, await signToken(secret, tenantB), [
        { batch_id: "c-b", events: [wireEvent(tenantB, 0, { UserID: "1134412" })] },
      ])
      expect(b.acks.map((a) => a.status)).toEqual(["SUCCESS"])
    } finally {
      for (const s of open) s.call.end()
      await Promise.all(open.map((s) => s.status))
    }
    // Slots are given back when streams end.
    const again = await sendBatches(client, tokenA, [{ batch_id: "c-4", events: [wireEvent(tenantA, 4)] }])
    expect(again.acks.map((a) => a.status)).toEqual(["SUCCESS"])
  })

  it("an HTTP/2 connection that never opens a call is closed after the idle timeout", async () => {
    const session = http2Connect(`https://localhost:${port}`, { ca: caCert })
    session.on("error", () => undefined)
    const closed = new Promise<number>((resolve) => {
      const t0 = Date.now()
      session.on("close", () => resolve(Date.now() - t0))
    })
    const ms = await within(closed, 10_000, "the idle connection's close")
    expect(ms).toBeLessThan(10_000)
    console.log(`idle connection closed after ${ms} ms`)
  }, 20_000)
})
