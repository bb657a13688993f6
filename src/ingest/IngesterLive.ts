/**
 * The ingester as one layer, from its options: checks what the options say (TLS or --insecure, timeouts, codec,
 * brokers, readable files), then composes the secret, tenants and budget, the Kafka producer, the gRPC server and
 * receivers, and the operations port. `node dist/programs/ingester.js api` launches it.
 */
import { accessSync, constants } from "node:fs"
import { Effect, Layer, Option } from "effect"
import { compressionNames } from "../shared/Codecs.js"
import { ConfigStore } from "../shared/ConfigStore.js"
import { Health } from "../shared/Health.js"
import { KafkaClient, kafkaSettingsConfig } from "../shared/Kafka.js"
import { OpsServerLive } from "../shared/Ops.js"
import { Auth } from "./Auth.js"
import { Budget } from "./Budget.js"
import { type ApiOptions, tuningConfig } from "./IngesterFlags.js"
import { IngesterServer, IngesterStartError } from "./IngesterServer.js"
import { checkTimeouts, KafkaSink } from "./KafkaSink.js"
import { anyReceiver, receiversOptionsOf } from "./receivers/ReceiverFlags.js"

/** What the options say, checked: the TLS files, the brokers, the codec, the Kafka client's settings. */
const checkOptions = (opts: ApiOptions) =>
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
    return { tuning, settings: { ...settings, brokers }, compression, tls }
  })

/** The ingester's layer: the options checked (IngesterStartError naming the flag), then composed. */
export const ingesterLayer = (opts: ApiOptions) => Effect.map(checkOptions(opts), (checked) => compose(opts, checked))

const compose = (opts: ApiOptions, checked: Effect.Effect.Success<ReturnType<typeof checkOptions>>) => {
  const { tuning, settings, compression, tls } = checked
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
  }).pipe(Layer.provide(KafkaClient.layer(settings)))

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
  // The OTLP and Forward receivers (off unless a port is given) share the auth, tenants and Kafka producer. Their
  // code (protobuf schemas, msgpack) is loaded only when one is on: it is a chunk of its own in the bundle.
  const Receivers = anyReceiver(opts)
    ? Layer.unwrapEffect(
        Effect.map(
          Effect.promise(() => import("./receivers/ReceiversLive.js")),
          (m) => m.receiversLayer(receiversOptionsOf(opts, opts.host, tls)),
        ),
      )
    : Layer.empty
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
}
