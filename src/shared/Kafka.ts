/**
 * The kafkajs client shared by the producer (KafkaSink), the consumer (EventStream) and the
 * dead-letter writer: one place for brokers, client id, retry and the log bridge into Effect's
 * logger (kafkajs logs become structured Effect logs at the same level; nothing is printed twice).
 */
import { createRequire } from "node:module"
import { Config, Context, Effect, Layer, Runtime } from "effect"
import { Kafka, type LogEntry, logLevel } from "kafkajs"
import { registerCodecs } from "./Codecs.js"
import { installIdleRequestQueueFix } from "./KafkajsIdle.js"

// kafkajs's table of protocol errors (not re-exported by its index): which broker answers it retries.
const { errorCodes } = createRequire(import.meta.url)("kafkajs/src/protocol/error.js") as {
  errorCodes: ReadonlyArray<{ readonly message: string; readonly retriable: boolean }>
}
const retriableMessages = new Set(errorCodes.filter((e) => e.retriable).map((e) => e.message))

/**
 * kafkajs warns at every start of an idempotent producer whose retries are bounded. Spillway bounds them on purpose
 * (the client's `retry` below; a send that cannot finish fails and is retried or refused by Spillway's own
 * Schedules, and delivery is at-least-once, never claimed exactly-once), so that warning is debug.
 */
const boundedIdempotentRetries = "Limiting retries for the idempotent producer may invalidate EoS guarantees"

/**
 * Pure: the level a kafkajs log entry is logged at. kafkajs says ERROR for every broker answer it is about to
 * retry (`The coordinator is loading`, `This server does not host this topic-partition`, ...) while a broker
 * warms up or a leader moves; those are debug. Something that failed (retries used up, a crash) stays an error.
 */
export const kafkaLogLevel = (level: logLevel, log: { readonly [k: string]: unknown }): logLevel => {
  if (level === logLevel.WARN && log.message === boundedIdempotentRetries) return logLevel.DEBUG
  if (level !== logLevel.ERROR) return level
  const error = typeof log.error === "string" ? log.error : undefined
  if (error !== undefined && retriableMessages.has(error)) return logLevel.DEBUG
  const message = typeof log.message === "string" ? log.message : ""
  if (retriableMessages.has(message) && "retryCount" in log) return logLevel.DEBUG
  if (message.startsWith("Failed to connect to broker, reconnecting")) return logLevel.WARN
  return level
}

/** A group coordinator as kafkajs' Broker, the little of it used here. */
interface GroupCoordinator {
  offsetCommit(args: {
    groupId: string
    memberId: string
    groupGenerationId: number
    topics: ReadonlyArray<{ topic: string; partitions: ReadonlyArray<{ partition: number; offset: string }> }>
  }): Promise<unknown>
}

/** A partition's records in a kafkajs Fetch answer, the little of them used here. */
interface FetchedRecord {
  readonly offset: string
  readonly key: Buffer | null
}

/** A broker as kafkajs' Broker, for a plain Fetch (no consumer group). */
interface FetchBroker {
  fetch(args: {
    replicaId: number
    isolationLevel: number
    maxWaitTime: number
    minBytes: number
    maxBytes: number
    topics: ReadonlyArray<{
      topic: string
      partitions: ReadonlyArray<{ partition: number; fetchOffset: string; maxBytes: number }>
    }>
  }): Promise<{
    responses: ReadonlyArray<{ partitions: ReadonlyArray<{ messages: ReadonlyArray<FetchedRecord> }> }>
  }>
}

/** kafkajs' Cluster, the little of it used here (kafkajs/src/cluster; not exported by its index). */
interface KafkajsCluster {
  connect(): Promise<void>
  disconnect(): Promise<void>
  findGroupCoordinator(args: { groupId: string }): Promise<GroupCoordinator>
  addTargetTopic(topic: string): Promise<void>
  findLeaderForPartitions(topic: string, partitions: ReadonlyArray<number>): Record<string, ReadonlyArray<number>>
  findBroker(args: { nodeId: string }): Promise<FetchBroker>
}

/**
 * Runs `f` against a short-lived kafkajs Cluster made by the client's own factory (private in kafkajs 2.2.4, which
 * package.json pins: same brokers, TLS, SASL, timeouts), disconnected afterwards.
 */
const withCluster = async <A>(kafka: Kafka, f: (cluster: KafkajsCluster) => Promise<A>): Promise<A> => {
  const factory = Object.getOwnPropertySymbols(kafka).find((s) => s.description === "private:Kafka:createCluster")
  const create = factory === undefined ? undefined : (kafka as unknown as Record<symbol, unknown>)[factory]
  if (typeof create !== "function") throw new Error("this kafkajs has no cluster factory (kafkajs 2.2.4 has)")
  const cluster = create({ allowAutoTopicCreation: false }) as KafkajsCluster
  try {
    await cluster.connect()
    return await f(cluster)
  } finally {
    await cluster.disconnect().catch(() => undefined)
  }
}

/**
 * Runs `f` against the group's coordinator as found now. kafkajs' consumer keeps the coordinator it found at its last
 * join until it joins again, which it cannot do while a batch is in eachBatch.
 */
const withGroupCoordinator = <A>(
  kafka: Kafka,
  groupId: string,
  f: (coordinator: GroupCoordinator) => Promise<A>,
): Promise<A> => withCluster(kafka, async (cluster) => f(await cluster.findGroupCoordinator({ groupId })))

export interface KeyScan {
  readonly topic: string
  readonly partition: number
  /** First offset to read. */
  readonly from: bigint
  /** Reads up to, not including, this offset (a high watermark read before). */
  readonly to: bigint
  /** Which keys to keep (the map stays bounded by what it accepts). */
  readonly keep: (key: string) => boolean
  /** Stops after reading this many bytes of fetch answers (1 MiB per fetch). */
  readonly maxBytes: number
}

/**
 * Reads `topic`/`partition` from `from` to `to` with plain Fetch requests at its leader (no consumer group, nothing
 * committed) and returns, per kept key (latin1), the offset of its last record, and whether the scan reached `to`
 * (false when `maxBytes` ran out first).
 */
export const lastOffsetsOfKeys = (
  kafka: Kafka,
  scan: KeyScan,
): Promise<{ readonly last: ReadonlyMap<string, bigint>; readonly complete: boolean }> =>
  withCluster(kafka, async (cluster) => {
    const last = new Map<string, bigint>()
    await cluster.addTargetTopic(scan.topic)
    const nodeId = Object.keys(cluster.findLeaderForPartitions(scan.topic, [scan.partition]))[0]
    if (nodeId === undefined) throw new Error("the partition has no leader")
    const broker = await cluster.findBroker({ nodeId })
    const perFetch = 1_048_576
    let offset = scan.from
    for (let read = 0; offset < scan.to; read += perFetch) {
      if (read >= scan.maxBytes) return { last, complete: false }
      const answer = await broker.fetch({
        replicaId: -1,
        isolationLevel: 1,
        maxWaitTime: 100,
        minBytes: 1,
        maxBytes: perFetch,
        topics: [
          {
            topic: scan.topic,
            partitions: [{ partition: scan.partition, fetchOffset: String(offset), maxBytes: perFetch }],
          },
        ],
      })
      const messages = answer.responses[0]?.partitions[0]?.messages ?? []
      const before = offset
      for (const m of messages) {
        const o = BigInt(m.offset)
        if (o < offset || o >= scan.to) continue
        offset = o + 1n
        const key = m.key === null ? undefined : m.key.toString("latin1")
        if (key !== undefined && scan.keep(key)) last.set(key, o)
      }
      // Nothing past `offset` in this answer (compacted away, aborted or control records): step over the gap.
      if (offset === before) offset = messages.length === 0 ? scan.to : offset + 1n
    }
    return { last, complete: true }
  })

/** One member's place in its group: what an OffsetCommit must carry. */
export interface GroupMember {
  readonly groupId: string
  readonly memberId: string
  readonly generationId: number
}

/**
 * Commits `offset` (the next one to read) of `topic`/`partition` as `member`, at the coordinator as found now. Rejects
 * with kafkajs' error (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID: the member's generation is over).
 */
export const commitAs = (
  kafka: Kafka,
  member: GroupMember,
  commit: { readonly topic: string; readonly partition: number; readonly offset: string },
): Promise<void> =>
  withGroupCoordinator(kafka, member.groupId, async (c) => {
    await c.offsetCommit({
      groupId: member.groupId,
      memberId: member.memberId,
      groupGenerationId: member.generationId,
      topics: [{ topic: commit.topic, partitions: [{ partition: commit.partition, offset: commit.offset }] }],
    })
  })

export interface KafkaSettings {
  readonly brokers: ReadonlyArray<string>
  readonly clientId: string
  /** kafkajs connection timeout in ms. */
  readonly connectionTimeoutMs: number
  /** kafkajs request timeout in ms. */
  readonly requestTimeoutMs: number
}

/** `SPILLWAY_KAFKA_BROKERS` (comma-separated, default 127.0.0.1:9092), `SPILLWAY_KAFKA_CLIENT_ID`. */
export const kafkaSettingsConfig = (defaultClientId: string): Config.Config<KafkaSettings> =>
  Config.all({
    brokers: Config.string("SPILLWAY_KAFKA_BROKERS").pipe(
      Config.withDefault("127.0.0.1:9092"),
      Config.map((s) =>
        s
          .split(",")
          .map((b) => b.trim())
          .filter((b) => b.length > 0),
      ),
      Config.validate({ message: "SPILLWAY_KAFKA_BROKERS must list host:port pairs", validation: (a) => a.length > 0 }),
    ),
    clientId: Config.string("SPILLWAY_KAFKA_CLIENT_ID").pipe(Config.withDefault(defaultClientId)),
    connectionTimeoutMs: Config.integer("SPILLWAY_KAFKA_CONNECTION_TIMEOUT_MS").pipe(Config.withDefault(3000)),
    requestTimeoutMs: Config.integer("SPILLWAY_KAFKA_REQUEST_TIMEOUT_MS").pipe(Config.withDefault(30000)),
  })

export class KafkaClient extends Context.Tag("spillway/KafkaClient")<KafkaClient, Kafka>() {
  /** A kafkajs client whose logs go through the Effect logger of the layer's runtime. */
  static readonly make = (settings: KafkaSettings): Effect.Effect<Kafka> =>
    Effect.gen(function* () {
      registerCodecs()
      installIdleRequestQueueFix()
      const runtime = yield* Effect.runtime<never>()
      const runFork = Runtime.runFork(runtime)
      const logCreator =
        () =>
        ({ namespace, level, log }: LogEntry): void => {
          const { message, timestamp: _t, logger: _l, ...rest } = log
          const annotated = (e: Effect.Effect<void>) =>
            e.pipe(Effect.annotateLogs({ component: "kafkajs", namespace, ...rest }))
          switch (kafkaLogLevel(level, log)) {
            case logLevel.ERROR:
              runFork(annotated(Effect.logError(message)))
              break
            case logLevel.WARN:
              runFork(annotated(Effect.logWarning(message)))
              break
            case logLevel.INFO:
            case logLevel.DEBUG:
              runFork(annotated(Effect.logDebug(message)))
              break
            default:
              break
          }
        }
      return new Kafka({
        clientId: settings.clientId,
        brokers: [...settings.brokers],
        connectionTimeout: settings.connectionTimeoutMs,
        requestTimeout: settings.requestTimeoutMs,
        logLevel: logLevel.WARN,
        logCreator,
        // kafkajs' own retries are short; Spillway's Schedules retry around them.
        retry: { initialRetryTime: 200, maxRetryTime: 5_000, retries: 5 },
      })
    })

  static readonly layer = (settings: KafkaSettings): Layer.Layer<KafkaClient> =>
    Layer.effect(KafkaClient, KafkaClient.make(settings))

  static readonly layerConfig = (
    defaultClientId: string,
  ): Layer.Layer<KafkaClient, import("effect").ConfigError.ConfigError> =>
    Layer.effect(KafkaClient, Effect.flatMap(kafkaSettingsConfig(defaultClientId), KafkaClient.make))
}
