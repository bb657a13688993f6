/**
 * The wire contract over gRPC: `api.EventService` built from the protobuf codecs of Protobuf.ts (which this module
 * re-exports, so that the gRPC side has one import).
 */
import * as grpc from "@grpc/grpc-js"
import {
  AccessKeyCodec,
  BatchAckCodec,
  ConfigCodec,
  type codec,
  EResponseCodec,
  EventBatchCodec,
  EventCodec,
} from "./Protobuf.js"

export * from "./EventBatchEncoding.js"
export * from "./Protobuf.js"

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
  // A Buffer is an encoded request already (the agent's batches, EventBatchEncoding.ts): sent as it is.
  requestSerialize: (value: unknown) => (Buffer.isBuffer(value) ? value : Buffer.from(req.encode(value as Req))),
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
