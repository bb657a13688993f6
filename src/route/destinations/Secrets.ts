/**
 * Secrets by reference (`SecretRef` of the tenants file), resolved when a target is built: an
 * environment variable of the router, or a file (at most 64 KiB, one trailing newline dropped).
 * Errors name the variable or the file, never the value.
 */
import { readFile, stat } from "node:fs/promises"
import { Effect, Redacted } from "effect"
import { DestinationError } from "../../domain/Errors.js"
import type { SecretRef } from "../../domain/Tenant.js"

export const MAX_SECRET_FILE_BYTES = 64 * 1024

const refused = (target: string, detail: string) => new DestinationError({ target, retryable: false, detail })

/** The text of a file of at most 64 KiB (checked before reading). */
export const readSmallFile = (target: string, file: string): Effect.Effect<string, DestinationError> =>
  Effect.tryPromise({
    try: async () => {
      const s = await stat(file)
      if (!s.isFile() || s.size > MAX_SECRET_FILE_BYTES) return undefined
      return await readFile(file, "utf8")
    },
    catch: (cause) =>
      refused(
        target,
        `cannot read ${file}: ${cause instanceof Error && "code" in cause ? String(cause.code) : "error"}`,
      ),
  }).pipe(
    Effect.filterOrFail(
      (text): text is string => text !== undefined,
      () => refused(target, `${file} is not a file of at most ${MAX_SECRET_FILE_BYTES} bytes`),
    ),
  )

/** Pure: the value of a variable, or undefined when unset or empty. */
export const envValue = (env: NodeJS.ProcessEnv, name: string): string | undefined => {
  const v = env[name]
  return v === undefined || v === "" ? undefined : v
}

export const resolveSecret = (
  target: string,
  ref: SecretRef,
  env: NodeJS.ProcessEnv = process.env,
): Effect.Effect<Redacted.Redacted<string>, DestinationError> => {
  if ("env" in ref) {
    const v = envValue(env, ref.env)
    return v === undefined
      ? Effect.fail(refused(target, `environment variable ${ref.env} is not set`))
      : Effect.succeed(Redacted.make(v))
  }
  return readSmallFile(target, ref.file).pipe(
    Effect.map((text) => text.replace(/\r?\n$/, "")),
    Effect.filterOrFail(
      (v) => v !== "",
      () => refused(target, `${ref.file} is empty`),
    ),
    Effect.map((v) => Redacted.make(v)),
  )
}

/** Pure: a profile of a shared credentials file (`[name]` sections of `key = value` lines), or undefined. */
export const iniProfile = (text: string, profile: string): Record<string, string> | undefined => {
  let current: string | undefined
  let found: Record<string, string> | undefined
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim()
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue
    const section = /^\[\s*(?:profile\s+)?([^\]]+?)\s*\]$/.exec(line)
    if (section) {
      current = section[1]
      if (current === profile) found ??= {}
      continue
    }
    const eq = line.indexOf("=")
    if (current === profile && found !== undefined && eq > 0)
      found[line.slice(0, eq).trim().toLowerCase()] = line.slice(eq + 1).trim()
  }
  return found
}
