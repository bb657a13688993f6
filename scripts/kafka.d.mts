/** Types for scripts/kafka.mjs (plain JavaScript, imported by the vitest global setup and test helpers). */

export declare const KAFKA_VERSION: string
export declare const LOG4J_VERSION: string
export declare const CACHE_DIR: string
export declare const LIBS_DIR: string
export declare const KAFKA_HOST: string
export declare const KAFKA_PORT: number
export declare const KAFKA_CONTROLLER_PORT: number
export declare const BROKERS: ReadonlyArray<string>

export type Owner = "manual" | "auto"

export interface KafkaOptions {
  /** State dir (config, pid, log, data); default .cache/kafka. */
  readonly home?: string
  /** KRaft log dir; default $SPILLWAY_KAFKA_DIR or <home>/data. */
  readonly dataDir?: string
  readonly port?: number
  readonly controllerPort?: number
  /** The port the broker advertises to clients (default `port`), e.g. a test's TCP proxy in front of it. */
  readonly advertisedPort?: number
  /** num.partitions for auto-created topics; default $SPILLWAY_KAFKA_PARTITIONS or 3. */
  readonly partitions?: number
  /** JVM max heap, e.g. "768m". */
  readonly heap?: string
  /** Cluster nodes (see clusterNodes): node id, static voters `1@host:port,…`, shared cluster id, replication. */
  readonly nodeId?: number
  readonly voters?: string
  readonly clusterId?: string
  readonly replication?: number
  readonly minInsync?: number
  readonly log?: (message: string) => void
}

export interface Instance {
  readonly home: string
  readonly dataDir: string
  readonly host: string
  readonly port: number
  readonly controllerPort: number
  readonly advertisedPort: number
  readonly brokers: ReadonlyArray<string>
  readonly partitions: number
  readonly heap: string
  readonly pidFile: string
  readonly ownerFile: string
  readonly logFile: string
  readonly propsFile: string
  readonly log4jFile: string
  readonly leasesDir: string
  readonly lockDir: string
}

export interface Status {
  readonly state: "running" | "starting" | "stopped"
  readonly pid?: number
  readonly port: number
}

export declare function resolveInstance(opts?: KafkaOptions): Instance
export declare function isBrokerProcess(pid: number, inst?: Instance): boolean
export declare function portOpen(host: string, port: number, timeoutMs?: number): Promise<boolean>
export declare function status(opts?: KafkaOptions): Promise<Status>
export declare function readOwner(opts?: KafkaOptions): Owner | undefined
export declare function setOwner(owner: Owner, opts?: KafkaOptions): void
export declare function tail(opts?: KafkaOptions, lines?: number): string
export declare function jarsReady(): boolean
/** Resolves to the seconds the download took (0 when the jars were there). */
export declare function ensureJars(opts?: { readonly log?: (message: string) => void }): Promise<number>
export declare function randomClusterId(): string

/** Idempotent; resolves once a kafkajs admin can create and see a topic. */
export declare function start(
  opts?: KafkaOptions & { readonly owner?: Owner; readonly timeoutMs?: number },
): Promise<{ readonly started: boolean; readonly pid: number; readonly seconds: number }>
/** SIGTERM (or `signal`), SIGKILL after `timeoutMs` (30 s). No-op when not running. */
export declare function stop(
  opts?: KafkaOptions & {
    readonly signal?: NodeJS.Signals
    readonly timeoutMs?: number
    readonly forget?: boolean
  },
): Promise<{ readonly stopped: boolean; readonly pid?: number; readonly seconds: number }>
export declare function restart(
  opts?: KafkaOptions & { readonly timeoutMs?: number; readonly signal?: NodeJS.Signals },
): Promise<{ readonly started: boolean; readonly pid: number; readonly seconds: number }>

export declare function acquireLease(opts?: KafkaOptions): string
export declare function releaseLease(id: string, opts?: KafkaOptions): number

export interface ClusterOptions {
  /** First client port (default $SPILLWAY_KAFKA_CLUSTER_PORT or 29092); node N uses base+2(N-1) and +1. */
  readonly basePort?: number
  /** Default .cache/kafka-cluster. */
  readonly home?: string
  readonly heap?: string
  readonly log?: (message: string) => void
}
export type ClusterNode = KafkaOptions & { readonly nodeId: number; readonly port: number }
export declare function clusterNodes(opts?: ClusterOptions): ReadonlyArray<ClusterNode>
export declare function clusterBrokers(opts?: ClusterOptions): ReadonlyArray<string>
export declare function startCluster(
  opts?: ClusterOptions & { readonly owner?: Owner },
): Promise<{ readonly brokers: ReadonlyArray<string>; readonly pids: ReadonlyArray<number>; readonly seconds: number }>
export declare function stopCluster(opts?: ClusterOptions & { readonly signal?: NodeJS.Signals }): Promise<void>
export declare function clusterStatus(
  opts?: ClusterOptions,
): Promise<ReadonlyArray<Status & { readonly nodeId: number }>>
