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

// ---------------------------------------------------------------------------------------------
// Object stores and search engines (docs/destinations.md)

/**
 * A secret by reference: the name of an environment variable of the router, or the path of a file
 * (read once when the target is built, at most 64 KiB, one trailing newline dropped). Never the secret.
 */
export const SecretRef = Schema.Union(
  Schema.Struct({ env: Schema.String.pipe(Schema.pattern(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/)) }),
  Schema.Struct({ file: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(4096)) }),
)
export type SecretRef = typeof SecretRef.Type

/**
 * How large one object / one bulk request may be: the router cuts each batch it took from Kafka (one partition)
 * into runs under these limits. There is no age limit: lines are never held across fetches (docs/destinations.md).
 */
const batchLimits = (d: { maxBytes: number; maxEvents: number }) =>
  Schema.optionalWith(
    Schema.Struct({
      /** Uncompressed NDJSON bytes. */
      maxBytes: Schema.optionalWith(Schema.Int.pipe(Schema.between(1024, 256 * 1024 * 1024)), {
        default: () => d.maxBytes,
      }),
      maxEvents: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, 1_000_000)), { default: () => d.maxEvents }),
    }),
    { default: () => d },
  )

const S3Credentials = Schema.Union(
  /** The AWS SDK's default chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN, AWS_PROFILE, web identity, instance roles. */
  Schema.Struct({ from: Schema.Literal("default") }),
  /** Keys from environment variables of these names (defaults: the standard AWS names). */
  Schema.Struct({
    from: Schema.Literal("env"),
    accessKeyIdEnv: Schema.optionalWith(Schema.String, { default: () => "AWS_ACCESS_KEY_ID" }),
    secretAccessKeyEnv: Schema.optionalWith(Schema.String, { default: () => "AWS_SECRET_ACCESS_KEY" }),
    sessionTokenEnv: Schema.optionalWith(Schema.String, { default: () => "AWS_SESSION_TOKEN" }),
  }),
  /** A profile of a shared credentials file (the `~/.aws/credentials` format). */
  Schema.Struct({
    from: Schema.Literal("file"),
    path: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(4096)),
    profile: Schema.optionalWith(Schema.String.pipe(Schema.pattern(/^[A-Za-z0-9._@+-]{1,64}$/)), {
      default: () => "default",
    }),
  }),
)

const S3Prefix = Schema.String.pipe(
  Schema.maxLength(512),
  Schema.filter(
    (s) =>
      (!s.startsWith("/") &&
        !s.split("/").some((seg) => seg === "." || seg === "..") &&
        ![...s].some((c) => c.charCodeAt(0) < 0x20)) ||
      "a key prefix must not start with '/', contain '.' or '..' segments or control characters",
  ),
)

export const S3Target = Schema.Struct({
  s3: Schema.Struct({
    bucket: Schema.String.pipe(Schema.pattern(/^[a-zA-Z0-9][a-zA-Z0-9._-]{1,254}$/)),
    prefix: Schema.optionalWith(S3Prefix, { default: () => "" }),
    region: Schema.optionalWith(Schema.String.pipe(Schema.pattern(/^[a-z0-9-]{1,32}$/)), {
      default: () => "us-east-1",
    }),
    /** An S3-compatible store (MinIO, IBM COS, Ceph, R2); AWS when absent. */
    endpoint: Schema.optional(HttpUrl),
    forcePathStyle: Schema.optionalWith(Schema.Boolean, { default: () => false }),
    credentials: Schema.optionalWith(S3Credentials, { default: () => ({ from: "default" as const }) }),
    gzip: Schema.optionalWith(Schema.Boolean, { default: () => true }),
    batch: batchLimits({ maxBytes: 8 * 1024 * 1024, maxEvents: 20_000 }),
    /** Objects larger than this go up as a multipart upload in parts of this size (S3's minimum is 5 MiB). */
    partSizeBytes: Schema.optionalWith(Schema.Int.pipe(Schema.between(5 * 1024 * 1024, 512 * 1024 * 1024)), {
      default: () => 8 * 1024 * 1024,
    }),
    timeoutMs: Schema.optionalWith(Schema.Int.pipe(Schema.between(1000, 600_000)), { default: () => 60_000 }),
  }),
})
export type S3Target = typeof S3Target.Type

const NoUserInfoUrl = HttpUrl.pipe(
  Schema.filter((s) => {
    const u = new URL(s)
    return (u.username === "" && u.password === "") || "put credentials in `auth` (by reference), not in the url"
  }),
)

/** `{user_id}`, `{topic}` or a date of the event's UTC timestamp (`yyyy`, `MM`, `dd`, `HH` and `.`, `-`, `_`). */
export const IndexTemplate = Schema.String.pipe(
  Schema.minLength(1),
  Schema.maxLength(200),
  Schema.filter((s) => {
    const rest = s.replace(/\{(user_id|topic|(?:yyyy|MM|dd|HH|[._-])+)\}/g, "")
    if (/[{}]/.test(rest)) return "an index template knows {user_id}, {topic} and dates such as {yyyy.MM.dd}"
    if (/[A-Z\\/*?"<>| ,#:]/.test(rest)) return 'an index name is lowercase, without \\ / * ? " < > | space , # :'
    if (/^[-_+.]/.test(s)) return "an index name must not start with -, _, + or ."
    return true
  }),
)

export const OpenSearchTarget = Schema.Struct({
  opensearch: Schema.Struct({
    /** One or more nodes; each try goes to the next. */
    urls: Schema.Array(NoUserInfoUrl).pipe(Schema.minItems(1), Schema.maxItems(16)),
    index: Schema.optionalWith(IndexTemplate, { default: () => "logs-{user_id}-{yyyy.MM.dd}" }),
    auth: Schema.optional(
      Schema.Union(
        Schema.Struct({
          basic: Schema.Struct({ username: Schema.String.pipe(Schema.maxLength(256)), password: SecretRef }),
        }),
        /** Sent as `Authorization: ApiKey <key>` (Elasticsearch API keys: the base64 of id:key). */
        Schema.Struct({ apiKey: SecretRef }),
      ),
    ),
    batch: batchLimits({ maxBytes: 5 * 1024 * 1024, maxEvents: 5_000 }),
    timeoutMs: Schema.optionalWith(Schema.Int.pipe(Schema.between(1000, 600_000)), { default: () => 30_000 }),
  }),
})
export type OpenSearchTarget = typeof OpenSearchTarget.Type

/** Every target kind: `file`, `http`, `s3`, `opensearch`. */
export const TargetWithStores = Schema.Union(FileTarget, HttpTarget, S3Target, OpenSearchTarget)
export type TargetWithStores = typeof TargetWithStores.Type
export const Target = TargetWithStores
export type Target = TargetWithStores

/** The kind of a target: with its position in the tenant's `targets`, what metrics are labelled by. */
export const targetKind = (t: TargetWithStores): "file" | "http" | "s3" | "opensearch" =>
  "file" in t ? "file" : "http" in t ? "http" : "s3" in t ? "s3" : "opensearch"

/** A short name for a target, for logs and dead-letter headers (a file target's name is usually the access key: not for metrics). */
export const targetName = (t: TargetWithStores): string =>
  "file" in t
    ? `file:${t.file}`
    : "http" in t
      ? `http:${new URL(t.http.url).host}`
      : "s3" in t
        ? `s3:${t.s3.bucket}${t.s3.prefix === "" ? "" : `/${t.s3.prefix}`}`
        : `opensearch:${new URL(t.opensearch.urls[0]!).host}/${t.opensearch.index}`

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
