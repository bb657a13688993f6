/**
 * What every program shares around its command line: where configuration comes from (flags,
 * then environment, then an optional JSON config file, then defaults), JSON logs with a
 * configurable level, and the platform services the CLI needs.
 *
 * The config file is named by `SPILLWAY_CONFIG`; it is a flat JSON object whose keys are the
 * environment variable names (`{"SPILLWAY_INGESTER_PORT": 7777}`). The environment wins over it.
 */
import { readFileSync } from "node:fs"
import { ValidationError } from "@effect/cli"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { Cause, Config, ConfigProvider, Effect, Either, Layer, Logger, LogLevel, Option } from "effect"
import { parseJsonQuietly } from "./Json.js"

/** Reads `SPILLWAY_CONFIG` once at start; a bad file stops the program with a message naming it. */
export const configProviderFromEnvAndFile = (env: NodeJS.ProcessEnv = process.env): ConfigProvider.ConfigProvider => {
  const fromEnv = ConfigProvider.fromEnv()
  const file = env.SPILLWAY_CONFIG
  if (file === undefined || file === "") return fromEnv
  let text: string
  try {
    text = readFileSync(file, "utf8")
  } catch (e) {
    const code = e instanceof Error && "code" in e ? ` (${String(e.code)})` : ""
    throw new Error(`SPILLWAY_CONFIG=${file}: cannot be read${code}`)
  }
  const parsed = parseJsonQuietly(text)
  if (Either.isLeft(parsed)) throw new Error(`SPILLWAY_CONFIG=${file}: ${parsed.left}`)
  const json = parsed.right
  if (json === null || typeof json !== "object" || Array.isArray(json))
    throw new Error(`SPILLWAY_CONFIG=${file}: must be a JSON object of SPILLWAY_* names to values`)
  const flat: Record<string, string> = {}
  for (const [k, v] of Object.entries(json)) {
    if (!/^SPILLWAY_[A-Z0-9_]+$/.test(k) && !["ACCESS_KEY", "ACCESS_TOKEN", "ACCESS_TOKEN_FILE"].includes(k))
      throw new Error(`SPILLWAY_CONFIG=${file}: unknown key ${JSON.stringify(k)} (keys are environment variable names)`)
    if (typeof v === "string" || typeof v === "number" || typeof v === "boolean") flat[k] = String(v)
    else if (Array.isArray(v)) flat[k] = v.map(String).join(",")
    else throw new Error(`SPILLWAY_CONFIG=${file}: ${k} must be a string, number, boolean or array`)
  }
  return fromEnv.pipe(ConfigProvider.orElse(() => ConfigProvider.fromMap(new Map(Object.entries(flat)))))
}

const LOG_LEVELS: Record<string, LogLevel.LogLevel> = {
  all: LogLevel.All,
  trace: LogLevel.Trace,
  debug: LogLevel.Debug,
  info: LogLevel.Info,
  warn: LogLevel.Warning,
  warning: LogLevel.Warning,
  error: LogLevel.Error,
  fatal: LogLevel.Fatal,
  none: LogLevel.None,
  off: LogLevel.None,
}

/** `SPILLWAY_LOG_LEVEL` (trace, debug, info, warning, error, fatal, none; any case; default info). */
export const logLevelConfig: Config.Config<LogLevel.LogLevel> = Config.string("SPILLWAY_LOG_LEVEL").pipe(
  Config.validate({
    message: `must be one of ${Object.keys(LOG_LEVELS).join(", ")}`,
    validation: (s) => LOG_LEVELS[s.toLowerCase()] !== undefined,
  }),
  Config.withDefault("info"),
  Config.map((s) => LOG_LEVELS[s.toLowerCase()] ?? LogLevel.Info),
)

/** `SPILLWAY_LOG_FORMAT`: `json` (default) or `logfmt`. */
export const logFormatConfig = Config.literal("json", "logfmt")("SPILLWAY_LOG_FORMAT").pipe(Config.withDefault("json"))

/** JSON (or logfmt) logs at the configured level. Checked by `runnable` before the program starts. */
export const LoggingLive: Layer.Layer<never> = Layer.unwrapEffect(
  Effect.gen(function* () {
    const level = yield* logLevelConfig
    const format = yield* logFormatConfig
    return Layer.merge(format === "json" ? Logger.json : Logger.logFmt, Logger.minimumLogLevel(level))
  }).pipe(Effect.orDie),
)

/** Everything a program's CLI effect needs around it. */
export const programLayer = (provider: ConfigProvider.ConfigProvider) =>
  Layer.mergeAll(LoggingLive, NodeContext.layer).pipe(Layer.provideMerge(Layer.setConfigProvider(provider)))

/**
 * Wraps a program's CLI effect: provides config, logging and the platform, and turns a command
 * line error (already printed by the CLI with the usage) into exit code 2 without a stack.
 */
export const runnable = <E>(cli: Effect.Effect<void, E, NodeContext.NodeContext>): Effect.Effect<void, E> =>
  Effect.suspend(() => {
    let provider: ConfigProvider.ConfigProvider
    try {
      provider = configProviderFromEnvAndFile()
    } catch (e) {
      return Effect.sync(() => {
        process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`)
        process.exitCode = 2
      })
    }
    const logging = Effect.runSyncExit(
      Config.all([logLevelConfig, logFormatConfig]).pipe(Effect.withConfigProvider(provider)),
    )
    if (logging._tag === "Failure")
      return Effect.sync(() => {
        const detail = Cause.failureOption(logging.cause).pipe(
          Option.map(String),
          Option.getOrElse(() => "invalid"),
        )
        process.stderr.write(`${detail}\n`)
        process.exitCode = 2
      })
    return cli.pipe(
      Effect.catchIf(
        (e): e is E & ValidationError.ValidationError => ValidationError.isValidationError(e),
        () =>
          Effect.sync(() => {
            process.exitCode = 2
          }),
      ),
      Effect.mapError((e) => e as E),
      Effect.provide(programLayer(provider)),
    )
  })
