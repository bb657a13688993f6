/**
 * What the receivers for stock collectors (OTLP, Fluent Forward) share: the tenant a credential names, and the
 * Kafka record of one received log record, so Kafka holds the same `api.Event` records whoever sent them
 * (DESIGN.md "Other ways in and out"): key = the access key, `message` = the JSON of the record, encrypted with the
 * tenant's EncryptionKey when it has one, `UserID` from the tenant, and an `event_id` derived from the record's
 * content (a retried request gives the same ids, so duplicates can be found).
 */
import * as nodeCrypto from "node:crypto"
import { Effect, Redacted } from "effect"
import type { AuthError, TenantNotFound } from "../../domain/Errors.js"
import { EpochNanos, type EventId, Limits, toWireEvent } from "../../domain/Event.js"
import { encryptionKeyBytes, type Tenant } from "../../domain/Tenant.js"
import type { ConfigStore } from "../../shared/ConfigStore.js"
import { counter, gauge } from "../../shared/Metrics.js"
import { EventCodec } from "../../wire/Wire.js"
import type { Auth } from "../Auth.js"
import type { SinkRecord } from "../SinkPort.js"

export type ReceiverName = "otlp_grpc" | "otlp_http" | "forward"

export const receiverRecords = counter(
  "spillway_ingester_receiver_records_total",
  "Log records received by the OTLP and Forward receivers, by receiver and outcome (accepted: Kafka acknowledged them; rejected: can never be accepted)",
  ["receiver", "outcome"],
)
export const receiverRequests = counter(
  "spillway_ingester_receiver_requests_total",
  "Requests (OTLP exports, Forward messages) answered, by receiver and result",
  ["receiver", "result"],
)
export const receiverConnections = gauge(
  "spillway_ingester_receiver_connections",
  "Open connections of the Forward receiver and the OTLP/HTTP receiver",
  ["receiver"],
)

export type RequestResult = "ok" | "partial" | "invalid" | "unauthenticated" | "unavailable" | "overloaded"

export const countRequest = (receiver: ReceiverName, result: RequestResult) =>
  Effect.sync(() => receiverRequests.inc({ receiver, result }))

export const countRecords = (receiver: ReceiverName, accepted: number, rejected: number) =>
  Effect.sync(() => {
    if (accepted > 0) receiverRecords.inc({ receiver, outcome: "accepted" }, accepted)
    if (rejected > 0) receiverRecords.inc({ receiver, outcome: "rejected" }, rejected)
  })

/** A tenant with its encryption key parsed once per request (undefined: messages are plain JSON). */
export interface TenantKey {
  readonly tenant: Tenant
  readonly key: Uint8Array | undefined
}

export const tenantKey = (tenant: Tenant): TenantKey => {
  const spec = Redacted.value(tenant.EncryptionKey)
  // The tenants file is validated (EncryptionKey is empty or 16/24/32 bytes), so this is the key or nothing.
  return { tenant, key: spec === "" ? undefined : encryptionKeyBytes(spec) }
}

/** The tenant of a bearer header (`Bearer <JWT>`): the token's `sub` is the access key, looked up in the store. */
export const tenantOfBearer = (
  auth: Auth,
  store: ConfigStore["Type"],
  header: string | undefined,
): Effect.Effect<TenantKey, AuthError | TenantNotFound> =>
  Effect.gen(function* () {
    const claims = yield* auth.authorize(header)
    const tenant = yield* store.get(claims.sub)
    return tenantKey(tenant)
  })

/** One received log record, before encryption. */
export interface ReceivedRecord {
  /** Nanoseconds since the Unix epoch. */
  readonly timestamp: bigint
  readonly agentId: string
  readonly tag: string
  /** The JSON of the record (plaintext). */
  readonly json: string
}

/**
 * The SHA-256 of a string's UTF-8 bytes, in hex: Node's one-shot `crypto.hash` where it has it (20.12 and later: no
 * Hash object per record, about 2.5 times faster for a record's few hundred bytes), else a Hash.
 */
const sha256Hex: (text: string) => string =
  // A namespace, not a named import: on a Node 20 before 20.12 the name is missing, not a load error.
  typeof nodeCrypto.hash === "function"
    ? (text) => nodeCrypto.hash("sha256", text, "hex")
    : (text) => nodeCrypto.createHash("sha256").update(text).digest("hex")

const clip = (s: string, max: number) => (s.length <= max ? s : s.slice(0, max))

/**
 * The Kafka record of a received record, or undefined when its encoded event is over `maxEventBytes` (it can never be
 * accepted: Kafka refuses records over its size limit). `agent_id` and `tag` are cut to the Event limits. `seal`
 * encrypts under a tenant's key (a request's `batchSealer`, src/shared/Crypto.ts).
 */
export const makeRecord = (
  tk: TenantKey,
  source: string,
  r: ReceivedRecord,
  maxEventBytes: number,
  seal: (key: Uint8Array, plaintext: string) => string,
): SinkRecord | undefined => {
  const accessKey = tk.tenant.AccessKey
  const agentId = clip(r.agentId, Limits.agentId)
  const tag = clip(r.tag, Limits.tag)
  // Approximate size first (hex doubles the ciphertext): refuse without encrypting what cannot fit.
  const plainBytes = Buffer.byteLength(r.json)
  const messageBytes = tk.key === undefined ? plainBytes : 2 * (plainBytes + 28)
  if (messageBytes + agentId.length + tag.length + accessKey.length > maxEventBytes) return undefined
  const eventId = sha256Hex(
    `${source}\u0000${accessKey}\u0000${r.timestamp}\u0000${agentId}\u0000${tag}\u0000${r.json}`,
  ).slice(0, 32)
  const message = tk.key === undefined ? r.json : seal(tk.key, r.json)
  const ts = r.timestamp < 0n ? 0n : r.timestamp
  const value = Buffer.from(
    EventCodec.encode(
      toWireEvent({
        timestamp: EpochNanos.make(ts),
        agentId,
        tag,
        message,
        userId: tk.tenant.UserID,
        accessKey,
        // 32 hex digits: within the EventId limit.
        eventId: eventId as EventId,
      }),
    ),
  )
  if (value.length > maxEventBytes) return undefined
  return { key: accessKey, value }
}

/** JSON.stringify that writes bigints as decimal strings and byte arrays as base64 (never throws on them). */
export const toJson = (value: unknown): string =>
  JSON.stringify(value, function (this: unknown, k: string, v: unknown) {
    // `this[k]` is the value before toJSON (a Buffer's toJSON would give {type, data}).
    const raw = (this as Record<string, unknown>)[k]
    if (raw instanceof Uint8Array) return Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString("base64")
    return typeof v === "bigint" ? v.toString() : v
  }) ?? "null"
