/**
 * The built ingester (`node dist/programs/ingester.js api`) against real Kafka over real TLS.
 * Needs `npm run build` first. The Kafka-outage test uses a private broker (slot 10) so the shared
 * one keeps running.
 */
import { spawnSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { createConnection } from "node:net"
import * as grpc from "@grpc/grpc-js"
import type { Kafka } from "kafkajs"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { registerCodecs } from "../../src/shared/Codecs.js"
import { EventCodec, type WireBatchAck, type WireEResponse } from "../../src/wire/Wire.js"
import {
  bearer,
  exchangeConfig,
  ingesterScript,
  openSendEvent,
  type RunningIngester,
  randomSecret,
  sendBatches,
  sendEvents,
  signToken,
  startIngester,
  tenantA,
  tenantB,
  wireEvent,
} from "../support/ingester.js"
import {
  consumeAll,
  createSettledTopics,
  createTopic,
  headerText,
  makeKafka,
  privateBroker,
  uniqueTopic,
} from "../support/kafka.js"

// The test's own consumers read every codec the ingester may write (--compression).
registerCodecs()

const events = (key: string, n: number, from = 0, tag = "it") =>
  Array.from({ length: n }, (_, i) => wireEvent(key, from + i, { tag }))

/** Records in a topic (sum over partitions of high - low watermark). */
const countRecords = async (kafka: Kafka, topic: string): Promise<number> => {
  const admin = kafka.admin()
  await admin.connect()
  try {
    const offsets = await admin.fetchTopicOffsets(topic)
    return offsets.reduce((n, o) => n + Number(o.high) - Number(o.low), 0)
  } finally {
    await admin.disconnect()
  }
}

interface Rec {
  readonly key: string | undefined
  readonly event: { event_id: string; message: string; AccessKey: string; tag: string; agent_id: string }
}

/** Reads the whole topic from the beginning until `n` records arrived or `timeoutMs` passed. */
const readTopic = async (kafka: Kafka, topic: string, n: number, timeoutMs = 30_000): Promise<Array<Rec>> => {
  const consumer = kafka.consumer({ groupId: `${topic}-r-${randomBytes(3).toString("hex")}`, maxWaitTimeInMs: 250 })
  const out: Array<Rec> = []
  await consumer.connect()
  try {
    await consumer.subscribe({ topic, fromBeginning: true })
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(resolve, timeoutMs)
      consumer
        .run({
          eachMessage: async ({ message }) => {
            out.push({
              key: message.key?.toString(),
              event: EventCodec.decode(message.value ?? Buffer.alloc(0)) as Rec["event"],
            })
            if (out.length >= n) {
              clearTimeout(timer)
              resolve()
            }
          },
        })
        .catch(reject)
    })
  } finally {
    await consumer.disconnect()
  }
  return out
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Resolves once nothing accepts connections on `hostPort` (fails after 30 s). */
const brokerGone = async (hostPort: string): Promise<void> => {
  const [host, port] = hostPort.split(":")
  const deadline = Date.now() + 30_000
  while (Date.now() < deadline) {
    const open = await new Promise<boolean>((resolve) => {
      const s = createConnection({ host: host!, port: Number(port) })
      s.once("connect", () => {
        s.destroy()
        resolve(true)
      })
      s.once("error", () => resolve(false))
    })
    if (!open) return
    await sleep(100)
  }
  throw new Error(`the broker on ${hostPort} still accepts connections 30 s after SIGKILL`)
}

describe("the built program's command line", () => {
  const run = (args: Array<string>, env: Record<string, string> = {}) =>
    spawnSync(process.execPath, [ingesterScript, ...args], {
      env: { ...process.env, SPILLWAY_CONFIG: "", SPILLWAY_JWT_SECRET: "", SPILLWAY_JWT_SECRET_FILE: "", ...env },
      encoding: "utf8",
      timeout: 30_000,
    })

  it("--help names each option's environment variable", () => {
    const r = run(["api", "--help"])
    expect(r.status).toBe(0)
    for (const env of [
      "SPILLWAY_INGESTER_PORT",
      "SPILLWAY_TLS_CERT",
      "SPILLWAY_TLS_KEY",
      "SPILLWAY_TLS_CLIENT_CA",
      "SPILLWAY_TENANTS_FILE",
      "SPILLWAY_KAFKA_BROKERS",
      "SPILLWAY_KAFKA_TOPIC",
      "SPILLWAY_INGESTER_METRICS_PORT",
      "SPILLWAY_PRINT_EVENTS",
      "SPILLWAY_INSECURE",
      "SPILLWAY_INGESTER_COMPRESSION",
      "SPILLWAY_INGESTER_MAX_STREAMS",
      "SPILLWAY_INGESTER_MAX_STREAMS_PER_TENANT",
    ])
      expect(r.stdout).toContain(env)
  })

  it("refuses to start without a JWT secret, saying how to make one, without a stack trace", () => {
    const r = run(["api", "--insecure", "--metrics-port", "0", "--brokers", "127.0.0.1:1"])
    expect(r.status).toBe(1)
    expect(r.stderr).toMatch(/no JWT secret is configured.*openssl rand -base64 48/)
    expect(r.stderr + r.stdout).not.toMatch(/\n\s+at /)
  })

  it("refuses to serve plaintext without --insecure", () => {
    const r = run(["api", "--metrics-port", "0"], { SPILLWAY_JWT_SECRET: randomSecret() })
    expect(r.status).toBe(1)
    expect(r.stderr).toMatch(/TLS is required/)
  })

  it("refuses a produce timeout not longer than the Kafka request timeout, and an unknown --compression", () => {
    const base = ["api", "--insecure", "--metrics-port", "0", "--brokers", "127.0.0.1:1"]
    const env = { SPILLWAY_JWT_SECRET: randomSecret() }
    const slow = run(base, {
      ...env,
      SPILLWAY_KAFKA_PRODUCE_TIMEOUT_MS: "15000",
      SPILLWAY_KAFKA_REQUEST_TIMEOUT_MS: "30000",
    })
    expect(slow.status).toBe(1)
    expect(slow.stderr).toMatch(
      /produce timeout \(15000 ms\) must be longer than the Kafka request timeout \(30000 ms\)/,
    )
    const codec = run([...base, "--compression", "brotli"], env)
    expect(codec.status).toBe(1)
    expect(codec.stderr).toMatch(/--compression must be one of none, gzip, snappy, lz4, zstd/)
    expect(codec.stderr).not.toMatch(/\n\s+at /)
  })

  it("access-token refuses an expiry past the maximum token lifetime", () => {
    const r = run(["access-token", "--access-key", tenantA, "--expiry", String(100 * 365 * 86400)], {
      SPILLWAY_JWT_SECRET: randomSecret(),
    })
    expect(r.status).toBe(1)
    expect(r.stderr).toMatch(/maximum token lifetime/)
  })

  it("access-token prints a token the server's secret verifies", async () => {
    const secret = randomSecret()
    const r = run(["access-token", "--access-key", tenantA, "--expiry", "60"], { SPILLWAY_JWT_SECRET: secret })
    expect(r.status).toBe(0)
    const token = r.stdout.trim()
    const [, payload] = token.split(".")
    const claims = JSON.parse(Buffer.from(payload!, "base64url").toString()) as {
      sub: string
      exp: number
      iat: number
    }
    expect(claims.sub).toBe(tenantA)
    expect(claims.exp - claims.iat).toBe(60)
  })
})

describe("ingester -> Kafka (shared broker)", () => {
  const kafka = makeKafka("ingester-it")
  const topic = uniqueTopic("ingester")
  let ing: RunningIngester
  let client: ReturnType<RunningIngester["client"]>

  beforeAll(async () => {
    await createTopic(topic, 3)
    // No clock-skew tolerance, so a token that expired 1 s ago is refused.
    ing = await startIngester({ topic, printEvents: true, env: { SPILLWAY_JWT_CLOCK_SKEW_SECONDS: "0" } })
    client = ing.client()
  })
  afterAll(async () => {
    client?.close()
    await ing?.stop()
  })

  it("SendEvent: N events -> SUCCESS, exactly those N records keyed by access key, values decode back", async () => {
    const n = 1000
    const before = await countRecords(kafka, topic)
    const sent = events(tenantA, n, 0, "sendevent")
    const t0 = Date.now()
    const r = await sendEvents(client, await ing.tokenFor(tenantA), sent)
    const ms = Date.now() - t0
    expect(r.error).toBeUndefined()
    expect(r.value?.status).toBe("SUCCESS")
    console.log(`SendEvent: ${n} events acknowledged after Kafka acks in ${ms} ms`)
    // SUCCESS came after Kafka acked: the records are there now.
    expect((await countRecords(kafka, topic)) - before).toBe(n)
    const recs = (await readTopic(kafka, topic, before + n)).filter((x) => x.event.tag === "sendevent")
    expect(recs).toHaveLength(n)
    expect(recs.every((x) => x.key === tenantA && x.event.AccessKey === tenantA)).toBe(true)
    const byId = new Map(sent.map((e) => [e.event_id, e]))
    for (const x of recs) {
      const e = byId.get(x.event.event_id)
      expect(e).toBeDefined()
      expect(x.event.message).toBe(e!.message)
      expect(x.event.agent_id).toBe(e!.agent_id)
    }
    expect(new Set(recs.map((x) => x.event.event_id)).size).toBe(n)
  })

  it("cross-tenant: A's token can neither fetch B's config nor send B's events; nothing reaches Kafka", async () => {
    const before = await countRecords(kafka, topic)
    const token = await ing.tokenFor(tenantA)
    expect((await exchangeConfig(client, token, tenantB)).error?.code).toBe(grpc.status.PERMISSION_DENIED)
    expect((await exchangeConfig(client, token, tenantA)).value?.AccessKey).toBe(tenantA)
    expect((await sendEvents(client, token, events(tenantB, 10))).error?.code).toBe(grpc.status.PERMISSION_DENIED)
    const b = await sendBatches(client, token, [{ batch_id: "cross", events: events(tenantB, 10) }])
    expect(b.acks.map((a) => a.code)).toEqual([grpc.status.PERMISSION_DENIED])
    await sleep(500)
    expect(await countRecords(kafka, topic)).toBe(before)
  })

  it("bad tokens (none, expired, wrong secret, alg none, garbage): UNAUTHENTICATED; nothing reaches Kafka", async () => {
    const before = await countRecords(kafka, topic)
    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url")
    const now = Math.floor(Date.now() / 1000)
    const expired = await signToken(ing.secret, tenantA, 1)
    await sleep(2100)
    const tokens: Record<string, string | undefined> = {
      none: undefined,
      expired,
      wrongSecret: await signToken(randomSecret(), tenantA),
      algNone: `${b64({ alg: "none", typ: "JWT" })}.${b64({ sub: tenantA, iat: now, exp: now + 600 })}.`,
      garbage: "garbage",
    }
    for (const [name, token] of Object.entries(tokens)) {
      const r = await sendEvents(client, token, events(tenantA, 5))
      expect(r.error?.code, name).toBe(grpc.status.UNAUTHENTICATED)
      expect(r.error?.details, name).toMatch(/^unauthenticated: /)
      expect((await exchangeConfig(client, token, tenantA)).error?.code, name).toBe(grpc.status.UNAUTHENTICATED)
    }
    expect(await countRecords(kafka, topic)).toBe(before)
    const metrics = await ing.metrics()
    expect(metrics).toMatch(/spillway_ingester_auth_failures_total\{reason="missing_token"\} \d+/)
    expect(metrics).toMatch(/spillway_ingester_auth_failures_total\{reason="bad_signature"\} \d+/)
  })

  it("an event that can never be accepted lands in <topic>-dlq with its reason; the rest is acked and in the topic", async () => {
    const token = await ing.tokenFor(tenantA)
    const before = await countRecords(kafka, topic)
    const bad = wireEvent(tenantA, 1, { tag: "dlq".repeat(2000), event_id: "dlq-bad" })
    const r = await sendEvents(client, token, [
      wireEvent(tenantA, 0, { tag: "dlq-ok", event_id: "dlq-0" }),
      bad,
      wireEvent(tenantA, 2, { tag: "dlq-ok", event_id: "dlq-2", UserID: "user-b" }),
    ])
    expect(r.value?.status).toBe("SUCCESS")
    const huge = wireEvent(tenantA, 3, { message: "h".repeat(1_100_000), event_id: "dlq-huge" })
    const b = await sendBatches(client, token, [
      { batch_id: "dlq-b", events: [huge, wireEvent(tenantA, 4, { tag: "dlq-ok", event_id: "dlq-4" })] },
    ])
    expect(b.acks.map((a) => a.status)).toEqual(["SUCCESS"])
    expect((await countRecords(kafka, topic)) - before).toBe(3)
    const ok = (await readTopic(kafka, topic, before + 3)).filter((x) => x.event.tag === "dlq-ok")
    expect(ok.map((x) => x.event.event_id).sort()).toEqual(["dlq-0", "dlq-2", "dlq-4"])
    expect(ok.every((x) => (x.event as unknown as { UserID: string }).UserID === "2134558")).toBe(true)
    const letters = await consumeAll(`${topic}-dlq`, 2, 20_000)
    expect(letters).toHaveLength(2)
    const byReason = new Map(letters.map((l) => [headerText(l.headers, "reason"), l]))
    const invalid = byReason.get("invalid_event")
    expect(invalid?.key?.toString()).toBe(tenantA)
    expect(headerText(invalid!.headers, "detail")).toMatch(/field tag must be a string of at most 4096 characters/)
    expect(headerText(invalid!.headers, "source")).toBe("ingester")
    expect((EventCodec.decode(invalid!.value!) as { event_id: string }).event_id).toBe("dlq-bad")
    const large = byReason.get("event_too_large")
    expect(headerText(large!.headers, "detail")).toMatch(/exceeds the limit of 1000000 bytes/)
    expect(large!.value!.length).toBeLessThanOrEqual(64 * 1024)
  })

  it("SendEventBatches: many batches in flight, each acked exactly once, all in Kafka", async () => {
    const before = await countRecords(kafka, topic)
    const batches = Array.from({ length: 60 }, (_, b) => ({
      batch_id: `batch-${b}`,
      events: events(tenantA, 50, 100_000 + b * 50, "batches"),
    }))
    const t0 = Date.now()
    const r = await sendBatches(client, await ing.tokenFor(tenantA), batches, 16)
    console.log(`SendEventBatches: 60 batches x 50 events, 16 in flight, acked in ${Date.now() - t0} ms`)
    expect(r.status?.code).toBe(grpc.status.OK)
    expect(r.acks).toHaveLength(60)
    expect(r.acks.every((a) => a.status === "SUCCESS")).toBe(true)
    expect(new Set(r.acks.map((a) => a.batch_id))).toEqual(new Set(batches.map((b) => b.batch_id)))
    expect((await countRecords(kafka, topic)) - before).toBe(3000)
    const recs = (await readTopic(kafka, topic, before + 3000)).filter((x) => x.event.tag === "batches")
    expect(new Set(recs.map((x) => x.event.event_id)).size).toBe(3000)
  })

  it("a batch larger than Kafka's request size is split over several sends and acked once", async () => {
    const before = await countRecords(kafka, topic)
    const big = Array.from({ length: 4 }, (_, i) =>
      wireEvent(tenantA, 400_000 + i, { tag: "bigbatch", message: `${i}`.repeat(400_000) }),
    )
    const r = await sendBatches(client, await ing.tokenFor(tenantA), [{ batch_id: "big", events: big }])
    expect(r.acks).toEqual([expect.objectContaining({ batch_id: "big", status: "SUCCESS" })])
    expect((await countRecords(kafka, topic)) - before).toBe(4)
  })

  it("an oversized message gets RESOURCE_EXHAUSTED while a concurrent client is unaffected", async () => {
    const token = await ing.tokenFor(tenantA)
    const other = ing.client()
    try {
      const huge = wireEvent(tenantA, 0, { message: "x".repeat(9 * 1024 * 1024), tag: "huge" })
      const [bad, good] = await Promise.all([
        sendEvents(client, token, [huge]),
        sendEvents(other, token, events(tenantA, 200, 200_000, "concurrent")),
      ])
      expect(bad.error?.code).toBe(grpc.status.RESOURCE_EXHAUSTED)
      expect(bad.error?.details).toMatch(/larger than max/)
      expect(good.value?.status).toBe("SUCCESS")
      // An event within the gRPC limit but over Kafka's record size can never be accepted: it is dead-lettered
      // (reason event_too_large, "exceeds the limit" in its detail) and the call succeeds, so no client resends it.
      const lettersBefore = await countRecords(kafka, `${topic}-dlq`)
      const tooBig = await sendEvents(client, token, [wireEvent(tenantA, 1, { message: "y".repeat(1_100_000) })])
      expect(tooBig.value?.status).toBe("SUCCESS")
      expect((await countRecords(kafka, `${topic}-dlq`)) - lettersBefore).toBe(1)
      const letters = await consumeAll(`${topic}-dlq`, lettersBefore + 1, 20_000)
      const last = letters.find((l) => (l.value?.length ?? 0) > 0 && l.value!.includes(Buffer.from("yyyy")))
      expect(headerText(last!.headers, "reason")).toBe("event_too_large")
      expect(headerText(last!.headers, "detail")).toMatch(/exceeds the limit/)
    } finally {
      other.close()
    }
  })

  it("readiness and metrics are served", async () => {
    expect((await ing.readyz()).status).toBe(200)
    const m = await ing.metrics()
    expect(m).toMatch(/spillway_ingester_events_in_total\{user_id="2134558"\} \d+/)
    expect(m).toMatch(/spillway_ingester_kafka_produce_seconds_bucket/)
    expect(m).toMatch(/spillway_ingester_inflight_bytes 0/)
  })

  it("--print-events prints events, never access keys or tokens", async () => {
    const token = await ing.tokenFor(tenantA)
    const r = await sendEvents(client, token, [wireEvent(tenantA, 7, { tag: "printed", message: "hello-print" })])
    expect(r.value?.status).toBe("SUCCESS")
    const out = ing.output()
    expect(out).toMatch(/"tag":"printed".*"message":"hello-print"/)
    expect(out).not.toContain(tenantA)
    expect(out).not.toContain(token)
  })

  it("SIGTERM: a batch stream left open gets its acks, then UNAVAILABLE; the process exits 0", async () => {
    const token = await ing.tokenFor(tenantA)
    const call = (
      client as unknown as { SendEventBatches: (m: grpc.Metadata) => grpc.ClientDuplexStream<unknown, WireBatchAck> }
    ).SendEventBatches(bearer(token))
    const acks: Array<WireBatchAck> = []
    call.on("data", (a: WireBatchAck) => acks.push(a))
    call.on("error", () => undefined)
    const status = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve))
    for (let b = 0; b < 5; b++) call.write({ batch_id: `open-${b}`, events: events(tenantA, 20, 300_000 + b * 20) })
    for (let i = 0; i < 100 && acks.length < 5; i++) await sleep(100)
    expect(acks.map((a) => a.status)).toEqual(["SUCCESS", "SUCCESS", "SUCCESS", "SUCCESS", "SUCCESS"])
    const exit = ing.kill("SIGTERM")
    expect((await status).code).toBe(grpc.status.UNAVAILABLE)
    expect(await exit).toBe(0)
    expect(ing.output()).toMatch(/gRPC server stopped \(drained\)/)
    await ing.restart()
    expect((await ing.readyz()).status).toBe(200)
  })
})

describe("--compression (shared broker)", () => {
  const kafka = makeKafka("ingester-it-codecs")
  for (const codec of ["none", "gzip", "snappy", "lz4", "zstd"]) {
    it(`${codec}: records land in Kafka and a consumer reads them back`, async () => {
      const topic = uniqueTopic(`codec-${codec}`)
      await createTopic(topic, 1)
      const ing = await startIngester({ topic, env: { SPILLWAY_INGESTER_COMPRESSION: codec } })
      const client = ing.client()
      try {
        const sent = events(tenantA, 200, 0, `codec-${codec}`)
        const token = await ing.tokenFor(tenantA)
        const r = await sendEvents(client, token, sent)
        expect(r.error).toBeUndefined()
        expect(r.value?.status).toBe("SUCCESS")
        const b = await sendBatches(client, token, [
          { batch_id: "c", events: events(tenantA, 50, 200, `codec-${codec}`) },
        ])
        expect(b.acks.map((a) => a.status)).toEqual(["SUCCESS"])
        const recs = await readTopic(kafka, topic, 250)
        expect(recs).toHaveLength(250)
        expect(new Set(recs.map((x) => x.event.event_id)).size).toBe(250)
        expect(recs.every((x) => x.key === tenantA)).toBe(true)
      } finally {
        client.close()
        await ing.stop()
      }
    }, 60_000)
  }
})

describe("Kafka stopped mid-stream (private broker)", () => {
  const pb = privateBroker(10)
  afterAll(async () => {
    await pb.destroy()
  })

  it("the client gets UNAVAILABLE or FAILURE, never SUCCESS; after Kafka is back a retry gets every event in", async () => {
    await pb.start()
    const kafka = makeKafka("ingester-it-private", { brokers: [...pb.brokers] })
    const topic = uniqueTopic("outage")
    await createSettledTopics(pb.brokers, [{ topic, numPartitions: 1, replicationFactor: 1 }])
    const ing = await startIngester({
      topic,
      brokers: pb.brokers,
      env: { SPILLWAY_KAFKA_PRODUCE_TIMEOUT_MS: "5000", SPILLWAY_KAFKA_REQUEST_TIMEOUT_MS: "3000" },
    })
    const client = ing.client()
    try {
      const token = await ing.tokenFor(tenantA)
      const all = events(tenantA, 1500, 0, "outage")
      // First half, then Kafka goes away while the stream is open, then the rest.
      const result = await new Promise<{ value?: WireEResponse; error?: grpc.ServiceError }>((resolve, reject) => {
        const call = openSendEvent<unknown>(client, bearer(token), (error, value) =>
          resolve(error ? { error } : value ? { value } : {}),
        )
        call.on("error", () => undefined)
        void (async () => {
          for (const e of all.slice(0, 750)) call.write(e)
          await sleep(1000)
          await pb.stop("SIGKILL")
          // The rest is written only once the broker really refuses connections.
          await brokerGone(pb.brokers[0]!)
          for (const e of all.slice(750)) if (!call.write(e)) await new Promise((r) => call.once("drain", r))
          call.end()
        })().catch(reject)
      })
      // The call must end with an error (an empty answer is neither SUCCESS nor a refusal): UNAVAILABLE.
      expect(result.value).toBeUndefined()
      expect(result.error?.code).toBe(grpc.status.UNAVAILABLE)
      console.log(
        `during the outage: ${result.error ? `${result.error.code} ${result.error.details}` : result.value?.status}`,
      )

      // Readiness follows Kafka.
      let notReady = false
      for (let i = 0; i < 40 && !notReady; i++) {
        notReady = (await ing.readyz()).status === 503
        if (!notReady) await sleep(250)
      }
      expect(notReady).toBe(true)

      await pb.start()
      const t0 = Date.now()
      let ready = false
      while (!ready && Date.now() - t0 < 60_000) {
        ready = (await ing.readyz()).status === 200
        if (!ready) await sleep(250)
      }
      expect(ready).toBe(true)
      console.log(`ingester ready ${Date.now() - t0} ms after the broker was back`)

      // The client retries the whole stream (its events were never acknowledged).
      let retry = await sendEvents(client, token, all)
      for (let i = 0; i < 5 && retry.value?.status !== "SUCCESS"; i++) {
        await sleep(1000)
        retry = await sendEvents(client, token, all)
      }
      expect(retry.value?.status).toBe("SUCCESS")
      const recs = await readTopic(kafka, topic, Number.MAX_SAFE_INTEGER, 8_000)
      const ids = new Set(recs.map((x) => x.event.event_id))
      expect(all.every((e) => ids.has(e.event_id!))).toBe(true)
      console.log(`after the retry: ${recs.length} records for ${all.length} events (duplicates allowed)`)
    } finally {
      client.close()
      await ing.stop()
    }
  }, 240_000)
})
