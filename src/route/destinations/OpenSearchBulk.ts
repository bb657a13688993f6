/**
 * The pure side of `opensearch` targets: index names from the template, document ids, the `_bulk`
 * body, and reading the bulk answer (decoded with effect/Schema) into per-line failures.
 */
import { createHash } from "node:crypto"
import { Either, ParseResult, Schema } from "effect"
import { boundedReason, type DeliveryBatch, type DeliveryEvent, type LineFailure } from "./Delivery.js"

/** What `_bulk` is asked to answer (`filter_path`): per item its status and, on error, the error's type and reason. */
export const BULK_FILTER_PATH =
  "errors,items.*.status,items.*.error.type,items.*.error.reason,items.*.error.caused_by.type"

const sha256Hex = (s: string) => createHash("sha256").update(s, "utf8").digest("hex")

/**
 * Pure: a value as part of an index name. Lowercase letters, digits, `.`, `_`, `-` stay as they are;
 * any other value (uppercase, other characters, longer than 64) is lowercased, has those characters
 * replaced by `_`, is cut at 64, and gets `-` + the first 8 hex digits of its sha256, so two user
 * ids that differ only in case never share an index.
 */
export const indexSegment = (value: string): string => {
  if (/^[a-z0-9._-]{1,64}$/.test(value)) return value
  const cleaned = value
    .toLowerCase()
    .replace(/[^a-z0-9._-]/g, "_")
    .slice(0, 64)
  return `${cleaned}-${sha256Hex(value).slice(0, 8)}`
}

const pad2 = (n: number) => String(n).padStart(2, "0")

/** Pure: the template with `{user_id}`, `{topic}` and date tokens (`yyyy`, `MM`, `dd`, `HH`, UTC) filled in. */
export const indexName = (template: string, topic: string, event: DeliveryEvent): string => {
  const d = new Date(Number.isFinite(event.timestampMs) ? event.timestampMs : 0)
  return template.replace(/\{([^}]+)\}/g, (_, token: string) => {
    if (token === "user_id") return indexSegment(event.userId)
    if (token === "topic") return indexSegment(topic)
    return token.replace(/yyyy|MM|dd|HH/g, (t) =>
      t === "yyyy"
        ? String(d.getUTCFullYear())
        : t === "MM"
          ? pad2(d.getUTCMonth() + 1)
          : t === "dd"
            ? pad2(d.getUTCDate())
            : pad2(d.getUTCHours()),
    )
  })
}

/** Pure: whether OpenSearch accepts `name` as an index name. */
export const validIndexName = (name: string): boolean =>
  name !== "." &&
  name !== ".." &&
  Buffer.byteLength(name, "utf8") <= 255 &&
  !/^[-_+]/.test(name) &&
  !/[A-Z\\/*?"<>| ,#:]/.test(name)

/**
 * Pure: the `_id` of an event's document: its `event_id`, or when it has none the sha256 (hex) of
 * `{topic}/{partition}/{offset}`, so a replay of the same record overwrites the same document.
 */
export const documentId = (topic: string, partition: number, event: DeliveryEvent): string =>
  event.eventId !== undefined && event.eventId !== ""
    ? event.eventId
    : sha256Hex(`${topic}/${partition}/${event.offset}`)

export interface BulkRequest {
  readonly body: Buffer
  /** The batch line index of each action in the body, in order. */
  readonly indexes: ReadonlyArray<number>
  /** Lines that cannot be sent (an invalid index name): refused before the request. */
  readonly refused: ReadonlyArray<LineFailure>
}

/** Pure: the `_bulk` NDJSON body, an `index` action (overwrite by `_id`) and the line for each event. */
export const bulkRequest = (template: string, batch: DeliveryBatch): BulkRequest => {
  const parts: Array<string> = []
  const indexes: Array<number> = []
  const refused: Array<LineFailure> = []
  const names = new Map<string, string>() // per batch: user id and hour → index name
  for (let i = 0; i < batch.lines.length; i++) {
    const event = batch.events[i]!
    const memo = `${event.userId}\u0000${Math.floor(event.timestampMs / 3_600_000)}`
    let index = names.get(memo)
    if (index === undefined) {
      index = indexName(template, batch.topic, event)
      if (names.size < 1024) names.set(memo, index)
    }
    if (!validIndexName(index)) {
      refused.push({ index: i, retryable: false, reason: "the index template gives an invalid index name" })
      continue
    }
    parts.push(JSON.stringify({ index: { _index: index, _id: documentId(batch.topic, batch.partition, event) } }))
    parts.push(batch.lines[i]!)
    indexes.push(i)
  }
  return { body: Buffer.from(parts.length === 0 ? "" : `${parts.join("\n")}\n`, "utf8"), indexes, refused }
}

const BulkItemResult = Schema.Struct({
  status: Schema.Int,
  error: Schema.optional(
    Schema.Struct({
      type: Schema.optional(Schema.String),
      reason: Schema.optional(Schema.NullOr(Schema.String)),
      caused_by: Schema.optional(Schema.Struct({ type: Schema.optional(Schema.String) })),
    }),
  ),
})
export const BulkResponse = Schema.Struct({
  errors: Schema.Boolean,
  items: Schema.optional(Schema.Array(Schema.Record({ key: Schema.String, value: BulkItemResult }))),
})
const decodeBulk = Schema.decodeUnknownEither(BulkResponse)

/** An error answer to the whole request (`{"error": {...}, "status": n}`), for its type and reason. */
export const ErrorResponse = Schema.Struct({
  error: Schema.Union(
    Schema.String,
    Schema.Struct({ type: Schema.optional(Schema.String), reason: Schema.optional(Schema.NullOr(Schema.String)) }),
  ),
})

/** Pure: the server's reason, bounded, with the "Preview of field's value" (document content) cut off. */
export const serverReason = (type: string | undefined, reason: string | null | undefined, cause?: string): string => {
  const r = (reason ?? "").split(/\.?\s*Preview of field's value/)[0]!
  const text = `${type ?? "error"}${r === "" ? "" : `: ${r}`}${cause === undefined ? "" : ` (caused by ${cause})`}`
  return boundedReason(text, 300)
}

/** Pure: whether an item (or request) status is worth retrying. */
export const retryableItemStatus = (status: number): boolean => status === 429 || status >= 500

/**
 * Pure: the per-line failures of a bulk answer (`text` already bounded in size), or why the answer
 * cannot be used (then the whole batch is to be retried).
 */
export const bulkFailures = (request: BulkRequest, text: string): Either.Either<Array<LineFailure>, string> => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    return Either.left("the bulk answer is not JSON")
  }
  const decoded = decodeBulk(json)
  if (Either.isLeft(decoded))
    return Either.left(
      `the bulk answer is not a bulk response: ${boundedReason(ParseResult.TreeFormatter.formatErrorSync(decoded.left), 200)}`,
    )
  const failures: Array<LineFailure> = [...request.refused]
  const { errors, items } = decoded.right
  if (!errors) return Either.right(failures)
  if (items === undefined || items.length !== request.indexes.length)
    return Either.left(`the bulk answer has ${items?.length ?? 0} items for ${request.indexes.length} documents`)
  for (let k = 0; k < items.length; k++) {
    const item = Object.values(items[k]!)[0]
    if (item === undefined) return Either.left("a bulk answer item is empty")
    if (item.status >= 200 && item.status < 300) continue
    failures.push({
      index: request.indexes[k]!,
      retryable: retryableItemStatus(item.status),
      reason: `${item.status} ${serverReason(item.error?.type, item.error?.reason, item.error?.caused_by?.type)}`,
    })
  }
  failures.sort((a, b) => a.index - b.index)
  return Either.right(failures)
}
