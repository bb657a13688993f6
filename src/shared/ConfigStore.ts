/**
 * ConfigStore: the tenants file (DESIGN.md "Tenants"). `layerFile` loads and validates it at
 * start (a bad file fails the layer with a ConfigFileError naming the file, the access key and
 * the field), then polls it; a valid change replaces the version in force, an invalid one is
 * logged and the last good version stays. Lookups read a SubscriptionRef: no IO.
 *
 * Why polling `stat` (mtime, size, inode) rather than `fs.watch`: editors save by writing a new
 * file and renaming it over the old one, and Kubernetes swaps a ConfigMap's `..data` symlink;
 * both silently detach an inotify watch on the file, and network filesystems deliver no events
 * at all. One `stat` a second costs nothing, survives all of these, runs inside the layer's scope
 * like any other fiber, and is deterministic in tests (the interval is a parameter).
 */

import * as FileSystem from "@effect/platform/FileSystem"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import {
  Context,
  Duration,
  Effect,
  Either,
  Layer,
  Option,
  ParseResult,
  Schedule,
  Schema,
  type Stream,
  SubscriptionRef,
} from "effect"
import { ConfigFileError, TenantNotFound } from "../domain/Errors.js"
import { AccessKey } from "../domain/Event.js"
import { Target, type Tenant, TenantsFile } from "../domain/Tenant.js"
import { parseJsonQuietly } from "./Json.js"
import { onSighup } from "./Sighup.js"

export interface LayerFileOptions {
  /** How often the file is checked for changes (default 1 second). */
  readonly pollInterval?: Duration.DurationInput
  /** Larger files are refused (default 16 MiB). */
  readonly maxBytes?: number
}

export const defaultMaxBytes = 16 * 1024 * 1024
/** At most this many problems are listed in one error; the rest are counted. */
const MAX_ISSUES = 20

export class ConfigStore extends Context.Tag("spillway/ConfigStore")<
  ConfigStore,
  {
    /** The tenant of an access key, from the version in force. */
    readonly get: (accessKey: string) => Effect.Effect<Tenant, TenantNotFound>
    /** The whole version in force. */
    readonly current: Effect.Effect<TenantsFile>
    /** The version in force, then every version that replaces it. */
    readonly changes: Stream.Stream<TenantsFile>
  }
>() {
  /** Loads and validates `path` (fails at build with ConfigFileError), then watches it. */
  static readonly layerFile = (path: string, options?: LayerFileOptions): Layer.Layer<ConfigStore, ConfigFileError> =>
    Layer.scoped(ConfigStore, makeFile(path, options)).pipe(Layer.provide(NodeFileSystem.layer))

  /** A fixed set of tenants, for tests. */
  static readonly layerMemory = (tenants: TenantsFile): Layer.Layer<ConfigStore> =>
    Layer.effect(ConfigStore, Effect.map(SubscriptionRef.make(tenants), fromRef))
}

const fromRef = (ref: SubscriptionRef.SubscriptionRef<TenantsFile>): ConfigStore["Type"] => ({
  get: Effect.fn("ConfigStore.get")(function* (accessKey: string) {
    const tenants = yield* SubscriptionRef.get(ref)
    const tenant = Object.hasOwn(tenants, accessKey) ? tenants[accessKey as AccessKey] : undefined
    if (tenant === undefined) return yield* new TenantNotFound({ accessKey })
    return tenant
  }),
  current: SubscriptionRef.get(ref),
  changes: ref.changes,
})

// ---------------------------------------------------------------------------------------------
// Loading and validating

const decodeTenants = Schema.decodeUnknownEither(TenantsFile, { errors: "all", onExcessProperty: "error" })
const decodeAccessKey = Schema.decodeUnknownEither(AccessKey)

/** `["9c60…"].targets[0].file` */
export const formatPath = (path: ReadonlyArray<PropertyKey>): string =>
  path
    .map((p, i) =>
      typeof p === "number"
        ? `[${p}]`
        : typeof p === "string" && i > 0 && /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(p)
          ? `.${p}`
          : `[${JSON.stringify(String(p))}]`,
    )
    .join("")

interface Issue {
  readonly path: ReadonlyArray<PropertyKey>
  readonly message: string
}

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

/** The names of the target kinds (`file`, `http`, …): each member of `Target` is a struct with one key. */
const targetKinds: ReadonlyArray<string> = Target.members.flatMap((m) => Object.keys(m.fields))

/**
 * Fields that were once accepted and are now refused, with why: an s3/opensearch `batch.maxAgeMs` (the router
 * never holds lines across fetches, so no age limit could be honoured; docs/destinations.md).
 */
const removedField = (issue: Issue): string | undefined => {
  const [kind, batch, field] = issue.path
  if (field !== "maxAgeMs" || batch !== "batch" || !issue.message.startsWith("is unexpected")) return undefined
  const what = kind === "s3" ? "an object" : "a bulk request"
  return `is not supported: ${what} is written per batch taken from Kafka, never held for an age; remove it (docs/destinations.md says how objects are cut and which router settings make them bigger)`
}

const formatIssues = (error: ParseResult.ParseError): ReadonlyArray<Issue> =>
  ParseResult.ArrayFormatter.formatErrorSync(error).map((i) => ({ path: i.path, message: i.message }))

/**
 * Makes Schema's issues read well for an operator: a union failure on a target lists what each
 * member expected (noise such as `file is missing` for an http target), so a target's issues are
 * replaced by those of the member its key names, or by one "unknown target kind" line; an invalid
 * access key (which the record reports as an unexpected key) says what an access key is.
 */
const explain = (raw: unknown, error: ParseResult.ParseError): ReadonlyArray<Issue> => {
  const out: Array<Issue> = []
  const seenTargets = new Set<string>()
  for (const issue of formatIssues(error)) {
    const [key, field, index] = issue.path
    if (issue.path.length === 0) {
      out.push({ path: [], message: isRecord(raw) ? issue.message : "must be a JSON object of access key → tenant" })
      continue
    }
    if (issue.path.length === 1 && typeof key === "string" && issue.message.startsWith("is unexpected")) {
      const why = Either.match(decodeAccessKey(key), {
        onLeft: (e) => formatIssues(e)[0]?.message ?? "",
        onRight: () => "",
      })
      out.push({ path: issue.path, message: `is not a valid access key${why ? `: ${why}` : ""}` })
      continue
    }
    if (field === "targets" && typeof index === "number" && typeof key === "string") {
      const id = `${key}\u0000${index}`
      if (seenTargets.has(id)) continue
      seenTargets.add(id)
      const tenant = isRecord(raw) ? raw[key] : undefined
      const targets = isRecord(tenant) ? tenant.targets : undefined
      const target: unknown = Array.isArray(targets) ? targets[index] : undefined
      const prefix = [key, field, index]
      const kinds = isRecord(target) ? targetKinds.filter((k) => Object.hasOwn(target, k)) : []
      const member = kinds.length === 1 ? Target.members[targetKinds.indexOf(kinds[0]!)] : undefined
      if (member === undefined) {
        const has = isRecord(target) ? Object.keys(target).map((k) => JSON.stringify(k)) : []
        out.push({
          path: prefix,
          message: `unknown target kind: a target is an object with exactly one of ${targetKinds.map((k) => JSON.stringify(k)).join(", ")}${
            isRecord(target) ? ` (it has ${has.length === 0 ? "no keys" : has.join(", ")})` : ""
          }`,
        })
        continue
      }
      const memberResult = Schema.decodeUnknownEither(member as Schema.Schema<unknown, unknown>)(target, {
        errors: "all",
        onExcessProperty: "error",
      })
      if (Either.isLeft(memberResult)) {
        for (const sub of formatIssues(memberResult.left))
          out.push({ path: [...prefix, ...sub.path], message: removedField(sub) ?? sub.message })
        continue
      }
    }
    out.push(issue)
  }
  return out
}

const fileError = (path: string, issues: ReadonlyArray<Issue>): ConfigFileError => {
  const lines = issues
    .slice(0, MAX_ISSUES)
    .map((i) => (i.path.length ? `${formatPath(i.path)}: ${i.message}` : i.message))
  if (issues.length > MAX_ISSUES) lines.push(`… and ${issues.length - MAX_ISSUES} more problems`)
  // ConfigFileError's message is `${path}: ${detail}`: every line starts with the file name.
  return new ConfigFileError({ path, detail: lines.join(`\n${path}: `) })
}

/** Pure: validates the text of a tenants file. */
export const parseTenantsFile = (path: string, text: string): Either.Either<TenantsFile, ConfigFileError> => {
  const parsed = parseJsonQuietly(text)
  if (Either.isLeft(parsed)) return Either.left(new ConfigFileError({ path, detail: parsed.left }))
  const raw = parsed.right
  return Either.mapLeft(decodeTenants(raw), (e) => fileError(path, explain(raw, e)))
}

const platformError = (
  path: string,
  e: { readonly _tag: string; readonly message: string; readonly reason?: string },
) =>
  new ConfigFileError({
    path,
    detail:
      e._tag === "SystemError" && e.reason === "NotFound"
        ? "the tenants file does not exist"
        : e._tag === "SystemError" && e.reason === "PermissionDenied"
          ? "the tenants file cannot be read (permission denied)"
          : `the tenants file cannot be read: ${e.message}`,
  })

interface Fingerprint {
  readonly mtime: number
  readonly size: bigint
  readonly ino: number
}
const sameFingerprint = (a: Fingerprint, b: Fingerprint) => a.mtime === b.mtime && a.size === b.size && a.ino === b.ino

const fingerprintOf = (info: FileSystem.File.Info): Fingerprint => ({
  mtime: Option.match(info.mtime, { onNone: () => 0, onSome: (d) => d.getTime() }),
  size: BigInt(info.size),
  ino: Option.getOrElse(info.ino, () => 0),
})

const readTenants = (fs: FileSystem.FileSystem, path: string, maxBytes: number) =>
  Effect.gen(function* () {
    const info = yield* fs.stat(path)
    if (info.type !== "File")
      return yield* new ConfigFileError({ path, detail: `is not a regular file (it is a ${info.type})` })
    const tooBig = (size: number | bigint) =>
      new ConfigFileError({ path, detail: `is ${size} bytes; a tenants file may hold at most ${maxBytes} bytes` })
    if (BigInt(info.size) > BigInt(maxBytes)) return yield* tooBig(info.size)
    const bytes = yield* fs.readFile(path)
    if (bytes.length > maxBytes) return yield* tooBig(bytes.length) // it grew between stat and read
    const tenants = yield* parseTenantsFile(path, Buffer.from(bytes).toString("utf8"))
    return { tenants, fingerprint: fingerprintOf(info) }
  }).pipe(
    Effect.catchTags({
      BadArgument: (e) => Effect.fail(platformError(path, e)),
      SystemError: (e) => Effect.fail(platformError(path, e)),
    }),
  )

const makeFile = (path: string, options?: LayerFileOptions) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const maxBytes = options?.maxBytes ?? defaultMaxBytes
    const interval = Duration.decode(options?.pollInterval ?? "1 second")

    const first = yield* readTenants(fs, path, maxBytes)
    const ref = yield* SubscriptionRef.make(first.tenants)
    yield* Effect.logInfo("tenants loaded").pipe(Effect.annotateLogs({ tenants: Object.keys(first.tenants).length }))

    /** What was last looked at: a file (valid or not) or the error that kept us from reading it. */
    let seen: Fingerprint | string = first.fingerprint
    /** `force`: read it even when it looks unchanged (SIGHUP). */
    const check = (force: boolean) =>
      Effect.gen(function* () {
        const stat = yield* Effect.either(fs.stat(path))
        if (Either.isLeft(stat)) {
          const detail = platformError(path, stat.left).message
          if (seen !== detail) {
            seen = detail
            yield* Effect.logWarning(`tenants file unavailable, keeping the version in force: ${detail}`)
          }
          return
        }
        const fingerprint = fingerprintOf(stat.right)
        if (!force && typeof seen !== "string" && sameFingerprint(seen, fingerprint)) return
        const next = yield* Effect.either(readTenants(fs, path, maxBytes))
        if (Either.isLeft(next)) {
          seen = fingerprint
          yield* Effect.logError(`tenants file rejected, keeping the version in force: ${next.left.message}`)
          return
        }
        // The fingerprint read with the content: a write after our stat is seen at the next poll.
        seen = next.right.fingerprint
        yield* SubscriptionRef.set(ref, next.right.tenants)
        yield* Effect.logInfo("tenants reloaded").pipe(
          Effect.annotateLogs({ tenants: Object.keys(next.right.tenants).length }),
        )
      }).pipe(
        // The watcher must outlive any surprise: a defect is logged and the next poll runs.
        Effect.catchAllDefect((defect) => Effect.logError("tenants file watcher failed", defect)),
      )

    // Log annotations (file) are inherited by the forked watcher.
    yield* check(false).pipe(Effect.repeat(Schedule.spaced(interval)), Effect.forkScoped)
    yield* onSighup("tenants file", check(true))
    return fromRef(ref)
  }).pipe(Effect.annotateLogs({ file: path }))
