#!/usr/bin/env node
/**
 * `ACCESS_KEY=… ACCESS_TOKEN=… node dist/programs/agent.js [options]`: the collector that runs on
 * every host. Reads inputs (files, docker, kubernetes, metrics, stdin) into a crash-safe disk
 * buffer and sends them to the ingester over gRPC + TLS + JWT, deleting them once acknowledged.
 */
import { Command, Options } from "@effect/cli"
import { NodeRuntime } from "@effect/platform-node"
import { Config, Effect, Either, Layer, Option } from "effect"
import { CollectLive } from "../agent/CollectLive.js"
import { resolveSettings } from "../agent/Settings.js"
import { runnable } from "../shared/ProgramRuntime.js"
import { checkCertificate, checkReadable, checkWritableDir, finding, report } from "../shared/Validate.js"

const text = (name: string, env: string, description: string) =>
  Options.text(name).pipe(
    Options.withDescription(`${description} (env ${env})`),
    Options.withFallbackConfig(Config.string(env)),
    Options.optional,
  )
const int = (name: string, env: string, description: string) =>
  Options.integer(name).pipe(
    Options.withDescription(`${description} (env ${env})`),
    Options.withFallbackConfig(Config.integer(env)),
    Options.optional,
  )
const flag = (name: string, env: string, description: string) =>
  Options.boolean(name).pipe(
    Options.withDescription(`${description} (env ${env})`),
    Options.withFallbackConfig(Config.boolean(env).pipe(Config.withDefault(false))),
  )

const options = {
  ingester: text("ingester", "SPILLWAY_INGESTER", "Ingester address host:port (default localhost:7777)"),
  caCert: text("ca-cert", "SPILLWAY_CA_CERT", "PEM file of the CA that signed the ingester's certificate"),
  config: text("config", "SPILLWAY_AGENT_CONFIG", "Agent config file (JSON): inputs and settings"),
  bufferDir: text("buffer-dir", "SPILLWAY_BUFFER_DIR", "Disk buffer folder (default ./spillway-agent-buffer)"),
  bufferMaxBytes: int("buffer-max-bytes", "SPILLWAY_BUFFER_MAX_BYTES", "Disk buffer bound in bytes (default 256 MiB)"),
  metricsPort: int(
    "metrics-port",
    "SPILLWAY_AGENT_METRICS_PORT",
    "Port of /healthz and /metrics (default 9465; 0 = off)",
  ),
  tail: Options.text("tail").pipe(
    Options.withDescription("Tail files matching this glob (repeatable; config file: inputs[].type=tail)"),
    Options.repeated,
  ),
  stdin: flag("stdin", "SPILLWAY_STDIN", "Read events from stdin, one per line"),
  metricsInterval: Options.integer("metrics-interval").pipe(
    Options.withDescription("Sample cpu, memory and netif every SECONDS (env SPILLWAY_METRICS_INTERVAL)"),
    Options.withFallbackConfig(Config.integer("SPILLWAY_METRICS_INTERVAL")),
    Options.optional,
  ),
  tokenFile: text(
    "token-file",
    "ACCESS_TOKEN_FILE",
    "File holding the JWT, re-read when it changes (else env ACCESS_TOKEN)",
  ),
  accessKey: text("access-key", "ACCESS_KEY", "The tenant's access key"),
  insecure: flag("insecure", "SPILLWAY_INSECURE", "Plaintext gRPC, for development only"),
  serverName: text("server-name", "SPILLWAY_SERVER_NAME", "TLS name expected on the ingester's certificate"),
}

const agent = Command.make("agent", options, (cli) =>
  Effect.gen(function* () {
    const settings = yield* resolveSettings(cli).pipe(
      Effect.tapError((e) =>
        Effect.sync(() => {
          process.stderr.write(`spillway-agent: ${e._tag === "ConfigFileError" ? e.message : e.detail}\n`)
          process.exitCode = 2
        }),
      ),
      Effect.option,
    )
    if (Option.isNone(settings)) return
    return yield* Layer.launch(CollectLive(settings.value)).pipe(
      Effect.catchTag("BufferLocked", (e) =>
        Effect.sync(() => {
          process.stderr.write(`spillway-agent: ${e.message}\n`)
          process.exitCode = 2
        }),
      ),
    )
  }),
).pipe(
  Command.withDescription(
    "Spillway agent: inputs -> disk buffer -> ingester (gRPC, TLS, JWT). Environment: ACCESS_KEY, ACCESS_TOKEN or " +
      "ACCESS_TOKEN_FILE, SPILLWAY_* for every option; tuning: SPILLWAY_BATCH_MAX_EVENTS, SPILLWAY_BATCH_MAX_BYTES, " +
      "SPILLWAY_BATCH_LINGER_MS, SPILLWAY_INFLIGHT, SPILLWAY_MAX_MESSAGE_BYTES, SPILLWAY_CONFIG_REFRESH_SECONDS, " +
      "SPILLWAY_ACK_TIMEOUT_SECONDS, " +
      "SPILLWAY_SHUTDOWN_GRACE_SECONDS, SPILLWAY_POLL_MS, SPILLWAY_RETRY_BASE_MS, SPILLWAY_RETRY_CAP_MS, " +
      "SPILLWAY_AUTH_RETRY_MS, SPILLWAY_AGENT_ID, SPILLWAY_AGENT_METRICS_HOST, SPILLWAY_LOG_LEVEL.",
  ),
)

/** `agent validate [options]`: the settings, files and certificate the agent would load; nothing is contacted. */
const validate = Command.make("validate", options, (cli) =>
  Effect.gen(function* () {
    const resolved = yield* Effect.either(resolveSettings(cli))
    if (Either.isLeft(resolved)) {
      const e = resolved.left
      return yield* report("spillway-agent", [
        finding(false, "settings", e._tag === "ConfigFileError" ? e.message : e.detail),
      ])
    }
    const s = resolved.right
    yield* report("spillway-agent", [
      finding(true, "settings", `${s.inputs.length} inputs, ingester ${s.address}`),
      ...(s.caCertPath === undefined || s.insecure
        ? []
        : [checkCertificate("--ca-cert (SPILLWAY_CA_CERT)", s.caCertPath)]),
      ...(s.token._tag === "file" ? [checkReadable("--token-file (ACCESS_TOKEN_FILE)", s.token.path)] : []),
      checkWritableDir("--buffer-dir (SPILLWAY_BUFFER_DIR)", s.bufferDir),
      finding(s.inputs.length > 0, "inputs", s.inputs.length > 0 ? s.inputs.map((i) => i.type).join(", ") : "none"),
    ])
  }),
).pipe(
  Command.withDescription(
    "Check the settings and files the agent would use, without connecting anywhere; exit 1 when any is wrong",
  ),
)

const cli = Command.run(agent.pipe(Command.withSubcommands([validate])), { name: "spillway-agent", version: "0.1.0" })

runnable(cli(process.argv)).pipe(NodeRuntime.runMain({ disablePrettyLogger: true }))
