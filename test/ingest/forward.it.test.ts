/**
 * The Fluent Forward receiver with a client written by others (@fluent-org/logger, acks on), against the real
 * broker; raw sockets for the malformed and oversized cases. The Kafka-outage test uses a private broker (slot 17).
 */
import { mkdirSync, readFileSync } from "node:fs"
import * as net from "node:net"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { type EventModes, FluentClient, FluentSocketEvent } from "@fluent-org/logger"
import { unpack } from "msgpackr"
import { CACHE_DIR } from "../../scripts/kafka.mjs"
import { encode } from "../../src/ingest/forward/ForwardProtocol.js"
import { testCerts } from "../support/certs.js"
import { brokers, createSettledTopics, createTopic, privateBroker, uniqueTopic } from "../support/kafka.js"
import {
  decryptFor,
  type Harness,
  readTopic,
  requestsAnswered,
  startHarness,
  type TenantName,
  tenants,
  waitFor,
} from "../support/receivers.js"

const SHARED_KEY = "forward-shared-key-for-tests"
const modes: ReadonlyArray<EventModes> = ["Message", "Forward", "PackedForward", "CompressedPackedForward"]

interface ClientOptions {
  readonly port: number
  readonly mode: EventModes
  readonly sharedKey?: string
  readonly username?: string
  readonly password?: string
}

const client = (o: ClientOptions) =>
  new FluentClient("spillway", {
    eventMode: o.mode,
    socket: { host: "127.0.0.1", port: o.port, timeout: 30_000, reconnect: { delay: 200, maxDelay: 1000 } },
    ...(o.sharedKey === undefined
      ? {}
      : {
          security: {
            clientHostname: "fluent-host",
            sharedKey: o.sharedKey,
            username: o.username ?? "",
            password: o.password ?? "",
          },
        }),
    ack: { ackTimeout: 20_000 },
    milliseconds: true,
    flushInterval: 20,
  })

/** Whether a promise settles (either way) within `ms`. */
const settlesWithin = (p: Promise<unknown>, ms: number) =>
  Promise.race([
    p.then(
      () => "resolved" as const,
      () => "rejected" as const,
    ),
    new Promise<"pending">((r) => setTimeout(() => r("pending"), ms)),
  ])

describe("Forward receiver with auth (shared broker)", () => {
  const topic = uniqueTopic("forward")
  let h: Harness

  beforeAll(async () => {
    await createTopic(topic, 3)
    h = await startHarness({
      topic,
      brokers,
      forward: {
        host: "127.0.0.1",
        port: 0,
        sharedKey: SHARED_KEY,
        serverHostname: "spillway-test",
        handshakeTimeout: "1 second",
      },
    })
  })
  afterAll(async () => {
    await h?.close()
  })

  it("every mode the library offers: N records, each acked, all arrive as the tenant's encrypted events", async () => {
    const n = 60
    for (const [i, mode] of modes.entries()) {
      const name: TenantName = i % 2 === 0 ? "A" : "B"
      const c = client({
        port: h.forwardPort!,
        mode,
        sharedKey: SHARED_KEY,
        username: tenants[name].AccessKey,
        password: await h.forwardPassword(name),
      })
      await Promise.all(
        Array.from({ length: n }, (_, j) =>
          c.emit(mode, { j, msg: `line ${j}`, nested: { ok: true } }, 1_700_000_000_000 + j),
        ),
      )
      await c.disconnect()
    }
    const got = await readTopic(brokers, topic, n * modes.length)
    expect(got).toHaveLength(n * modes.length)
    for (const [i, mode] of modes.entries()) {
      const name: TenantName = i % 2 === 0 ? "A" : "B"
      const mine = got.filter((r) => r.event.tag === `spillway.${mode}`)
      expect(mine).toHaveLength(n)
      const js = new Set<number>()
      for (const r of mine) {
        expect(r.key).toBe(tenants[name].AccessKey)
        expect(r.event.UserID).toBe(tenants[name].UserID)
        expect(r.event.agent_id).toBe("fluent-host")
        expect(r.event.message).toMatch(/^[0-9a-f]+$/)
        const rec = JSON.parse(decryptFor(name, r.event.message)) as { j: number; msg: string; nested: unknown }
        expect(rec.msg).toBe(`line ${rec.j}`)
        expect(rec.nested).toEqual({ ok: true })
        // EventTime (milliseconds: true): seconds and nanoseconds kept.
        expect(r.event.timestamp).toEqual({ seconds: "1700000000", nanos: rec.j * 1_000_000 })
        js.add(rec.j)
      }
      expect(js.size).toBe(n)
    }
  })

  it("a wrong shared key, a wrong password or another tenant's password is refused; nothing reaches Kafka", async () => {
    const before = (await readTopic(brokers, topic, 240)).length
    const refusedBefore = await requestsAnswered("forward", "unauthenticated")
    const cases: Array<Omit<ClientOptions, "port" | "mode">> = [
      { sharedKey: "not-the-key", username: tenants.A.AccessKey, password: await h.forwardPassword("A") },
      { sharedKey: SHARED_KEY, username: tenants.A.AccessKey, password: "sfp1.wrong" },
      { sharedKey: SHARED_KEY, username: tenants.A.AccessKey, password: await h.forwardPassword("B") },
      { sharedKey: SHARED_KEY, username: "no-such-tenant", password: await h.forwardPassword("A") },
    ]
    for (const [i, c] of cases.entries()) {
      const fc = client({ port: h.forwardPort!, mode: "Forward", ...c })
      fc.socketOn(FluentSocketEvent.ERROR, () => undefined)
      const sent = fc.emit("refused", { i })
      expect(await settlesWithin(sent, 3000)).not.toBe("resolved")
      await fc.disconnect().catch(() => undefined)
    }
    await waitFor("4 refusals", async () => (await requestsAnswered("forward", "unauthenticated")) >= refusedBefore + 4)
    expect((await readTopic(brokers, topic, before + 1, 3000)).length).toBe(before)
  })

  it("nothing is accepted before the handshake: a message first closes the connection, no ack", async () => {
    const socket = net.connect(h.forwardPort!, "127.0.0.1")
    // The server may reset a connection it refuses: that is the outcome under test, not an error.
    socket.on("error", () => undefined)
    const received: Array<unknown> = []
    socket.on("data", (d) => received.push(unpack(d)))
    await new Promise((r) => socket.once("connect", r))
    socket.write(encode(["early", [[1_700_000_000, { a: 1 }]], { chunk: "c1" }]))
    await new Promise((r) => socket.once("close", r))
    expect(received.map((m) => (Array.isArray(m) ? m[0] : m))).toEqual(["HELO"])
  })

  it("a connection that never completes the handshake is closed after the handshake timeout", async () => {
    const t0 = Date.now()
    const socket = net.connect(h.forwardPort!, "127.0.0.1")
    // The server may reset a connection it refuses: that is the outcome under test, not an error.
    socket.on("error", () => undefined)
    socket.on("data", () => undefined)
    await new Promise((r) => socket.once("close", r))
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900)
    expect(Date.now() - t0).toBeLessThan(5000)
  })
})

describe("Forward receiver over TLS with auth", () => {
  const topic = uniqueTopic("forward-tls")
  let h: Harness
  let ca: Buffer

  beforeAll(async () => {
    await createTopic(topic, 1)
    const certs = await testCerts()
    ca = readFileSync(certs.caCert)
    h = await startHarness({
      topic,
      brokers,
      forward: {
        host: "127.0.0.1",
        port: 0,
        sharedKey: SHARED_KEY,
        tls: { certFile: certs.serverCert, keyFile: certs.serverKey },
      },
    })
  })
  afterAll(async () => {
    await h?.close()
  })

  it("records sent over TLS are acked after Kafka; a plaintext client gets nothing", async () => {
    const c = new FluentClient("tls", {
      eventMode: "PackedForward",
      socket: { host: "localhost", port: h.forwardPort!, tls: { ca, servername: "localhost" } },
      security: {
        clientHostname: "tls-host",
        sharedKey: SHARED_KEY,
        username: tenants.A.AccessKey,
        password: await h.forwardPassword("A"),
      },
      ack: { ackTimeout: 20_000 },
    })
    await Promise.all(Array.from({ length: 20 }, (_, i) => c.emit("x", { i })))
    await c.disconnect()
    const plain = client({
      port: h.forwardPort!,
      mode: "Message",
      sharedKey: SHARED_KEY,
      username: tenants.A.AccessKey,
      password: await h.forwardPassword("A"),
    })
    plain.socketOn(FluentSocketEvent.ERROR, () => undefined)
    expect(await settlesWithin(plain.emit("plain", { p: 1 }), 2000)).not.toBe("resolved")
    await plain.disconnect().catch(() => undefined)
    const got = await readTopic(brokers, topic, 21, 5000)
    expect(got.map((r) => r.event.tag)).toEqual(Array.from({ length: 20 }, () => "tls.x"))
  })
})

describe("Forward receiver without auth: raw protocol, limits", () => {
  const topic = uniqueTopic("forward-raw")
  let h: Harness

  beforeAll(async () => {
    await createTopic(topic, 1)
    h = await startHarness({
      topic,
      brokers,
      forward: {
        host: "127.0.0.1",
        port: 0,
        anonymousTenant: tenants.C.AccessKey,
        maxMessageBytes: 64 * 1024,
        maxRecordsPerMessage: 100,
      },
    })
  })
  afterAll(async () => {
    await h?.close()
  })

  const open = async () => {
    const socket = net.connect(h.forwardPort!, "127.0.0.1")
    // The server may reset a connection it refuses: that is the outcome under test, not an error.
    socket.on("error", () => undefined)
    const acks: Array<unknown> = []
    socket.on("data", (d) => acks.push(unpack(d)))
    await new Promise((r) => socket.once("connect", r))
    const closed = new Promise<void>((r) => socket.once("close", () => r()))
    return { socket, acks, closed }
  }

  it("a chunk is acked after Kafka; a malformed message closes only its own connection", async () => {
    const good = await open()
    const bad = await open()
    bad.socket.write(Buffer.from([0xc1, 0x00, 0x01]))
    await bad.closed
    // Split across writes: the framer waits for the whole message.
    const msg = encode(["raw.tag", 1_700_000_001, { hello: "world" }, { chunk: "chunk-1" }])
    good.socket.write(msg.subarray(0, 5))
    good.socket.write(msg.subarray(5))
    await waitFor("the ack", () => good.acks.length === 1)
    expect(good.acks[0]).toEqual({ ack: "chunk-1" })
    const tooMany = encode(["raw.tag", Array.from({ length: 101 }, () => [1, { x: 1 }]), { chunk: "chunk-2" }])
    const big = await open()
    big.socket.write(tooMany)
    await big.closed
    const huge = await open()
    huge.socket.write(encode(["raw.tag", 1, { blob: "x".repeat(70 * 1024) }, { chunk: "chunk-3" }]))
    await huge.closed
    expect(big.acks).toEqual([])
    expect(huge.acks).toEqual([])
    // The first connection still works.
    good.socket.write(encode(["raw.tag", 1_700_000_002, { again: true }, { chunk: "chunk-4" }]))
    await waitFor("the second ack", () => good.acks.length === 2)
    good.socket.end()
    const got = await readTopic(brokers, topic, 2)
    expect(got.map((r) => r.plain)).toEqual([{ hello: "world" }, { again: true }])
    expect(got[0]!.key).toBe(tenants.C.AccessKey)
    expect(got[0]!.event.tag).toBe("raw.tag")
  })
})

describe("Forward receiver without auth: connection limits", () => {
  const topic = uniqueTopic("forward-limits")
  let h: Harness

  beforeAll(async () => {
    h = await startHarness({
      topic,
      brokers,
      forward: {
        host: "127.0.0.1",
        port: 0,
        anonymousTenant: tenants.C.AccessKey,
        maxConnections: 2,
        idleTimeout: "1 second",
      },
    })
  })
  afterAll(async () => {
    await h?.close()
  })

  const connect = async () => {
    const socket = net.connect(h.forwardPort!, "127.0.0.1")
    const closed = new Promise<number>((r) => socket.once("close", () => r(Date.now())))
    socket.on("error", () => undefined)
    await new Promise((r) => socket.once("connect", r))
    return { socket, closed }
  }

  it("connections over the limit are closed at accept; idle ones are closed after the timeout", async () => {
    const t0 = Date.now()
    const a = await connect()
    const b = await connect()
    const c = await connect()
    // The third is over the limit of 2: closed at once, long before the idle timeout.
    expect((await c.closed) - t0).toBeLessThan(900)
    // The first two are idle: closed after about a second.
    const closedA = await a.closed
    await b.closed
    expect(closedA - t0).toBeGreaterThanOrEqual(900)
  })
})

describe("Forward receiver with Kafka stopped (private broker 17)", () => {
  mkdirSync(join(CACHE_DIR, "..", "kafka-private", "slot-17"), { recursive: true })
  const broker = privateBroker(17)
  const topic = uniqueTopic("forward-outage")
  let h: Harness

  beforeAll(async () => {
    await broker.start()
    await createSettledTopics(broker.brokers, [{ topic, numPartitions: 1, replicationFactor: 1 }])
    h = await startHarness({
      topic,
      brokers: broker.brokers,
      forward: { host: "127.0.0.1", port: 0, sharedKey: SHARED_KEY },
    })
  })
  afterAll(async () => {
    await h?.close()
    await broker.destroy()
  })

  it("no ack arrives while Kafka is stopped; the client's retry is acked once Kafka is back", async () => {
    const c = new FluentClient("outage", {
      eventMode: "PackedForward",
      socket: { host: "127.0.0.1", port: h.forwardPort!, reconnect: { delay: 200, maxDelay: 1000 } },
      security: {
        clientHostname: "fluent-host",
        sharedKey: SHARED_KEY,
        username: tenants.A.AccessKey,
        password: await h.forwardPassword("A"),
      },
      ack: { ackTimeout: 3000 },
      eventRetry: { attempts: 100, backoff: 1, delay: 500, minDelay: 500, maxDelay: 1000 },
    })
    c.socketOn(FluentSocketEvent.ERROR, () => undefined)
    await c.emit("warm", { w: 1 })
    const unavailableBefore = await requestsAnswered("forward", "unavailable")
    await broker.stop()
    const sent = c.emit("during", { d: 1 })
    await waitFor(
      "a refusal",
      async () => (await requestsAnswered("forward", "unavailable")) > unavailableBefore,
      30_000,
    )
    expect(await settlesWithin(sent, 4000)).toBe("pending")
    await broker.start()
    await sent
    await c.disconnect()
    const got = await readTopic(broker.brokers, topic, 2, 20_000)
    expect(got.map((r) => r.event.tag).sort()).toEqual(["outage.during", "outage.warm"].sort())
  })
})

describe("Forward receiver shutdown", () => {
  it("closes connections between messages at once (no wait for the shutdown timeout)", async () => {
    const h = await startHarness({
      topic: uniqueTopic("forward-shutdown"),
      brokers,
      forward: { host: "127.0.0.1", port: 0, anonymousTenant: tenants.C.AccessKey, shutdownTimeout: "20 seconds" },
    })
    const socket = net.connect(h.forwardPort!, "127.0.0.1")
    socket.on("error", () => undefined)
    const acks: Array<unknown> = []
    socket.on("data", (d) => acks.push(unpack(d)))
    await new Promise((r) => socket.once("connect", r))
    socket.write(encode(["shut", 1_700_000_000, { a: 1 }, { chunk: "s1" }]))
    await waitFor("the ack", () => acks.length === 1)
    const closed = new Promise((r) => socket.once("close", r))
    const t0 = Date.now()
    await h.close()
    await closed
    expect(Date.now() - t0).toBeLessThan(10_000)
  })
})
