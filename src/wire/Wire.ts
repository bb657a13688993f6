/**
 * The wire contract: `proto/spillway.proto` loaded with protobufjs. One codec serves gRPC
 * (service definition with serializers) and Kafka (record values are the protobuf encoding of
 * `api.Event`). Decoders return plain objects (`longs: String`, defaults filled) for the caller
 * to decode with effect/Schema at its edge; nothing here trusts the bytes.
 */
import { fileURLToPath } from "node:url"
import * as grpc from "@grpc/grpc-js"
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

const codec = <T extends object>(name: string) => {
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

const method = <Req extends object, Res extends object>(
  name: string,
  req: ReturnType<typeof codec<Req>>,
  res: ReturnType<typeof codec<Res>>,
  requestStream: boolean,
  responseStream: boolean,
): grpc.MethodDefinition<unknown, Res> => ({
  path: `/api.EventService/${name}`,
  requestStream,
  responseStream,
  originalName: name,
  requestSerialize: (value: unknown) => Buffer.from(req.encode(value as Req)),
  requestDeserialize: (bytes: Buffer) => req.decode(bytes),
  responseSerialize: (value: Res) => Buffer.from(res.encode(value)),
  responseDeserialize: (bytes: Buffer) => res.decode(bytes) as Res,
})

/**
 * `api.EventService`. Requests deserialize to `unknown` (decode them with Schema); responses are
 * typed. Clients get `unknown` responses back through `responseDeserialize` cast to the wire
 * type: they must still validate what they use.
 */
export const EventServiceDefinition = {
  SendEvent: method("SendEvent", EventCodec, EResponseCodec, true, false),
  ExchangeConfig: method("ExchangeConfig", AccessKeyCodec, ConfigCodec, false, false),
  SendEventBatches: method("SendEventBatches", EventBatchCodec, BatchAckCodec, true, true),
} satisfies grpc.ServiceDefinition

export type EventServiceDefinition = typeof EventServiceDefinition

/** A grpc-js client class for `api.EventService` (`new EventServiceClient(address, credentials, options)`). */
export const EventServiceClient = grpc.makeGenericClientConstructor(EventServiceDefinition, "api.EventService")
