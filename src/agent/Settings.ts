/**
 * The agent's settings, read through the programs' one configuration layer (src/shared/ProgramOptions.ts): flags
 * win, then the environment (and SPILLWAY_CONFIG), then the agent's `--config` JSON file (decoded with Schema;
 * errors name the file and the field), then the defaults. Tuning knobs without a flag come from SPILLWAY_*
 * variables. Each number has one range (`ranges`), the same in the file and the environment.
 */
import { readFileSync } from "node:fs"
import { hostname } from "node:os"
import { join } from "node:path"
import { Config, Duration, Effect, Option, ParseResult, Schema } from "effect"
import { ConfigFileError } from "../domain/Errors.js"
import { optionalIntSetting, optionalNumberSetting, PORT, type Range } from "../shared/ProgramOptions.js"
import type { TokenSource } from "./sender/Connection.js"

const opt = <S extends Schema.Schema.All>(s: S) => Schema.optionalWith(s, { exact: true })
const Port = Schema.Int.pipe(Schema.between(PORT.min, PORT.max))

/** The range of every numeric setting, in the config file and in its environment variable alike. */
export const ranges = {
  bufferMaxBytes: { min: 4096, max: 1024 ** 4 },
  maxEvents: { min: 1, max: 10_000 },
  maxBytes: { min: 1024, max: 64 * 1024 * 1024 },
  lingerMs: { min: 0, max: 60_000 },
  inflight: { min: 1, max: 64 },
  maxMessageBytes: { min: 1024, max: 64 * 1024 * 1024 },
  configRefreshSeconds: { min: 0.001, max: 86_400 },
  ackTimeoutSeconds: { min: 0.001, max: 3_600 },
  shutdownGraceSeconds: { min: 0, max: 3_600 },
  pollMs: { min: 1, max: 60_000 },
  retryMs: { min: 1, max: 3_600_000 },
  authMs: { min: 0, max: 86_400_000 },
} as const satisfies Record<string, Range>
const int = (r: Range) => Schema.Int.pipe(Schema.between(r.min, r.max))
const num = (r: Range) => Schema.Number.pipe(Schema.between(r.min, r.max))
const Str = Schema.String.pipe(Schema.minLength(1))

export const TailInputConfig = Schema.Struct({
  type: Schema.Literal("tail"),
  paths: Schema.NonEmptyArray(Str),
  tag: opt(Str),
})
export const DockerInputConfig = Schema.Struct({ type: Schema.Literal("docker"), path: opt(Str) })
export const KubernetesInputConfig = Schema.Struct({ type: Schema.Literal("kubernetes"), path: opt(Str) })
export const MetricsInputConfig = Schema.Struct({
  type: Schema.Literal("metrics"),
  /** Seconds. */
  interval: opt(Schema.Number.pipe(Schema.positive())),
  interfaces: opt(Schema.Array(Str)),
})
export const StdinInputConfig = Schema.Struct({ type: Schema.Literal("stdin"), tag: opt(Str) })
export const InputConfig = Schema.Union(
  TailInputConfig,
  DockerInputConfig,
  KubernetesInputConfig,
  MetricsInputConfig,
  StdinInputConfig,
)
export type InputConfig = typeof InputConfig.Type

/** The `--config` file. */
export const AgentFile = Schema.Struct({
  ingester: opt(Str),
  caCert: opt(Str),
  insecure: opt(Schema.Boolean),
  serverName: opt(Str),
  accessKey: opt(Str),
  tokenFile: opt(Str),
  agentId: opt(Str),
  bufferDir: opt(Str),
  bufferMaxBytes: opt(int(ranges.bufferMaxBytes)),
  metricsPort: opt(Port),
  metricsHost: opt(Str),
  batch: opt(
    Schema.Struct({
      maxEvents: opt(int(ranges.maxEvents)),
      maxBytes: opt(int(ranges.maxBytes)),
      lingerMs: opt(int(ranges.lingerMs)),
    }),
  ),
  inflight: opt(int(ranges.inflight)),
  maxMessageBytes: opt(int(ranges.maxMessageBytes)),
  configRefreshSeconds: opt(num(ranges.configRefreshSeconds)),
  ackTimeoutSeconds: opt(num(ranges.ackTimeoutSeconds)),
  shutdownGraceSeconds: opt(num(ranges.shutdownGraceSeconds)),
  pollMs: opt(int(ranges.pollMs)),
  retry: opt(
    Schema.Struct({
      baseMs: opt(int(ranges.retryMs)),
      capMs: opt(int(ranges.retryMs)),
      authMs: opt(int(ranges.authMs)),
    }),
  ),
  inputs: opt(Schema.Array(InputConfig)),
})
export type AgentFile = typeof AgentFile.Type

/** `inputs[0].paths: is missing; batch.maxEvents: Expected a positive number, actual -1` */
export const formatIssues = (e: ParseResult.ParseError): string =>
  ParseResult.ArrayFormatter.formatErrorSync(e)
    .map((i) => {
      const field = i.path
        .map((p, n) => (typeof p === "number" ? `[${p}]` : n === 0 ? String(p) : `.${String(p)}`))
        .join("")
      return `${field === "" ? "(top level)" : field}: ${i.message}`
    })
    .join("; ")

/** Decodes a config file's text; the error names the file and the field. */
export const decodeAgentFile = (path: string, text: string): Effect.Effect<AgentFile, ConfigFileError> =>
  Effect.gen(function* () {
    const json = yield* Effect.try({
      try: () => JSON.parse(text) as unknown,
      catch: (e) =>
        new ConfigFileError({ path, detail: `not valid JSON: ${e instanceof Error ? e.message : String(e)}` }),
    })
    return yield* Schema.decodeUnknown(AgentFile, { errors: "all", onExcessProperty: "error" })(json).pipe(
      Effect.mapError((e) => new ConfigFileError({ path, detail: formatIssues(e) })),
    )
  })

export const loadAgentFile = (path: string): Effect.Effect<AgentFile, ConfigFileError> =>
  Effect.try({
    try: () => readFileSync(path, "utf8"),
    catch: (e) => new ConfigFileError({ path, detail: `cannot read: ${e instanceof Error ? e.message : String(e)}` }),
  }).pipe(Effect.flatMap((text) => decodeAgentFile(path, text)))

/** What the command line gives (flags, each with its environment fallback). */
export interface CliValues {
  readonly ingester: Option.Option<string>
  readonly caCert: Option.Option<string>
  readonly config: Option.Option<string>
  readonly bufferDir: Option.Option<string>
  readonly bufferMaxBytes: Option.Option<number>
  readonly metricsPort: Option.Option<number>
  readonly tail: ReadonlyArray<string>
  readonly stdin: boolean
  readonly metricsInterval: Option.Option<number>
  readonly tokenFile: Option.Option<string>
  readonly accessKey: Option.Option<string>
  readonly insecure: boolean
  readonly serverName: Option.Option<string>
}

export interface ResolvedInput {
  readonly type: InputConfig["type"]
  readonly config: InputConfig
}

export interface AgentSettings {
  readonly address: string
  readonly caCertPath: string | undefined
  readonly insecure: boolean
  readonly serverName: string | undefined
  readonly accessKey: string
  readonly token: TokenSource
  readonly agentId: string
  readonly bufferDir: string
  readonly bufferMaxBytes: number
  readonly metricsPort: number
  readonly metricsHost: string
  readonly batch: { readonly maxEvents: number; readonly maxBytes: number; readonly lingerMs: number }
  readonly inflight: number
  /** The ingester's message limit: a buffered event that cannot fit is moved to rejected/. */
  readonly maxMessageBytes: number
  readonly configRefresh: Duration.Duration
  readonly ackTimeout: Duration.Duration
  readonly shutdownGrace: Duration.Duration
  readonly pollMs: number
  readonly retryBase: Duration.Duration
  readonly retryCap: Duration.Duration
  readonly authRetry: Duration.Duration
  readonly inputs: ReadonlyArray<InputConfig>
}

export class SettingsError extends Schema.TaggedError<SettingsError>()("SettingsError", { detail: Schema.String }) {}

const envStr = (name: string) => Config.option(Config.string(name))

const pick = <A>(...xs: ReadonlyArray<Option.Option<A> | A | undefined>): A | undefined => {
  for (const x of xs) {
    if (x === undefined) continue
    if (Option.isOption(x)) {
      if (Option.isSome(x)) return x.value as A
      continue
    }
    return x as A
  }
  return undefined
}

/** The SPILLWAY_* tuning variables and ACCESS_TOKEN. */
const envSettings = Config.all({
  accessToken: Config.option(Config.redacted("ACCESS_TOKEN")),
  agentId: envStr("SPILLWAY_AGENT_ID"),
  metricsHost: envStr("SPILLWAY_AGENT_METRICS_HOST"),
  maxEvents: optionalIntSetting("SPILLWAY_BATCH_MAX_EVENTS", ranges.maxEvents),
  maxBytes: optionalIntSetting("SPILLWAY_BATCH_MAX_BYTES", ranges.maxBytes),
  lingerMs: optionalIntSetting("SPILLWAY_BATCH_LINGER_MS", ranges.lingerMs),
  inflight: optionalIntSetting("SPILLWAY_INFLIGHT", ranges.inflight),
  maxMessageBytes: optionalIntSetting("SPILLWAY_MAX_MESSAGE_BYTES", ranges.maxMessageBytes),
  configRefresh: optionalNumberSetting("SPILLWAY_CONFIG_REFRESH_SECONDS", ranges.configRefreshSeconds),
  ackTimeout: optionalNumberSetting("SPILLWAY_ACK_TIMEOUT_SECONDS", ranges.ackTimeoutSeconds),
  grace: optionalNumberSetting("SPILLWAY_SHUTDOWN_GRACE_SECONDS", ranges.shutdownGraceSeconds),
  pollMs: optionalIntSetting("SPILLWAY_POLL_MS", ranges.pollMs),
  retryBase: optionalIntSetting("SPILLWAY_RETRY_BASE_MS", ranges.retryMs),
  retryCap: optionalIntSetting("SPILLWAY_RETRY_CAP_MS", ranges.retryMs),
  authRetry: optionalIntSetting("SPILLWAY_AUTH_RETRY_MS", ranges.authMs),
})
type EnvSettings = Config.Config.Success<typeof envSettings>

/** The token file (flag or config file) wins over ACCESS_TOKEN; one of them is required. */
const tokenOf = (cli: CliValues, file: AgentFile, env: EnvSettings): Effect.Effect<TokenSource, SettingsError> => {
  const tokenFile = pick(cli.tokenFile, file.tokenFile)
  if (tokenFile !== undefined) return Effect.succeed({ _tag: "file", path: tokenFile })
  if (Option.isSome(env.accessToken)) return Effect.succeed({ _tag: "value", token: env.accessToken.value })
  return new SettingsError({
    detail: "a token is required: ACCESS_TOKEN, or ACCESS_TOKEN_FILE / --token-file (re-read when it changes)",
  })
}

/** The config file's inputs plus those of the flags (--tail, --stdin, --metrics-interval); at least one. */
const inputsOf = (cli: CliValues, file: AgentFile): Effect.Effect<Array<InputConfig>, SettingsError> => {
  const inputs: Array<InputConfig> = [...(file.inputs ?? [])]
  if (cli.tail.length > 0) inputs.push({ type: "tail", paths: [cli.tail[0]!, ...cli.tail.slice(1)] })
  if (cli.stdin && !inputs.some((i) => i.type === "stdin")) inputs.push({ type: "stdin" })
  if (Option.isSome(cli.metricsInterval)) {
    const i = inputs.findIndex((x) => x.type === "metrics")
    const m = {
      ...(i >= 0 ? (inputs[i] as typeof MetricsInputConfig.Type) : {}),
      type: "metrics" as const,
      interval: cli.metricsInterval.value,
    }
    if (i >= 0) inputs[i] = m
    else inputs.push(m)
  }
  if (inputs.length === 0)
    return new SettingsError({
      detail: "no inputs: give --tail GLOB, --stdin, --metrics-interval SECONDS or inputs in the --config file",
    })
  return Effect.succeed(inputs)
}

/** Merges flags (with their env fallbacks), SPILLWAY_* tuning variables, the config file and defaults. */
export const resolveSettings = (cli: CliValues) =>
  Effect.gen(function* () {
    const file: AgentFile = Option.isSome(cli.config) ? yield* loadAgentFile(cli.config.value) : {}
    const env = yield* envSettings.pipe(Effect.mapError((e) => new SettingsError({ detail: String(e) })))
    const accessKey = pick(cli.accessKey, file.accessKey)
    if (accessKey === undefined)
      return yield* new SettingsError({
        detail: "ACCESS_KEY is required (environment, --access-key or the config file)",
      })
    const token = yield* tokenOf(cli, file, env)
    const insecure = cli.insecure || file.insecure === true
    const inputs = yield* inputsOf(cli, file)
    const caCertPath = pick(cli.caCert, file.caCert)
    if (caCertPath !== undefined && !insecure)
      yield* Effect.try({
        try: () => readFileSync(caCertPath),
        catch: (e) => new SettingsError({ detail: `cannot read the CA certificate ${caCertPath}: ${String(e)}` }),
      })

    const settings: AgentSettings = {
      address: pick(cli.ingester, file.ingester) ?? "localhost:7777",
      caCertPath,
      insecure,
      serverName: pick(cli.serverName, file.serverName),
      accessKey,
      token,
      agentId: pick(env.agentId, file.agentId) ?? hostname(),
      bufferDir: pick(cli.bufferDir, file.bufferDir) ?? join(process.cwd(), "spillway-agent-buffer"),
      bufferMaxBytes: pick(cli.bufferMaxBytes, file.bufferMaxBytes) ?? 256 * 1024 * 1024,
      metricsPort: pick(cli.metricsPort, file.metricsPort) ?? 9465,
      metricsHost: pick(env.metricsHost, file.metricsHost) ?? "127.0.0.1",
      batch: {
        maxEvents: pick(env.maxEvents, file.batch?.maxEvents) ?? 500,
        maxBytes: pick(env.maxBytes, file.batch?.maxBytes) ?? 1024 * 1024,
        lingerMs: pick(env.lingerMs, file.batch?.lingerMs) ?? 50,
      },
      inflight: pick(env.inflight, file.inflight) ?? 4,
      maxMessageBytes: pick(env.maxMessageBytes, file.maxMessageBytes) ?? 8 * 1024 * 1024,
      configRefresh: Duration.seconds(pick(env.configRefresh, file.configRefreshSeconds) ?? 60),
      ackTimeout: Duration.seconds(pick(env.ackTimeout, file.ackTimeoutSeconds) ?? 30),
      shutdownGrace: Duration.seconds(pick(env.grace, file.shutdownGraceSeconds) ?? 5),
      pollMs: pick(env.pollMs, file.pollMs) ?? 100,
      retryBase: Duration.millis(pick(env.retryBase, file.retry?.baseMs) ?? 200),
      retryCap: Duration.millis(pick(env.retryCap, file.retry?.capMs) ?? 30_000),
      authRetry: Duration.millis(pick(env.authRetry, file.retry?.authMs) ?? 15_000),
      inputs,
    }
    return settings
  })

/** For logs: the settings without secrets. */
export const describeSettings = (s: AgentSettings) => ({
  ingester: s.address,
  tls: !s.insecure,
  caCert: s.caCertPath,
  agentId: s.agentId,
  token: s.token._tag === "file" ? `file ${s.token.path}` : "ACCESS_TOKEN",
  bufferDir: s.bufferDir,
  bufferMaxBytes: s.bufferMaxBytes,
  batch: s.batch,
  inflight: s.inflight,
  maxMessageBytes: s.maxMessageBytes,
  inputs: s.inputs.map((i) => i.type),
})
