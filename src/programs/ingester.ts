#!/usr/bin/env node
/**
 * `node dist/programs/ingester.js`: the Spillway ingester.
 *
 *   api            authenticated gRPC (TLS, JWT) in, Kafka out; acknowledges only what Kafka acknowledged
 *   access-token   prints a signed access token for an access key (same secret as the server)
 *   certs          makes a development CA, server and client certificate into a folder (openssl)
 *
 * Every option of `api` can also come from the environment (named in --help) or from the JSON file
 * named by SPILLWAY_CONFIG (keys are the environment names). Tuning without flags: `tuningConfig` below
 * (each variable with its default is listed in the README section "The ingester").
 */
import { accessSync, constants } from "node:fs"
import { Command, Options } from "@effect/cli"
import { NodeRuntime } from "@effect/platform-node"
import { Config, ConfigError, Console, Effect, Either, Layer, Option, Schema } from "effect"
import { AccessKey } from "../domain/Event.js"
import { Auth } from "../ingest/Auth.js"
import { Budget } from "../ingest/Budget.js"
import { forwardPassword } from "../ingest/forward/ForwardPassword.js"
import { IngesterServer, IngesterStartError } from "../ingest/IngesterServer.js"
import { checkTimeouts, KafkaSink } from "../ingest/KafkaSink.js"
import { anyReceiver, receiverFlags, receiversOptionsOf } from "../ingest/receivers/ReceiverFlags.js"
import { receiversLayer } from "../ingest/receivers/ReceiversLive.js"
import { validateIngester } from "../ingest/ValidateIngester.js"
import { compressionNames } from "../shared/Codecs.js"
import { ConfigStore } from "../shared/ConfigStore.js"
import { makeDevCerts } from "../shared/DevCerts.js"
import { Health } from "../shared/Health.js"
import { KafkaClient, kafkaSettingsConfig } from "../shared/Kafka.js"
import { OpsServerLive } from "../shared/Ops.js"
import { runnable } from "../shared/ProgramRuntime.js"
import { report } from "../shared/Validate.js"

// ---------------------------------------------------------------------------------------------
// Options of `api`

const text = (name: string, env: string, description: string, fallback?: string) =>
  Options.text(name).pipe(
    Options.withDescription(`${description} (env ${env}${fallback === undefined ? "" : `, default ${fallback}`})`),
    Options.withFallbackConfig(
      fallback === undefined ? Config.string(env) : Config.string(env).pipe(Config.withDefault(fallback)),
    ),
  )

const optionalText = (name: string, env: string, description: string) =>
  Options.text(name).pipe(
    Options.withDescription(`${description} (env ${env})`),
    Options.withFallbackConfig(Config.string(env)),
    Options.optional,
  )

const integer = (name: string, env: string, description: string, fallback: number) =>
  Options.integer(name).pipe(
    Options.withDescription(`${description} (env ${env}, default ${fallback})`),
    Options.withFallbackConfig(Config.integer(env).pipe(Config.withDefault(fallback))),
  )

const flag = (name: string, env: string, description: string) =>
  Options.boolean(name).pipe(
    Options.withDescription(`${description} (env ${env})`),
    Options.withFallbackConfig(Config.boolean(env).pipe(Config.withDefault(false))),
  )

const apiOptions = {
  printEvents: flag(
    "print-events",
    "SPILLWAY_PRINT_EVENTS",
    "Print each accepted event on stdout (never keys or tokens)",
  ),
  host: text("host", "SPILLWAY_INGESTER_HOST", "Address the gRPC server listens on", "0.0.0.0"),
  port: integer("port", "SPILLWAY_INGESTER_PORT", "gRPC port (0 picks a free one)", 7777),
  tlsCert: optionalText("tls-cert", "SPILLWAY_TLS_CERT", "Server certificate chain (PEM) for TLS"),
  tlsKey: optionalText("tls-key", "SPILLWAY_TLS_KEY", "Private key (PEM) of the server certificate"),
  tlsClientCa: optionalText(
    "tls-client-ca",
    "SPILLWAY_TLS_CLIENT_CA",
    "CA (PEM) that signs client certificates; when given, clients must present one (mutual TLS)",
  ),
  insecure: flag(
    "insecure",
    "SPILLWAY_INSECURE",
    "Serve plaintext gRPC without TLS (development only; logs a warning)",
  ),
  tenants: text(
    "tenants",
    "SPILLWAY_TENANTS_FILE",
    "Tenants file (JSON map of access key to {AccessKey, EncryptionKey, UserID, targets}); reloaded on change",
    "access-tokens-db.json",
  ),
  brokers: text(
    "brokers",
    "SPILLWAY_KAFKA_BROKERS",
    "Kafka bootstrap brokers, comma-separated host:port",
    "127.0.0.1:9092",
  ),
  topic: text("topic", "SPILLWAY_KAFKA_TOPIC", "Kafka topic the events are produced to", "fb-kafka"),
  metricsHost: text(
    "metrics-host",
    "SPILLWAY_INGESTER_METRICS_HOST",
    "Address of the operations port (/healthz, /readyz, /metrics); loopback unless you expose it on purpose",
    "127.0.0.1",
  ),
  metricsPort: integer("metrics-port", "SPILLWAY_INGESTER_METRICS_PORT", "Operations port; 0 disables it", 9464),
  compression: text(
    "compression",
    "SPILLWAY_INGESTER_COMPRESSION",
    `Kafka record-batch compression: ${compressionNames.join(", ")}`,
    "snappy",
  ),
  maxStreams: integer(
    "max-streams",
    "SPILLWAY_INGESTER_MAX_STREAMS",
    "Event streams open at once in the process; more get RESOURCE_EXHAUSTED",
    1024,
  ),
  maxStreamsPerTenant: integer(
    "max-streams-per-tenant",
    "SPILLWAY_INGESTER_MAX_STREAMS_PER_TENANT",
    "Event streams open at once per access key; more get RESOURCE_EXHAUSTED",
    64,
  ),
  ...receiverFlags,
}

const tuningConfig = Config.all({
  maxMessageBytes: Config.integer("SPILLWAY_INGESTER_MAX_MESSAGE_BYTES").pipe(Config.withDefault(8 * 1024 * 1024)),
  maxEventBytes: Config.integer("SPILLWAY_INGESTER_MAX_EVENT_BYTES").pipe(Config.withDefault(1_000_000)),
  streamBudgetBytes: Config.integer("SPILLWAY_INGESTER_STREAM_BUDGET_BYTES").pipe(Config.withDefault(16 * 1024 * 1024)),
  processBudgetBytes: Config.integer("SPILLWAY_INGESTER_PROCESS_BUDGET_BYTES").pipe(
    Config.withDefault(256 * 1024 * 1024),
  ),
  budgetWaitMs: Config.integer("SPILLWAY_INGESTER_BUDGET_WAIT_MS").pipe(Config.withDefault(5_000)),
  produceTimeoutMs: Config.integer("SPILLWAY_KAFKA_PRODUCE_TIMEOUT_MS").pipe(Config.withDefault(15_000)),
  // Kafka's produce timeout: how long the leader waits for the in-sync replicas before the send fails (UNAVAILABLE).
  ackTimeoutMs: Config.integer("SPILLWAY_KAFKA_ACK_TIMEOUT_MS").pipe(
    Config.withDefault(5_000),
    Config.validate({
      message: "SPILLWAY_KAFKA_ACK_TIMEOUT_MS must be 1000 to 60000",
      validation: (n) => n >= 1_000 && n <= 60_000,
    }),
  ),
  // The ingester's own default for kafkajs's request timeout: shorter than the produce timeout (checkTimeouts).
  requestTimeoutMs: Config.integer("SPILLWAY_KAFKA_REQUEST_TIMEOUT_MS").pipe(Config.withDefault(10_000)),
  idleTimeoutMs: Config.integer("SPILLWAY_INGESTER_IDLE_TIMEOUT_MS").pipe(Config.withDefault(120_000)),
  shutdownTimeoutMs: Config.integer("SPILLWAY_INGESTER_SHUTDOWN_TIMEOUT_MS").pipe(Config.withDefault(20_000)),
})

/** Startup problems are printed as one line on stderr with exit code 1, never as a stack trace. */
const failCleanly = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  self.pipe(
    Effect.catchAll((e) =>
      Effect.sync(() => {
        const message = ConfigError.isConfigError(e)
          ? String(e)
          : e instanceof Error
            ? e.message
            : typeof e === "object" && e !== null && "detail" in e
              ? String(e.detail)
              : String(e)
        process.stderr.write(`spillway-ingester: ${message}\n`)
        process.exitCode = 1
      }),
    ),
  )

type ApiOptions = Command.Command.ParseConfig<typeof apiOptions>

const apiLayer = (opts: ApiOptions) =>
  Effect.gen(function* () {
    const cert = opts.tlsCert
    const key = opts.tlsKey
    if (!opts.insecure && (Option.isNone(cert) || Option.isNone(key)))
      return yield* new IngesterStartError({
        detail:
          "TLS is required: give --tls-cert and --tls-key (SPILLWAY_TLS_CERT / SPILLWAY_TLS_KEY); make development ones with `ingester certs --dir DIR`; or pass --insecure to serve plaintext (development only)",
      })
    if (opts.insecure && (Option.isSome(cert) || Option.isSome(key)))
      return yield* new IngesterStartError({ detail: "--insecure and --tls-cert/--tls-key exclude each other" })
    const tuning = yield* tuningConfig
    const settings = { ...(yield* kafkaSettingsConfig("spillway-ingester")), requestTimeoutMs: tuning.requestTimeoutMs }
    const timeouts = checkTimeouts(tuning.produceTimeoutMs, tuning.requestTimeoutMs)
    if (timeouts !== undefined)
      return yield* new IngesterStartError({
        detail: `${timeouts}: raise SPILLWAY_KAFKA_PRODUCE_TIMEOUT_MS or lower SPILLWAY_KAFKA_REQUEST_TIMEOUT_MS`,
      })
    const compression = compressionNames.find((n) => n === opts.compression)
    if (compression === undefined)
      return yield* new IngesterStartError({ detail: `--compression must be one of ${compressionNames.join(", ")}` })
    if (opts.maxStreams < 1 || opts.maxStreamsPerTenant < 1)
      return yield* new IngesterStartError({ detail: "--max-streams and --max-streams-per-tenant must be at least 1" })
    const brokers = opts.brokers
      .split(",")
      .map((b) => b.trim())
      .filter((b) => b.length > 0)
    if (brokers.length === 0) return yield* new IngesterStartError({ detail: "--brokers lists no broker" })

    for (const file of [cert, key, opts.tlsClientCa])
      if (Option.isSome(file))
        yield* Effect.try({
          try: () => accessSync(file.value, constants.R_OK),
          catch: () => new IngesterStartError({ detail: `cannot read the TLS file ${file.value}` }),
        })
    const tls =
      Option.isSome(cert) && Option.isSome(key)
        ? { certFile: cert.value, keyFile: key.value, clientCaFile: Option.getOrUndefined(opts.tlsClientCa) }
        : undefined

    // Ready only once the gRPC server listens (and Kafka and the tenants are there).
    const Readiness = Layer.effectDiscard(
      Effect.gen(function* () {
        yield* IngesterServer
        const health = yield* Health
        const sink = yield* KafkaSink
        const store = yield* ConfigStore
        yield* health.register("kafka", sink.ready)
        yield* health.register("tenants", Effect.as(store.current, true))
      }),
    )

    const Sink = KafkaSink.layerKafka({
      topic: opts.topic,
      produceTimeout: `${tuning.produceTimeoutMs} millis`,
      ackTimeout: `${tuning.ackTimeoutMs} millis`,
      compression,
    }).pipe(Layer.provide(KafkaClient.layer({ ...settings, brokers })))

    const Server = IngesterServer.layer({
      host: opts.host,
      port: opts.port,
      tls,
      maxMessageBytes: tuning.maxMessageBytes,
      maxEventBytes: tuning.maxEventBytes,
      printEvents: opts.printEvents,
      shutdownTimeout: `${tuning.shutdownTimeoutMs} millis`,
      maxStreams: opts.maxStreams,
      maxStreamsPerTenant: opts.maxStreamsPerTenant,
      idleTimeout: `${tuning.idleTimeoutMs} millis`,
    })

    // Built in this order: secret, tenants and budget (fail fast), then Kafka, then the servers.
    // The operations port opens once the gRPC server listens, so /readyz never answers 200 before it does.
    // The OTLP and Forward receivers (off unless a port is given) share the auth, tenants and Kafka producer.
    const Receivers = anyReceiver(opts) ? receiversLayer(receiversOptionsOf(opts, opts.host, tls)) : Layer.empty
    return OpsServerLive({ host: opts.metricsHost, port: opts.metricsPort }).pipe(
      Layer.provideMerge(Readiness.pipe(Layer.provideMerge(Layer.merge(Server, Receivers)))),
      Layer.provide(Sink),
      Layer.provide(
        Layer.mergeAll(
          Auth.Default,
          ConfigStore.layerFile(opts.tenants),
          Budget.layer({
            processBytes: tuning.processBudgetBytes,
            streamBytes: tuning.streamBudgetBytes,
            wait: `${tuning.budgetWaitMs} millis`,
          }),
          Health.Default,
        ),
      ),
    )
  })

const api = Command.make("api", apiOptions, (opts) =>
  Effect.gen(function* () {
    const layer = yield* apiLayer(opts)
    yield* Effect.logInfo("ingester starting").pipe(
      Effect.annotateLogs({ topic: opts.topic, brokers: opts.brokers, tenants: opts.tenants }),
    )
    yield* Layer.launch(layer)
  }).pipe(failCleanly),
).pipe(
  Command.withDescription(
    "Serve api.EventService over gRPC/TLS with JWT auth and produce the events to Kafka, acknowledging only what Kafka acknowledged. Needs SPILLWAY_JWT_SECRET or SPILLWAY_JWT_SECRET_FILE.",
  ),
)

// ---------------------------------------------------------------------------------------------
// access-token

const accessToken = Command.make(
  "access-token",
  {
    accessKey: Options.text("access-key").pipe(Options.withDescription("The access key the token is bound to (sub)")),
    expiry: Options.integer("expiry").pipe(
      Options.withDescription("Seconds until the token expires (default 600)"),
      Options.withDefault(600),
    ),
    role: Options.text("role").pipe(Options.withDescription("Role claim (default empty)"), Options.withDefault("")),
  },
  (opts) =>
    Effect.gen(function* () {
      const key = Schema.decodeUnknownEither(AccessKey)(opts.accessKey)
      if (Either.isLeft(key))
        return yield* new IngesterStartError({
          detail: "--access-key is not a valid access key (letters, digits, '.', '_', ':' or '-')",
        })
      if (opts.expiry <= 0)
        return yield* new IngesterStartError({ detail: "--expiry must be a positive number of seconds" })
      if (opts.role.length > 64)
        return yield* new IngesterStartError({ detail: "--role must be at most 64 characters" })
      const auth = yield* Auth
      if (opts.expiry > auth.maxLifetimeSeconds)
        return yield* new IngesterStartError({
          detail: `--expiry is longer than the maximum token lifetime (${auth.maxLifetimeSeconds} s, SPILLWAY_JWT_MAX_LIFETIME_SECONDS)`,
        })
      const token = yield* auth.sign(key.right, { expirySeconds: opts.expiry, role: opts.role })
      yield* Console.log(token)
    }).pipe(Effect.provide(Auth.Default), failCleanly),
).pipe(
  Command.withDescription(
    "Print a signed access token for an access key, with the server's secret (SPILLWAY_JWT_SECRET or SPILLWAY_JWT_SECRET_FILE)",
  ),
)

// ---------------------------------------------------------------------------------------------
// certs

const certs = Command.make(
  "certs",
  {
    dir: Options.text("dir").pipe(
      Options.withDescription("Folder to write ca.crt/key, server.crt/key, client.crt/key into"),
    ),
    hosts: Options.text("host").pipe(
      Options.withDescription(
        "DNS name or IP the server certificate is valid for; repeat it (default localhost, 127.0.0.1, ::1)",
      ),
      Options.repeated,
    ),
    force: Options.boolean("force").pipe(Options.withDescription("Re-create the files even if they exist")),
  },
  (opts) =>
    Effect.gen(function* () {
      const paths = yield* makeDevCerts(opts.dir, {
        ...(opts.hosts.length > 0 ? { hosts: opts.hosts } : {}),
        force: opts.force,
      })
      yield* Console.log(JSON.stringify(paths, null, 2))
    }).pipe(failCleanly),
).pipe(
  Command.withDescription(
    "Make a development CA, a server certificate and a client certificate with openssl (development and tests only)",
  ),
)

const validate = Command.make("validate", apiOptions, (opts) =>
  Effect.gen(function* () {
    const tuning = yield* Effect.either(tuningConfig)
    const timeouts = Either.match(tuning, {
      onLeft: (e) => String(e),
      onRight: (t) => checkTimeouts(t.produceTimeoutMs, t.requestTimeoutMs),
    })
    yield* report("spillway-ingester", yield* validateIngester({ ...opts, timeouts }))
  }),
).pipe(
  Command.withDescription(
    "Check the settings, files and certificates `api` would use, without listening or connecting",
  ),
)

const forwardPasswordCommand = Command.make(
  "forward-password",
  {
    accessKey: Options.text("access-key").pipe(
      Options.withDescription("The tenant's access key (the Forward username)"),
    ),
  },
  (opts) =>
    Effect.gen(function* () {
      const key = Schema.decodeUnknownEither(AccessKey)(opts.accessKey)
      if (Either.isLeft(key)) return yield* new IngesterStartError({ detail: "--access-key is not a valid access key" })
      yield* Console.log(yield* forwardPassword(yield* Auth, key.right))
    }).pipe(Effect.provide(Auth.Default), failCleanly),
).pipe(
  Command.withDescription(
    "Print the Fluent Forward password of an access key (derived from the server's secret; not a bearer token)",
  ),
)

const ingester = Command.make("ingester").pipe(
  Command.withDescription(
    "Spillway ingester: authenticated gRPC over TLS -> Kafka, acknowledged once Kafka has the events",
  ),
  Command.withSubcommands([api, validate, accessToken, forwardPasswordCommand, certs]),
)

const cli = Command.run(ingester, { name: "spillway-ingester", version: "0.1.0" })

runnable(cli(process.argv)).pipe(NodeRuntime.runMain({ disablePrettyLogger: true }))
