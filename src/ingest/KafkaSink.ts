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
import { Clock, Context, Deferred, Duration, Effect, Layer, Option, Queue, Ref, Schedule } from "effect"
import type { Kafka, Producer } from "kafkajs"
import { SinkUnavailable } from "../domain/Errors.js"
import type { Event } from "../domain/Event.js"
import { type CompressionName, compressionTypes } from "../shared/Codecs.js"
import { dlqTopic } from "../shared/DeadLetter.js"
import { KafkaClient } from "../shared/Kafka.js"
import { inc, observe, set } from "../shared/Metrics.js"
import { backoff } from "../shared/Retry.js"
import * as M from "./IngesterMetrics.js"
import { encodeRecord, onAckTimeout, partitionTracker, toTopicMessages } from "./KafkaRecords.js"
import { MemorySink, makeMemory } from "./MemorySink.js"

export { checkTimeouts, encodeRecord, memoDefaultPartitioner } from "./KafkaRecords.js"
export { MemorySink, type MemorySinkControl, makeMemory } from "./MemorySink.js"

/** Why the ingester dead-letters an event: it can never be accepted as it is. */
export type IngestDeadLetterReason = "invalid_event" | "event_too_large"

/**
 * One Kafka record as the ingester writes it. With `deadLetter` it goes to `<topic>-dlq` instead, with headers
 * `reason`, `detail` and `source: ingester` (the detail never holds a received value).
 */
export interface SinkRecord {
  readonly key: string
  readonly value: Buffer
  readonly deadLetter?: { readonly reason: IngestDeadLetterReason; readonly detail: string }
}

export class KafkaSink extends Context.Tag("spillway/KafkaSink")<
  KafkaSink,
  {
    /** Succeeds once the sink durably has every event; fails (nothing or some of them written) otherwise. */
    readonly publish: (events: ReadonlyArray<Event>) => Effect.Effect<void, SinkUnavailable>
    /**
     * `publish` for records already in the Kafka record format (`encodeRecord`, or the bytes of a validated
     * event as received): the ingester's hot path, which does not build `Event`s.
     */
    readonly publishRecords: (records: ReadonlyArray<SinkRecord>) => Effect.Effect<void, SinkUnavailable>
    /** Whether the sink can take events now (readiness). */
    readonly ready: Effect.Effect<boolean>
  }
>() {
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

const causeText = (e: unknown) => (e instanceof Error ? `${e.name}: ${e.message}` : String(e))

export const makeKafka = (kafka: Kafka, options: KafkaSinkOptions) =>
  Effect.gen(function* () {
    const topic = options.topic
    const deadLetterTopic = dlqTopic(topic)
    const compression = compressionTypes[options.compression ?? "none"]
    const produceTimeout = Duration.decode(options.produceTimeout ?? "15 seconds")
    const ackTimeoutMs = Duration.toMillis(Duration.decode(options.ackTimeout ?? "5 seconds"))
    // The send in flight (one at a time, the writer fiber's): told when its leader held a produce for the whole ack
    // timeout (its replicas did not acknowledge: kafkajs would retry it until the produce timeout).
    let ackExpired: { readonly producer: Producer; readonly expired: Deferred.Deferred<void> } | undefined
    const trackers = new WeakMap<Producer, ReturnType<typeof partitionTracker>>()
    const maxSendBytes = options.maxSendBytes ?? 900 * 1024
    const cap = Duration.decode(options.reconnectCap ?? "10 seconds")
    const probeInterval = Duration.decode(options.probeInterval ?? "5 seconds")

    const producer = yield* Ref.make(Option.none<Producer>())
    const probeOk = yield* Ref.make(false)
    const broken = yield* Queue.sliding<Producer>(4)
    // Bytes in flight are bounded by the ingester's budgets; this bound (batches waiting for the writer) makes
    // publish wait rather than grow the queue if a caller ever bypasses them.
    const queue = yield* Queue.bounded<Pending>(options.maxPendingBatches ?? 4096)

    const setConnectedGauge = Effect.gen(function* () {
      const ok = Option.isSome(yield* Ref.get(producer)) && (yield* Ref.get(probeOk))
      yield* set(M.kafkaConnected, ok ? 1 : 0)
    })

    const disconnect = (p: Producer) =>
      Effect.promise(() => p.disconnect().catch(() => undefined)).pipe(Effect.timeout("5 seconds"), Effect.ignore)

    const connectOnce = Effect.tryPromise({
      try: async () => {
        const tracker = partitionTracker()
        const p = kafka.producer({
          idempotent: true,
          maxInFlightRequests: 1,
          allowAutoTopicCreation: true,
          createPartitioner: tracker.createPartitioner,
          // kafkajs retries an idempotent send without end; produceTimeout bounds it, then the
          // producer is dropped (which rejects the send) and a fresh one is connected.
          retry: { retries: Number.MAX_SAFE_INTEGER, initialRetryTime: 200, maxRetryTime: 2_000 },
        })
        onAckTimeout(p, ackTimeoutMs, () => {
          if (ackExpired?.producer === p) Deferred.unsafeDone(ackExpired.expired, Effect.void)
        })
        trackers.set(p, tracker)
        try {
          await p.connect()
        } catch (e) {
          await p.disconnect().catch(() => undefined)
          throw e
        }
        return p
      },
      catch: (cause) => new SinkUnavailable({ detail: `cannot connect to Kafka: ${causeText(cause)}`, cause }),
    }).pipe(
      Effect.timeoutFail({
        duration: produceTimeout,
        onTimeout: () => new SinkUnavailable({ detail: "connecting to Kafka timed out" }),
      }),
    )

    const reconnectSchedule = backoff({ base: "200 millis", cap })

    // The producer's owner: connect (retrying), hold until reported broken, drop, repeat.
    const manager = Effect.gen(function* () {
      const p = yield* connectOnce.pipe(
        Effect.tapError((e) =>
          Effect.logWarning("Kafka producer not connected, retrying").pipe(Effect.annotateLogs({ detail: e.detail })),
        ),
        Effect.retry(reconnectSchedule),
      )
      yield* Ref.set(producer, Option.some(p))
      yield* Ref.set(probeOk, true)
      yield* setConnectedGauge
      yield* Effect.logInfo("Kafka producer connected").pipe(Effect.annotateLogs({ topic }))
      // Reports about an earlier producer are stale: wait for this one's.
      yield* Queue.take(broken).pipe(Effect.repeat({ until: (b) => b === p }))
      yield* Ref.set(producer, Option.none())
      yield* setConnectedGauge
      yield* disconnect(p)
    }).pipe(Effect.forever)

    /** A producer whose send failed or timed out is taken out of use at once (its request may still be in flight). */
    const markBroken = (p: Producer) =>
      Effect.zipRight(
        Ref.update(producer, (cur) => (Option.isSome(cur) && cur.value === p ? Option.none() : cur)),
        Queue.offer(broken, p),
      )

    const topicMessages = (records: ReadonlyArray<SinkRecord>) => toTopicMessages(topic, deadLetterTopic, records)

    const produce = (p: Producer, records: ReadonlyArray<SinkRecord>) =>
      Effect.gen(function* () {
        const start = yield* Clock.currentTimeMillis
        const expired = yield* Deferred.make<void>()
        ackExpired = { producer: p, expired }
        const tracker = trackers.get(p)
        tracker?.start()
        const send = Effect.tryPromise({
          try: () =>
            p.sendBatch({ acks: -1, timeout: ackTimeoutMs, compression, topicMessages: topicMessages(records) }),
          catch: (cause) => new SinkUnavailable({ detail: `Kafka refused the records: ${causeText(cause)}`, cause }),
        }).pipe(
          Effect.filterOrFail(
            (answer) => (tracker?.unanswered(answer) ?? 0) === 0,
            () => new SinkUnavailable({ detail: "Kafka's answer lacks a partition of the send (kafkajs dropped it)" }),
          ),
        )
        // Replicas that did not acknowledge within the ack timeout (no quorum to shrink the ISR): fail now, not at the
        // produce timeout. An election's errors come back at once and kafkajs retries them, within the produce timeout.
        const notAcknowledged = Effect.zipRight(
          Deferred.await(expired),
          new SinkUnavailable({ detail: `Kafka's in-sync replicas did not acknowledge within ${ackTimeoutMs} ms` }),
        )
        yield* Effect.raceFirst(send, notAcknowledged).pipe(
          Effect.ensuring(Effect.sync(() => (ackExpired = undefined))),
          Effect.timeoutFail({
            duration: produceTimeout,
            onTimeout: () =>
              new SinkUnavailable({
                detail: `Kafka did not acknowledge within ${Duration.format(produceTimeout)}`,
              }),
          }),
        )
        const end = yield* Clock.currentTimeMillis
        yield* observe(M.produceLatency, (end - start) / 1000)
      }).pipe(
        Effect.tapError((e) =>
          Effect.all([
            inc(M.produceErrors),
            Effect.logWarning("Kafka produce failed").pipe(Effect.annotateLogs({ detail: e.detail, topic })),
            markBroken(p),
          ]),
        ),
      )

    /** Sends a round of pending publishes in sends of at most maxSendBytes; completes every deferred. */
    const sendRound = (items: ReadonlyArray<Pending>) =>
      Effect.gen(function* () {
        const current = yield* Ref.get(producer)
        if (Option.isNone(current)) {
          const err = new SinkUnavailable({ detail: "not connected to Kafka" })
          yield* Effect.forEach(items, (i) => Deferred.fail(i.done, err), { discard: true })
          return
        }
        const p = current.value
        // Cut the round into sends; each item is done when the send holding its last record succeeded.
        const sends: Array<{ records: Array<SinkRecord>; completes: Array<Pending> }> = []
        let cur = { records: [] as Array<SinkRecord>, completes: [] as Array<Pending> }
        let bytes = 0
        for (const item of items) {
          for (const r of item.records) {
            const size = r.value.length + Buffer.byteLength(r.key)
            if (bytes + size > maxSendBytes && cur.records.length > 0) {
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
        for (let i = 0; i < sends.length; i++) {
          const send = sends[i]!
          const result = send.records.length === 0 ? undefined : yield* Effect.either(produce(p, send.records))
          if (result !== undefined && result._tag === "Left") {
            for (const rest of sends.slice(i))
              yield* Effect.forEach(rest.completes, (c) => Deferred.fail(c.done, result.left), { discard: true })
            return
          }
          yield* Effect.forEach(send.completes, (c) => Deferred.succeed(c.done, undefined), { discard: true })
        }
      })

    const writer = Effect.gen(function* () {
      const first = yield* Queue.take(queue)
      const rest = yield* Queue.takeAll(queue)
      yield* sendRound([first, ...rest])
    }).pipe(Effect.forever)

    // Readiness probe: the broker answers a metadata request.
    const admin = kafka.admin()
    let adminConnected = false
    const probe = Effect.gen(function* () {
      const ok = yield* Effect.tryPromise(async () => {
        if (!adminConnected) {
          await admin.connect()
          adminConnected = true
        }
        await admin.describeCluster()
      }).pipe(
        Effect.timeout(Duration.millis(Math.max(1000, Duration.toMillis(probeInterval) - 500))),
        Effect.as(true),
        Effect.catchAll(() => Effect.succeed(false)),
      )
      const was = yield* Ref.getAndSet(probeOk, ok)
      if (was && !ok) yield* Effect.logWarning("Kafka broker does not answer").pipe(Effect.annotateLogs({ topic }))
      if (!was && ok) yield* Effect.logInfo("Kafka broker answers again").pipe(Effect.annotateLogs({ topic }))
      yield* setConnectedGauge
    })

    // Finalizers run in reverse: the fibers stop first, then the queue drains, then the producer goes.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        const p = yield* Ref.get(producer)
        if (Option.isSome(p)) yield* disconnect(p.value)
        yield* Effect.promise(() => admin.disconnect().catch(() => undefined)).pipe(
          Effect.timeout("5 seconds"),
          Effect.ignore,
        )
        yield* set(M.kafkaConnected, 0)
      }),
    )
    yield* Effect.forkScoped(manager)
    yield* Effect.forkScoped(writer)
    yield* Effect.forkScoped(probe.pipe(Effect.repeat(Schedule.spaced(probeInterval))))
    // Flush: let queued publishes finish (bounded) before the writer is interrupted.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        while ((yield* Queue.size(queue)) > 0) yield* Effect.sleep("50 millis")
      }).pipe(Effect.timeout("10 seconds"), Effect.ignore),
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
      return Option.isSome(yield* Ref.get(producer)) && (yield* Ref.get(probeOk))
    })

    return KafkaSink.of({ publish, publishRecords, ready })
  })
