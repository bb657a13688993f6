/**
 * DeadLetter: records the router can never deliver (undecodable, undecryptable, unknown tenant,
 * refused by a destination) go to `<topic>-dlq` with their original key and value, and headers
 * `reason`, `detail`, `source-topic`, `source-partition`, `source-offset` (and `target` when a
 * destination refused them). `publish` succeeds only once Kafka acknowledged every letter
 * (acks=all, idempotent producer): the router commits past a poison record only after that.
 */
import { Context, Effect, Layer, Metric, Schedule } from "effect"
import { CompressionTypes, Partitioners, type Producer } from "kafkajs"
import { SinkUnavailable } from "../domain/Errors.js"
import { KafkaClient } from "./Kafka.js"

export type DeadLetterReason = "undecodable" | "undecryptable" | "unknown_tenant" | "destination_rejected"

export interface DeadLetter {
  readonly reason: DeadLetterReason
  readonly detail: string
  readonly topic: string
  readonly partition: number
  readonly offset: string
  readonly key: Uint8Array | null
  readonly value: Uint8Array | null
  readonly target?: string
}

export const deadLettersTotal = Metric.counter("router_dead_letters_total", {
  description: "Records sent to the dead-letter topic, by reason",
  incremental: true,
})

export class DeadLetters extends Context.Tag("spillway/DeadLetters")<
  DeadLetters,
  {
    /** Publishes the letters; fails only if Kafka keeps refusing them (the caller retries). */
    readonly publish: (letters: ReadonlyArray<DeadLetter>) => Effect.Effect<void, SinkUnavailable>
  }
>() {
  static readonly layerKafka = (topic: string): Layer.Layer<DeadLetters, never, KafkaClient> =>
    Layer.scoped(DeadLetters, makeKafka(topic))

  static readonly layerMemory = (sent: Array<DeadLetter>): Layer.Layer<DeadLetters> =>
    Layer.succeed(DeadLetters, {
      publish: (letters) => Effect.sync(() => sent.push(...letters)),
    })
}

export const dlqTopic = (topic: string) => `${topic}-dlq`

const headersOf = (l: DeadLetter): Record<string, string> => ({
  reason: l.reason,
  detail: l.detail.slice(0, 1000),
  "source-topic": l.topic,
  "source-partition": String(l.partition),
  "source-offset": l.offset,
  ...(l.target === undefined ? {} : { target: l.target }),
})

const makeKafka = (topic: string) =>
  Effect.gen(function* () {
    const kafka = yield* KafkaClient
    const producer: Producer = kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: true,
      createPartitioner: Partitioners.DefaultPartitioner,
    })
    yield* Effect.acquireRelease(
      Effect.tryPromise(() => producer.connect()).pipe(Effect.retry(Schedule.spaced("1 second")), Effect.orDie),
      () =>
        Effect.promise(() => producer.disconnect().catch(() => undefined)).pipe(
          Effect.timeout("10 seconds"),
          Effect.ignore,
        ),
    )
    return {
      publish: (letters: ReadonlyArray<DeadLetter>) =>
        letters.length === 0
          ? Effect.void
          : Effect.tryPromise({
              try: () =>
                producer.send({
                  topic,
                  acks: -1,
                  compression: CompressionTypes.None,
                  messages: letters.map((l) => ({
                    key: l.key === null ? null : Buffer.from(l.key),
                    value: l.value === null ? null : Buffer.from(l.value),
                    headers: headersOf(l),
                  })),
                }),
              catch: (cause) => new SinkUnavailable({ detail: "the dead-letter topic refused the records", cause }),
            }).pipe(Effect.asVoid),
    }
  })
