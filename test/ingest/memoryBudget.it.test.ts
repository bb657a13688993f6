/**
 * The memory budget holds where bytes enter the process (issue #12 item 2): the built ingester with a 16 MiB process
 * budget, its Kafka frozen (SIGSTOP on a private broker, slot 13: connections stay open, nothing is answered), and 30
 * batch streams on 10 connections each pushing 6.7 MiB messages. Its resident set may grow by at most the budget plus,
 * per open stream, the one message it has received and not yet taken into the budget (twice its size while it is
 * received), plus a fixed allowance (README "Memory budget"). Before the fix (messages decoded before the budget was
 * taken, one more read ahead per stream) it grew from 150 to 1,226 MiB; after it, from about 145 to 570 MiB.
 */
import { readFileSync } from "node:fs"
import * as grpc from "@grpc/grpc-js"
import { afterAll, describe, expect, it } from "vitest"
import { EventBatchCodec, EventServiceDefinition } from "../../src/wire/Wire.js"
import { bearer, type RunningIngester, startIngester, tenantA, wireEvent } from "../support/ingester.js"
import { createSettledTopics, privateBroker, uniqueTopic } from "../support/kafka.js"

const MiB = 1024 * 1024
const BUDGET = 16 * MiB
const STREAMS = 30
const CONNECTIONS = 10
const MESSAGES_PER_STREAM = 4
/**
 * A message being received costs up to twice its size: grpc-js collects it in pieces, then copies it into one buffer
 * (the pieces are garbage, but freed memory is not given back to the system at once).
 */
const PER_MESSAGE = 2
/** Beyond that: the budgeted messages' decoded values and Kafka request, heap growth, TLS and HTTP/2 buffers. */
const ALLOWANCE = 96 * MiB

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const rssOf = (pid: number) => {
  const s = readFileSync(`/proc/${pid}/status`, "utf8")
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? Number.NaN) * 1024
  return { rss: kb("VmRSS"), hwm: kb("VmHWM") }
}

/** One EventBatch of 13 events of 540,000 characters each: about 6.7 MiB on the wire. */
const bigBatch = (id: string): Buffer =>
  Buffer.from(
    EventBatchCodec.encode({
      batch_id: id,
      events: Array.from({ length: 13 }, (_, i) => wireEvent(tenantA, i, { message: "x".repeat(540_000) })),
    }),
  )

/** A batch-RPC client that writes already encoded EventBatch bytes, on its own connection. */
const RawClient = grpc.makeGenericClientConstructor(
  {
    SendEventBatches: {
      ...EventServiceDefinition.SendEventBatches,
      requestSerialize: (b: Buffer) => b,
    },
  },
  "EventService",
)
const openStream = (client: InstanceType<typeof RawClient>, md: grpc.Metadata) =>
  (
    client as unknown as { SendEventBatches: (m: grpc.Metadata) => grpc.ClientDuplexStream<Buffer, { status: string }> }
  ).SendEventBatches(md)

describe("memory budget against large messages while Kafka is frozen (private broker)", () => {
  const pb = privateBroker(13)
  let ing: RunningIngester | undefined
  afterAll(async () => {
    await pb.signal("SIGCONT").catch(() => undefined)
    await ing?.kill("SIGKILL")
    await ing?.stop()
    await pb.destroy()
  })

  it("the ingester's RSS grows by at most the budget + one message per open stream + a fixed allowance", async () => {
    await pb.start()
    const topic = uniqueTopic("membudget")
    await createSettledTopics(pb.brokers, [{ topic, numPartitions: 1, replicationFactor: 1 }])
    ing = await startIngester({
      topic,
      brokers: pb.brokers,
      env: {
        SPILLWAY_INGESTER_PROCESS_BUDGET_BYTES: String(BUDGET),
        SPILLWAY_INGESTER_STREAM_BUDGET_BYTES: String(8 * MiB),
        // Messages wait for the budget (never refused) and sends wait for the frozen broker for the whole test.
        SPILLWAY_INGESTER_BUDGET_WAIT_MS: "300000",
        SPILLWAY_KAFKA_PRODUCE_TIMEOUT_MS: "300000",
        SPILLWAY_KAFKA_REQUEST_TIMEOUT_MS: "290000",
      },
    })
    const pid = ing.pid()!
    const batches = Array.from({ length: MESSAGES_PER_STREAM }, (_, i) => bigBatch(`b${i}`))
    const messageBytes = batches[0]!.length
    expect(messageBytes).toBeGreaterThan(6.5 * MiB)
    const token = await ing.tokenFor(tenantA)
    const clients = Array.from(
      { length: CONNECTIONS },
      () =>
        new RawClient(ing!.address, grpc.credentials.createSsl(ing!.caCert), {
          "grpc.use_local_subchannel_pool": 1,
          "grpc.max_send_message_length": 16 * MiB,
        }),
    )
    try {
      // Warm up: one large batch through Kafka before it is frozen.
      const warm = openStream(clients[0]!, bearer(token))
      const warmAck = await new Promise<string>((resolve, reject) => {
        warm.on("data", (a: { status: string }) => resolve(a.status))
        warm.on("error", reject)
        warm.write(batches[0]!)
      })
      expect(warmAck).toBe("SUCCESS")
      warm.end()
      const before = rssOf(pid).rss

      await pb.signal("SIGSTOP")
      const calls = Array.from({ length: STREAMS }, (_, i) => {
        const call = openStream(clients[i % CONNECTIONS]!, bearer(token))
        call.on("error", () => undefined)
        call.on("data", () => undefined)
        for (const b of batches) call.write(b)
        return call
      })
      // Watch the resident set until it has not grown for 4 s (at least 10 s, at most 60 s).
      const t0 = Date.now()
      let peak = before
      let peakAt = t0
      while (Date.now() - t0 < 60_000) {
        const { rss } = rssOf(pid)
        if (rss > peak + MiB) {
          peak = rss
          peakAt = Date.now()
        }
        if (Date.now() - t0 >= 10_000 && Date.now() - peakAt >= 4_000) break
        await sleep(250)
      }
      const hwm = rssOf(pid).hwm
      const grown = Math.max(peak, hwm) - before
      const bound = BUDGET + STREAMS * PER_MESSAGE * messageBytes + ALLOWANCE
      console.log(
        `RSS before ${(before / MiB).toFixed(0)} MiB, peak ${(Math.max(peak, hwm) / MiB).toFixed(0)} MiB: grew ${(grown / MiB).toFixed(0)} MiB; bound ${(bound / MiB).toFixed(0)} MiB (${STREAMS} streams of ${(messageBytes / MiB).toFixed(1)} MiB messages, budget ${BUDGET / MiB} MiB)`,
      )
      expect(grown).toBeLessThanOrEqual(bound)
      for (const c of calls) c.cancel()
    } finally {
      for (const c of clients) c.close()
    }
  }, 180_000)
})
