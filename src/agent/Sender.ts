/**
 * Sender: moves buffered events to the ingester over `SendEventBatches` (TLS + Bearer token),
 * several batches in flight, deleting each batch from the disk buffer when its ack arrives.
 *
 * One connection is a "session": read the token, ExchangeConfig(ACCESS_KEY), open the batch stream,
 * send from the oldest unacknowledged event on. Any failure ends the session; the next one starts
 * again from the oldest event still in the buffer (so unacknowledged batches are re-sent: at least
 * once, duplicates carry the same event_id). Sessions are retried on an exponential, jittered,
 * capped Schedule; an UNAUTHENTICATED refusal waits at least `authRetry` and re-reads the token.
 * ExchangeConfig is repeated every `configRefresh` while connected: a new key applies to the next batch.
 */
import { mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import * as grpc from "@grpc/grpc-js"
import {
  Data,
  Deferred,
  Duration,
  Effect,
  Exit,
  FiberSet,
  Metric,
  ParseResult,
  Redacted,
  Ref,
  Schedule,
  Schema,
} from "effect"
import { AgentConfig } from "../domain/AgentConfig.js"
import type { WireEvent } from "../domain/Event.js"
import { Crypto, type Key } from "../shared/Crypto.js"
import { EventServiceClient, type WireBatchAck, type WireConfig, type WireEventBatch } from "../wire/Wire.js"
import * as M from "./AgentMetrics.js"
import { type BatchLimits, isPermanentRejection, planBatch } from "./Batching.js"
import type { BufferedRow } from "./BufferStore.js"
import { DiskBuffer } from "./DiskBuffer.js"
import { makeSignal, waitUntil } from "./Signal.js"

export type SendFailure = "unavailable" | "unauthenticated" | "denied" | "timeout"

export class SendError extends Data.TaggedError("SendError")<{
  readonly kind: SendFailure
  readonly detail: string
}> {}

/** Where the token comes from: a file (re-read before every connection) or a fixed value. */
export type TokenSource =
  | { readonly _tag: "file"; readonly path: string }
  | { readonly _tag: "value"; readonly token: Redacted.Redacted<string> }

export interface SenderOptions {
  /** `host:port`. */
  readonly address: string
  /** PEM of the CA that signed the ingester's certificate; undefined = the system's roots. */
  readonly caCert: Buffer | undefined
  /** Plaintext gRPC (development only). */
  readonly insecure: boolean
  /** TLS server name to expect, if not the host of `address`. */
  readonly serverName: string | undefined
  readonly accessKey: string
  readonly token: TokenSource
  readonly agentId: string
  readonly batch: BatchLimits
  /** Batches in flight per stream. */
  readonly window: number
  readonly configRefresh: Duration.Duration
  /** A batch not acknowledged within this ends the session (reconnect, resend). */
  readonly ackTimeout: Duration.Duration
  readonly retryBase: Duration.Duration
  readonly retryCap: Duration.Duration
  /** Least wait after UNAUTHENTICATED / PERMISSION_DENIED on the stream or ExchangeConfig. */
  readonly authRetry: Duration.Duration
  /** How long SIGTERM waits for the buffer to drain. */
  readonly shutdownGrace: Duration.Duration
}

interface ClientMethods {
  ExchangeConfig(
    req: { AccessKey: string },
    md: grpc.Metadata,
    options: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null, res?: WireConfig) => void,
  ): grpc.ClientUnaryCall
  SendEventBatches(md: grpc.Metadata): grpc.ClientDuplexStream<WireEventBatch, WireBatchAck>
}
type Client = grpc.Client & ClientMethods

/** Maps a gRPC error to what the sender does about it. */
export const classify = (e: unknown, where: string): SendError => {
  const err = e as Partial<grpc.ServiceError>
  const code = typeof err.code === "number" ? err.code : grpc.status.UNAVAILABLE
  const detail = `${where}: ${grpc.status[code] ?? code}${err.details ? ` (${err.details})` : ""}`
  switch (code) {
    case grpc.status.UNAUTHENTICATED:
      return new SendError({ kind: "unauthenticated", detail })
    case grpc.status.PERMISSION_DENIED:
      return new SendError({ kind: "denied", detail })
    case grpc.status.DEADLINE_EXCEEDED:
      return new SendError({ kind: "timeout", detail })
    default:
      return new SendError({ kind: "unavailable", detail })
  }
}

interface Settings {
  readonly key: Key
  readonly userId: string
  readonly accessKey: string
  /** The EncryptionKey string, to notice a change (never logged). */
  readonly keySpec: string
}

interface Inflight {
  readonly id: string
  readonly first: number
  readonly last: number
  readonly rows: ReadonlyArray<BufferedRow>
  readonly sentAt: number
}

const NANOS = 1_000_000_000n

/** The wire Event for a buffered row under the current settings (encrypting the record). */
const toWire = (crypto: Crypto, settings: Settings, agentId: string, row: BufferedRow) =>
  Effect.map(crypto.encrypt(settings.key, row.record), (message) => {
    const ns = BigInt(row.ts)
    const wire = {
      timestamp: { seconds: (ns / NANOS).toString(), nanos: Number(ns % NANOS) },
      agent_id: agentId,
      tag: row.tag,
      message,
      UserID: settings.userId,
      AccessKey: settings.accessKey,
      event_id: row.eventId,
      // protobufjs names these agent_id/event_id with `keepCase` and agentId/eventId without it;
      // Wire.ts has used both, so both spellings are given (fromObject ignores the unknown one).
      agentId,
      eventId: row.eventId,
    }
    return wire as unknown as WireEvent
  })

export const makeSender = (options: SenderOptions) =>
  Effect.gen(function* () {
    const buffer = yield* DiskBuffer
    const crypto = yield* Crypto
    const settings = yield* Ref.make<Settings | undefined>(undefined)
    const draining = yield* Ref.make(false)
    const rejectedDir = join(buffer.dir, "rejected")
    let lastTokenStamp = ""
    let sessionNo = 0

    const readToken = Effect.gen(function* () {
      const t = options.token
      if (t._tag === "value") return Redacted.value(t.token)
      const r = yield* Effect.try({
        try: () => ({ text: readFileSync(t.path, "utf8").trim(), stamp: String(statSync(t.path).mtimeMs) }),
        catch: (e) =>
          new SendError({ kind: "unauthenticated", detail: `cannot read token file ${t.path}: ${String(e)}` }),
      })
      if (lastTokenStamp !== "" && r.stamp !== lastTokenStamp)
        yield* Effect.logInfo("token file changed; using the new token").pipe(Effect.annotateLogs({ file: t.path }))
      lastTokenStamp = r.stamp
      if (r.text === "")
        return yield* new SendError({ kind: "unauthenticated", detail: `token file ${t.path} is empty` })
      return r.text
    })

    const metadataFor = (token: string) => {
      const md = new grpc.Metadata()
      md.set("authorization", `Bearer ${token}`)
      return md
    }

    const credentials = options.insecure
      ? grpc.credentials.createInsecure()
      : grpc.credentials.createSsl(options.caCert ?? null)
    const channelOptions: grpc.ChannelOptions = {
      ...(options.serverName ? { "grpc.ssl_target_name_override": options.serverName } : {}),
      "grpc.max_send_message_length": 64 * 1024 * 1024,
    }

    const exchange = (client: Client, token: string) =>
      Effect.gen(function* () {
        const res = yield* Effect.async<WireConfig, SendError>((resume) => {
          const call = client.ExchangeConfig(
            { AccessKey: options.accessKey },
            metadataFor(token),
            { deadline: Date.now() + 10_000 },
            (err, res) => resume(err || !res ? Effect.fail(classify(err, "ExchangeConfig")) : Effect.succeed(res)),
          )
          return Effect.sync(() => call.cancel())
        })
        const cfg = yield* Schema.decodeUnknown(AgentConfig)(res).pipe(
          Effect.mapError(
            (e) =>
              new SendError({
                kind: "unavailable",
                detail: `ExchangeConfig returned an unusable config: ${ParseResult.TreeFormatter.formatErrorSync(e)}`,
              }),
          ),
        )
        const keySpec = Redacted.value(cfg.EncryptionKey)
        const key = yield* crypto
          .key(keySpec)
          .pipe(
            Effect.mapError(
              () =>
                new SendError({ kind: "unavailable", detail: "ExchangeConfig returned an unusable encryption key" }),
            ),
          )
        const prev = yield* Ref.get(settings)
        const next: Settings = { key, keySpec, userId: cfg.UserID, accessKey: cfg.AccessKey }
        if (prev === undefined)
          yield* Effect.logInfo("config exchanged").pipe(
            Effect.annotateLogs({ encrypted: key.bytes !== undefined, userId: cfg.UserID }),
          )
        else if (prev.keySpec !== keySpec || prev.userId !== next.userId || prev.accessKey !== next.accessKey)
          yield* Effect.logInfo("config changed; applies to the next batch").pipe(
            Effect.annotateLogs({
              encrypted: key.bytes !== undefined,
              keyChanged: prev.keySpec !== keySpec,
              userId: cfg.UserID,
            }),
          )
        yield* Ref.set(settings, next)
      })

    const session = Effect.gen(function* () {
      sessionNo++
      const sid = `${Date.now().toString(36)}-${sessionNo}`
      const token = yield* readToken
      const client = yield* Effect.acquireRelease(
        Effect.sync(() => new EventServiceClient(options.address, credentials, channelOptions) as unknown as Client),
        (c) => Effect.sync(() => c.close()),
      )
      yield* exchange(client, token)
      const failed = yield* Deferred.make<never, SendError>()
      const fail = (e: SendError) => Deferred.unsafeDone(failed, Exit.fail(e))
      const call = yield* Effect.acquireRelease(
        Effect.sync(() => client.SendEventBatches(metadataFor(token))),
        (c) => Effect.sync(() => c.cancel()),
      )
      const inflight = new Map<string, Inflight>()
      const acked = yield* makeSignal
      const run = yield* FiberSet.makeRuntime<never>()
      let cursor = 0
      let seq = 0
      let everAcked = false
      let lastAckAt = 0

      const onAck = (ack: WireBatchAck) =>
        Effect.gen(function* () {
          // See toWire: without keepCase the decoded ack names it batchId.
          const batchId = ack.batch_id ?? (ack as { batchId?: string }).batchId ?? ""
          const b = inflight.get(batchId)
          if (b === undefined) {
            yield* Effect.logWarning("ack for an unknown batch ignored").pipe(Effect.annotateLogs({ batch: batchId }))
            return
          }
          lastAckAt = Date.now()
          if (ack.status === "SUCCESS" || (ack.status as unknown) === 0) {
            inflight.delete(b.id)
            const r = yield* buffer.remove(b.first, b.last)
            yield* Metric.incrementBy(M.eventsAcked, r.n)
            if (!everAcked) {
              everAcked = true
              yield* Effect.logInfo("ingester acknowledging batches")
            }
          } else if (isPermanentRejection(ack.code)) {
            const file = join(rejectedDir, `${new Date().toISOString().replaceAll(":", "-")}-${b.id}.json`)
            const written = yield* Effect.try(() => {
              mkdirSync(rejectedDir, { recursive: true })
              writeFileSync(
                file,
                `${JSON.stringify(
                  {
                    batch_id: b.id,
                    code: grpc.status[ack.code] ?? ack.code,
                    detail: ack.detail,
                    rejected_at: new Date().toISOString(),
                    events: b.rows.map((r) => ({ event_id: r.eventId, tag: r.tag, ts: r.ts, record: r.record })),
                  },
                  null,
                  1,
                )}\n`,
              )
            }).pipe(
              Effect.as(true),
              Effect.catchAll((e) =>
                Effect.logError("cannot write a rejected batch; it stays in the buffer").pipe(
                  Effect.annotateLogs({ file, error: String(e) }),
                  Effect.as(false),
                ),
              ),
            )
            if (!written)
              return yield* Effect.sync(() =>
                fail(new SendError({ kind: "unavailable", detail: "rejected batch not saved" })),
              )
            inflight.delete(b.id)
            const r = yield* buffer.remove(b.first, b.last)
            yield* Metric.incrementBy(M.eventsRejected, r.n)
            yield* Metric.increment(M.batchesRejected)
            yield* Effect.logError("ingester rejected a batch; moved to the rejected folder").pipe(
              Effect.annotateLogs({
                batch: b.id,
                code: grpc.status[ack.code] ?? ack.code,
                detail: ack.detail,
                events: r.n,
                file,
              }),
            )
          } else {
            // A retryable failure for this batch (UNAVAILABLE, RESOURCE_EXHAUSTED...): reconnect and resend.
            fail(
              new SendError({
                kind: "unavailable",
                detail: `batch refused: ${grpc.status[ack.code] ?? ack.code} (${ack.detail})`,
              }),
            )
          }
          yield* Metric.set(M.inflightBatches, inflight.size)
          yield* acked.notify
        })

      call.on("data", (ack: WireBatchAck) => {
        run(onAck(ack))
      })
      call.on("error", (e) => fail(classify(e, "SendEventBatches")))
      call.on("end", () =>
        fail(new SendError({ kind: "unavailable", detail: "SendEventBatches: stream ended by the ingester" })),
      )

      const write = (batch: WireEventBatch) =>
        Effect.async<void>((resume) => {
          if (call.write(batch)) return resume(Effect.void)
          const onDrain = () => resume(Effect.void)
          call.once("drain", onDrain)
          return Effect.sync(() => call.removeListener("drain", onDrain))
        })

      const sendLoop = Effect.gen(function* () {
        while (true) {
          yield* waitUntil(acked, () => inflight.size < options.window)
          const since = yield* buffer.changed.current
          const available = yield* buffer.peek(cursor, options.batch.maxEvents + 1, Number.POSITIVE_INFINITY)
          const plan = planBatch(available, options.batch, Date.now(), yield* Ref.get(draining))
          if (plan.rows.length === 0) {
            yield* buffer.changed.wait(since, "1 second")
            continue
          }
          if (!plan.ready) {
            // woken early by new events or by the drain at shutdown
            yield* buffer.changed.wait(since, Duration.millis(plan.waitMs))
            continue
          }
          const s = (yield* Ref.get(settings))!
          const events = yield* Effect.forEach(plan.rows, (row) => toWire(crypto, s, options.agentId, row))
          const id = `${sid}-${++seq}`
          const first = plan.rows[0]!.id
          const last = plan.rows[plan.rows.length - 1]!.id
          inflight.set(id, { id, first, last, rows: plan.rows, sentAt: Date.now() })
          cursor = last
          yield* Metric.set(M.inflightBatches, inflight.size)
          yield* write({ batch_id: id, batchId: id, events } as WireEventBatch)
          yield* Metric.incrementBy(M.eventsSent, events.length)
        }
      })

      const ackTimeoutMs = Duration.toMillis(options.ackTimeout)
      /**
       * No progress for `ackTimeout`: batches are in flight and neither the oldest was sent nor any
       * ack arrived within it. A slow ingester that keeps acknowledging (Kafka backpressure) is left alone.
       */
      const watchdog = Effect.sync(() => {
        if (inflight.size === 0) return
        let oldest = Number.POSITIVE_INFINITY
        for (const b of inflight.values()) oldest = Math.min(oldest, b.sentAt)
        if (Date.now() - Math.max(oldest, lastAckAt) > ackTimeoutMs)
          fail(new SendError({ kind: "timeout", detail: `batches not acknowledged within ${ackTimeoutMs} ms` }))
      }).pipe(Effect.repeat(Schedule.spaced("500 millis")))

      const refresh = Effect.gen(function* () {
        const t = yield* readToken
        yield* exchange(client, t)
      }).pipe(
        Effect.catchAll((e) =>
          Effect.logWarning("periodic ExchangeConfig failed; keeping the last config").pipe(
            Effect.annotateLogs({ error: e.detail }),
          ),
        ),
        Effect.repeat(Schedule.spaced(options.configRefresh)),
        Effect.delay(options.configRefresh),
      )

      yield* Metric.set(M.connected, 1)
      yield* Effect.addFinalizer(() => Effect.all([Metric.set(M.connected, 0), Metric.set(M.inflightBatches, 0)]))
      yield* Effect.logInfo("connected to the ingester").pipe(
        Effect.annotateLogs({ ingester: options.address, bufferedEvents: buffer.eventCount() }),
      )
      yield* Effect.forkScoped(watchdog)
      yield* Effect.forkScoped(refresh)
      return yield* Effect.raceFirst(sendLoop, Deferred.await(failed))
    }).pipe(Effect.scoped)

    const policy = Schedule.exponential(options.retryBase).pipe(
      Schedule.union(Schedule.spaced(options.retryCap)),
      Schedule.jittered,
      Schedule.resetAfter("1 minute"),
      Schedule.intersect(
        Schedule.identity<SendError>().pipe(
          Schedule.addDelay((e) =>
            e.kind === "unauthenticated" || e.kind === "denied" ? options.authRetry : Duration.zero,
          ),
        ),
      ),
    )

    const run = session.pipe(
      Effect.tapError((e) =>
        Effect.gen(function* () {
          yield* Metric.increment(M.retries)
          if (e.kind === "unauthenticated") {
            yield* Metric.increment(M.authFailures)
            yield* Effect.logError(
              "the ingester refused the token (UNAUTHENTICATED): replace the token (file) or fix ACCESS_TOKEN; retrying slowly, events stay buffered",
            ).pipe(Effect.annotateLogs({ detail: e.detail, bufferedEvents: buffer.eventCount() }))
          } else if (e.kind === "denied") {
            yield* Effect.logError(
              "the ingester denied this agent (PERMISSION_DENIED): check ACCESS_KEY and token",
            ).pipe(Effect.annotateLogs({ detail: e.detail }))
          } else {
            yield* Effect.logWarning("connection to the ingester failed; reconnecting").pipe(
              Effect.annotateLogs({ kind: e.kind, detail: e.detail, bufferedEvents: buffer.eventCount() }),
            )
          }
        }),
      ),
      Effect.retry(policy),
    )

    /** Waits (at most the shutdown grace) until the buffer is empty, sending partial batches at once. */
    const drain = Effect.gen(function* () {
      yield* Ref.set(draining, true)
      yield* buffer.changed.notify
      if (buffer.eventCount() === 0) return
      yield* Effect.logInfo("shutting down: sending what is buffered").pipe(
        Effect.annotateLogs({ bufferedEvents: buffer.eventCount(), graceMs: Duration.toMillis(options.shutdownGrace) }),
      )
      yield* waitUntil(buffer.changed, () => buffer.eventCount() === 0, "100 millis").pipe(
        Effect.timeoutTo({ duration: options.shutdownGrace, onTimeout: () => undefined, onSuccess: () => undefined }),
      )
      yield* Effect.logInfo("shutdown: buffer left for the next start").pipe(
        Effect.annotateLogs({ bufferedEvents: buffer.eventCount() }),
      )
    })

    return { run, drain } as const
  })
