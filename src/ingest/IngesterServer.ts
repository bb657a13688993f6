/**
 * The ingester's gRPC server (grpc-js): `api.EventService` over TLS (optionally mutual TLS),
 * every RPC authenticated with the Bearer JWT of its `authorization` metadata.
 *
 * - ExchangeConfig: the Config of the token's own access key only (PERMISSION_DENIED for another,
 *   NOT_FOUND when the token's key is not a tenant).
 * - SendEvent (the proof of concept's client stream): events are validated one by one, gathered
 *   into Kafka sends as they arrive, and the answer is SUCCESS only once Kafka acknowledged every
 *   event of the stream; a failed send ends the call with UNAVAILABLE at once.
 * - SendEventBatches (bidi): each batch is acknowledged once (BatchAck with its batch_id) after
 *   Kafka acknowledged all of it; many may be in flight. A batch that cannot be accepted gets a
 *   FAILURE ack with the status code and the reason; the stream goes on.
 *
 * Memory is bounded by Budget: a message is read only once its bytes fit the stream's budget, so a
 * slow Kafka stops the reading (HTTP/2 flow control) rather than filling a queue. Messages over
 * `maxMessageBytes` are refused by grpc-js with RESOURCE_EXHAUSTED before they are buffered.
 *
 * Domain errors become gRPC statuses in exactly one place: `toStatus`.
 */
import { readFile } from "node:fs/promises"
import type { Readable } from "node:stream"
import * as grpc from "@grpc/grpc-js"
import {
  Cause,
  Context,
  Data,
  Deferred,
  Duration,
  Effect,
  Either,
  Exit,
  Fiber,
  FiberSet,
  Layer,
  Match,
  Metric,
  Option,
  ParseResult,
  Redacted,
  Schema,
} from "effect"
import type { Claims } from "../domain/Claims.js"
import {
  type AuthError,
  InvalidEvent,
  type Overloaded,
  PermissionDenied,
  SinkUnavailable,
  type TenantNotFound,
} from "../domain/Errors.js"
import {
  type CheckedWireEvent,
  checkedToWire,
  formatRfc3339Nano,
  makeWireEventChecker,
  WireEventBatch,
} from "../domain/Event.js"
import type { Tenant } from "../domain/Tenant.js"
import { ConfigStore } from "../shared/ConfigStore.js"
import { decodeBatchFrames, decodeEventFrame, type EventFrame } from "../wire/EventFrames.js"
import {
  EventCodec,
  EventServiceDefinition,
  type WireBatchAck,
  type WireConfig,
  type WireEResponse,
} from "../wire/Wire.js"
import { Auth } from "./Auth.js"
import { Budget } from "./Budget.js"
import * as M from "./IngesterMetrics.js"
import { KafkaSink, type SinkRecord } from "./KafkaSink.js"

// ---------------------------------------------------------------------------------------------
// Options and errors

export interface TlsFiles {
  readonly certFile: string
  readonly keyFile: string
  /** With a client CA, clients must present a certificate it signed (mutual TLS). */
  readonly clientCaFile?: string | undefined
}

export interface IngesterServerOptions {
  readonly host: string
  /** 0 picks a free port (see IngesterServer.port). */
  readonly port: number
  /** undefined: plaintext (only with --insecure). */
  readonly tls: TlsFiles | undefined
  /** Larger gRPC messages are refused with RESOURCE_EXHAUSTED (default 8 MiB). */
  readonly maxMessageBytes?: number
  /** Larger events are refused with INVALID_ARGUMENT (default 1,000,000 bytes, Kafka's default record size). */
  readonly maxEventBytes?: number
  /** SendEvent: events gathered into one Kafka send (defaults 500 events or 256 KiB). */
  readonly sendEventBatchEvents?: number
  readonly sendEventBatchBytes?: number
  /** Print each accepted event (never keys or tokens) on stdout. */
  readonly printEvents?: boolean
  /** On shutdown, calls in flight get this long to finish before they are cut. Default 20 s. */
  readonly shutdownTimeout?: Duration.DurationInput
}

export class IngesterStartError extends Data.TaggedError("IngesterStartError")<{ readonly detail: string }> {
  override get message() {
    return this.detail
  }
}

export class IngesterServer extends Context.Tag("spillway/IngesterServer")<
  IngesterServer,
  { readonly port: number; readonly host: string }
>() {
  static readonly layer = (
    options: IngesterServerOptions,
  ): Layer.Layer<IngesterServer, IngesterStartError, Auth | ConfigStore | KafkaSink | Budget> =>
    Layer.scoped(IngesterServer, make(options))
}

type RpcError = AuthError | PermissionDenied | TenantNotFound | InvalidEvent | Overloaded | SinkUnavailable

const statusOf = (e: RpcError): { code: grpc.status; details: string } =>
  Match.value(e).pipe(
    Match.tagsExhaustive({
      AuthError: (e) => ({ code: grpc.status.UNAUTHENTICATED, details: `unauthenticated: ${e.reason}` }),
      PermissionDenied: (e) => ({ code: grpc.status.PERMISSION_DENIED, details: e.detail }),
      TenantNotFound: () => ({
        code: grpc.status.NOT_FOUND,
        details: "the token's access key is not a known tenant",
      }),
      InvalidEvent: (e) => ({ code: grpc.status.INVALID_ARGUMENT, details: e.detail }),
      Overloaded: (e) => ({ code: grpc.status.RESOURCE_EXHAUSTED, details: e.detail }),
      SinkUnavailable: (e) => ({
        code: grpc.status.UNAVAILABLE,
        details: `events not stored, retry later: ${e.detail}`,
      }),
    }),
  )

/** The one mapping from a call's outcome to a gRPC status. Defects reveal nothing. */
export const toStatus = (cause: Cause.Cause<RpcError>): { code: grpc.status; details: string } => {
  const failure = Cause.failureOption(cause)
  if (Option.isNone(failure))
    return Cause.isInterruptedOnly(cause)
      ? { code: grpc.status.UNAVAILABLE, details: "the ingester is shutting down or the call was cancelled" }
      : { code: grpc.status.INTERNAL, details: "internal error" }
  return statusOf(failure.value)
}

// ---------------------------------------------------------------------------------------------
// Messages as the server sees them: their size, and the decoded object or why it is malformed.

type Incoming =
  | { readonly size: number; readonly value: unknown; readonly malformed?: undefined }
  | { readonly size: number; readonly malformed: string }

const incoming = <Res>(
  m: grpc.MethodDefinition<unknown, Res>,
  decode: (bytes: Buffer) => unknown = m.requestDeserialize,
): grpc.MethodDefinition<Incoming, Res> => ({
  ...m,
  requestSerialize: () => {
    throw new Error("server-side definition")
  },
  requestDeserialize: (bytes: Buffer): Incoming => {
    try {
      return { size: bytes.length, value: decode(bytes) }
    } catch (e) {
      return { size: bytes.length, malformed: e instanceof Error ? e.message : "undecodable protobuf" }
    }
  },
})

// The event RPCs decode into EventFrames (each event's wire object with its bytes); still untrusted.
const ServerDefinition = {
  SendEvent: incoming(EventServiceDefinition.SendEvent, decodeEventFrame),
  ExchangeConfig: incoming(EventServiceDefinition.ExchangeConfig),
  SendEventBatches: incoming(EventServiceDefinition.SendEventBatches, decodeBatchFrames),
} satisfies grpc.ServiceDefinition

const malformed = (m: { readonly malformed: string }) =>
  new InvalidEvent({ detail: `malformed protobuf message: ${m.malformed.slice(0, 200)}` })

/**
 * Pulls the next message of a grpc-js stream (None at the client's half-close). Reads one at a time. A message
 * already buffered is taken at once, without waiting for an event.
 */
const nextMessage = (r: Readable): Effect.Effect<Option.Option<Incoming>, InvalidEvent> =>
  Effect.suspend(() => {
    if (!r.readableEnded) {
      const v = r.read() as Incoming | null
      if (v !== null) return Effect.succeedSome(v)
    }
    return awaitMessage(r)
  })

const awaitMessage = (r: Readable): Effect.Effect<Option.Option<Incoming>, InvalidEvent> =>
  Effect.async<Option.Option<Incoming>, InvalidEvent>((resume) => {
    let done = false
    const finish = (e: Effect.Effect<Option.Option<Incoming>, InvalidEvent>) => {
      if (done) return
      done = true
      off()
      resume(e)
    }
    const onReadable = () => {
      const v = r.read() as Incoming | null
      if (v !== null) finish(Effect.succeedSome(v))
    }
    const onEnd = () => finish(Effect.succeedNone)
    const onError = () => finish(Effect.fail(new InvalidEvent({ detail: "the request stream failed" })))
    const onClose = () =>
      finish(r.readableEnded ? Effect.succeedNone : Effect.fail(new InvalidEvent({ detail: "the stream was closed" })))
    const off = () => {
      r.off("readable", onReadable)
      r.off("end", onEnd)
      r.off("error", onError)
      r.off("close", onClose)
    }
    r.on("readable", onReadable)
    r.on("end", onEnd)
    r.on("error", onError)
    r.on("close", onClose)
    if (r.readableEnded) onEnd()
    else onReadable()
    return Effect.sync(off)
  })

/** grpc-js reads 16 messages ahead by default; one is enough (the budget decides what is in memory). */
const readOneAhead = (r: Readable) => {
  const state = (r as unknown as { _readableState?: { highWaterMark?: number } })._readableState
  if (state !== undefined && typeof state.highWaterMark === "number") state.highWaterMark = 1
}

// ---------------------------------------------------------------------------------------------
// The server

const decodeBatch = Schema.decodeUnknownEither(WireEventBatch, { errors: "first", onExcessProperty: "ignore" })
const decodeAccessKeyRequest = Schema.decodeUnknownEither(
  Schema.Struct({ AccessKey: Schema.String.pipe(Schema.maxLength(1024)) }),
)

const parseDetail = (e: ParseResult.ParseError) => ParseResult.TreeFormatter.formatErrorSync(e).slice(0, 500)

const readTls = (tls: TlsFiles) =>
  Effect.tryPromise({
    try: async () => ({
      cert: await readFile(tls.certFile),
      key: await readFile(tls.keyFile),
      ca: tls.clientCaFile === undefined ? null : await readFile(tls.clientCaFile),
    }),
    catch: (e) =>
      new IngesterStartError({
        detail: `cannot read the TLS files: ${e instanceof Error ? e.message : String(e)}`,
      }),
  })

const make = (options: IngesterServerOptions) =>
  Effect.gen(function* () {
    const auth = yield* Auth
    const configStore = yield* ConfigStore
    const sink = yield* KafkaSink
    const budget = yield* Budget
    const maxMessageBytes = options.maxMessageBytes ?? 8 * 1024 * 1024
    const maxEventBytes = options.maxEventBytes ?? 1_000_000
    const batchEvents = options.sendEventBatchEvents ?? 500
    const batchBytes = options.sendEventBatchBytes ?? 256 * 1024
    const printEvents = options.printEvents ?? false
    if (budget.options.streamBytes < maxMessageBytes)
      return yield* new IngesterStartError({
        detail: `the per-stream budget (${budget.options.streamBytes} bytes) must be at least the message size limit (${maxMessageBytes} bytes)`,
      })

    /** Completed when the server starts shutting down. */
    const draining = yield* Deferred.make<void>()

    // --- shared steps -----------------------------------------------------------------------
    const authenticate = (metadata: grpc.Metadata) =>
      Effect.gen(function* () {
        const values = metadata.get("authorization")
        const header = values.length === 1 && typeof values[0] === "string" ? values[0] : undefined
        const claims = yield* auth.authorize(values.length > 1 ? "" : header)
        const tenant = yield* configStore.get(claims.sub)
        return { claims, tenant }
      }).pipe(
        Effect.tapErrorTag("AuthError", (e) =>
          Effect.all([
            Metric.increment(Metric.tagged(M.authFailures, "reason", e.reason)),
            Effect.logWarning("refused a token").pipe(Effect.annotateLogs({ reason: e.reason })),
          ]),
        ),
        Effect.tapErrorTag("TenantNotFound", () =>
          Metric.increment(Metric.tagged(M.authFailures, "reason", "unknown_tenant")),
        ),
      )

    const crossTenant = (what: string) =>
      Effect.zipRight(
        Metric.increment(Metric.tagged(M.authFailures, "reason", "cross_tenant")),
        Effect.fail(new PermissionDenied({ detail: what })),
      )

    const eventSize = (e: CheckedWireEvent) =>
      Buffer.byteLength(e.message) + e.tag.length + e.agent_id.length + e.UserID.length + e.AccessKey.length + 64

    interface Validated {
      readonly records: ReadonlyArray<SinkRecord>
      /** The checked events, kept only to print them (--print-events). */
      readonly checked: ReadonlyArray<CheckedWireEvent> | undefined
    }
    /**
     * Validates the wire events of one message against the caller's claims, in one synchronous pass (no effect per
     * event; effect/Schema checks each event, see makeWireEventChecker), and makes their Kafka records: an event's
     * bytes as received when they hold exactly the validated values (clean, timestamp neither stamped nor
     * repaired: never longer than the encoding), else the validated event encoded again. The first refused event
     * refuses them all, as before.
     */
    const validate = (
      frames: ReadonlyArray<EventFrame>,
      claims: Claims,
      check: ReturnType<typeof makeWireEventChecker> = makeWireEventChecker(),
    ) =>
      Effect.suspend((): Effect.Effect<Validated, InvalidEvent | PermissionDenied> => {
        const records: Array<SinkRecord> = new Array(frames.length)
        const checked: Array<CheckedWireEvent> | undefined = printEvents ? [] : undefined
        for (let i = 0; i < frames.length; i++) {
          const frame = frames[i]!
          const decoded = check(frame.value)
          if (Either.isLeft(decoded))
            return Effect.fail(new InvalidEvent({ detail: `invalid event: ${parseDetail(decoded.left)}` }))
          const event = decoded.right
          if (event.AccessKey !== claims.sub)
            return crossTenant("an event carries an access key other than the token's")
          const size = eventSize(event)
          if (size > maxEventBytes)
            return Effect.fail(
              new InvalidEvent({
                detail: `an event of about ${size} bytes exceeds the limit of ${maxEventBytes} bytes`,
              }),
            )
          records[i] = {
            key: event.AccessKey,
            value: frame.clean && event.asSent ? frame.bytes : Buffer.from(EventCodec.encode(checkedToWire(event))),
          }
          checked?.push(event)
        }
        return Effect.succeed({ records, checked })
      })

    const perTenant = new Map<string, { events: typeof M.eventsIn; bytes: typeof M.bytesIn }>()
    const tenantMetrics = (tenant: Tenant) => {
      let m = perTenant.get(tenant.UserID)
      if (m === undefined) {
        m = {
          events: Metric.tagged(M.eventsIn, "user_id", tenant.UserID),
          bytes: Metric.tagged(M.bytesIn, "user_id", tenant.UserID),
        }
        perTenant.set(tenant.UserID, m)
      }
      return m
    }
    /** Counts accepted events (and prints them with --print-events). */
    const counted = (tenant: Tenant, events: number, bytes: number, checked?: ReadonlyArray<CheckedWireEvent>) =>
      Effect.gen(function* () {
        const m = tenantMetrics(tenant)
        yield* Metric.incrementBy(m.events, events)
        yield* Metric.incrementBy(m.bytes, bytes)
        if (checked !== undefined)
          for (const e of checked)
            process.stdout.write(
              `${JSON.stringify({
                timestamp: formatRfc3339Nano(e.timestamp),
                agent_id: e.agent_id,
                tag: e.tag,
                UserID: e.UserID,
                event_id: e.event_id,
                message: e.message,
              })}\n`,
            )
      })

    const ack = (rpc: string, status: string) =>
      Metric.increment(Metric.tagged(Metric.tagged(M.acks, "rpc", rpc), "status", status))
    const reject = (reason: string) => Metric.increment(Metric.tagged(M.rejected, "reason", reason))
    const rejectReason = (e: RpcError) =>
      e._tag === "Overloaded"
        ? "overloaded"
        : e._tag === "SinkUnavailable"
          ? "unavailable"
          : e._tag === "InvalidEvent"
            ? "invalid"
            : e._tag === "PermissionDenied"
              ? "permission_denied"
              : e._tag === "TenantNotFound"
                ? "unknown_tenant"
                : "unauthenticated"

    // --- ExchangeConfig ------------------------------------------------------------------------
    const exchangeConfig = (call: grpc.ServerUnaryCall<Incoming, WireConfig>) =>
      Effect.gen(function* () {
        const { claims, tenant } = yield* authenticate(call.metadata)
        if (call.request.malformed !== undefined) return yield* malformed(call.request)
        const req = decodeAccessKeyRequest(call.request.value)
        if (Either.isLeft(req)) return yield* new InvalidEvent({ detail: parseDetail(req.left) })
        if (req.right.AccessKey !== "" && req.right.AccessKey !== claims.sub)
          return yield* crossTenant("a token may only fetch the config of its own access key")
        return {
          AccessKey: tenant.AccessKey,
          AccessToken: "",
          EncryptionKey: Redacted.value(tenant.EncryptionKey),
          UserID: tenant.UserID,
        } satisfies WireConfig
      })

    // --- SendEvent -----------------------------------------------------------------------------
    const sendEvent = (call: grpc.ServerReadableStream<Incoming, WireEResponse>) =>
      Effect.gen(function* () {
        readOneAhead(call)
        const { claims, tenant } = yield* authenticate(call.metadata)
        const streamBudget = yield* budget.stream
        const failed = yield* Deferred.make<never, SinkUnavailable>()
        const publishes = new Set<Fiber.RuntimeFiber<void, never>>()
        let pending: Array<SinkRecord> = []
        const check = makeWireEventChecker()
        let pendingBytes = 0
        let total = 0

        const flush = Effect.gen(function* () {
          if (pending.length === 0) return
          const events = pending
          const bytes = pendingBytes
          pending = []
          pendingBytes = 0
          yield* counted(tenant, events.length, bytes)
          const fiber = yield* sink.publishRecords(events).pipe(
            Effect.catchAll((e) => Deferred.fail(failed, e)),
            Effect.asVoid,
            Effect.ensuring(streamBudget.release(bytes)),
            Effect.forkScoped,
          )
          publishes.add(fiber)
          fiber.addObserver(() => publishes.delete(fiber))
        })

        const read = Effect.gen(function* () {
          while (true) {
            const next = yield* nextMessage(call)
            if (Option.isNone(next)) break
            const msg = next.value
            if (msg.malformed !== undefined) return yield* malformed(msg)
            const event = yield* validate([msg.value as EventFrame], claims, check)
            yield* streamBudget.acquire(msg.size)
            pending.push(event.records[0]!)
            pendingBytes += msg.size
            total++
            // Counted per Kafka send (flush), printed as they come.
            if (event.checked !== undefined) yield* counted(tenant, 0, 0, event.checked)
            if (pending.length >= batchEvents || pendingBytes >= batchBytes) yield* flush
          }
          yield* flush
          while (publishes.size > 0) yield* Fiber.await([...publishes][0]!)
        })
        yield* Effect.raceFirst(read, Deferred.await(failed))
        yield* Deferred.poll(failed).pipe(Effect.flatMap(Option.match({ onNone: () => Effect.void, onSome: (e) => e })))
        return total
      }).pipe(Effect.scoped)

    // --- SendEventBatches ----------------------------------------------------------------------
    const sendEventBatches = (call: grpc.ServerDuplexStream<Incoming, WireBatchAck>) =>
      Effect.gen(function* () {
        readOneAhead(call)
        const { claims, tenant } = yield* authenticate(call.metadata)
        const streamBudget = yield* budget.stream
        const inFlight = new Set<string>()
        const publishes = new Set<Fiber.RuntimeFiber<void, never>>()

        const write = (a: WireBatchAck) =>
          Effect.sync(() => {
            if (!call.cancelled && !call.writableEnded) call.write(a)
          }).pipe(Effect.zipRight(ack("SendEventBatches", a.status)))
        const refuse = (batch_id: string, e: RpcError) =>
          Effect.gen(function* () {
            const s = statusOf(e)
            yield* reject(rejectReason(e))
            yield* write({ batch_id, status: "FAILURE", code: s.code, detail: s.details })
          })

        const handle = (msg: Incoming) =>
          Effect.gen(function* () {
            if (msg.malformed !== undefined) return yield* malformed(msg)
            const raw = msg.value as { batch_id?: unknown }
            const batchId = typeof raw.batch_id === "string" ? raw.batch_id : ""
            if (batchId.length === 0 || batchId.length > 128)
              return yield* new InvalidEvent({ detail: "every batch needs a batch_id of 1 to 128 characters" })
            if (inFlight.has(batchId))
              return yield* new InvalidEvent({ detail: `batch_id ${JSON.stringify(batchId)} is already in flight` })
            const batch = decodeBatch(msg.value)
            if (Either.isLeft(batch))
              return yield* refuse(batchId, new InvalidEvent({ detail: `invalid batch: ${parseDetail(batch.left)}` }))
            // decodeBatchFrames made the events EventFrames; validate checks each with Schema.
            const events = yield* Effect.either(validate(batch.right.events as ReadonlyArray<EventFrame>, claims))
            if (Either.isLeft(events)) return yield* refuse(batchId, events.left)
            const got = yield* Effect.either(streamBudget.acquire(msg.size))
            if (Either.isLeft(got)) return yield* refuse(batchId, got.left)
            yield* counted(tenant, events.right.records.length, msg.size, events.right.checked)
            inFlight.add(batchId)
            const fiber = yield* sink.publishRecords(events.right.records).pipe(
              Effect.matchEffect({
                onSuccess: () => write({ batch_id: batchId, status: "SUCCESS", code: 0, detail: "" }),
                onFailure: (e) => refuse(batchId, e),
              }),
              Effect.ensuring(
                Effect.zipRight(
                  streamBudget.release(msg.size),
                  Effect.sync(() => inFlight.delete(batchId)),
                ),
              ),
              Effect.forkScoped,
            )
            publishes.add(fiber)
            fiber.addObserver(() => publishes.delete(fiber))
          })

        // On shutdown the stream stops reading, lets its batches in flight be acked, then ends with
        // UNAVAILABLE so the client resends anything unacknowledged elsewhere.
        let drained = false
        while (true) {
          const next: Option.Option<Incoming> | "drain" = yield* Effect.raceFirst(
            nextMessage(call),
            Effect.as(Deferred.await(draining), "drain" as const),
          )
          if (next === "drain") {
            drained = true
            break
          }
          if (Option.isNone(next)) break
          yield* handle(next.value)
        }
        while (publishes.size > 0) yield* Fiber.await([...publishes][0]!)
        if (drained) return yield* new SinkUnavailable({ detail: "the ingester is shutting down; reconnect" })
      }).pipe(Effect.scoped)

    // --- wiring into grpc-js -------------------------------------------------------------------
    const run = yield* FiberSet.makeRuntime<never>()
    const logFailure = (rpc: string, cause: Cause.Cause<RpcError>) => {
      const failure = Cause.failureOption(cause)
      if (Option.isSome(failure)) return Effect.zipRight(reject(rejectReason(failure.value)), Effect.void)
      if (Cause.isInterruptedOnly(cause)) return Effect.void
      return Effect.logError(`${rpc} failed`, cause)
    }

    const handlers: grpc.UntypedServiceImplementation = {
      ExchangeConfig: ((call, callback) => {
        const fiber = run(exchangeConfig(call).pipe(Effect.tapErrorCause((c) => logFailure("ExchangeConfig", c))))
        call.on("cancelled", () => fiber.unsafeInterruptAsFork(fiber.id()))
        fiber.addObserver(
          Exit.match({
            onSuccess: (config) => callback(null, config),
            onFailure: (cause) => callback(toStatus(cause)),
          }),
        )
      }) satisfies grpc.handleUnaryCall<Incoming, WireConfig>,

      SendEvent: ((call, callback) => {
        const fiber = run(
          sendEvent(call).pipe(
            Effect.tap(() => ack("SendEvent", "SUCCESS")),
            Effect.tapErrorCause((c) => Effect.zipRight(ack("SendEvent", "FAILURE"), logFailure("SendEvent", c))),
          ),
        )
        call.on("cancelled", () => fiber.unsafeInterruptAsFork(fiber.id()))
        fiber.addObserver(
          Exit.match({
            onSuccess: () => callback(null, { status: "SUCCESS" }),
            onFailure: (cause) => callback(toStatus(cause)),
          }),
        )
      }) satisfies grpc.handleClientStreamingCall<Incoming, WireEResponse>,

      SendEventBatches: ((call) => {
        const fiber = run(sendEventBatches(call).pipe(Effect.tapErrorCause((c) => logFailure("SendEventBatches", c))))
        call.on("cancelled", () => fiber.unsafeInterruptAsFork(fiber.id()))
        fiber.addObserver(
          Exit.match({
            onSuccess: () => {
              if (!call.writableEnded) call.end()
            },
            onFailure: (cause) => {
              if (!call.cancelled && !call.writableEnded) call.emit("error", toStatus(cause))
            },
          }),
        )
      }) satisfies grpc.handleBidiStreamingCall<Incoming, WireBatchAck>,
    }

    // --- the server ----------------------------------------------------------------------------
    const credentials =
      options.tls === undefined
        ? grpc.ServerCredentials.createInsecure()
        : yield* Effect.map(readTls(options.tls), (t) =>
            grpc.ServerCredentials.createSsl(t.ca, [{ private_key: t.key, cert_chain: t.cert }], t.ca !== null),
          )
    if (options.tls === undefined)
      yield* Effect.logWarning("--insecure: serving gRPC WITHOUT TLS; tokens and events travel in plaintext")

    const server = new grpc.Server({
      "grpc.max_receive_message_length": maxMessageBytes,
      "grpc.max_concurrent_streams": 256,
      "grpc.keepalive_time_ms": 60_000,
      "grpc.keepalive_timeout_ms": 20_000,
    })
    server.addService(ServerDefinition, handlers)
    const host = options.host.includes(":") && !options.host.startsWith("[") ? `[${options.host}]` : options.host
    const shutdownTimeout = Duration.decode(options.shutdownTimeout ?? "20 seconds")

    const port = yield* Effect.acquireRelease(
      Effect.async<number, IngesterStartError>((resume) => {
        server.bindAsync(`${host}:${options.port}`, credentials, (err, port) => {
          if (err)
            resume(
              Effect.fail(
                new IngesterStartError({ detail: `cannot listen on ${host}:${options.port}: ${err.message}` }),
              ),
            )
          else resume(Effect.succeed(port))
        })
      }),
      () =>
        Effect.gen(function* () {
          yield* Effect.logInfo("ingester stops accepting calls and finishes those in flight")
          yield* Deferred.succeed(draining, undefined)
          yield* Effect.async<void>((resume) => {
            server.tryShutdown(() => resume(Effect.void))
          }).pipe(
            Effect.timeoutTo({
              duration: shutdownTimeout,
              onTimeout: () => {
                server.forceShutdown()
                return "forced"
              },
              onSuccess: () => "drained",
            }),
            Effect.flatMap((how) => Effect.logInfo(`gRPC server stopped (${how})`)),
          )
        }),
    )
    yield* Effect.logInfo("ingester listening").pipe(
      Effect.annotateLogs({
        host: options.host,
        port,
        tls: options.tls === undefined ? "off" : options.tls.clientCaFile === undefined ? "server" : "mutual",
      }),
    )
    return { port, host: options.host }
  })
