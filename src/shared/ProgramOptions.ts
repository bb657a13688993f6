/**
 * The one configuration layer of the three programs. Every setting is read from, in this order:
 *
 *   1. its command-line flag (when it has one),
 *   2. its environment variable,
 *   3. the JSON file named by `SPILLWAY_CONFIG` (keys are the environment names; ProgramRuntime.ts),
 *   4. for the agent only, its own config file (`--config`; inputs and the settings listed in the README),
 *   5. its default.
 *
 * Steps 2 and 3 are the program's ConfigProvider (`configProviderFromEnvAndFile`), so a flag's fallback and a
 * setting without a flag read both the same way. A value out of its range is refused with the flag and variable
 * named, the program does not start (exit code 1 or 2), and the value itself is not echoed past its number.
 *
 * Each `--help` line ends with `(env NAME, default VALUE[, MIN to MAX])`, written here once.
 */
import { Options } from "@effect/cli"
import { Config, Duration, Option } from "effect"

/** An inclusive range of integers. */
export interface Range {
  readonly min: number
  readonly max: number
}

const rangeText = (r: Range | undefined) => (r === undefined ? "" : `, ${r.min} to ${r.max}`)

const describe = (description: string, env: string, fallback: string | undefined, range?: Range) =>
  `${description} (env ${env}${fallback === undefined ? "" : `, default ${fallback}`}${rangeText(range)})`

const inRange = (n: number, r: Range) => Number.isInteger(n) && n >= r.min && n <= r.max

const rangeMessage = (name: string, env: string, r: Range) =>
  `--${name} (${env}) must be an integer ${r.min} to ${r.max}`

/** Refuses an integer outside `range`, whichever of flag, environment or file gave it. */
const checked = (opt: Options.Options<number>, name: string, env: string, range: Range | undefined) =>
  range === undefined
    ? opt
    : Options.filterMap(
        opt,
        (n) => (inRange(n, range) ? Option.some(n) : Option.none()),
        rangeMessage(name, env, range),
      )

/** A text setting with a default. */
export const textFlag = (name: string, env: string, description: string, fallback: string) =>
  Options.text(name).pipe(
    Options.withDescription(describe(description, env, fallback)),
    Options.withFallbackConfig(Config.string(env).pipe(Config.withDefault(fallback))),
  )

/** A text setting without a default: `Option.none()` when nothing gives it. */
export const optionalTextFlag = (name: string, env: string, description: string) =>
  Options.text(name).pipe(
    Options.withDescription(describe(description, env, undefined)),
    Options.withFallbackConfig(Config.string(env)),
    Options.optional,
  )

/** An integer setting with a default and, usually, a range. */
export const intFlag = (name: string, env: string, description: string, fallback: number, range?: Range) =>
  checked(
    Options.integer(name).pipe(
      Options.withDescription(describe(description, env, String(fallback), range)),
      Options.withFallbackConfig(Config.integer(env).pipe(Config.withDefault(fallback))),
    ),
    name,
    env,
    range,
  )

/**
 * An integer setting whose default is applied later (the agent's: after its config file); `defaultText` is what
 * `--help` says the default is.
 */
export const optionalIntFlag = (name: string, env: string, description: string, defaultText?: string, range?: Range) =>
  Options.integer(name).pipe(
    Options.withDescription(describe(description, env, defaultText, range)),
    Options.withFallbackConfig(Config.integer(env)),
    Options.optional,
    (opt) =>
      range === undefined
        ? opt
        : Options.filterMap(
            opt,
            (o) => (Option.isNone(o) || inRange(o.value, range) ? Option.some(o) : Option.none()),
            rangeMessage(name, env, range),
          ),
  )

/** An on/off setting, off unless the flag or `env` (true/false, yes/no, 1/0) turns it on. */
export const boolFlag = (name: string, env: string, description: string) =>
  Options.boolean(name).pipe(
    Options.withDescription(`${description} (env ${env})`),
    Options.withFallbackConfig(Config.boolean(env).pipe(Config.withDefault(false))),
  )

/** A setting without a flag: an integer in `range`, else `fallback`. */
export const intSetting = (env: string, fallback: number, range: Range): Config.Config<number> =>
  rangedInt(env, range).pipe(Config.withDefault(fallback))

/** `env` as an integer in `range`, refused with the variable named. */
const rangedInt = (env: string, range: Range) =>
  Config.integer(env).pipe(
    Config.validate({
      message: `${env} must be an integer ${range.min} to ${range.max}`,
      validation: (n) => inRange(n, range),
    }),
  )

/** A setting without a flag whose default is applied later (see `optionalIntFlag`). */
export const optionalIntSetting = (env: string, range: Range): Config.Config<Option.Option<number>> =>
  Config.option(rangedInt(env, range))

/** A setting without a flag: a number (seconds, say) in `range`, its default applied later. */
export const optionalNumberSetting = (env: string, range: Range): Config.Config<Option.Option<number>> =>
  Config.option(
    Config.number(env).pipe(
      Config.validate({
        message: `${env} must be a number from ${range.min} to ${range.max}`,
        validation: (n) => n >= range.min && n <= range.max,
      }),
    ),
  )

/** A duration setting without a flag (`"250 millis"`, `"5 seconds"`), else `fallback`. */
export const durationSetting = (env: string, fallback: Duration.DurationInput): Config.Config<Duration.Duration> =>
  Config.duration(env).pipe(Config.withDefault(Duration.decode(fallback)))

/** Milliseconds from 1 ms to a day. */
export const MILLIS: Range = { min: 1, max: 86_400_000 }
/** A TCP port; 0 lets the system pick one or, for the operations ports, turns them off. */
export const PORT: Range = { min: 0, max: 65_535 }
/** Byte sizes from 1 KiB to 1 GiB. */
export const BYTES: Range = { min: 1024, max: 1024 * 1024 * 1024 }
