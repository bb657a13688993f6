/**
 * The pure side of `s3` targets: the object key (a function of what the object holds, so a replay of
 * the same batch writes the same key), the object body, and what an S3 error means.
 */
import { boundedReason, type DeliveryBatch } from "./Delivery.js"

const SAFE = /^[A-Za-z0-9._-]$/

/**
 * Pure and injective: a key segment for a value (user id, topic). Letters, digits, `.`, `_`, `-` stay;
 * every other UTF-8 byte is `%XX`; `.` and `..` become `%2E`/`%2E%2E` (no path tricks in tools that
 * normalise keys); a lone surrogate is `%uXXXX`; the empty string is `%` (which no encoding yields otherwise).
 */
export const keySegment = (value: string): string => {
  if (value === "") return "%"
  if (value === "." || value === "..") return value.replaceAll(".", "%2E")
  let out = ""
  for (const ch of value) {
    const cp = ch.codePointAt(0)!
    if (SAFE.test(ch)) out += ch
    else if (cp >= 0xd800 && cp <= 0xdfff)
      out += `%u${cp.toString(16).toUpperCase()}` // a lone surrogate
    else for (const b of Buffer.from(ch, "utf8")) out += `%${b.toString(16).toUpperCase().padStart(2, "0")}`
  }
  return out
}

const pad2 = (n: number) => String(n).padStart(2, "0")

/** Pure: `{prefix}/{user_id}/{yyyy}/{mm}/{dd}/{topic}-{partition}-{offset}-`: the start of the key of an object whose first event is `event`. */
export const rangePrefix = (
  prefix: string,
  topic: string,
  partition: number,
  event: { readonly userId: string; readonly timestampMs: number; readonly offset: string } | undefined,
): string => {
  const ms = event !== undefined && Number.isFinite(event.timestampMs) ? event.timestampMs : 0
  const d = new Date(ms)
  const p = prefix.replace(/\/+$/, "")
  const dir = `${keySegment(event?.userId ?? "")}/${d.getUTCFullYear()}/${pad2(d.getUTCMonth() + 1)}/${pad2(d.getUTCDate())}`
  return `${p === "" ? "" : `${p}/`}${dir}/${keySegment(topic)}-${partition}-${event?.offset ?? "0"}-`
}

/**
 * Pure: `{prefix}/{user_id}/{yyyy}/{mm}/{dd}/{topic}-{partition}-{firstOffset}-{lastOffset}.ndjson[.gz]`,
 * the user id of the batch's first event, the date of its timestamp (UTC). A prefix's trailing `/` is
 * dropped; an empty prefix starts the key at the user id.
 */
export const objectKey = (prefix: string, batch: DeliveryBatch, gzip: boolean): string =>
  `${rangePrefix(prefix, batch.topic, batch.partition, batch.events[0] && { ...batch.events[0], offset: batch.firstOffset })}${batch.lastOffset}${gzip ? ".ndjson.gz" : ".ndjson"}`

/** Pure: the last offset of an object key that starts with `start` (a `rangePrefix`), or undefined. */
export const lastOffsetOfKey = (key: string, start: string): bigint | undefined => {
  if (!key.startsWith(start)) return undefined
  const m = /^(\d{1,20})\.ndjson(?:\.gz)?$/.exec(key.slice(start.length))
  return m ? BigInt(m[1]!) : undefined
}

/** Pure: the NDJSON of the lines, one per line, each ending in a newline. */
export const ndjson = (lines: ReadonlyArray<string>): Buffer => Buffer.from(`${lines.join("\n")}\n`, "utf8")

const PERMANENT_DENIED = new Set([
  "AccessDenied",
  "InvalidAccessKeyId",
  "SignatureDoesNotMatch",
  "AllAccessDisabled",
  "AccountProblem",
  "InvalidBucketState",
])
const RETRYABLE_NAMES = new Set([
  "SlowDown",
  "Throttling",
  "ThrottlingException",
  "RequestTimeout",
  "RequestTimeTooSkewed",
  "ExpiredToken",
  "InternalError",
  "ServiceUnavailable",
  "TimeoutError",
])

const field = (e: unknown, key: string): unknown =>
  typeof e === "object" && e !== null ? (e as Record<string, unknown>)[key] : undefined

/** The error's code, only when it looks like one (never free text of the server). */
const errorCode = (e: unknown): string | undefined => {
  for (const k of ["name", "Code", "code"]) {
    const v = field(e, k)
    if (typeof v === "string" && /^[A-Za-z0-9._]{1,64}$/.test(v) && v !== "Error") return v
  }
  return undefined
}

/**
 * Pure: what a failed S3 call means. No such bucket and access denied (403) are permanent and name the
 * bucket; throttling, 5xx, 408/429, timeouts and network errors (no HTTP status) are retryable; any
 * other 4xx is permanent with the error's code.
 */
export const classifyS3Error = (
  bucket: string,
  e: unknown,
): { readonly retryable: boolean; readonly detail: string } => {
  const metadata = field(e, "$metadata")
  const s = field(metadata, "httpStatusCode")
  const status = typeof s === "number" ? s : undefined
  const code = errorCode(e)
  const tail = boundedReason(`${code ?? "error"}${status === undefined ? "" : `, http ${status}`}`, 100)
  if (code === "NoSuchBucket" || (status === 404 && code === undefined))
    return { retryable: false, detail: `bucket ${bucket} does not exist (${tail})` }
  if (status === 403 || (code !== undefined && PERMANENT_DENIED.has(code)))
    return { retryable: false, detail: `access to bucket ${bucket} denied (${tail})` }
  if (
    status === undefined ||
    status >= 500 ||
    status === 408 ||
    status === 429 ||
    (code !== undefined && RETRYABLE_NAMES.has(code))
  )
    return { retryable: true, detail: `bucket ${bucket} unavailable (${tail})` }
  return { retryable: false, detail: `bucket ${bucket} refused the object (${tail})` }
}
