/**
 * The Kafka producer behind KafkaSink.ts, as module-level functions over one `ProducerState`: connecting a producer
 * (`connectOnce`), owning it (`manageProducer`: connect on the backoff Schedule, hold until reported broken, drop,
 * repeat), one send (`produce`: acks=all, Kafka's ack timeout, the produce timeout, a partition kafkajs left out of
 * its answer), taking a producer out of use (`markBroken`), and the readiness probe (`probeBroker`).
 */
import { Clock, Deferred, Duration, Effect, Option, Queue, Ref } from "effect"
import type { Admin, Kafka, Producer } from "kafkajs"
import { SinkUnavailable } from "../domain/Errors.js"
import { inc, observe, set } from "../shared/Metrics.js"
import { backoff } from "../shared/Retry.js"
import * as M from "./IngesterMetrics.js"
import { onAckTimeout, partitionTracker, toTopicMessages } from "./KafkaRecords.js"
import type { SinkRecord } from "./SinkPort.js"

export interface ProducerState {
  readonly kafka: Kafka
  readonly topic: string
  readonly deadLetterTopic: string
  readonly compression: number
  readonly produceTimeout: Duration.Duration
  readonly ackTimeoutMs: number
  readonly reconnectCap: Duration.Duration
  readonly probeInterval: Duration.Duration
  /** The producer in use, if any. */
  readonly producer: Ref.Ref<Option.Option<Producer>>
  /** Whether the broker answered the last probe. */
  readonly probeOk: Ref.Ref<boolean>
  /** Producers reported broken (the manager drops the one it owns). */
  readonly broken: Queue.Queue<Producer>
  readonly trackers: WeakMap<Producer, ReturnType<typeof partitionTracker>>
  /**
   * The send in flight (one at a time, the writer fiber's): told when its leader held a produce for the whole ack
   * timeout (its replicas did not acknowledge: kafkajs would retry it until the produce timeout).
   */
  ackExpired: { readonly producer: Producer; readonly expired: Deferred.Deferred<void> } | undefined
}

const causeText = (e: unknown) => (e instanceof Error ? `${e.name}: ${e.message}` : String(e))

export const setConnectedGauge = (s: ProducerState) =>
  Effect.gen(function* () {
    const ok = Option.isSome(yield* Ref.get(s.producer)) && (yield* Ref.get(s.probeOk))
    yield* set(M.kafkaConnected, ok ? 1 : 0)
  })

export const disconnect = (p: Producer) =>
  Effect.promise(() => p.disconnect().catch(() => undefined)).pipe(Effect.timeout("5 seconds"), Effect.ignore)

/** A connected idempotent producer (one request in flight), or SinkUnavailable within the produce timeout. */
export const connectOnce = (s: ProducerState) =>
  Effect.tryPromise({
    try: async () => {
      const tracker = partitionTracker()
      const p = s.kafka.producer({
        idempotent: true,
        maxInFlightRequests: 1,
        allowAutoTopicCreation: true,
        createPartitioner: tracker.createPartitioner,
        // kafkajs retries an idempotent send without end; produceTimeout bounds it, then the
        // producer is dropped (which rejects the send) and a fresh one is connected.
        retry: { retries: Number.MAX_SAFE_INTEGER, initialRetryTime: 200, maxRetryTime: 2_000 },
      })
      onAckTimeout(p, s.ackTimeoutMs, () => {
        if (s.ackExpired?.producer === p) Deferred.unsafeDone(s.ackExpired.expired, Effect.void)
      })
      s.trackers.set(p, tracker)
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
      duration: s.produceTimeout,
      onTimeout: () => new SinkUnavailable({ detail: "connecting to Kafka timed out" }),
    }),
  )

/** The producer's owner: connect (retrying on the backoff Schedule), hold until reported broken, drop, repeat. */
export const manageProducer = (s: ProducerState) =>
  Effect.gen(function* () {
    const p = yield* connectOnce(s).pipe(
      Effect.tapError((e) =>
        Effect.logWarning("Kafka producer not connected, retrying").pipe(Effect.annotateLogs({ detail: e.detail })),
      ),
      Effect.retry(backoff({ base: "200 millis", cap: s.reconnectCap })),
    )
    yield* Ref.set(s.producer, Option.some(p))
    yield* Ref.set(s.probeOk, true)
    yield* setConnectedGauge(s)
    yield* Effect.logInfo("Kafka producer connected").pipe(Effect.annotateLogs({ topic: s.topic }))
    // Reports about an earlier producer are stale: wait for this one's.
    yield* Queue.take(s.broken).pipe(Effect.repeat({ until: (b) => b === p }))
    yield* Ref.set(s.producer, Option.none())
    yield* setConnectedGauge(s)
    yield* disconnect(p)
  }).pipe(Effect.forever)

/** A producer whose send failed or timed out is taken out of use at once (its request may still be in flight). */
export const markBroken = (s: ProducerState, p: Producer) =>
  Effect.zipRight(
    Ref.update(s.producer, (cur) => (Option.isSome(cur) && cur.value === p ? Option.none() : cur)),
    Queue.offer(s.broken, p),
  )

/** One send of `records` on `p`: succeeds once Kafka acknowledged all of them, else fails and marks `p` broken. */
export const produce = (s: ProducerState, p: Producer, records: ReadonlyArray<SinkRecord>) =>
  Effect.gen(function* () {
    const start = yield* Clock.currentTimeMillis
    const expired = yield* Deferred.make<void>()
    s.ackExpired = { producer: p, expired }
    const tracker = s.trackers.get(p)
    tracker?.start()
    const topicMessages = toTopicMessages(s.topic, s.deadLetterTopic, records)
    const send = Effect.tryPromise({
      try: () => p.sendBatch({ acks: -1, timeout: s.ackTimeoutMs, compression: s.compression, topicMessages }),
      catch: (cause) => new SinkUnavailable({ detail: `Kafka refused the records: ${causeText(cause)}`, cause }),
    }).pipe(
      Effect.filterOrFail(
        (answer) => (tracker?.unanswered(answer) ?? 0) === 0,
        () => new SinkUnavailable({ detail: "Kafka's answer lacks a partition of the send (kafkajs dropped it)" }),
      ),
    )
    // Replicas that did not acknowledge within the ack timeout (no quorum to shrink the ISR): fail now, not at the
    // produce timeout. An election's errors come back at once and kafkajs retries them, within the produce timeout.
    // The error is made only if the ack timer fires: an Error's stack is captured when it is made, once per send.
    const notAcknowledged = Effect.zipRight(
      Deferred.await(expired),
      Effect.failSync(
        () =>
          new SinkUnavailable({ detail: `Kafka's in-sync replicas did not acknowledge within ${s.ackTimeoutMs} ms` }),
      ),
    )
    yield* Effect.raceFirst(send, notAcknowledged).pipe(
      Effect.ensuring(
        Effect.sync(() => {
          s.ackExpired = undefined
        }),
      ),
      Effect.timeoutFail({
        duration: s.produceTimeout,
        onTimeout: () =>
          new SinkUnavailable({ detail: `Kafka did not acknowledge within ${Duration.format(s.produceTimeout)}` }),
      }),
    )
    const end = yield* Clock.currentTimeMillis
    yield* observe(M.produceLatency, (end - start) / 1000)
  }).pipe(
    Effect.tapError((e) =>
      Effect.all([
        inc(M.produceErrors),
        Effect.logWarning("Kafka produce failed").pipe(Effect.annotateLogs({ detail: e.detail, topic: s.topic })),
        markBroken(s, p),
      ]),
    ),
  )

/** Readiness probe: the broker answers a metadata request (the admin client connects on first use). */
export const probeBroker = (s: ProducerState, admin: Admin) => {
  let adminConnected = false
  return Effect.gen(function* () {
    const ok = yield* Effect.tryPromise(async () => {
      if (!adminConnected) {
        await admin.connect()
        adminConnected = true
      }
      await admin.describeCluster()
    }).pipe(
      Effect.timeout(Duration.millis(Math.max(1000, Duration.toMillis(s.probeInterval) - 500))),
      Effect.as(true),
      Effect.catchAll(() => Effect.succeed(false)),
    )
    const was = yield* Ref.getAndSet(s.probeOk, ok)
    if (was && !ok)
      yield* Effect.logWarning("Kafka broker does not answer").pipe(Effect.annotateLogs({ topic: s.topic }))
    if (!was && ok) yield* Effect.logInfo("Kafka broker answers again").pipe(Effect.annotateLogs({ topic: s.topic }))
    yield* setConnectedGauge(s)
  })
}
