/**
 * The ingester's gRPC server in process, over real TLS, with the in-memory KafkaSink: auth,
 * tenancy, validation, acknowledgements, budgets and size limits. The Kafka side is in
 * test/ingester.it.test.ts.
 */

import { readFileSync } from "node:fs"
import * as grpc from "@grpc/grpc-js"
import { Layer, ManagedRuntime, Schema } from "effect"
import { SignJWT } from "jose"
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest"
import { TenantsFile } from "../../src/domain/Tenant.js"
import { Auth } from "../../src/ingest/Auth.js"
import { Budget } from "../../src/ingest/Budget.js"
import * as M from "../../src/ingest/IngesterMetrics.js"
import { IngesterServer } from "../../src/ingest/IngesterServer.js"
import { KafkaSink, MemorySink, type MemorySinkControl } from "../../src/ingest/KafkaSink.js"
import { ConfigStore } from "../../src/shared/ConfigStore.js"
import {
  EventBatchCodec,
  EventCodec,
  EventServiceDefinition,
  type WireBatchAck,
  type WireEResponse,
} from "../../src/wire/Wire.js"
import { testCerts } from "../support/certs.js"
import {
  bearer,
  connect,
  exchangeConfig,
  fixtureTenantsFile,
  openSendEvent,
  randomSecret,
  sendBatches,
  sendEvents,
  signToken,
  tenantA,
  tenantB,
  wireEvent,
} from "../support/ingester.js"

const secret = randomSecret()
const KiB = 1024
const maxMessageBytes = 128 * KiB

let runtime: ManagedRuntime.ManagedRuntime<IngesterServer | MemorySink, unknown>
let memory: MemorySinkControl
let client: ReturnType<typeof connect>
let caCert: Buffer
let address: string

beforeAll(async () => {
  const certs = await testCerts()
  caCert = readFileSync(certs.caCert)
  const tenants = Schema.decodeUnknownSync(TenantsFile)(JSON.parse(readFileSync(fixtureTenantsFile, "utf8")))
  const layer = IngesterServer.layer({
    host: "127.0.0.1",
    port: 0,
    tls: { certFile: certs.serverCert, keyFile: certs.serverKey },
    maxMessageBytes,
    maxEventBytes: 120 * KiB,
    sendEventBatchEvents: 50,
  }).pipe(
    Layer.provideMerge(
      Layer.mergeAll(
        KafkaSink.layerMemory,
        ConfigStore.layerMemory(tenants),
        Auth.layerFromSecrets(secret),
        Budget.layer({ processBytes: 256 * KiB, streamBytes: 256 * KiB, wait: "300 millis" }),
      ),
    ),
  )
  runtime = ManagedRuntime.make(layer)
  const server = await runtime.runPromise(IngesterServer)
  memory = await runtime.runPromise(MemorySink)
  address = `127.0.0.1:${server.port}`
  client = connect(address, { caCert })
})

afterAll(async () => {
  client?.close()
  await runtime?.dispose()
})

beforeEach(() => {
  memory.setAvailable(true)
  memory.setDelay(0)
})

const tokenA = () => signToken(secret, tenantA)
const events = (key: string, n: number, from = 0) => Array.from({ length: n }, (_, i) => wireEvent(key, from + i))
const decodeValue = (v: Buffer) => EventCodec.decode(v) as { message: string; AccessKey: string; event_id: string }

describe("SendEvent", () => {
  it("answers SUCCESS once the sink has every event; records are keyed by access key and decode back", async () => {
    const before = memory.records().length
    const sendsBefore = memory.publishes()
    const r = await sendEvents(client, await tokenA(), events(tenantA, 120))
    expect(r.error).toBeUndefined()
    expect(r.value?.status).toBe("SUCCESS")
    // Gathered into sends of at most sendEventBatchEvents (50): 50 + 50 + 20.
    expect(memory.publishes() - sendsBefore).toBe(3)
    const recs = memory.records().slice(before)
    expect(recs).toHaveLength(120)
    expect(new Set(recs.map((x) => x.key))).toEqual(new Set([tenantA]))
    const decoded = recs.map((x) => decodeValue(x.value))
    expect(decoded.map((d) => d.event_id).sort()).toEqual(
      events(tenantA, 120)
        .map((e) => e.event_id)
        .sort(),
    )
    expect(decoded.every((d) => d.AccessKey === tenantA)).toBe(true)
  })

  it("answers only after the client's half-close, with every event written before and after a pause", async () => {
    const before = memory.records().length
    const token = await tokenA()
    let answeredAt = 0
    let endedAt = 0
    const result = await new Promise<{ value?: unknown; error?: grpc.ServiceError }>((resolve) => {
      const call = openSendEvent<unknown>(client, bearer(token), (error, value) => {
        answeredAt = Date.now()
        resolve(error ? { error } : { value })
      })
      call.on("error", () => undefined)
      void (async () => {
        for (const e of events(tenantA, 750)) call.write(e)
        await new Promise((r) => setTimeout(r, 1000))
        for (const e of events(tenantA, 750, 750)) if (!call.write(e)) await new Promise((r) => call.once("drain", r))
        endedAt = Date.now()
        call.end()
      })()
    })
    expect(result.value).toEqual({ status: "SUCCESS" })
    expect(endedAt).toBeGreaterThan(0)
    expect(answeredAt).toBeGreaterThanOrEqual(endedAt)
    expect(memory.records().length - before).toBe(1500)
  })

  it("repairs the proof of concept's nanoseconds-in-seconds timestamps", async () => {
    const before = memory.records().length
    const poc = wireEvent(tenantA, 1, { timestamp: { seconds: "1621322656100476100", nanos: -1758894908 } })
    const r = await sendEvents(client, await tokenA(), [poc])
    expect(r.value?.status).toBe("SUCCESS")
    const ts = (EventCodec.decode(memory.records()[before]!.value) as { timestamp: { seconds: string; nanos: number } })
      .timestamp
    expect(ts).toEqual({ seconds: "1621322656", nanos: 100476100 })
  })

  it("answers UNAVAILABLE, never SUCCESS, when the sink cannot take the events", async () => {
    memory.setAvailable(false)
    const r = await sendEvents(client, await tokenA(), events(tenantA, 10))
    expect(r.value).toBeUndefined()
    expect(r.error?.code).toBe(grpc.status.UNAVAILABLE)
  })

  it("a failed send ends the call with UNAVAILABLE at once, while the client still holds the stream open", async () => {
    memory.setAvailable(false)
    const token = await tokenA()
    const r = await new Promise<{ error?: grpc.ServiceError; value?: WireEResponse }>((resolve) => {
      const call = openSendEvent<unknown>(client, bearer(token), (error, value) =>
        resolve(error ? { error } : value ? { value } : {}),
      )
      call.on("error", () => undefined)
      // More than one send (50 events here), and no half-close: only the failed send can end the call.
      for (const e of events(tenantA, 120)) call.write(e)
    })
    expect(r.value).toBeUndefined()
    expect(r.error?.code).toBe(grpc.status.UNAVAILABLE)
  })

  it("a client that cancels mid-stream ends the call at once: its stream slot and bytes in flight are given back", async () => {
    const gauge = async (g: typeof M.openStreams) => (await g.get()).values[0]?.value ?? 0
    const waitFor = async (what: string, ok: () => Promise<boolean>, ms: number) => {
      const until = Date.now() + ms
      while (!(await ok())) {
        if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
        await new Promise((r) => setTimeout(r, 10))
      }
    }
    // The send stays in flight far longer than the test waits: only the interruption can give its bytes back.
    memory.setDelay("20 seconds")
    const streamsBefore = await gauge(M.openStreams)
    const call = openSendEvent<unknown>(client, bearer(await tokenA()), () => undefined)
    call.on("error", () => undefined)
    for (const e of events(tenantA, 60)) call.write(e)
    await waitFor("the send in flight", async () => (await gauge(M.inFlightBytes)) > 0, 5_000)
    expect(await gauge(M.openStreams)).toBe(streamsBefore + 1)
    call.cancel()
    await waitFor("the cancelled call's end", async () => (await gauge(M.openStreams)) === streamsBefore, 5_000)
    expect(await gauge(M.inFlightBytes)).toBe(0)
  })

  it("accepts Kubernetes-length tags (up to 4096 characters)", async () => {
    const before = memory.records().length
    const long = wireEvent(tenantA, 1, { tag: `kube.var.log.containers.${"x".repeat(4096 - 24)}` })
    const r = await sendEvents(client, await tokenA(), [long, wireEvent(tenantA, 2, { tag: "t".repeat(300) })])
    expect(r.value?.status).toBe("SUCCESS")
    const recs = memory.records().slice(before)
    expect(recs.map((x) => x.deadLetter)).toEqual([undefined, undefined])
    expect((EventCodec.decode(recs[0]!.value) as { tag: string }).tag).toHaveLength(4096)
  })

  it("an event that can never be accepted goes to the dead letters with its reason; the rest is acknowledged", async () => {
    const before = memory.records().length
    const secretish = "SECRET-VALUE-"
    const bad = wireEvent(tenantA, 1, { tag: secretish.repeat(400) })
    const huge = wireEvent(tenantA, 2, { message: secretish.repeat(Math.ceil((121 * KiB) / secretish.length)) })
    const r = await sendEvents(client, await tokenA(), [wireEvent(tenantA, 0), bad, huge, wireEvent(tenantA, 3)])
    expect(r.error).toBeUndefined()
    expect(r.value?.status).toBe("SUCCESS")
    const recs = memory.records().slice(before)
    expect(recs).toHaveLength(4)
    expect(recs.map((x) => x.deadLetter?.reason)).toEqual([undefined, "invalid_event", "event_too_large", undefined])
    expect(recs[1]!.deadLetter?.detail).toMatch(/field tag must be a string of at most 4096 characters/)
    expect(recs[2]!.deadLetter?.detail).toMatch(/exceeds the limit of 122880 bytes/)
    for (const x of recs) expect(x.key).toBe(tenantA)
    for (const x of recs) expect(x.deadLetter?.detail ?? "").not.toContain("SECRET")
    expect((EventCodec.decode(recs[1]!.value) as { event_id: string }).event_id).toBe("ev-1")
    expect(recs[2]!.value.length).toBeLessThanOrEqual(64 * KiB)
  })
})

describe("tenancy", () => {
  it("ExchangeConfig returns the token's own config only", async () => {
    const own = await exchangeConfig(client, await tokenA(), tenantA)
    expect(own.value).toMatchObject({
      AccessKey: tenantA,
      UserID: "2134558",
      EncryptionKey: "883EC28EBA9A36A386FA351FBC482B34",
    })
    const other = await exchangeConfig(client, await tokenA(), tenantB)
    expect(other.error?.code).toBe(grpc.status.PERMISSION_DENIED)
    const unknown = await exchangeConfig(client, await signToken(secret, "not-a-tenant"), "not-a-tenant")
    expect(unknown.error?.code).toBe(grpc.status.NOT_FOUND)
  })

  it("events carrying another tenant's access key are refused and never reach the sink", async () => {
    const before = memory.records().length
    const r = await sendEvents(client, await tokenA(), events(tenantB, 5))
    expect(r.error?.code).toBe(grpc.status.PERMISSION_DENIED)
    const b = await sendBatches(client, await tokenA(), [{ batch_id: "x1", events: events(tenantB, 3) }])
    expect(b.acks).toEqual([
      expect.objectContaining({ batch_id: "x1", status: "FAILURE", code: grpc.status.PERMISSION_DENIED }),
    ])
    expect(memory.records().length).toBe(before)
    // Also when the foreign event sits among valid ones, or is itself invalid: the whole call is refused.
    const mixed = [wireEvent(tenantA, 1), wireEvent(tenantB, 2, { tag: "x".repeat(5000) }), wireEvent(tenantA, 3)]
    const m = await sendEvents(client, await tokenA(), mixed)
    expect(m.error?.code).toBe(grpc.status.PERMISSION_DENIED)
    expect(memory.records().length).toBe(before)
  })

  it("an event's UserID is always its tenant's: whatever the client sent is overwritten (both RPCs)", async () => {
    const before = memory.records().length
    const token = await tokenA()
    const lying = [wireEvent(tenantA, 1, { UserID: "user-b" }), wireEvent(tenantA, 2, { UserID: "1134412" })]
    expect((await sendEvents(client, token, lying)).value?.status).toBe("SUCCESS")
    const b = await sendBatches(client, token, [{ batch_id: "u-1", events: [wireEvent(tenantA, 3, { UserID: "" })] }])
    expect(b.acks.map((a) => a.status)).toEqual(["SUCCESS"])
    const recs = memory.records().slice(before)
    expect(recs).toHaveLength(3)
    expect(recs.map((x) => (EventCodec.decode(x.value) as { UserID: string }).UserID)).toEqual([
      "2134558",
      "2134558",
      "2134558",
    ])
  })
})

describe("bad tokens", () => {
  const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url")
  const now = Math.floor(Date.now() / 1000)
  const tokens = async (): Promise<Record<string, string | undefined>> => ({
    none: undefined,
    expired: await new SignJWT({ role: "" })
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setSubject(tenantA)
      .setIssuedAt(now - 7200)
      .setExpirationTime(now - 3600)
      .sign(Buffer.from(secret)),
    wrongSecret: await signToken(randomSecret(), tenantA),
    algNone: `${b64({ alg: "none", typ: "JWT" })}.${b64({ sub: tenantA, iat: now, exp: now + 600 })}.`,
    garbage: "not-a-jwt",
  })

  it("get UNAUTHENTICATED on every RPC, and nothing reaches the sink", async () => {
    const before = memory.records().length
    for (const [name, token] of Object.entries(await tokens())) {
      const r = await sendEvents(client, token, events(tenantA, 3))
      expect(r.error?.code, `SendEvent ${name}`).toBe(grpc.status.UNAUTHENTICATED)
      const c = await exchangeConfig(client, token, tenantA)
      expect(c.error?.code, `ExchangeConfig ${name}`).toBe(grpc.status.UNAUTHENTICATED)
      const b = await sendBatches(client, token, [{ batch_id: "b", events: events(tenantA, 2) }])
      expect(b.status?.code ?? b.error?.code, `SendEventBatches ${name}`).toBe(grpc.status.UNAUTHENTICATED)
      expect(b.acks).toHaveLength(0)
    }
    expect(memory.records().length).toBe(before)
  })
})

describe("SendEventBatches", () => {
  it("acknowledges each of many batches in flight exactly once, after the sink has it", async () => {
    memory.setDelay("5 millis")
    const before = memory.records().length
    const batches = Array.from({ length: 100 }, (_, b) => ({ batch_id: `b${b}`, events: events(tenantA, 20, b * 20) }))
    const r = await sendBatches(client, await tokenA(), batches, 16)
    expect(r.status?.code).toBe(grpc.status.OK)
    expect(r.acks).toHaveLength(100)
    expect(new Set(r.acks.map((a) => a.batch_id)).size).toBe(100)
    expect(r.acks.every((a) => a.status === "SUCCESS")).toBe(true)
    expect(memory.records().length - before).toBe(2000)
  })

  it("a batch the sink refuses gets a FAILURE ack with UNAVAILABLE; the stream goes on", async () => {
    memory.setAvailable(false)
    const r = await sendBatches(client, await tokenA(), [
      { batch_id: "u1", events: events(tenantA, 2) },
      { batch_id: "u2", events: events(tenantA, 2) },
    ])
    expect(r.status?.code).toBe(grpc.status.OK)
    expect(r.acks.map((a) => [a.batch_id, a.status, a.code]).sort()).toEqual([
      ["u1", "FAILURE", grpc.status.UNAVAILABLE],
      ["u2", "FAILURE", grpc.status.UNAVAILABLE],
    ])
  })

  it("while the sink is slow the stream's bytes in flight stay within its budget (reading stops), and all get acked", async () => {
    memory.setDelay("400 millis")
    const batches = Array.from({ length: 16 }, (_, b) => ({
      batch_id: `slow-${b}`,
      events: [wireEvent(tenantA, b, { message: "z".repeat(60 * KiB) })],
    }))
    let maxInFlight = 0
    let sampling = true
    const sampler = (async () => {
      while (sampling) {
        const g = await M.inFlightBytes.get()
        maxInFlight = Math.max(maxInFlight, g.values[0]?.value ?? 0)
        await new Promise((r) => setTimeout(r, 20))
      }
    })()
    // The client writes all 16 (~1 MB) at once; the server may hold at most 256 KiB of them.
    const r = await sendBatches(client, await tokenA(), batches, 16)
    sampling = false
    await sampler
    expect(r.acks).toHaveLength(16)
    expect(r.acks.every((a) => a.status === "SUCCESS")).toBe(true)
    expect(maxInFlight).toBeGreaterThan(100 * KiB)
    expect(maxInFlight).toBeLessThanOrEqual(256 * KiB)
  })

  it("past the process memory budget a batch is refused with RESOURCE_EXHAUSTED", async () => {
    memory.setDelay("1500 millis")
    const big = (id: string) => ({
      batch_id: id,
      events: [wireEvent(tenantA, 0, { message: "x".repeat(100 * KiB) })],
    })
    const token = await tokenA()
    const second = connect(address, { caCert })
    try {
      const first = sendBatches(client, token, [big("p1"), big("p2")], 2)
      await new Promise((r) => setTimeout(r, 300))
      const r2 = await sendBatches(second, token, [big("q1")], 1)
      expect(r2.acks).toEqual([
        expect.objectContaining({ batch_id: "q1", status: "FAILURE", code: grpc.status.RESOURCE_EXHAUSTED }),
      ])
      const r1 = await first
      expect(r1.acks.map((a) => a.status)).toEqual(["SUCCESS", "SUCCESS"])
    } finally {
      second.close()
    }
  })
})

describe("SendEventBatches: one bad batch or event never ends the stream", () => {
  it("dead-letters the events of a batch that can never be accepted and acks the batch SUCCESS", async () => {
    const before = memory.records().length
    const batch = {
      batch_id: "dl-1",
      events: [wireEvent(tenantA, 0), wireEvent(tenantA, 1, { agent_id: "a".repeat(300) }), wireEvent(tenantA, 2)],
    }
    const r = await sendBatches(client, await tokenA(), [batch])
    expect(r.acks).toEqual([expect.objectContaining({ batch_id: "dl-1", status: "SUCCESS" })])
    const recs = memory.records().slice(before)
    expect(recs.map((x) => x.deadLetter?.reason)).toEqual([undefined, "invalid_event", undefined])
    expect(recs[1]!.deadLetter?.detail).toMatch(/agent_id/)
  })

  it("a duplicate batch_id in flight gets a FAILURE ack; the first is acked and the stream ends OK", async () => {
    memory.setDelay("300 millis")
    const r = await sendBatches(
      client,
      await tokenA(),
      [
        { batch_id: "dup", events: events(tenantA, 2) },
        { batch_id: "dup", events: events(tenantA, 2) },
        { batch_id: "after", events: events(tenantA, 2) },
      ],
      3,
    )
    expect(r.status?.code).toBe(grpc.status.OK)
    expect(r.acks.map((a) => [a.batch_id, a.status, a.code])).toEqual([
      ["dup", "FAILURE", grpc.status.INVALID_ARGUMENT],
      ["dup", "SUCCESS", 0],
      ["after", "SUCCESS", 0],
    ])
    expect(r.acks[0]!.detail).not.toContain("dup")
  })

  it("a batch without a batch_id gets a FAILURE ack and the stream goes on", async () => {
    const r = await sendBatches(client, await tokenA(), [
      { batch_id: "", events: events(tenantA, 1) },
      { batch_id: "ok-1", events: events(tenantA, 1) },
    ])
    expect(r.status?.code).toBe(grpc.status.OK)
    expect(r.acks.map((a) => [a.batch_id, a.status, a.code])).toEqual([
      ["", "FAILURE", grpc.status.INVALID_ARGUMENT],
      ["ok-1", "SUCCESS", 0],
    ])
  })

  it("a malformed message gets a FAILURE ack (with the batch_id read before the fault) and the stream goes on", async () => {
    const RawBatches = grpc.makeGenericClientConstructor(
      {
        SendEventBatches: {
          ...EventServiceDefinition.SendEventBatches,
          requestSerialize: (b: Buffer) => b,
        },
      },
      "api.EventService",
    )
    const raw = new RawBatches(address, grpc.credentials.createSsl(caCert), {
      "grpc.ssl_target_name_override": "localhost",
    })
    try {
      const token = await tokenA()
      const good = Buffer.from(EventBatchCodec.encode({ batch_id: "g-1", events: events(tenantA, 1) as never }))
      const bad = Buffer.from([(1 << 3) | 2, 2, 0x6d, 0x31, (2 << 3) | 2, 50, 1, 2])
      const r = await new Promise<{ acks: Array<WireBatchAck>; code: number | undefined }>((resolve) => {
        const m = new grpc.Metadata()
        m.set("authorization", `Bearer ${token}`)
        const call = (
          raw as unknown as { SendEventBatches: (m: grpc.Metadata) => grpc.ClientDuplexStream<Buffer, WireBatchAck> }
        ).SendEventBatches(m)
        const acks: Array<WireBatchAck> = []
        call.on("data", (a: WireBatchAck) => {
          acks.push(a)
          if (acks.length === 2) call.end()
        })
        call.on("error", () => undefined)
        call.on("status", (s: grpc.StatusObject) => resolve({ acks, code: s.code }))
        call.write(bad)
        call.write(good)
      })
      expect(r.code).toBe(grpc.status.OK)
      expect(r.acks.map((a) => [a.batch_id, a.status, a.code])).toEqual([
        ["m1", "FAILURE", grpc.status.INVALID_ARGUMENT],
        ["g-1", "SUCCESS", 0],
      ])
      expect(r.acks[0]!.detail).toMatch(/malformed protobuf message/)
    } finally {
      raw.close()
    }
  })
})

describe("oversized and malformed messages", () => {
  // A client that sends raw bytes, to put what a real client's serializer refuses on the wire.
  const RawClient = grpc.makeGenericClientConstructor(
    {
      SendEvent: { ...EventServiceDefinition.SendEvent, requestSerialize: (b: Buffer) => b },
    },
    "api.EventService",
  )

  it("an oversized message gets RESOURCE_EXHAUSTED while another client keeps working", async () => {
    const token = await tokenA()
    const other = connect(address, { caCert })
    try {
      const huge = wireEvent(tenantA, 0, { message: "x".repeat(maxMessageBytes + 10) })
      const [bad, good] = await Promise.all([
        sendEvents(client, token, [huge]),
        sendEvents(other, token, events(tenantA, 50)),
      ])
      expect(bad.error?.code).toBe(grpc.status.RESOURCE_EXHAUSTED)
      expect(bad.error?.details).toMatch(/larger than max/)
      expect(good.value?.status).toBe("SUCCESS")
      // The same connection keeps working too.
      const again = await sendEvents(client, token, events(tenantA, 5))
      expect(again.value?.status).toBe("SUCCESS")
    } finally {
      other.close()
    }
  })

  it("a malformed protobuf message gets INVALID_ARGUMENT", async () => {
    const rawClient = new RawClient(address, grpc.credentials.createSsl(caCert))
    try {
      const bytes = Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01])
      const r = await new Promise<grpc.ServiceError | null>((resolve) => {
        const call = openSendEvent<Buffer>(
          rawClient,
          (() => {
            const m = new grpc.Metadata()
            return m
          })(),
          (e) => resolve(e),
        )
        call.write(bytes)
        call.end()
      })
      // Without a token the call is refused first; with one, the bytes are judged.
      expect(r?.code).toBe(grpc.status.UNAUTHENTICATED)
      const token = await tokenA()
      const r2 = await new Promise<grpc.ServiceError | null>((resolve) => {
        const m = new grpc.Metadata()
        m.set("authorization", `Bearer ${token}`)
        const call = openSendEvent<Buffer>(rawClient, m, (e) => resolve(e))
        call.write(bytes)
        call.end()
      })
      expect(r2?.code).toBe(grpc.status.INVALID_ARGUMENT)
      expect(r2?.details).toMatch(/malformed/)
    } finally {
      rawClient.close()
    }
  })
})

describe("mutual TLS", () => {
  it("with a client CA, only clients presenting a certificate it signed get in", async () => {
    const certs = await testCerts()
    const tenants = Schema.decodeUnknownSync(TenantsFile)(JSON.parse(readFileSync(fixtureTenantsFile, "utf8")))
    const mtls = ManagedRuntime.make(
      IngesterServer.layer({
        host: "127.0.0.1",
        port: 0,
        tls: { certFile: certs.serverCert, keyFile: certs.serverKey, clientCaFile: certs.caCert },
        maxMessageBytes: 512 * KiB,
      }).pipe(
        Layer.provide(
          Layer.mergeAll(
            KafkaSink.layerMemory,
            ConfigStore.layerMemory(tenants),
            Auth.layerFromSecrets(secret),
            Budget.layer({ processBytes: 1024 * KiB, streamBytes: 1024 * KiB, wait: "1 second" }),
          ),
        ),
      ),
    )
    try {
      const { port } = await mtls.runPromise(IngesterServer)
      const withCert = connect(`127.0.0.1:${port}`, {
        caCert,
        clientCert: readFileSync(certs.clientCert),
        clientKey: readFileSync(certs.clientKey),
      })
      const withoutCert = connect(`127.0.0.1:${port}`, { caCert })
      try {
        const token = await tokenA()
        expect((await exchangeConfig(withCert, token, tenantA)).value?.AccessKey).toBe(tenantA)
        const refused = await exchangeConfig(withoutCert, token, tenantA)
        expect(refused.value).toBeUndefined()
        expect(refused.error?.code).toBe(grpc.status.UNAVAILABLE)
      } finally {
        withCert.close()
        withoutCert.close()
      }
    } finally {
      await mtls.dispose()
    }
  })
})
