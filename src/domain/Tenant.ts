/**
 * The tenants file, in the proof of concept's shape (`shared/seed/access-tokens-db.json`):
 * a map from access key to `{ AccessKey, EncryptionKey, UserID, targets: [...] }`.
 * `targets` is a union; new destination kinds are new members.
 */
import path from "node:path"
import { Schema } from "effect"
import { AccessKey, UserID } from "./Event.js"

/**
 * The bytes of an `EncryptionKey` string: `hex:…` and `base64:…` are decoded, anything else is
 * its UTF-8 bytes (the proof of concept's keys are 32 ASCII characters, so AES-256).
 * Returns undefined for a malformed encoding. Pure.
 */
export const encryptionKeyBytes = (spec: string): Uint8Array | undefined => {
  if (spec.startsWith("hex:")) {
    const hex = spec.slice(4)
    return /^(?:[0-9a-fA-F]{2})*$/.test(hex) ? Buffer.from(hex, "hex") : undefined
  }
  if (spec.startsWith("base64:")) {
    const b64 = spec.slice(7)
    return /^[A-Za-z0-9+/_-]*={0,2}$/.test(b64) ? Buffer.from(b64, "base64") : undefined
  }
  return Buffer.from(spec, "utf8")
}

/** An encryption key: empty (messages are plain JSON) or 16, 24 or 32 bytes. Kept redacted. */
export const EncryptionKey = Schema.Redacted(
  Schema.String.pipe(
    Schema.filter(
      (s) => {
        if (s === "") return true
        const bytes = encryptionKeyBytes(s)
        if (bytes === undefined) return "the hex: or base64: encoding is malformed"
        return [16, 24, 32].includes(bytes.length) || `must be 16, 24 or 32 bytes, not ${bytes.length}`
      },
      { identifier: "EncryptionKey" },
    ),
  ),
)

/** A file name relative to the router's output folder that cannot escape it. */
export const SafeFileName = Schema.String.pipe(
  Schema.filter(
    (s) => {
      if (s.length === 0 || s.length > 255 * 4) return "a target file name must be 1 to 1020 characters"
      if (s.includes("\0")) return "a target file name must not contain NUL"
      if (path.isAbsolute(s) || path.win32.isAbsolute(s)) return `target file ${JSON.stringify(s)} is an absolute path`
      const norm = path.posix.normalize(s.replaceAll("\\", "/"))
      if (norm === ".." || norm.startsWith("../") || s.split(/[\\/]/).includes(".."))
        return `target file ${JSON.stringify(s)} would escape the output folder`
      if (norm === "." || norm.endsWith("/")) return `target file ${JSON.stringify(s)} names a folder`
      return true
    },
    { identifier: "SafeFileName" },
  ),
  Schema.brand("SafeFileName"),
)
export type SafeFileName = typeof SafeFileName.Type

export const FileTarget = Schema.Struct({ file: SafeFileName })
export type FileTarget = typeof FileTarget.Type

const HttpUrl = Schema.String.pipe(
  Schema.filter((s) => {
    try {
      const u = new URL(s)
      return u.protocol === "http:" || u.protocol === "https:" || "an http target's url must be http:// or https://"
    } catch {
      return "an http target's url must be an absolute URL"
    }
  }),
)

export const HttpTarget = Schema.Struct({
  http: Schema.Struct({
    url: HttpUrl,
    /** Sent with every request; values are kept redacted (they often hold credentials). */
    headers: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Schema.Redacted(Schema.String) }), {
      default: () => ({}),
    }),
    /** Per-request timeout in milliseconds. */
    timeoutMs: Schema.optionalWith(Schema.Int.pipe(Schema.between(100, 120_000)), { default: () => 10_000 }),
  }),
})
export type HttpTarget = typeof HttpTarget.Type

export const Target = Schema.Union(FileTarget, HttpTarget)
export type Target = typeof Target.Type

/** The kind of a target (`file`, `http`): with its position in the tenant's `targets`, what metrics are labelled by. */
export const targetKind = (t: Target): "file" | "http" => ("file" in t ? "file" : "http")

/** A short name for a target, for dead-letter headers (a file target's name is usually the access key: not for metrics). */
export const targetName = (t: Target): string => ("file" in t ? `file:${t.file}` : `http:${new URL(t.http.url).host}`)

export class Tenant extends Schema.Class<Tenant>("Tenant")({
  AccessKey: AccessKey,
  EncryptionKey: EncryptionKey,
  UserID: UserID,
  targets: Schema.Array(Target).pipe(Schema.maxItems(32)),
}) {}

/** The whole file: every entry's key must equal its `AccessKey`. */
export const TenantsFile = Schema.Record({ key: AccessKey, value: Tenant }).pipe(
  Schema.filter((m) => {
    const issues: Array<Schema.FilterIssue> = []
    for (const [key, tenant] of Object.entries(m)) {
      if (tenant.AccessKey !== key)
        issues.push({
          path: [key, "AccessKey"],
          message: `AccessKey must equal the entry's key ${JSON.stringify(key)}`,
        })
    }
    return issues
  }),
)
export type TenantsFile = typeof TenantsFile.Type
