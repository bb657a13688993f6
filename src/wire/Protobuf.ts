/**
 * The wire contract's messages: `proto/spillway.proto` loaded with protobufjs. One codec serves gRPC (Wire.ts
 * builds the service definition from these) and Kafka (record values are the protobuf encoding of `api.Event`).
 * Decoders return plain objects (`longs: String`, defaults filled) for the caller to decode with effect/Schema at
 * its edge; nothing here trusts the bytes. No gRPC here: the router, which only reads Kafka records, loads
 * protobufjs without @grpc/grpc-js (0.58 MB less code to load).
 */
import { fileURLToPath } from "node:url"
import protobuf from "protobufjs"
import type { WireEvent } from "../domain/Event.js"

/**
 * The `proto/` folder. Resolved from this module, two levels below the repository (src/wire, dist/wire, and
 * dist/programs for the bundled programs): every module that reads a .proto file takes the path from here.
 */
export const protoDir = fileURLToPath(new URL("../../proto/", import.meta.url))
export const protoPath = `${protoDir}spillway.proto`

// keepCase: field names as in the .proto (agent_id, event_id, batch_id), which the domain schemas expect;
// protobufjs would otherwise camelCase them and silently drop snake_case fields in fromObject.
const root = new protobuf.Root().loadSync(protoPath, { keepCase: true })
const toObjectOptions: protobuf.IConversionOptions = { longs: String, enums: String, defaults: true }

export const codec = <T extends object>(name: string) => {
  const type = root.lookupType(name)
  return {
    type,
    /** Throws on malformed bytes: call inside Effect.try / a gRPC deserializer. */
    decode: (bytes: Uint8Array): unknown => type.toObject(type.decode(bytes), toObjectOptions),
    encode: (value: T): Uint8Array => type.encode(type.fromObject(value as Record<string, unknown>)).finish(),
  }
}

export type EventCode = "SUCCESS" | "FAILURE"
export interface WireAccessKey {
  readonly AccessKey: string
}
export interface WireConfig {
  readonly AccessKey: string
  readonly AccessToken: string
  readonly EncryptionKey: string
  readonly UserID: string
}
export interface WireEResponse {
  readonly status: EventCode
}
export interface WireEventBatch {
  readonly batch_id: string
  readonly events: ReadonlyArray<WireEvent>
}
export interface WireBatchAck {
  readonly batch_id: string
  readonly status: EventCode
  readonly code: number
  readonly detail: string
}

export const EventCodec = codec<WireEvent>("api.Event")
export const AccessKeyCodec = codec<WireAccessKey>("api.AccessKey")
export const ConfigCodec = codec<WireConfig>("api.Config")
export const EResponseCodec = codec<WireEResponse>("api.EResponse")
export const EventBatchCodec = codec<WireEventBatch>("api.EventBatch")
export const BatchAckCodec = codec<WireBatchAck>("api.BatchAck")
