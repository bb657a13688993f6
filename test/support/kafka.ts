/**
 * Helpers for integration tests (`*.it.test.ts`) against the local broker that test/support/globalSetup.ts starts.
 * Integration files run one at a time (see vitest.config.ts), so a test may stop and restart the broker.
 */
import { randomBytes } from "node:crypto"
import { rmSync } from "node:fs"
import { join } from "node:path"
import { type IHeaders, type ITopicConfig, Kafka, type KafkaConfig, logLevel } from "kafkajs"
import * as broker from "../../scripts/kafka.mjs"
import { registerCodecs } from "../../src/shared/Codecs.js"

// Test consumers read what the programs write: snappy (the ingester's default), lz4, zstd as well as gzip.
registerCodecs()

export const brokers: ReadonlyArray<string> = broker.BROKERS

/** Quiet kafkajs client for the local broker; `overrides` go into the KafkaConfig. */
export const makeKafka = (clientId = "spillway-test", overrides: Partial<KafkaConfig> = {}): Kafka =>
  new Kafka({ clientId, brokers: [...brokers], logLevel: logLevel.NOTHING, ...overrides })

/** A topic name nobody else uses: `<prefix>-<time>-<random>` (letters, digits, '-' only). */
export const uniqueTopic = (prefix = "test"): string =>
  `${prefix}-${Date.now().toString(36)}-${randomBytes(4).toString("hex")}`

/** Creates the topic (RF 1) on the local broker and waits for its partition leaders (`createSettledTopics`). */
export const createTopic = (name: string, partitions = 1): Promise<void> =>
  createSettledTopics(brokers, [{ topic: name, numPartitions: partitions, replicationFactor: 1 }])

/**
 * Creates topics on `clusterBrokers` and waits until every partition has a leader and all its replicas in sync. kafkajs'
 * `waitForLeaders` asks one broker for metadata right after the controller took the topic, and gives up when that
 * broker does not know the topic yet ("This server does not host this topic-partition"); this polls any broker
 * instead, tolerating that answer, for up to `timeoutMs`.
 */
export async function createSettledTopics(
  clusterBrokers: ReadonlyArray<string>,
  topics: ReadonlyArray<ITopicConfig>,
  timeoutMs = 60_000,
): Promise<void> {
  const admin = makeKafka("spillway-test-admin", { brokers: [...clusterBrokers] }).admin()
  await admin.connect()
  try {
    await admin.createTopics({ topics: [...topics], waitForLeaders: false })
    const names = topics.map((t) => t.topic)
    const deadline = Date.now() + timeoutMs
    let last = "no metadata yet"
    for (;;) {
      try {
        const md = await admin.fetchTopicMetadata({ topics: names })
        const unsettled = md.topics.flatMap((t) =>
          t.partitions
            .filter((p) => p.leader < 0 || p.isr.length < p.replicas.length)
            .map((p) => `${t.name}[${p.partitionId}] leader ${p.leader}, isr ${p.isr.length}/${p.replicas.length}`),
        )
        if (md.topics.length === names.length && unsettled.length === 0) return
        last = unsettled.join("; ") || "a topic missing from the metadata"
      } catch (e) {
        last = e instanceof Error ? e.message : String(e)
      }
      if (Date.now() > deadline)
        throw new Error(`topics ${names.join(", ")} not settled after ${timeoutMs} ms: ${last}`)
      await new Promise((r) => setTimeout(r, 200))
    }
  } finally {
    await admin.disconnect()
  }
}

export interface ConsumedRecord {
  readonly topic: string
  readonly partition: number
  readonly offset: string
  readonly timestamp: string
  readonly key: Buffer | null
  readonly value: Buffer | null
  /** kafkajs gives a Buffer, or an array of them for a repeated header key. */
  readonly headers: IHeaders
}

/**
 * Reads `topic` from the beginning with a fresh consumer group until `n` records arrived or `timeoutMs` passed,
 * then disconnects. Returns what it got (possibly fewer than `n`: assert on the length), in arrival order.
 */
export async function consumeAll(
  topic: string,
  n: number,
  timeoutMs = 30_000,
  groupId = `${topic}-reader-${randomBytes(3).toString("hex")}`,
): Promise<ReadonlyArray<ConsumedRecord>> {
  const consumer = makeKafka("spillway-test-consumer").consumer({ groupId, maxWaitTimeInMs: 250 })
  const records: Array<ConsumedRecord> = []
  await consumer.connect()
  try {
    await consumer.subscribe({ topic, fromBeginning: true })
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(resolve, timeoutMs)
      const finish = () => {
        clearTimeout(timer)
        resolve()
      }
      consumer
        .run({
          eachMessage: async ({ topic: t, partition, message }) => {
            records.push({
              topic: t,
              partition,
              offset: message.offset,
              timestamp: message.timestamp,
              key: message.key,
              value: message.value,
              headers: message.headers ?? {},
            })
            if (records.length >= n) finish()
          },
        })
        .catch((e: unknown) => {
          clearTimeout(timer)
          reject(e)
        })
      if (n <= 0) finish()
    })
  } finally {
    await consumer.disconnect()
  }
  return records
}

/** Header value as text (first value of a repeated key), or undefined. */
export const headerText = (headers: IHeaders, name: string): string | undefined => {
  const v = headers[name]
  const first = Array.isArray(v) ? v[0] : v
  return first === undefined ? undefined : first.toString()
}

/** Stops the broker (SIGTERM = clean shutdown; "SIGKILL" = crash). Same data dir on the next start. */
export const stopBroker = async (signal: NodeJS.Signals = "SIGTERM"): Promise<void> => {
  await broker.stop({ signal, log: () => undefined })
}

/** Starts the broker again (no-op if running); resolves once it accepts topic creation. */
export const startBroker = async (): Promise<void> => {
  await broker.start({ log: () => undefined })
}

export const brokerStatus = (): Promise<broker.Status> => broker.status()

export interface PrivateBroker {
  readonly brokers: ReadonlyArray<string>
  /** Starts (or restarts) it; resolves once it accepts topic creation. Same data across restarts. */
  readonly start: () => Promise<void>
  /** SIGTERM = clean shutdown, SIGKILL = crash. */
  readonly stop: (signal?: NodeJS.Signals) => Promise<void>
  /** Stops it and deletes its data. */
  readonly destroy: () => Promise<void>
  /** Sends `signal` to the running broker process (SIGSTOP freezes it: connections stay open, nothing is answered). */
  readonly signal: (signal: NodeJS.Signals) => Promise<void>
}

/**
 * A second, private broker for fault tests that stop Kafka, so the shared broker (and whatever else uses it) keeps
 * running. `slot` (1..20) picks its ports (19092+2·slot, 19093+2·slot) and its folder under .cache/kafka-private.
 * With `advertisedPort` (a TCP proxy in front of it, test/support/tcpProxy.ts) clients reach it only through that port.
 */
export const privateBroker = (slot: number, { advertisedPort }: { advertisedPort?: number } = {}): PrivateBroker => {
  const port = 19090 + 2 * slot
  const opts = {
    home: join(broker.CACHE_DIR, "..", "kafka-private", `slot-${slot}`),
    port,
    controllerPort: port + 1,
    ...(advertisedPort === undefined ? {} : { advertisedPort }),
    partitions: 3,
    heap: "512m",
    log: () => undefined,
  }
  return {
    brokers: [`127.0.0.1:${advertisedPort ?? port}`],
    start: async () => {
      await broker.start({ ...opts, owner: "auto" })
    },
    stop: async (signal = "SIGTERM") => {
      await broker.stop({ ...opts, signal })
    },
    destroy: async () => {
      await broker.stop({ ...opts, forget: true })
      rmSync(opts.home, { recursive: true, force: true })
    },
    signal: async (signal) => {
      const { pid } = await broker.status(opts)
      if (pid === undefined) throw new Error(`private broker ${slot} is not running`)
      process.kill(pid, signal)
    },
  }
}

export interface LocalCluster {
  readonly brokers: ReadonlyArray<string>
  readonly nodes: ReadonlyArray<broker.ClusterNode>
  /** Starts every node that is not running; resolves when all are ready. */
  readonly start: () => Promise<void>
  /** Stops node `nodeId` (SIGKILL = crash). */
  readonly stopNode: (nodeId: number, signal?: NodeJS.Signals) => Promise<void>
  /** Starts node `nodeId` again (same data); resolves when it is ready. */
  readonly startNode: (nodeId: number) => Promise<void>
  /** The node id leading `topic`'s partition `partition` (asks the cluster). */
  readonly leaderOf: (topic: string, partition?: number) => Promise<number>
  /** Stops every node. */
  readonly stop: () => Promise<void>
}

/** The three-node local cluster of scripts/kafka.mjs (RF 3, min.insync.replicas 2), for fault tests. */
export const localCluster = (): LocalCluster => {
  const nodes = broker.clusterNodes({ log: () => undefined })
  const node = (id: number) => {
    const n = nodes.find((x) => x.nodeId === id)
    if (n === undefined) throw new Error(`no cluster node ${id}`)
    return n
  }
  const brokers = broker.clusterBrokers()
  return {
    brokers,
    nodes,
    start: async () => {
      await broker.startCluster({ owner: "auto", log: () => undefined })
    },
    stopNode: async (id, signal = "SIGTERM") => {
      await broker.stop({ ...node(id), signal })
    },
    startNode: async (id) => {
      await broker.start({ ...node(id), owner: "auto" })
    },
    leaderOf: async (topic, partition = 0) => {
      const admin = makeKafka("spillway-test-cluster", { brokers: [...brokers] }).admin()
      await admin.connect()
      try {
        const md = await admin.fetchTopicMetadata({ topics: [topic] })
        const leader = md.topics[0]?.partitions.find((p) => p.partitionId === partition)?.leader
        if (leader === undefined || leader < 0) throw new Error(`${topic}[${partition}] has no leader`)
        return leader
      } finally {
        await admin.disconnect()
      }
    },
    stop: async () => {
      await broker.stopCluster({ log: () => undefined })
    },
  }
}
