/**
 * The Kafka side's pure parts: which topic each record goes to (dead letters to `<topic>-dlq`, with their headers),
 * the partitioner the producer uses, and the relation the produce timeout must keep with kafkajs's request timeout.
 */
import { type ICustomPartitioner, type Message, Partitioners, type TopicMessages } from "kafkajs"
import type { Event } from "../domain/Event.js"
import { toWireEvent } from "../domain/Event.js"
import { EventCodec } from "../wire/Wire.js"
import type { SinkRecord } from "./KafkaSink.js"

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

/** The records of one send by topic: events to the topic, dead letters (with their headers) to `<topic>-dlq`. */
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
  if (events.length > 0) out.push({ topic, messages: events })
  if (letters.length > 0) out.push({ topic: deadLetterTopic, messages: letters })
  return out
}
