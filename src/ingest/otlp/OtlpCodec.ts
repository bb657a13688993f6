/**
 * OTLP logs on the wire: the vendored opentelemetry-proto files (proto/opentelemetry, see its README) loaded with
 * protobufjs, and the JSON encoding (OTLP/JSON: lowerCamelCase keys, 64-bit integers as strings or numbers, trace and
 * span ids as hex). Both decoders give the same plain shape, still untrusted; `OtlpLogs` decodes it with
 * effect/Schema. Nothing here formats a received value into an error.
 */
import { Either } from "effect"
import protobuf from "protobufjs"
import { protoDir as protoRoot } from "../../wire/Wire.js"

const root = new protobuf.Root()
root.resolvePath = (_origin, target) => (target.startsWith("/") ? target : `${protoRoot}${target}`)
root.loadSync("opentelemetry/proto/collector/logs/v1/logs_service.proto")
root.resolveAll()

const RequestType = root.lookupType("opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest")
const ResponseType = root.lookupType("opentelemetry.proto.collector.logs.v1.ExportLogsServiceResponse")

export const LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
export const EXPORT_PATH = `/${LOGS_SERVICE}/Export`

/** How the decoded shape spells trace and span ids (protobuf: base64 of the bytes; OTLP/JSON: hex). */
export type IdEncoding = "base64" | "hex"

export interface DecodedBody {
  readonly value: unknown
  readonly ids: IdEncoding
}

/** Objects and arrays nested deeper than this are refused before any schema looks at them. */
export const MAX_NESTING = 64

/** Iterative (no recursion on untrusted depth): whether `value` nests objects/arrays at most `max` deep. */
export const nestingWithin = (value: unknown, max: number): boolean => {
  const stack: Array<{ readonly v: unknown; readonly d: number }> = [{ v: value, d: 0 }]
  while (stack.length > 0) {
    const { v, d } = stack.pop()!
    if (typeof v !== "object" || v === null || v instanceof Uint8Array) continue
    if (d >= max) return false
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push({ v: child, d: d + 1 })
  }
  return true
}

const toObjectOptions: protobuf.IConversionOptions = {
  longs: String,
  enums: Number,
  bytes: String,
  defaults: false,
  arrays: false,
}

/** Decodes an OTLP protobuf request; Left is a fixed reason. */
export const decodeProtobuf = (bytes: Uint8Array): Either.Either<DecodedBody, string> => {
  try {
    const value = RequestType.toObject(RequestType.decode(bytes), toObjectOptions)
    return nestingWithin(value, MAX_NESTING)
      ? Either.right({ value, ids: "base64" })
      : Either.left("the request nests values too deeply")
  } catch {
    return Either.left("the request is not a valid ExportLogsServiceRequest protobuf message")
  }
}

/** Decodes an OTLP/JSON request body; Left is a fixed reason. */
export const decodeJson = (bytes: Uint8Array): Either.Either<DecodedBody, string> => {
  let value: unknown
  try {
    value = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8"))
  } catch {
    return Either.left("the request body is not valid JSON")
  }
  return nestingWithin(value, MAX_NESTING)
    ? Either.right({ value, ids: "hex" })
    : Either.left("the request nests values too deeply")
}

export interface ExportResult {
  /** Records that can never be accepted (not written); 0 for a full success. */
  readonly rejected: number
  readonly errorMessage: string
}

export const encodeResponse = (r: ExportResult): Uint8Array =>
  ResponseType.encode(
    ResponseType.fromObject(
      r.rejected === 0 ? {} : { partialSuccess: { rejectedLogRecords: r.rejected, errorMessage: r.errorMessage } },
    ),
  ).finish()

export const responseJson = (r: ExportResult): string =>
  JSON.stringify(
    r.rejected === 0
      ? {}
      : { partialSuccess: { rejectedLogRecords: String(r.rejected), errorMessage: r.errorMessage } },
  )

/** Test clients: the protobuf bytes of a request given as a protobufjs object (camelCase keys). */
export const encodeRequest = (value: Record<string, unknown>): Uint8Array =>
  RequestType.encode(RequestType.fromObject(value)).finish()

export const decodeResponse = (bytes: Uint8Array): unknown =>
  ResponseType.toObject(ResponseType.decode(bytes), { longs: Number, defaults: false })

// google.rpc.Status, the body of an OTLP/HTTP error response.
const StatusType = new protobuf.Type("Status")
  .add(new protobuf.Field("code", 1, "int32"))
  .add(new protobuf.Field("message", 2, "string"))
new protobuf.Root().define("google.rpc").add(StatusType)

export const encodeStatus = (code: number, message: string): Uint8Array =>
  StatusType.encode(StatusType.fromObject({ code, message })).finish()
