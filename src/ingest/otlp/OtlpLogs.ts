/**
 * OTLP log records → Spillway Kafka records (pure). The decoded request (protobuf or JSON, see OtlpCodec) is checked
 * with effect/Schema, then each log record becomes one Event:
 * - timestamp: `time_unix_nano`, else `observed_time_unix_nano`, else the time of receipt;
 * - agent_id: the resource attribute `host.name`; tag: the resource attribute `service.name`;
 * - message: the JSON `{body, severity_text, severity_number, attributes, resource, scope, trace_id, span_id,
 *   flags, event_name}` (ids as lowercase hex; each of the last five absent when empty), encrypted with the tenant's
 *   key (TenantRecords.makeRecord).
 * A record whose event would exceed the event size limit can never be accepted: it is counted as rejected (OTLP
 * `partial_success`), the others go on.
 */
import { Either, ParseResult, Schema } from "effect"
import { batchSealer } from "../../shared/Crypto.js"
import { predicateOf } from "../../shared/SchemaPredicate.js"
import { makeRecord, type TenantKey } from "../receivers/TenantRecords.js"
import type { SinkRecord } from "../SinkPort.js"
import type { IdEncoding } from "./OtlpCodec.js"

// ---------------------------------------------------------------------------------------------
// The request, as both decoders give it (lowerCamelCase keys; unknown keys ignored)

const Int64 = Schema.Union(Schema.String.pipe(Schema.maxLength(24)), Schema.Number)
const Text = Schema.String

interface AnyValue {
  readonly stringValue?: string | undefined
  readonly boolValue?: boolean | undefined
  readonly intValue?: string | number | undefined
  readonly doubleValue?: number | string | undefined
  readonly bytesValue?: string | undefined
  readonly arrayValue?: { readonly values?: ReadonlyArray<AnyValue> | undefined } | undefined
  readonly kvlistValue?: { readonly values?: ReadonlyArray<KeyValue> | undefined } | undefined
}
interface KeyValue {
  readonly key?: string | undefined
  readonly value?: AnyValue | undefined
}

const AnyValue: Schema.Schema<AnyValue> = Schema.Struct({
  stringValue: Schema.optional(Text),
  boolValue: Schema.optional(Schema.Boolean),
  intValue: Schema.optional(Int64),
  doubleValue: Schema.optional(Schema.Union(Schema.Number, Schema.String.pipe(Schema.maxLength(16)))),
  bytesValue: Schema.optional(Text),
  arrayValue: Schema.optional(
    Schema.Struct({ values: Schema.optional(Schema.Array(Schema.suspend((): Schema.Schema<AnyValue> => AnyValue))) }),
  ),
  kvlistValue: Schema.optional(
    Schema.Struct({ values: Schema.optional(Schema.Array(Schema.suspend((): Schema.Schema<KeyValue> => KeyValue))) }),
  ),
})
const KeyValue: Schema.Schema<KeyValue> = Schema.Struct({
  key: Schema.optional(Text),
  value: Schema.optional(AnyValue),
})
const Attributes = Schema.optional(Schema.Array(KeyValue))

const LogRecord = Schema.Struct({
  timeUnixNano: Schema.optional(Int64),
  observedTimeUnixNano: Schema.optional(Int64),
  severityNumber: Schema.optional(Schema.Union(Schema.Number, Schema.String.pipe(Schema.maxLength(32)))),
  severityText: Schema.optional(Text),
  body: Schema.optional(AnyValue),
  attributes: Attributes,
  flags: Schema.optional(Schema.Number),
  traceId: Schema.optional(Schema.String.pipe(Schema.maxLength(64))),
  spanId: Schema.optional(Schema.String.pipe(Schema.maxLength(32))),
  eventName: Schema.optional(Text),
})
type LogRecord = typeof LogRecord.Type

export const ExportRequest = Schema.Struct({
  resourceLogs: Schema.optional(
    Schema.Array(
      Schema.Struct({
        resource: Schema.optional(Schema.Struct({ attributes: Attributes })),
        scopeLogs: Schema.optional(
          Schema.Array(
            Schema.Struct({
              scope: Schema.optional(Schema.Struct({ name: Schema.optional(Text), version: Schema.optional(Text) })),
              logRecords: Schema.optional(Schema.Array(LogRecord)),
            }),
          ),
        ),
      }),
    ),
  ),
})
export type ExportRequest = typeof ExportRequest.Type

const decodeExport = Schema.decodeUnknownEither(ExportRequest, { errors: "first", onExcessProperty: "ignore" })

/**
 * `Schema.is(ExportRequest)` as a plain predicate (src/shared/SchemaPredicate.ts): the same rules without the
 * parser's objects for every value of the request (the decode cost 3.6 µs a log record). A request it accepts is
 * used as it is: the schema has no transformations, so decoding would give the same values, less the keys it does not
 * name, and the conversion below reads only named keys. Only a request it refuses is decoded, for the error's path.
 */
const isExportRequest = predicateOf(ExportRequest)

/** Left: a reason naming the field's path, never a received value. */
export const decodeExportRequest = (u: unknown): Either.Either<ExportRequest, string> =>
  isExportRequest(u)
    ? Either.right(u)
    : Either.mapLeft(decodeExport(u), (e) => {
        const issue = ParseResult.ArrayFormatter.formatErrorSync(e)[0]
        const where = issue === undefined ? "" : ` at ${issue.path.map(String).join(".")}`
        return `the request is not a valid ExportLogsServiceRequest${where}`
      })

/** How many log records a request holds (checked against the limit before any work). */
export const countLogRecords = (req: ExportRequest): number => {
  let n = 0
  for (const rl of req.resourceLogs ?? []) for (const sl of rl.scopeLogs ?? []) n += sl.logRecords?.length ?? 0
  return n
}

// ---------------------------------------------------------------------------------------------
// Values

const MAX_NANOS = 2n ** 63n - 1n

const int64 = (v: string | number | undefined): bigint | undefined => {
  if (v === undefined) return undefined
  try {
    const n = typeof v === "number" ? (Number.isSafeInteger(v) ? BigInt(v) : undefined) : BigInt(v)
    return n === undefined || n < 0n || n > MAX_NANOS ? undefined : n
  } catch {
    return undefined
  }
}

const intJson = (v: string | number): number | string => {
  const n = typeof v === "number" ? v : Number(v)
  return Number.isSafeInteger(n) ? n : String(v)
}

/** The JSON value of an AnyValue (nesting was bounded by the decoder). */
const anyValueJson = (v: AnyValue | undefined): unknown => {
  if (v === undefined) return null
  if (v.stringValue !== undefined) return v.stringValue
  if (v.boolValue !== undefined) return v.boolValue
  if (v.intValue !== undefined) return intJson(v.intValue)
  if (v.doubleValue !== undefined) return v.doubleValue
  if (v.bytesValue !== undefined) return v.bytesValue
  if (v.arrayValue !== undefined) return (v.arrayValue.values ?? []).map(anyValueJson)
  if (v.kvlistValue !== undefined) return attributesJson(v.kvlistValue.values)
  return null
}

/** Attributes as a JSON object (a null-prototype object: a key `__proto__` is just a key). */
const attributesJson = (kvs: ReadonlyArray<KeyValue> | undefined): Record<string, unknown> => {
  const out: Record<string, unknown> = Object.create(null)
  for (const kv of kvs ?? []) out[kv.key ?? ""] = anyValueJson(kv.value)
  return out
}

const stringAttribute = (kvs: ReadonlyArray<KeyValue> | undefined, key: string): string => {
  for (const kv of kvs ?? []) if (kv.key === key && kv.value?.stringValue !== undefined) return kv.value.stringValue
  return ""
}

const idHex = (id: string | undefined, ids: IdEncoding): string | undefined => {
  if (id === undefined || id === "") return undefined
  const hex = ids === "hex" ? id.toLowerCase() : Buffer.from(id, "base64").toString("hex")
  return /^[0-9a-f]*$/.test(hex) && hex.length > 0 && !/^0+$/.test(hex) ? hex : undefined
}

// ---------------------------------------------------------------------------------------------
// Records

export interface Converted {
  readonly records: ReadonlyArray<SinkRecord>
  /** Log records that can never be accepted (over the event size limit). */
  readonly rejected: number
}

/**
 * The JSON of a log record: `{body, severity_text, severity_number, attributes, resource, scope, trace_id, span_id,
 * flags, event_name}` in that order, as `JSON.stringify` of that object writes it. `context` is the JSON of what the
 * records of one scope share, `,"resource":{…}` and `,"scope":{…}` (`sharedJson`), formatted once per scope instead
 * of once per record (the resource's attributes were the larger part of each record's formatting). Plain
 * JSON.stringify, not `toJson`'s replacer (a call per value, 8 % of the receiver's CPU): the schema above leaves only
 * strings, numbers, booleans, arrays and null-prototype objects here, never a bigint or bytes.
 */
const recordJson = (lr: LogRecord, context: string, ids: IdEncoding): string => {
  const front = JSON.stringify({
    body: anyValueJson(lr.body),
    severity_text: lr.severityText ?? "",
    severity_number: typeof lr.severityNumber === "number" ? lr.severityNumber : 0,
    attributes: attributesJson(lr.attributes),
  })
  const back: Record<string, unknown> = {}
  const traceId = idHex(lr.traceId, ids)
  const spanId = idHex(lr.spanId, ids)
  if (traceId !== undefined) back.trace_id = traceId
  if (spanId !== undefined) back.span_id = spanId
  if (lr.flags) back.flags = lr.flags
  if (lr.eventName) back.event_name = lr.eventName
  const rest = JSON.stringify(back)
  // `front` ends with `}`, `rest` is `{}` or `{…}`: their members joined around the shared ones.
  return `${front.slice(0, -1)}${context}${rest === "{}" ? "" : `,${rest.slice(1, -1)}`}}`
}

/** `,"resource":{…}` and, when the scope has a name, `,"scope":{"name":…,"version":…}`. */
const sharedJson = (
  resourceJson: string,
  scope: { readonly name?: string | undefined; readonly version?: string | undefined } | undefined,
): string =>
  scope?.name
    ? `,"resource":${resourceJson},"scope":${JSON.stringify({ name: scope.name, version: scope.version ?? "" })}`
    : `,"resource":${resourceJson}`

/** The Kafka records of a request for a tenant; `now` stamps records without a time. */
export const toRecords = (
  req: ExportRequest,
  ids: IdEncoding,
  tk: TenantKey,
  now: bigint,
  maxEventBytes: number,
): Converted => {
  const records: Array<SinkRecord> = []
  let rejected = 0
  const seal = batchSealer(countLogRecords(req))
  for (const rl of req.resourceLogs ?? []) {
    const attrs = rl.resource?.attributes
    const resourceJson = JSON.stringify(attributesJson(attrs))
    const agentId = stringAttribute(attrs, "host.name")
    const tag = stringAttribute(attrs, "service.name")
    for (const sl of rl.scopeLogs ?? []) {
      const context = sharedJson(resourceJson, sl.scope)
      for (const lr of sl.logRecords ?? []) {
        const time = int64(lr.timeUnixNano)
        const observed = int64(lr.observedTimeUnixNano)
        const timestamp =
          time !== undefined && time > 0n ? time : observed !== undefined && observed > 0n ? observed : now
        const json = recordJson(lr, context, ids)
        const record = makeRecord(tk, "otlp", { timestamp, agentId, tag, json }, maxEventBytes, seal)
        if (record === undefined) rejected++
        else records.push(record)
      }
    }
  }
  return { records, rejected }
}
