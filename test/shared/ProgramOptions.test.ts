/**
 * The one configuration layer of the three programs (src/shared/ProgramOptions.ts): a flag wins over its
 * environment variable, which wins over the SPILLWAY_CONFIG file, which wins over the default; a value out of its
 * range is refused with the flag and the variable named, wherever it came from.
 */
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Command } from "@effect/cli"
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Layer, Option } from "effect"
import {
  intFlag,
  intSetting,
  optionalIntFlag,
  optionalIntSetting,
  optionalNumberSetting,
  PORT,
  textFlag,
} from "../../src/shared/ProgramOptions.js"
import { configProviderFromEnvAndFile } from "../../src/shared/ProgramRuntime.js"

const configFile = (json: Record<string, unknown>) => {
  const file = join(mkdtempSync(join(tmpdir(), "spillway-options-")), "config.json")
  writeFileSync(file, JSON.stringify(json))
  return file
}

const options = {
  port: intFlag("port", "SPILLWAY_T_PORT", "A port", 7, PORT),
  name: textFlag("name", "SPILLWAY_T_NAME", "A name", "fallback"),
  optional: optionalIntFlag("optional", "SPILLWAY_T_OPTIONAL", "Maybe", undefined, { min: 1, max: 10 }),
}
type Parsed = Command.Command.ParseConfig<typeof options>

/** Parses `args` with the programs' provider over `env` (the environment, then the SPILLWAY_CONFIG it names). */
const parse = (args: ReadonlyArray<string>, env: Record<string, string>) =>
  Effect.gen(function* () {
    let got: Parsed | undefined
    const cmd = Command.make("t", options, (o) =>
      Effect.sync(() => {
        got = o
      }),
    )
    const result = yield* Command.run(cmd, { name: "t", version: "0" })(["node", "t", ...args]).pipe(Effect.either)
    return { got, result }
  }).pipe(
    Effect.provide(Layer.merge(NodeContext.layer, Layer.setConfigProvider(configProviderFromEnvAndFile(env)))),
    withEnv(env),
  )

/** `ConfigProvider.fromEnv` reads process.env: the test sets its variables around the effect only. */
const withEnv =
  (env: Record<string, string>) =>
  <A, E, R>(self: Effect.Effect<A, E, R>) =>
    Effect.acquireUseRelease(
      Effect.sync(() => {
        for (const [k, v] of Object.entries(env)) process.env[k] = v
      }),
      () => self,
      () =>
        Effect.sync(() => {
          for (const k of Object.keys(env)) delete process.env[k]
        }),
    )

describe("ProgramOptions: flag, then environment, then SPILLWAY_CONFIG, then default", () => {
  it.effect("each source in its place", () =>
    Effect.gen(function* () {
      const file = configFile({ SPILLWAY_T_PORT: 8, SPILLWAY_T_NAME: "from-file" })
      const all = yield* parse(["--port", "5"], { SPILLWAY_T_PORT: "6", SPILLWAY_CONFIG: file })
      expect(all.got?.port).toBe(5)
      const env = yield* parse([], { SPILLWAY_T_PORT: "6", SPILLWAY_CONFIG: file })
      expect(env.got?.port).toBe(6)
      expect(env.got?.name).toBe("from-file")
      const fromFile = yield* parse([], { SPILLWAY_CONFIG: file })
      expect(fromFile.got?.port).toBe(8)
      const none = yield* parse([], {})
      expect(none.got?.port).toBe(7)
      expect(none.got?.name).toBe("fallback")
      expect(none.got?.optional).toEqual(Option.none())
    }),
  )

  it.effect("a value out of range is refused whichever source gave it, naming the flag and the variable", () =>
    Effect.gen(function* () {
      const fromFlag = yield* parse(["--port", "70000"], {})
      expect(fromFlag.got).toBeUndefined()
      expect(Either.isLeft(fromFlag.result)).toBe(true)
      const fromEnv = yield* parse([], { SPILLWAY_T_PORT: "70000" })
      expect(fromEnv.got).toBeUndefined()
      expect(JSON.stringify(fromEnv.result)).toContain("--port (SPILLWAY_T_PORT) must be an integer 0 to 65535")
      const fromFile = yield* parse([], { SPILLWAY_CONFIG: configFile({ SPILLWAY_T_OPTIONAL: 11 }) })
      expect(fromFile.got).toBeUndefined()
      expect(JSON.stringify(fromFile.result)).toContain("--optional (SPILLWAY_T_OPTIONAL) must be an integer 1 to 10")
      const ok = yield* parse(["--optional", "10"], {})
      expect(ok.got?.optional).toEqual(Option.some(10))
    }),
  )

  it.effect("settings without a flag: range checked, never silently dropped to their default", () =>
    Effect.gen(function* () {
      const read = <A>(config: Effect.Effect<A, unknown>, env: Record<string, string>) =>
        Effect.either(config).pipe(Effect.withConfigProvider(configProviderFromEnvAndFile(env)), withEnv(env))
      const r = { min: 1, max: 64 }
      expect(yield* read(intSetting("SPILLWAY_T_N", 4, r), {})).toEqual(Either.right(4))
      expect(yield* read(intSetting("SPILLWAY_T_N", 4, r), { SPILLWAY_T_N: "9" })).toEqual(Either.right(9))
      const bad = yield* read(intSetting("SPILLWAY_T_N", 4, r), { SPILLWAY_T_N: "0" })
      expect(Either.isLeft(bad) && String(bad.left)).toContain("SPILLWAY_T_N must be an integer 1 to 64")
      // An optional setting whose value is out of range fails; it does not become None.
      const opt = yield* read(optionalIntSetting("SPILLWAY_T_N", r), { SPILLWAY_T_N: "65" })
      expect(Either.isLeft(opt)).toBe(true)
      expect(yield* read(optionalIntSetting("SPILLWAY_T_N", r), {})).toEqual(Either.right(Option.none()))
      const secs = yield* read(optionalNumberSetting("SPILLWAY_T_S", { min: 0.001, max: 10 }), { SPILLWAY_T_S: "0" })
      expect(Either.isLeft(secs)).toBe(true)
    }),
  )
})
