/**
 * KafkaSink: the design card's KafkaSink port. Batches of validated events go in; the effect
 * succeeds only once the sink durably has every event of the batch (Kafka: acks=all from an
 * idempotent producer), else it fails with SinkUnavailable. Other brokers or the in-memory double
 * implement the same Tag.
 *
 * Kafka record format (DESIGN.md "Kafka record contract"):
 *   key     = the event's access key (UTF-8), so one tenant's events share a partition
 *   value   = the protobuf encoding of `api.Event` (proto/spillway.proto) of the validated event: the
 *             timestamp is the repaired one (seconds + nanos), `event_id` as sent. The ingester forwards
 *             an event's bytes as received when they hold exactly the validated values (EventFrames.ts:
 *             known fields only, each once, valid UTF-8, timestamp not repaired); else it encodes it again.
 *   headers = none
 *
 * `layerKafka` runs one writer fiber that owns the producer: publishes queue up while a send is in
 * flight and go out together (one `producer.send` per round, split at `maxSendBytes` so a request
 * stays under the broker's message.max.bytes), which keeps the idempotent producer's sequence
 * numbers in order (kafkajs cannot safely send concurrently to one partition with idempotence).
 * A failed or timed-out send fails the batches in it, drops the producer, and a manager fiber
 * connects a fresh one on an exponential, jittered, capped Schedule. Readiness = a connected
 * producer and a broker that answered the last probe.
 */
import { Context, Deferred, Duration, Effect, Layer, Option, Queue, Ref, Schedule } from "effect"
import type { Admin, Kafka, Producer } from "kafkajs"
import { SinkUnavailable } from "../domain/Errors.js"
import type { Event } from "../domain/Event.js"
import { type CompressionName, compressionTypes } from "../shared/Codecs.js"
import { dlqTopic } from "../shared/DeadLetter.js"
import { KafkaClient } from "../shared/Kafka.js"
import { set } from "../shared/Metrics.js"
import * as M from "./IngesterMetrics.js"
import { disconnect, manageProducer, type ProducerState, probeBroker, produce } from "./KafkaProducer.js"
import { encodeRecord } from "./KafkaRecords.js"
import { MemorySink, makeMemory } from "./MemorySink.js"
import { installProduceEncoder } from "./ProduceRequest.js"
import type { Sink, SinkRecord } from "./SinkPort.js"

export { checkTimeouts, encodeRecord, memoDefaultPartitioner } from "./KafkaRecords.js"
export { MemorySink, type MemorySinkControl, makeMemory } from "./MemorySink.js"

export type { IngestDeadLetterReason, SinkRecord } from "./SinkPort.js"

export class KafkaSink extends Context.Tag("spillway/KafkaSink")<KafkaSink, Sink>() {
  static readonly layerKafka = (options: KafkaSinkOptions): Layer.Layer<KafkaSink, never, KafkaClient> =>
    Layer.scoped(
      KafkaSink,
      Effect.flatMap(KafkaClient, (kafka) => makeKafka(kafka, options)),
    )

  /** An in-memory sink (tests): records are kept in order; it can be made unavailable or slow. */
  static get layerMemory(): Layer.Layer<KafkaSink | MemorySink> {
    return Layer.effectContext(
      Effect.map(Effect.sync(makeMemory), (m) => Context.make(KafkaSink, m.sink).pipe(Context.add(MemorySink, m))),
    )
  }
}

// ---------------------------------------------------------------------------------------------
// Kafka

export interface KafkaSinkOptions {
  readonly topic: string
  /** A send that Kafka has not acknowledged by then fails (and the producer is replaced). Default 15 s. */
  readonly produceTimeout?: Duration.DurationInput
  /**
   * Kafka's own produce timeout (the request's `timeout`): how long the partition leader waits for the in-sync
   * replicas. A send the leader held that long fails at once (see `produce`). Default 5 s.
   */
  readonly ackTimeout?: Duration.DurationInput
  /** Records of one `producer.send` stay under this many value+key bytes. Default 900 KiB. */
  readonly maxSendBytes?: number
  /** Reconnect delays: exponential from 200 ms, jittered, capped here. Default 10 s. */
  readonly reconnectCap?: Duration.DurationInput
  /** How often the broker is probed for readiness. Default 5 s. */
  readonly probeInterval?: Duration.DurationInput
  /** Batches waiting for the writer fiber before publish waits. Default 4096. */
  readonly maxPendingBatches?: number
  /** Record-batch compression (codecs registered by src/shared/Codecs.ts). Default "none". */
  readonly compression?: CompressionName
}

interface Pending {
  readonly records: ReadonlyArray<SinkRecord>
  readonly done: Deferred.Deferred<void, SinkUnavailable>
}

/** Pure: a round of publishes cut into sends of at most `maxBytes`; each publish completes with its last record's send. */
export const cutSends = (items: ReadonlyArray<Pending>, maxBytes: number) => {
  const sends: Array<{ records: Array<SinkRecord>; completes: Array<Pending> }> = []
  let cur = { records: [] as Array<SinkRecord>, completes: [] as Array<Pending> }
  let bytes = 0
  for (const item of items) {
    for (const r of item.records) {
      const size = r.value.length + Buffer.byteLength(r.key)
      if (bytes + size > maxBytes && cur.records.length > 0) {
        sends.push(cur)
        cur = { records: [], completes: [] }
        bytes = 0
      }
      cur.records.push(r)
      bytes += size
    }
    cur.completes.push(item)
  }
  if (cur.records.length > 0 || cur.completes.length > 0) sends.push(cur)
  return sends
}

/** Sends a round of pending publishes on the producer in use; completes every deferred. */
const sendRound = (s: ProducerState, items: ReadonlyArray<Pending>, maxSendBytes: number) =>
  Effect.gen(function* () {
    const current = yield* Ref.get(s.producer)
    if (Option.isNone(current)) {
      const err = new SinkUnavailable({ detail: "not connected to Kafka" })
      yield* Effect.forEach(items, (i) => Deferred.fail(i.done, err), { discard: true })
      return
    }
    const sends = cutSends(items, maxSendBytes)
    for (let i = 0; i < sends.length; i++) {
      const send = sends[i]!
      const result =
        send.records.length === 0 ? undefined : yield* Effect.either(produce(s, current.value, send.records))
      if (result !== undefined && result._tag === "Left") {
        for (const rest of sends.slice(i))
          yield* Effect.forEach(rest.completes, (c) => Deferred.fail(c.done, result.left), { discard: true })
        return
      }
      yield* Effect.forEach(send.completes, (c) => Deferred.succeed(c.done, undefined), { discard: true })
    }
  })

/** Closes the producer and the probe's admin client when the scope closes (after the queue drained, see makeKafka). */
const closeOnRelease = (s: ProducerState, admin: Admin) =>
  Effect.gen(function* () {
    // Finalizers run in reverse: the fibers stop first, then the queue drains, then the producer goes.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        const p = yield* Ref.get(s.producer)
        if (Option.isSome(p)) yield* disconnect(p.value)
        yield* Effect.promise(() => admin.disconnect().catch(() => undefined)).pipe(
          Effect.timeout("5 seconds"),
          Effect.ignore,
        )
        yield* set(M.kafkaConnected, 0)
      }),
    )
  })

export const makeKafka = (kafka: Kafka, options: KafkaSinkOptions) =>
  Effect.gen(function* () {
    // Produce requests encoded in one pass (ProduceRequest.ts): the same bytes, far fewer allocations and copies.
    yield* Effect.sync(installProduceEncoder)
    const s: ProducerState = {
      kafka,
      topic: options.topic,
      deadLetterTopic: dlqTopic(options.topic),
      compression: compressionTypes[options.compression ?? "none"],
      produceTimeout: Duration.decode(options.produceTimeout ?? "15 seconds"),
      ackTimeoutMs: Duration.toMillis(Duration.decode(options.ackTimeout ?? "5 seconds")),
      reconnectCap: Duration.decode(options.reconnectCap ?? "10 seconds"),
      probeInterval: Duration.decode(options.probeInterval ?? "5 seconds"),
      producer: yield* Ref.make(Option.none<Producer>()),
      probeOk: yield* Ref.make(false),
      broken: yield* Queue.sliding<Producer>(4),
      trackers: new WeakMap(),
      ackExpired: undefined,
    }
    const maxSendBytes = options.maxSendBytes ?? 900 * 1024
    // Bytes in flight are bounded by the ingester's budgets; this bound (batches waiting for the writer) makes
    // publish wait rather than grow the queue if a caller ever bypasses them.
    const queue = yield* Queue.bounded<Pending>(options.maxPendingBatches ?? 4096)
    const writer = Effect.gen(function* () {
      const first = yield* Queue.take(queue)
      const rest = yield* Queue.takeAll(queue)
      yield* sendRound(s, [first, ...rest], maxSendBytes)
    }).pipe(Effect.forever)

    const admin = kafka.admin()
    yield* closeOnRelease(s, admin)
    yield* Effect.forkScoped(manageProducer(s))
    yield* Effect.forkScoped(writer)
    yield* Effect.forkScoped(probeBroker(s, admin).pipe(Effect.repeat(Schedule.spaced(s.probeInterval))))
    // Flush: let queued publishes finish (bounded) before the writer is interrupted.
    yield* Effect.addFinalizer(() =>
      Queue.size(queue).pipe(
        Effect.repeat({ while: (n) => n > 0, schedule: Schedule.spaced("50 millis") }),
        Effect.timeout("10 seconds"),
        Effect.ignore,
      ),
    )

    const publishRecords = (records: ReadonlyArray<SinkRecord>) =>
      Effect.gen(function* () {
        if (records.length === 0) return
        const done = yield* Deferred.make<void, SinkUnavailable>()
        yield* Queue.offer(queue, { records, done })
        yield* Deferred.await(done)
      })
    const publish = (events: ReadonlyArray<Event>) => Effect.suspend(() => publishRecords(events.map(encodeRecord)))
    const ready = Effect.gen(function* () {
      return Option.isSome(yield* Ref.get(s.producer)) && (yield* Ref.get(s.probeOk))
    })
    return KafkaSink.of({ publish, publishRecords, ready })
  })
