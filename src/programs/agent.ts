#!/usr/bin/env node
/**
 * `ACCESS_KEY=… ACCESS_TOKEN=… node dist/programs/agent.js [options]`: the collector that runs on
 * every host. Reads inputs (files, docker, kubernetes, metrics, stdin) into a crash-safe disk
 * buffer and sends them to the ingester over gRPC + TLS + JWT, deleting them once acknowledged.
 */
// First: the heap settings reach V8 before the rest of the bundle is evaluated (src/shared/HeapFlags.ts).
import "../shared/HeapAtLoad.js"
import { Command, Options } from "@effect/cli"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Effect, Either, Layer, Option } from "effect"
import { CollectLive } from "../agent/CollectLive.js"
import { resolveSettings } from "../agent/Settings.js"
import { heapSettingsOf } from "../shared/HeapFlags.js"
import { boolFlag, optionalIntFlag, optionalTextFlag, PORT } from "../shared/ProgramOptions.js"
import { runnable } from "../shared/ProgramRuntime.js"
import {
  checkCertificate,
  checkCodeCache,
  checkReadable,
  checkWritableDir,
  finding,
  report,
} from "../shared/Validate.js"

const options = {
  ingester: optionalTextFlag("ingester", "SPILLWAY_INGESTER", "Ingester address host:port (default localhost:7777)"),
  caCert: optionalTextFlag("ca-cert", "SPILLWAY_CA_CERT", "PEM file of the CA that signed the ingester's certificate"),
  config: optionalTextFlag("config", "SPILLWAY_AGENT_CONFIG", "Agent config file (JSON): inputs and settings"),
  bufferDir: optionalTextFlag(
    "buffer-dir",
    "SPILLWAY_BUFFER_DIR",
    "Disk buffer folder (default ./spillway-agent-buffer)",
  ),
  bufferMaxBytes: optionalIntFlag(
    "buffer-max-bytes",
    "SPILLWAY_BUFFER_MAX_BYTES",
    "Disk buffer bound in bytes",
    "268435456 = 256 MiB",
    { min: 4096, max: 1024 ** 4 },
  ),
  metricsPort: optionalIntFlag(
    "metrics-port",
    "SPILLWAY_AGENT_METRICS_PORT",
    "Port of /healthz, /readyz and /metrics; 0 disables it",
    "9465",
    PORT,
  ),
  tail: Options.text("tail").pipe(
    Options.withDescription("Tail files matching this glob (repeatable; config file: inputs[].type=tail)"),
    Options.repeated,
  ),
  stdin: boolFlag("stdin", "SPILLWAY_STDIN", "Read events from stdin, one per line"),
  metricsInterval: optionalIntFlag(
    "metrics-interval",
    "SPILLWAY_METRICS_INTERVAL",
    "Sample cpu, memory and netif every SECONDS",
    undefined,
    { min: 1, max: 86_400 },
  ),
  tokenFile: optionalTextFlag(
    "token-file",
    "ACCESS_TOKEN_FILE",
    "File holding the JWT, re-read when it changes (else env ACCESS_TOKEN)",
  ),
  accessKey: optionalTextFlag("access-key", "ACCESS_KEY", "The tenant's access key"),
  insecure: boolFlag("insecure", "SPILLWAY_INSECURE", "Plaintext gRPC, for development only"),
  serverName: optionalTextFlag(
    "server-name",
    "SPILLWAY_SERVER_NAME",
    "TLS name expected on the ingester's certificate",
  ),
}

const agent = Command.make("agent", options, (cli) =>
  Effect.gen(function* () {
    const heap = heapSettingsOf(process.env)
    if ("error" in heap) {
      process.stderr.write(`spillway-agent: ${heap.error}\n`)
      process.exitCode = 2
      return
    }
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
      "SPILLWAY_AUTH_RETRY_MS, SPILLWAY_AGENT_ID, SPILLWAY_AGENT_METRICS_HOST, SPILLWAY_LOG_LEVEL; heap: " +
      "SPILLWAY_V8_OLD_GROWTH_PERCENT, SPILLWAY_V8_YOUNG_GROWTH, SPILLWAY_V8_YOUNG_LIMIT_MIB.",
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
    const heap = heapSettingsOf(process.env)
    yield* report("spillway-agent", [
      finding(!("error" in heap), "heap (SPILLWAY_V8_*)", "error" in heap ? heap.error : "valid"),
      finding(true, "settings", `${s.inputs.length} inputs, ingester ${s.address}`),
      ...(s.caCertPath === undefined || s.insecure
        ? []
        : [checkCertificate("--ca-cert (SPILLWAY_CA_CERT)", s.caCertPath)]),
      ...(s.token._tag === "file" ? [checkReadable("--token-file (ACCESS_TOKEN_FILE)", s.token.path)] : []),
      checkWritableDir("--buffer-dir (SPILLWAY_BUFFER_DIR)", s.bufferDir),
      finding(s.inputs.length > 0, "inputs", s.inputs.length > 0 ? s.inputs.map((i) => i.type).join(", ") : "none"),
      checkCodeCache(),
    ])
  }),
).pipe(
  Command.withDescription(
    "Check the settings and files the agent would use, without connecting anywhere; exit 1 when any is wrong",
  ),
)

const cli = Command.run(agent.pipe(Command.withSubcommands([validate])), { name: "spillway-agent", version: "0.1.0" })

runnable(cli(process.argv)).pipe(NodeRuntime.runMain({ disablePrettyLogger: true }))
