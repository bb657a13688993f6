/**
 * DeadLetter: records the router can never deliver (undecodable, undecryptable, unknown tenant,
 * refused by a destination) go to `<topic>-dlq` with their original key and value, and headers
 * `reason`, `detail`, `source-topic`, `source-partition`, `source-offset` (and `target` when a
 * destination refused them). `publish` succeeds only once Kafka acknowledged every letter
 * (acks=all, idempotent producer): the router commits past a poison record only after that.
 *
 * Letters go out in produce requests of at most `maxBatchBytes` (keys, values and headers), under the broker's
 * message size. A request Kafka still refuses as too large is split in halves; a single letter it refuses as too
 * large is permanent, so its value is cut (halved until Kafka takes it, then dropped), the headers kept and a
 * `truncated` header added with the original value's size: a poison record never wedges its partition.
 */
import { Context, Effect, Layer } from "effect"
import { CompressionTypes, Partitioners, type Producer } from "kafkajs"
import { SinkUnavailable } from "../domain/Errors.js"
import { KafkaClient } from "./Kafka.js"
import { backoff } from "./Retry.js"

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
  /** Set when the value was cut because Kafka refused the letter as too large: the original value's size. */
  readonly truncatedFrom?: number
}

export interface DeadLetterOptions {
  /** Largest produce request of letters, in bytes of keys, values and headers (default 512 KiB). */
  readonly maxBatchBytes?: number
  /** Called for each letter whose value was cut because Kafka refused it as too large (for a metric). */
  readonly onTruncated?: (letter: DeadLetter) => void
}

export const defaultMaxBatchBytes = 512 * 1024

export class DeadLetters extends Context.Tag("spillway/DeadLetters")<
  DeadLetters,
  {
    /** Publishes the letters; fails only if Kafka keeps refusing them (the caller retries). */
    readonly publish: (letters: ReadonlyArray<DeadLetter>) => Effect.Effect<void, SinkUnavailable>
  }
>() {
  static readonly layerKafka = (
    topic: string,
    options: DeadLetterOptions = {},
  ): Layer.Layer<DeadLetters, never, KafkaClient> => Layer.scoped(DeadLetters, makeKafka(topic, options))

  static readonly layerMemory = (sent: Array<DeadLetter>): Layer.Layer<DeadLetters> =>
    Layer.succeed(DeadLetters, {
      publish: (letters) => Effect.sync(() => sent.push(...letters)),
    })
}

export const dlqTopic = (topic: string) => `${topic}-dlq`

/**
 * A record's key or value as the Buffer kafkajs takes: the same bytes, not a copy (a Buffer as it is, other bytes
 * viewed). Shared by the dead-letter and the retry topic's writers, and the router's record decoder.
 */
export function asBuffer(bytes: Uint8Array): Buffer
export function asBuffer(bytes: Uint8Array | null): Buffer | null
export function asBuffer(bytes: Uint8Array | null): Buffer | null {
  return bytes === null
    ? null
    : Buffer.isBuffer(bytes)
      ? bytes
      : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
}

const headersOf = (l: DeadLetter): Record<string, string> => ({
  reason: l.reason,
  detail: l.detail.slice(0, 1000),
  "source-topic": l.topic,
  "source-partition": String(l.partition),
  "source-offset": l.offset,
  ...(l.target === undefined ? {} : { target: l.target }),
  ...(l.truncatedFrom === undefined ? {} : { truncated: String(l.truncatedFrom) }),
})

/** Pure: the bytes a letter takes in a produce request (key, value, headers, and a record's overhead). */
export const letterBytes = (l: DeadLetter): number => {
  let n = 70 + (l.key?.length ?? 0) + (l.value?.length ?? 0)
  for (const [k, v] of Object.entries(headersOf(l))) n += k.length + Buffer.byteLength(v) + 2
  return n
}

/** Pure: the items in order, in runs of at most `maxBytes` by `sizeOf` (an item larger than that is a run alone). */
export const runsByBytes = <A>(
  items: ReadonlyArray<A>,
  sizeOf: (a: A) => number,
  maxBytes: number,
): ReadonlyArray<ReadonlyArray<A>> => {
  const runs: Array<Array<A>> = []
  let run: Array<A> = []
  let bytes = 0
  for (const item of items) {
    const n = sizeOf(item)
    if (run.length > 0 && bytes + n > maxBytes) {
      runs.push(run)
      run = []
      bytes = 0
    }
    run.push(item)
    bytes += n
  }
  if (run.length > 0) runs.push(run)
  return runs
}

/** Pure: the letters in order, in runs of at most `maxBytes` each (a letter larger than that is a run alone). */
export const splitByBytes = (
  letters: ReadonlyArray<DeadLetter>,
  maxBytes: number,
): ReadonlyArray<ReadonlyArray<DeadLetter>> => runsByBytes(letters, letterBytes, maxBytes)

const TOO_LARGE = new Set(["MESSAGE_TOO_LARGE", "RECORD_LIST_TOO_LARGE"])

/** Pure: whether a kafkajs error (or one it wraps) says the request or a record is too large. */
export const isTooLarge = (e: unknown, depth = 0): boolean => {
  if (typeof e !== "object" || e === null || depth > 4) return false
  const o = e as { type?: unknown; cause?: unknown; originalError?: unknown; errors?: unknown }
  if (typeof o.type === "string" && TOO_LARGE.has(o.type)) return true
  if (Array.isArray(o.errors) && o.errors.some((x) => isTooLarge(x, depth + 1))) return true
  return isTooLarge(o.cause, depth + 1) || isTooLarge(o.originalError, depth + 1)
}

/** Pure: the letter with its value cut to `bytes` (null at 0), and a `truncated` header with the original size. */
const truncated = (l: DeadLetter, bytes: number, original: number): DeadLetter => ({
  ...l,
  value: bytes <= 0 || l.value === null ? null : l.value.subarray(0, bytes),
  truncatedFrom: original,
})

const makeKafka = (topic: string, options: DeadLetterOptions) =>
  Effect.gen(function* () {
    const kafka = yield* KafkaClient
    const maxBatchBytes = options.maxBatchBytes ?? defaultMaxBatchBytes
    const producer: Producer = kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: true,
      createPartitioner: Partitioners.DefaultPartitioner,
    })
    yield* Effect.acquireRelease(
      Effect.tryPromise(() => producer.connect()).pipe(
        Effect.retry(backoff({ base: "200 millis", cap: "5 seconds" })),
        Effect.orDie,
      ),
      () =>
        // `interruptible`: a finalizer runs uninterruptibly, and a timeout cannot end what it cannot interrupt.
        Effect.promise(() => producer.disconnect().catch(() => undefined)).pipe(
          Effect.interruptible,
          Effect.timeout("10 seconds"),
          Effect.ignore,
        ),
    )
    const send = (letters: ReadonlyArray<DeadLetter>) =>
      Effect.tryPromise({
        try: () =>
          producer.send({
            topic,
            acks: -1,
            compression: CompressionTypes.None,
            messages: letters.map((l) => ({
              key: asBuffer(l.key),
              value: asBuffer(l.value),
              headers: headersOf(l),
            })),
          }),
        catch: (cause) => new SinkUnavailable({ detail: "the dead-letter topic refused the records", cause }),
      }).pipe(Effect.asVoid)

    /** Sends a run; a run refused as too large is split in halves, a single letter cut (see the module's doc). */
    const sendRun = (letters: ReadonlyArray<DeadLetter>): Effect.Effect<void, SinkUnavailable> =>
      send(letters).pipe(
        Effect.catchIf(
          (e) => isTooLarge(e.cause),
          (e) => {
            if (letters.length > 1) {
              const half = Math.ceil(letters.length / 2)
              return Effect.zipRight(sendRun(letters.slice(0, half)), sendRun(letters.slice(half)))
            }
            const l = letters[0]!
            const original = l.truncatedFrom ?? l.value?.length ?? 0
            const now = l.value?.length ?? 0
            if (now === 0) return Effect.fail(e) // headers and key alone are too large: the caller retries
            const cut = truncated(l, now < 1024 ? 0 : Math.floor(now / 2), original)
            return Effect.zipRight(
              Effect.logWarning("dead letter too large for Kafka; its value is cut").pipe(
                Effect.annotateLogs({ offset: l.offset, partition: l.partition, valueBytes: cut.value?.length ?? 0 }),
              ),
              sendRun([cut]).pipe(
                Effect.tap(() =>
                  l.truncatedFrom === undefined ? Effect.sync(() => options.onTruncated?.(l)) : Effect.void,
                ),
              ),
            )
          },
        ),
      )

    return {
      publish: (letters: ReadonlyArray<DeadLetter>) =>
        Effect.forEach(splitByBytes(letters, maxBatchBytes), sendRun, { discard: true }),
    }
  })
