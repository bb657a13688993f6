/**
 * The Kafka side's small parts: which topic each record goes to (dead letters to `<topic>-dlq`, with their headers),
 * the partitioner the producer uses (and which partitions a send was placed on), the producer's ack-timeout signal,
 * and the relation the produce timeout must keep with kafkajs's request timeout.
 */
import { type ICustomPartitioner, type Message, Partitioners, type Producer, type TopicMessages } from "kafkajs"
import type { Event } from "../domain/Event.js"
import { toWireEvent } from "../domain/Event.js"
import { EventCodec } from "../wire/Wire.js"
import { groupedLinearly } from "./LinearGrouping.js"
import type { SinkRecord } from "./SinkPort.js"

/**
 * The produce timeout must be longer than kafkajs's request timeout: else a send is given up while its request is
 * still in flight. (A send that timed out drops its producer all the same, so it is never reused; see `produce`.)
 */
export const checkTimeouts = (produceTimeoutMs: number, requestTimeoutMs: number): string | undefined =>
  produceTimeoutMs > requestTimeoutMs
    ? undefined
    : `the produce timeout (${produceTimeoutMs} ms) must be longer than the Kafka request timeout (${requestTimeoutMs} ms)`

/** Pure: the Kafka record of an event (KafkaSink.ts: the Kafka record format). `toWireEvent` is the Schema encoding of `Event`. */
export const encodeRecord = (event: Event): SinkRecord => ({
  key: event.accessKey,
  value: Buffer.from(EventCodec.encode(toWireEvent(event))),
})

/**
 * kafkajs' DefaultPartitioner with its answer for a string key remembered: for a keyed record it is
 * murmur2(key) mod the partition count, whatever the leaders, so the memo changes no placement. kafkajs calls the
 * partitioner for every record (hashing the key and filtering the partition list each time), and all the records
 * of a tenant share one key.
 */
export const memoDefaultPartitioner: ICustomPartitioner = () => {
  const inner = Partitioners.DefaultPartitioner()
  const memo = new Map<string, { readonly partitions: number; readonly partition: number }>()
  return (args) => {
    const { key, partition } = args.message
    if (typeof key !== "string" || (partition !== undefined && partition !== null)) return inner(args)
    const partitions = args.partitionMetadata.length
    const hit = memo.get(key)
    if (hit !== undefined && hit.partitions === partitions) return hit.partition
    const computed = inner(args)
    if (memo.size >= 10_000) memo.clear() // keys are tenants' access keys: few; bounded all the same
    if (partitions > 0) memo.set(key, { partitions, partition: computed })
    return computed
  }
}

/**
 * Calls `expired` when kafkajs reports a Produce of `p` answered only after `ackTimeoutMs`, or not answered within
 * its request timeout. A leader answers an acks=all produce as soon as the ISR has the records, or with
 * REQUEST_TIMED_OUT once the ack timeout passed: an answer that took that long is the timeout (one that made it just
 * in time is answered UNAVAILABLE too, and its retry a duplicate: never SUCCESS for what Kafka may not hold).
 */
export const onAckTimeout = (p: Producer, ackTimeoutMs: number, expired: () => void): void => {
  const listener = (e: { payload: { apiName: string; duration?: number } }) => {
    const { apiName, duration } = e.payload
    if (apiName === "Produce" && (duration === undefined || duration >= ackTimeoutMs)) expired()
  }
  p.on(p.events.REQUEST, listener)
  p.on(p.events.REQUEST_TIMEOUT, listener)
}

/**
 * Follows which partitions a producer places a send's records on (its partitioner: `memoDefaultPartitioner`), so the
 * answer can be checked against them: kafkajs 2.2.4 can resolve a send spread over several leaders without the
 * records of a partition whose leader moved, during its retries, to a broker that had answered already (it resends
 * only to brokers without an answer; tulios/kafkajs#1303). Its answer then lacks that partition. One send at a time.
 */
export const partitionTracker = () => {
  let placed: Map<string, Set<number>> | undefined
  const createPartitioner: ICustomPartitioner = () => {
    const inner = memoDefaultPartitioner()
    return (args) => {
      const partition = inner(args)
      if (placed !== undefined) {
        const set = placed.get(args.topic)
        if (set === undefined) placed.set(args.topic, new Set([partition]))
        else set.add(partition)
      }
      return partition
    }
  }
  return {
    createPartitioner,
    /** Starts following a send. */
    start: (): void => {
      placed = new Map()
    },
    /** Pure on what was followed: how many partitions placed on since `start` the answer lacks; stops following. */
    unanswered: (answer: ReadonlyArray<{ readonly topicName: string; readonly partition: number }>): number => {
      const wanted = placed ?? new Map<string, Set<number>>()
      placed = undefined
      let missing = 0
      for (const [t, partitions] of wanted)
        for (const p of partitions) if (!answer.some((a) => a.topicName === t && a.partition === p)) missing++
      return missing
    },
  }
}

/**
 * The records of one send by topic: events to the topic, dead letters (with their headers) to `<topic>-dlq`; kafkajs
 * groups each array by partition in linear time (`groupedLinearly`).
 */
export const toTopicMessages = (topic: string, deadLetterTopic: string, records: ReadonlyArray<SinkRecord>) => {
  const events: Array<Message> = []
  const letters: Array<Message> = []
  for (const r of records)
    if (r.deadLetter === undefined) events.push({ key: r.key, value: r.value })
    else
      letters.push({
        key: r.key,
        value: r.value,
        headers: { reason: r.deadLetter.reason, detail: r.deadLetter.detail.slice(0, 1000), source: "ingester" },
      })
  const out: Array<TopicMessages> = []
  if (events.length > 0) out.push({ topic, messages: groupedLinearly(events) })
  if (letters.length > 0) out.push({ topic: deadLetterTopic, messages: groupedLinearly(letters) })
  return out
}
