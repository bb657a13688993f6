/**
 * A slow broker cannot lose an acknowledged batch (issue #12 item 15). The built ingester reaches a private broker
 * (slot 14) only through a TCP proxy that can hold back the broker's answers. Batch A is sent while the answers come
 * 2.5 s late: kafkajs's request times out (2 s), rolls the partition's sequence number back (eosManager
 * updateSequence(-n)) and retries, and the ingester's produce timeout (3 s) fails A. Batch B, as large as A, was
 * queued behind A meanwhile; the proxy forwards at once from the moment A failed. Every event the ingester
 * acknowledged must be in Kafka.
 *
 * Had B gone out on A's producer, it would wait for kafkajs's per-broker lock, take it when A's retry timed out and
 * rolled back, carry A's sequence number, and the broker would answer it as a duplicate of A without writing it: with
 * KafkaSink's markBroken made a no-op this test fails (B acknowledged, its 10 events not in Kafka). It passes on the
 * code before the fix too: there the writer loop (Effect.forever, which yields between rounds) let the manager fiber
 * clear the producer before the next round, so no round ever reused a producer whose send had failed.
 */
import { randomBytes } from "node:crypto"
import type * as grpc from "@grpc/grpc-js"
import { afterAll, describe, expect, it } from "vitest"
import type { WireBatchAck } from "../../src/wire/Wire.js"
import {
  bearer,
  freePort,
  type RunningIngester,
  startIngester,
  tenantA,
  type WireEvent,
  wireEvent,
} from "../support/ingester.js"
import { createSettledTopics, makeKafka, privateBroker, uniqueTopic } from "../support/kafka.js"
import { startTcpProxy, type TcpProxy } from "../support/tcpProxy.js"

const SLOT = 14
const EVENTS_PER_BATCH = 10

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const batchOf = (name: string): ReadonlyArray<WireEvent> =>
  Array.from({ length: EVENTS_PER_BATCH }, (_, i) => wireEvent(tenantA, i, { event_id: `${name}-${i}` }))

/** Every event_id in the topic (one partition), read up to its high watermark. */
const eventIdsIn = async (brokers: ReadonlyArray<string>, topic: string): Promise<Set<string>> => {
  const kafka = makeKafka("slow-broker-reader", { brokers: [...brokers] })
  const admin = kafka.admin()
  await admin.connect()
  const high = Number((await admin.fetchTopicOffsets(topic))[0]!.high)
  await admin.disconnect()
  const ids = new Set<string>()
  if (high === 0) return ids
  const { EventCodec } = await import("../../src/wire/Wire.js")
  const consumer = kafka.consumer({ groupId: `${topic}-r-${randomBytes(3).toString("hex")}`, maxWaitTimeInMs: 250 })
  await consumer.connect()
  try {
    await consumer.subscribe({ topic, fromBeginning: true })
    await new Promise<void>((resolve, reject) => {
      consumer
        .run({
          eachMessage: async ({ message }) => {
            ids.add((EventCodec.decode(message.value!) as { event_id: string }).event_id)
            if (Number(message.offset) >= high - 1) resolve()
          },
        })
        .catch(reject)
    })
  } finally {
    await consumer.disconnect()
  }
  return ids
}

describe("slow broker (private broker behind a delaying proxy)", () => {
  let proxy: TcpProxy | undefined
  let ing: RunningIngester | undefined
  const pb = { current: undefined as ReturnType<typeof privateBroker> | undefined }
  afterAll(async () => {
    await ing?.stop()
    await pb.current?.destroy()
    await proxy?.close()
  })

  it("every batch the ingester acknowledged is in Kafka, also after a send timed out on a slow broker", async () => {
    proxy = await startTcpProxy({ host: "127.0.0.1", port: 19090 + 2 * SLOT }, await freePort())
    const broker = privateBroker(SLOT, { advertisedPort: proxy.port })
    pb.current = broker
    await broker.start()
    const topic = uniqueTopic("slowbroker")
    await createSettledTopics(broker.brokers, [{ topic, numPartitions: 1, replicationFactor: 1 }])
    ing = await startIngester({
      topic,
      brokers: broker.brokers,
      env: { SPILLWAY_KAFKA_PRODUCE_TIMEOUT_MS: "3000", SPILLWAY_KAFKA_REQUEST_TIMEOUT_MS: "2000" },
    })
    const client = ing.client()
    const token = await ing.tokenFor(tenantA)
    const acked = new Set<string>()
    const outcomes: Array<string> = []
    try {
      const call = (
        client as unknown as { SendEventBatches: (m: grpc.Metadata) => grpc.ClientDuplexStream<unknown, WireBatchAck> }
      ).SendEventBatches(bearer(token))
      const sent = new Map<string, ReadonlyArray<WireEvent>>()
      const waiting = new Map<string, (a: WireBatchAck) => void>()
      call.on("data", (a: WireBatchAck) => {
        if (a.status === "SUCCESS") for (const e of sent.get(a.batch_id) ?? []) acked.add(e.event_id!)
        outcomes.push(`${a.batch_id}:${a.status}`)
        waiting.get(a.batch_id)?.(a)
      })
      call.on("error", () => undefined)
      const send = (id: string, events: ReadonlyArray<WireEvent>) =>
        new Promise<WireBatchAck>((resolve) => {
          sent.set(id, events)
          waiting.set(id, resolve)
          call.write({ batch_id: id, events })
        })
      /** Sends until acknowledged (a fresh producer may still be connecting), at most 30 tries. */
      const sendUntilAcked = async (name: string, events: ReadonlyArray<WireEvent>) => {
        for (let i = 0; i < 30; i++) {
          if ((await send(`${name}.${i}`, events)).status === "SUCCESS") return
          await sleep(500)
        }
        throw new Error(`${name} was never acknowledged`)
      }

      await sendUntilAcked("warm", batchOf("warm"))

      // A goes out while the broker's answers come 2.5 s late.
      proxy.setDelay(2500)
      const a = send("A", batchOf("A"))
      // B is queued behind A once A is at the broker (its answer is held back by the proxy).
      while (proxy.held() === 0) await sleep(20)
      const b = send("B", batchOf("B"))
      const ackA = await a
      proxy.setDelay(0)
      expect(ackA.status).toBe("FAILURE")
      if ((await b).status !== "SUCCESS") await sendUntilAcked("B", batchOf("B"))
      // And rounds after it.
      for (const name of ["C", "D", "E"]) await sendUntilAcked(name, batchOf(name))
      call.end()
    } finally {
      client.close()
    }
    const inKafka = await eventIdsIn(broker.brokers, topic)
    const lost = [...acked].filter((id) => !inKafka.has(id))
    console.log(
      `acks: ${outcomes.join(" ")}; acked ${acked.size} events, ${inKafka.size} in Kafka, lost ${lost.length}`,
    )
    expect(lost).toEqual([])
  }, 180_000)
})
