#!/usr/bin/env node
/**
 * `node dist/programs/router.js consumer [...]`: consumes the Kafka topic in a consumer group and
 * delivers each tenant's events to its destinations (files, http), committing an offset only
 * after every destination of the events up to it took them. See src/route/Router.ts.
 *
 * Every flag falls back to an environment variable (named in `--help`), which falls back to the
 * JSON config file named by SPILLWAY_CONFIG. Tuning (environment / config file only):
 * SPILLWAY_ROUTER_RETRY_BASE (200 millis), SPILLWAY_ROUTER_RETRY_CAP (5 seconds),
 * SPILLWAY_ROUTER_RETRY_BUDGET (20 seconds), SPILLWAY_ROUTER_PAUSE_BASE (1 second),
 * SPILLWAY_ROUTER_PAUSE_MAX (1 minute), SPILLWAY_ROUTER_CONCURRENCY (4 partitions at once),
 * SPILLWAY_ROUTER_SESSION_TIMEOUT_MS (30000), SPILLWAY_ROUTER_MAX_BYTES_PER_PARTITION (2 MiB per fetch),
 * SPILLWAY_ROUTER_DRAIN_TIMEOUT (15 seconds: at SIGTERM, how long the batches in flight may take to finish),
 * SPILLWAY_ROUTER_ISOLATE (true: set a failing tenant's events aside in the retry topic, docs/isolation.md),
 * SPILLWAY_ROUTER_ISOLATE_AFTER (5 seconds), SPILLWAY_ROUTER_DRAIN_MAX (10 seconds).
 */
// First: the heap settings reach V8 before the rest of the bundle is evaluated (src/shared/HeapFlags.ts).
import "../shared/HeapAtLoad.js"
import { mkdirSync, readFileSync } from "node:fs"
import { Command } from "@effect/cli"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Config, Console, Duration, Effect, Either, Layer } from "effect"
import { Destinations } from "../route/Destinations.js"
import { defaultMaxBytesPerPartition, EventStream, RetryStream } from "../route/EventStream.js"
import { RetryTopic, retryGroupId, retryTopicName } from "../route/RetryTopic.js"
import { defaultRouterOptions, runRouter } from "../route/Router.js"
import { deadLettersTruncated } from "../route/RouterMetrics.js"
import { ConfigStore, parseTenantsFile } from "../shared/ConfigStore.js"
import { Crypto } from "../shared/Crypto.js"
import { DeadLetters, dlqTopic } from "../shared/DeadLetter.js"
import { Health } from "../shared/Health.js"
import { heapSettingsOf } from "../shared/HeapFlags.js"
import { KafkaClient, kafkaSettingsConfig } from "../shared/Kafka.js"
import { OpsServerLive } from "../shared/Ops.js"
import { boolFlag, durationSetting, intFlag, intSetting, PORT, textFlag } from "../shared/ProgramOptions.js"
import { runnable } from "../shared/ProgramRuntime.js"
import { checkBrokers, checkCodeCache, checkTenants, checkWritableDir, finding, report } from "../shared/Validate.js"

const printEvents = boolFlag("print-events", "SPILLWAY_PRINT_EVENTS", "Print events as received from Kafka")
const decryptEvents = boolFlag(
  "decrypt-events",
  "SPILLWAY_DECRYPT_EVENTS",
  "Decrypt events received from Kafka; events written to the targets are decrypted too",
)
const outputDir = textFlag("output-dir", "SPILLWAY_OUTPUT_DIR", "Folder the file targets are written under", ".")
const tenants = textFlag(
  "tenants",
  "SPILLWAY_TENANTS_FILE",
  "Tenants file (access key -> keys and targets); watched for changes",
  "access-tokens-db.json",
)
const brokers = textFlag(
  "brokers",
  "SPILLWAY_KAFKA_BROKERS",
  "Kafka brokers, comma-separated host:port",
  "127.0.0.1:9092",
)
const retryTopic = textFlag(
  "retry-topic",
  "SPILLWAY_ROUTER_RETRY_TOPIC",
  "Topic a failing tenant's events are set aside in (created if missing; its group is <group>-retry)",
  "<topic>-retry-<group>",
)
const topic = textFlag("topic", "SPILLWAY_KAFKA_TOPIC", "Topic to consume (dead letters go to <topic>-dlq)", "fb-kafka")
const group = textFlag("group", "SPILLWAY_ROUTER_GROUP", "Kafka consumer group the routers share", "spillway-router")
const metricsPort = intFlag(
  "metrics-port",
  "SPILLWAY_ROUTER_METRICS_PORT",
  "Port of /healthz, /readyz and /metrics; 0 disables it",
  9466,
  PORT,
)
const metricsHost = textFlag(
  "metrics-host",
  "SPILLWAY_ROUTER_METRICS_HOST",
  "Address the operations port binds (0.0.0.0 for every interface)",
  "127.0.0.1",
)

const tuning = Config.all({
  retryBase: durationSetting("SPILLWAY_ROUTER_RETRY_BASE", defaultRouterOptions.retryBase),
  retryCap: durationSetting("SPILLWAY_ROUTER_RETRY_CAP", defaultRouterOptions.retryCap),
  retryBudget: durationSetting("SPILLWAY_ROUTER_RETRY_BUDGET", defaultRouterOptions.retryBudget),
  pauseBase: durationSetting("SPILLWAY_ROUTER_PAUSE_BASE", defaultRouterOptions.pauseBase),
  pauseMax: durationSetting("SPILLWAY_ROUTER_PAUSE_MAX", defaultRouterOptions.pauseMax),
  sessionTimeoutMs: intSetting("SPILLWAY_ROUTER_SESSION_TIMEOUT_MS", 30_000, { min: 6_000, max: 300_000 }),
  maxBytesPerPartition: intSetting("SPILLWAY_ROUTER_MAX_BYTES_PER_PARTITION", defaultMaxBytesPerPartition, {
    min: 1024,
    max: 104_857_600,
  }),
  drainTimeout: durationSetting("SPILLWAY_ROUTER_DRAIN_TIMEOUT", Duration.seconds(15)),
  concurrency: intSetting("SPILLWAY_ROUTER_CONCURRENCY", defaultRouterOptions.concurrency, { min: 1, max: 64 }),
  isolate: Config.boolean("SPILLWAY_ROUTER_ISOLATE").pipe(Config.withDefault(true)),
  isolateAfter: durationSetting("SPILLWAY_ROUTER_ISOLATE_AFTER", defaultRouterOptions.isolateAfter),
  drainMax: durationSetting("SPILLWAY_ROUTER_DRAIN_MAX", defaultRouterOptions.drainMax),
})

/** The first non-empty message along an error's causes (a platform error wraps Node's, e.g. EADDRINUSE). */
const reasonOf = (error: unknown, depth = 0): string => {
  if (!(error instanceof Error)) return String(error)
  if (error.message !== "" || depth > 4 || error.cause === undefined) return error.message || error.name
  return `${error.name}: ${reasonOf(error.cause, depth + 1)}`
}

/**
 * The program failed (a consumer that crashed for good, a port it cannot bind): one ERROR line that says what, and
 * exit code 1. (Left to `runMain`, the JSON line had `"message":[]` and the reason only inside a stack trace.)
 */
const fatal = (cause: Cause.Cause<unknown>): Effect.Effect<void> => {
  if (Cause.isInterruptedOnly(cause)) return Effect.failCause(cause).pipe(Effect.orDie)
  const error = Cause.squash(cause)
  const reason = reasonOf(error)
  return Effect.logError(`the router stopped: ${reason}`).pipe(
    Effect.annotateLogs({ error: error instanceof Error ? error.name : "failure" }),
    Effect.zipRight(
      Effect.sync(() => {
        process.exitCode = 1
      }),
    ),
  )
}

const TOPIC = /^[A-Za-z0-9._-]{1,240}$/
const HOSTPORT = /^[^\s:,]+:\d{1,5}$/

/** A problem with the command line or the files it names: printed as one line, exit code 2. */
const usage = (message: string) =>
  Console.error(`spillway-router: ${message}`).pipe(
    Effect.zipRight(
      Effect.sync(() => {
        process.exitCode = 2
      }),
    ),
  )

const consumerOptions = {
  printEvents,
  decryptEvents,
  outputDir,
  tenants,
  brokers,
  topic,
  group,
  retryTopic,
  metricsPort,
  metricsHost,
}
type ConsumerOptions = Command.Command.ParseConfig<typeof consumerOptions>

/** Checks the command line and the files it names: the broker list, or undefined once a usage error was printed. */
const checkCommandLine = (opts: ConsumerOptions): Effect.Effect<ReadonlyArray<string> | undefined> =>
  Effect.gen(function* () {
    const brokerList = opts.brokers
      .split(",")
      .map((b) => b.trim())
      .filter((b) => b.length > 0)
    const badBroker = brokerList.find((b) => !HOSTPORT.test(b))
    const refuse = (message: string) => usage(message).pipe(Effect.as(undefined))
    const heap = heapSettingsOf(process.env)
    if ("error" in heap) return yield* refuse(heap.error)
    if (brokerList.length === 0 || badBroker !== undefined)
      return yield* refuse(
        `--brokers (SPILLWAY_KAFKA_BROKERS) must list host:port pairs${badBroker ? `, not ${JSON.stringify(badBroker)}` : ""}`,
      )
    if (!TOPIC.test(opts.topic))
      return yield* refuse(
        `--topic (SPILLWAY_KAFKA_TOPIC) ${JSON.stringify(opts.topic)} is not a valid Kafka topic name`,
      )
    if (opts.group.trim() === "") return yield* refuse("--group (SPILLWAY_ROUTER_GROUP) must not be empty")
    const retry = retryTopicOf(opts)
    if (!TOPIC.test(retry) || retry === opts.topic)
      return yield* refuse(
        `--retry-topic (SPILLWAY_ROUTER_RETRY_TOPIC) ${JSON.stringify(retry)} is not a usable topic name`,
      )
    if (!Number.isInteger(opts.metricsPort) || opts.metricsPort < 0 || opts.metricsPort > 65535)
      return yield* refuse(`--metrics-port (SPILLWAY_ROUTER_METRICS_PORT) must be 0 to 65535, not ${opts.metricsPort}`)
    const made = yield* Effect.try(() => mkdirSync(opts.outputDir, { recursive: true })).pipe(Effect.either)
    if (Either.isLeft(made))
      return yield* refuse(
        `--output-dir (SPILLWAY_OUTPUT_DIR) ${opts.outputDir}: cannot create it: ${errorText(made.left.error)}`,
      )
    // Refuse a bad tenants file before touching Kafka (the ConfigStore layer checks it again and watches it).
    const text = yield* Effect.try(() => readFileSync(opts.tenants, "utf8")).pipe(Effect.either)
    if (Either.isLeft(text))
      return yield* refuse(
        `--tenants (SPILLWAY_TENANTS_FILE) ${opts.tenants}: cannot read it: ${errorText(text.left.error)}`,
      )
    const parsed = parseTenantsFile(opts.tenants, text.right)
    if (Either.isLeft(parsed)) return yield* refuse(`tenants file refused: ${parsed.left.message}`)
    return brokerList
  })

const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e))

const retryTopicOf = (opts: ConsumerOptions) =>
  opts.retryTopic === "<topic>-retry-<group>" ? retryTopicName(opts.topic, opts.group) : opts.retryTopic

/** The retry topic and its consumer (docs/isolation.md), or nothing when SPILLWAY_ROUTER_ISOLATE is false. */
const isolationLayer = (opts: ConsumerOptions, tune: { readonly isolate: boolean } & RetryStreamTuning) => {
  if (!tune.isolate) return Layer.empty
  const topic = retryTopicOf(opts)
  const retry = RetryTopic.layerKafka({ sourceTopic: opts.topic, topic, groupId: retryGroupId(opts.group) })
  const stream = RetryStream.layerKafka({
    topic,
    groupId: retryGroupId(opts.group),
    partitionsConcurrently: tune.concurrency,
    sessionTimeoutMs: tune.sessionTimeoutMs,
    maxBytesPerPartition: tune.maxBytesPerPartition,
    drainTimeout: tune.drainTimeout,
  })
  return Layer.provideMerge(stream, retry)
}

interface RetryStreamTuning {
  readonly concurrency: number
  readonly sessionTimeoutMs: number
  readonly maxBytesPerPartition: number
  readonly drainTimeout: Duration.Duration
}

/** Builds the router's layers and runs it until SIGTERM (or a fatal error: exit code 1). */
const launch = (opts: ConsumerOptions, brokerList: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const tune = yield* tuning
    const settings = { ...(yield* kafkaSettingsConfig("spillway-router")), brokers: brokerList }
    const routerOptions = { ...tune, decrypt: opts.decryptEvents, printEvents: opts.printEvents }
    const services = Layer.mergeAll(
      EventStream.layerKafka({
        topic: opts.topic,
        groupId: opts.group,
        partitionsConcurrently: tune.concurrency,
        sessionTimeoutMs: tune.sessionTimeoutMs,
        maxBytesPerPartition: tune.maxBytesPerPartition,
        drainTimeout: tune.drainTimeout,
      }),
      DeadLetters.layerKafka(dlqTopic(opts.topic), { onTruncated: () => deadLettersTruncated.inc() }),
      isolationLayer(opts, tune),
      Destinations.layer(opts.outputDir),
      ConfigStore.layerFile(opts.tenants),
      Crypto.Default,
    ).pipe(Layer.provide(KafkaClient.layer(settings)))
    yield* Effect.logInfo("router starting").pipe(
      Effect.annotateLogs({
        topic: opts.topic,
        deadLetterTopic: dlqTopic(opts.topic),
        retryTopic: tune.isolate ? retryTopicOf(opts) : "off",
        group: opts.group,
        brokers: brokerList.join(","),
        outputDir: opts.outputDir,
        tenants: opts.tenants,
        metricsPort: opts.metricsPort,
        retryBudgetMs: Duration.toMillis(tune.retryBudget),
      }),
    )
    const ops = OpsServerLive({ host: opts.metricsHost, port: opts.metricsPort })
    // The operations port first: /healthz answers (and /readyz says why not ready) while Kafka cannot be reached.
    return yield* Effect.scoped(
      Effect.zipRight(Layer.build(ops), runRouter(routerOptions).pipe(Effect.provide(services))),
    ).pipe(
      Effect.provide(Health.Default),
      Effect.catchTag("ConfigFileError", (e) => usage(`tenants file refused: ${e.message}`)),
      // A consumer that crashed for good fails the program (exit code 1) so that it gets restarted.
      Effect.catchAllCause(fatal),
    )
  })

const consumer = Command.make("consumer", consumerOptions, (opts) =>
  Effect.gen(function* () {
    const brokerList = yield* checkCommandLine(opts)
    if (brokerList !== undefined) yield* launch(opts, brokerList)
  }),
).pipe(
  Command.withDescription(
    "Consume the topic and route each tenant's events to its targets. Heap (environment only, README): " +
      "SPILLWAY_V8_OLD_GROWTH_PERCENT, SPILLWAY_V8_YOUNG_GROWTH, SPILLWAY_V8_YOUNG_LIMIT_MIB.",
  ),
)

/** `validate`: every setting and file `consumer` would load, checked without connecting anywhere. */
const validate = Command.make("validate", consumerOptions, (opts) =>
  Effect.gen(function* () {
    const tune = yield* Effect.either(tuning)
    const heap = heapSettingsOf(process.env)
    const ports = Number.isInteger(opts.metricsPort) && opts.metricsPort >= 0 && opts.metricsPort <= 65535
    yield* report("spillway-router", [
      checkBrokers("--brokers (SPILLWAY_KAFKA_BROKERS)", opts.brokers),
      finding(
        TOPIC.test(opts.topic),
        `--topic (SPILLWAY_KAFKA_TOPIC) ${opts.topic}`,
        TOPIC.test(opts.topic) ? "a valid topic name" : "not a valid Kafka topic name",
      ),
      finding(
        opts.group.trim() !== "",
        "--group (SPILLWAY_ROUTER_GROUP)",
        opts.group.trim() !== "" ? opts.group : "must not be empty",
      ),
      finding(
        ports,
        "--metrics-port (SPILLWAY_ROUTER_METRICS_PORT)",
        ports ? String(opts.metricsPort) : "must be 0 to 65535",
      ),
      checkTenants("--tenants (SPILLWAY_TENANTS_FILE)", opts.tenants),
      checkWritableDir("--output-dir (SPILLWAY_OUTPUT_DIR)", opts.outputDir),
      Either.match(tune, {
        onLeft: (e) => finding(false, "tuning (SPILLWAY_ROUTER_*)", String(e)),
        onRight: () => finding(true, "tuning (SPILLWAY_ROUTER_*)", "valid"),
      }),
      finding(!("error" in heap), "heap (SPILLWAY_V8_*)", "error" in heap ? heap.error : "valid"),
      checkCodeCache(),
    ])
  }),
).pipe(
  Command.withDescription(
    "Check the settings and files `consumer` would use, without connecting anywhere; exit 1 when any is wrong",
  ),
)

const router = Command.make("router").pipe(
  Command.withDescription("Spillway router: Kafka -> each tenant's destinations"),
  Command.withSubcommands([consumer, validate]),
)

const cli = Command.run(router, { name: "spillway-router", version: "0.1.0" })

runnable(cli(process.argv)).pipe(NodeRuntime.runMain({ disablePrettyLogger: true }))
