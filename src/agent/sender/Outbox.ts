/**
 * What the sender's streams share: the context of one sender (buffer, crypto, tenant settings from
 * ExchangeConfig), and the steps both RPCs use: choosing the next batch, encoding rows for the wire,
 * counting first sends apart from resends.
 */
import { Duration, Effect, Option, Redacted, Ref } from "effect"
import type { AgentConfig } from "../../domain/AgentConfig.js"
import {
  type AccessKey,
  EpochNanos,
  type EventId,
  toWireEvent,
  type UserID,
  type WireEvent,
} from "../../domain/Event.js"
import { batchSealer, Crypto, type Key } from "../../shared/Crypto.js"
import * as Metrics from "../../shared/Metrics.js"
import { encodeEventBatch } from "../../wire/EventBatchEncoding.js"
import * as M from "../AgentMetrics.js"
import type { BufferedRow } from "../buffer/BufferStore.js"
import { type BufferError, DiskBuffer, type DiskBufferShape } from "../buffer/DiskBuffer.js"
import type { SignalMark } from "../buffer/Signal.js"
import { planBatch } from "./Batching.js"
import { type Client, exchangeConfig, SendError, type SenderOptions } from "./Connection.js"
import { rejectRows } from "./Rejected.js"

/** The tenant's settings from the last ExchangeConfig. */
export interface TenantSettings {
  readonly key: Key
  readonly userId: UserID
  readonly accessKey: AccessKey
  /** The EncryptionKey string, to notice a change (never logged). */
  readonly keySpec: string
}

export interface SenderContext {
  readonly options: SenderOptions
  readonly buffer: DiskBufferShape
  readonly crypto: Crypto
  readonly settings: Ref.Ref<TenantSettings | undefined>
  /** Set at shutdown: partial batches go at once. */
  readonly draining: Ref.Ref<boolean>
  /** The highest row id this process has sent: rows at or below it are resends. */
  readonly sentUpTo: Ref.Ref<number>
  /** The token file's last mtime. */
  readonly tokenStamp: Ref.Ref<string>
  readonly sessions: Ref.Ref<number>
  /** The SendEvent fallback was logged (reset once the batch RPC works again). */
  readonly fallbackLogged: Ref.Ref<boolean>
}

export const makeContext = (options: SenderOptions) =>
  Effect.gen(function* () {
    const ctx: SenderContext = {
      options,
      buffer: yield* DiskBuffer,
      crypto: yield* Crypto,
      settings: yield* Ref.make<TenantSettings | undefined>(undefined),
      draining: yield* Ref.make(false),
      sentUpTo: yield* Ref.make(0),
      tokenStamp: yield* Ref.make(""),
      sessions: yield* Ref.make(0),
      fallbackLogged: yield* Ref.make(false),
    }
    return ctx
  })

export const bufferFailure = (e: BufferError) =>
  new SendError({ kind: "unavailable", detail: `disk buffer ${e.op} failed (${e.code}): ${e.detail}` })

/** Takes a config from ExchangeConfig into use (the next batch encrypts with its key); logs a change. */
export const applyConfig = (ctx: SenderContext, cfg: AgentConfig) =>
  Effect.gen(function* () {
    const keySpec = Redacted.value(cfg.EncryptionKey)
    const key = yield* ctx.crypto
      .key(keySpec)
      .pipe(
        Effect.mapError(
          () => new SendError({ kind: "unavailable", detail: "ExchangeConfig returned an unusable encryption key" }),
        ),
      )
    const prev = yield* Ref.get(ctx.settings)
    const next: TenantSettings = { key, keySpec, userId: cfg.UserID, accessKey: cfg.AccessKey }
    const encrypted = key.bytes !== undefined
    if (prev === undefined)
      yield* Effect.logInfo("config exchanged").pipe(Effect.annotateLogs({ encrypted, userId: cfg.UserID }))
    else if (prev.keySpec !== keySpec || prev.userId !== next.userId || prev.accessKey !== next.accessKey)
      yield* Effect.logInfo("config changed; applies to the next batch").pipe(
        Effect.annotateLogs({ encrypted, keyChanged: prev.keySpec !== keySpec, userId: cfg.UserID }),
      )
    yield* Ref.set(ctx.settings, next)
  })

export const exchange = (ctx: SenderContext, client: Client, token: string) =>
  exchangeConfig(client, ctx.options.accessKey, token).pipe(Effect.flatMap((cfg) => applyConfig(ctx, cfg)))

/**
 * The `message` of each row under the current settings, in one synchronous pass: each record is encrypted with its
 * own 12-byte nonce, all taken from one `randomBytes` call for the batch (`batchSealer`: one call per batch, not per
 * event).
 */
const messagesOf = (settings: TenantSettings, rows: ReadonlyArray<BufferedRow>): Array<string> => {
  const key = settings.key.bytes
  const messages: Array<string> = new Array(rows.length)
  if (key === undefined) {
    for (let i = 0; i < rows.length; i++) messages[i] = rows[i]!.record
    return messages
  }
  const seal = batchSealer(rows.length)
  for (let i = 0; i < rows.length; i++) messages[i] = seal(key, rows[i]!.record)
  return messages
}

/** The wire Events of a batch under the current settings (the SendEvent fallback writes them one by one). */
export const toWireBatch = (settings: TenantSettings, agentId: string, rows: ReadonlyArray<BufferedRow>) =>
  Effect.sync(() => {
    const messages = messagesOf(settings, rows)
    const events: Array<WireEvent> = new Array(rows.length)
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i]!
      events[i] = toWireEvent({
        timestamp: EpochNanos.make(BigInt(row.ts)),
        agentId,
        tag: row.tag,
        message: messages[i]!,
        userId: settings.userId,
        accessKey: settings.accessKey,
        // The agent's own UUID, stored by the inputs (BufferStore): within the EventId limit.
        eventId: row.eventId as EventId,
      })
    }
    return events
  })

/**
 * A batch for `SendEventBatches`, encoded: the same bytes as `toWireBatch`'s events in an `api.EventBatch`, written
 * straight from the rows into one Buffer (EventBatchEncoding.ts).
 */
export const encodeBatch = (
  settings: TenantSettings,
  agentId: string,
  batchId: string,
  rows: ReadonlyArray<BufferedRow>,
) =>
  Effect.sync(() =>
    encodeEventBatch(
      batchId,
      { agentId, userId: settings.userId, accessKey: settings.accessKey },
      rows,
      messagesOf(settings, rows),
    ),
  )

/** Room kept in a message for the batch envelope and field tags. */
const ENVELOPE_BYTES = 4096

/**
 * An upper estimate of a row's size on the wire: the record as hex of nonce ‖ ciphertext ‖ tag when encrypted
 * (2 × (12 + n + 16)), as it is otherwise, plus the other fields.
 */
export const wireBytes = (row: BufferedRow, settings: TenantSettings, agentId: string): number => {
  const n = Buffer.byteLength(row.record, "utf8")
  const message = settings.key.bytes === undefined ? n : 2 * (n + 28)
  return message + row.bytes - n + agentId.length + settings.userId.length + settings.accessKey.length + 64
}

/** The longest prefix of `rows` whose encoded size fits in one message (a batch limit set above it is cut here). */
const fitting = (rows: ReadonlyArray<BufferedRow>, settings: TenantSettings, options: SenderOptions) => {
  const limit = options.maxMessageBytes - ENVELOPE_BYTES
  let total = 0
  for (let i = 0; i < rows.length; i++) {
    total += wireBytes(rows[i]!, settings, options.agentId)
    if (total > limit && i > 0) return rows.slice(0, i)
  }
  return rows
}

/** Counts rows sent in `spillway_agent_events_sent_total` the first time, in `…_resent_total` after. */
export const countSent = (ctx: SenderContext, rows: ReadonlyArray<BufferedRow>) =>
  Effect.gen(function* () {
    const upTo = yield* Ref.get(ctx.sentUpTo)
    const fresh = rows.filter((r) => r.id > upTo).length
    yield* Ref.set(ctx.sentUpTo, Math.max(upTo, rows[rows.length - 1]?.id ?? 0))
    yield* Metrics.inc(M.eventsSent, fresh)
    yield* Metrics.inc(M.eventsResent, rows.length - fresh)
  })

export interface Batch {
  readonly rows: ReadonlyArray<BufferedRow>
  readonly settings: TenantSettings
}

/**
 * A partial batch waits for its linger to end, or for the buffer to hold enough for a full one, or for the drain.
 * Appends wake it, but it looks at the buffer again only then (from counters, not from SQLite): an input that
 * appends every few milliseconds would otherwise have the same rows read once per append. planNext then reads only
 * the rows after those it holds.
 */
const awaitFill = (ctx: SenderContext, afterId: number, since: SignalMark, until: number): Effect.Effect<void> => {
  const { buffer, options } = ctx
  const full = () => buffer.lastId() - afterId > options.batch.maxEvents || buffer.usedBytes() >= options.batch.maxBytes
  const state = { since }
  return Effect.gen(function* () {
    yield* buffer.changed.wait(state.since, Duration.millis(Math.max(0, until - Date.now())))
    state.since = yield* buffer.changed.current // taken before the checks: a later append wakes the next wait
    return full() || (yield* Ref.get(ctx.draining)) || Date.now() >= until
  }).pipe(Effect.repeat({ until: (done) => done }), Effect.asVoid)
}

/**
 * The rows already read after `afterId` while a batch fills: only rows after them are read again. Rows after the
 * cursor leave the buffer only through this module (oversized ones, which empties it), so what was read stays true.
 */
interface Held {
  rows: ReadonlyArray<BufferedRow>
}

/**
 * One look at the buffer after `afterId`: a batch when one is ready, else none after waiting for a change
 * (or the linger). Rows that can never fit in a message are moved to the rejected folder first.
 */
const planNext = (ctx: SenderContext, afterId: number, held: Held) =>
  Effect.gen(function* () {
    const { buffer, options } = ctx
    const since = yield* buffer.changed.current
    const from = held.rows.length === 0 ? afterId : held.rows[held.rows.length - 1]!.id
    const more = yield* buffer
      .peek(from, options.batch.maxEvents + 1 - held.rows.length, Number.POSITIVE_INFINITY)
      .pipe(Effect.mapError(bufferFailure))
    const available = held.rows.length === 0 ? more : held.rows.concat(more)
    const plan = planBatch(available, options.batch, Date.now(), yield* Ref.get(ctx.draining))
    if (plan.rows.length === 0) {
      // woken early by new events or by the drain at shutdown
      yield* buffer.changed.wait(since, Duration.seconds(1))
      return Option.none<Batch>()
    }
    if (!plan.ready) {
      held.rows = available
      yield* awaitFill(ctx, afterId, since, Date.now() + plan.waitMs)
      return Option.none<Batch>()
    }
    held.rows = []
    const settings = yield* Ref.get(ctx.settings)
    if (settings === undefined) return yield* new SendError({ kind: "unavailable", detail: "no config exchanged" })
    const limit = options.maxMessageBytes - ENVELOPE_BYTES
    const tooBig = plan.rows.filter((r) => wireBytes(r, settings, options.agentId) > limit)
    if (tooBig.length === 0) return Option.some<Batch>({ rows: fitting(plan.rows, settings, options), settings })
    yield* rejectRows(
      buffer,
      {
        id: `oversized-${tooBig[0]!.id}`,
        code: 8, // RESOURCE_EXHAUSTED, what the ingester would answer
        detail: `larger than the ingester's message limit of ${options.maxMessageBytes} bytes once encoded`,
        reason: "oversized",
        rows: tooBig,
      },
      false,
    )
    return Option.none<Batch>()
  })

/** Waits for the next batch after `afterId` (see planNext); each row is read from the buffer once. */
export const nextBatch = (ctx: SenderContext, afterId: number): Effect.Effect<Batch, SendError> =>
  Effect.suspend(() => {
    const held: Held = { rows: [] }
    return planNext(ctx, afterId, held).pipe(
      Effect.repeat({ until: Option.isSome }),
      Effect.map((o) => (o as Option.Some<Batch>).value),
    )
  })
