/**
 * DiskBuffer: the Effect face of BufferStore. Inputs `awaitSpace` before they read (so a full
 * buffer leaves files unread and stdin paused: backpressure, never a drop), then `append`; the
 * sender `peek`s unsent rows and `remove`s a batch once the ingester acknowledged it.
 *
 * `append` never fails: a write that fails (SQLITE_FULL, an I/O error) is logged, counted and retried on
 * the shared backoff with the same records (the caller waits, so an input keeps what it has not stored and
 * reads nothing more); `writable()` is false meanwhile, which turns `/readyz` red. The sender's reads and
 * deletes fail with a BufferError, which ends its stream: rows that could not be deleted are sent again.
 */
import { Context, Data, Duration, Effect, Layer } from "effect"
import * as Metrics from "../../shared/Metrics.js"
import { backoff } from "../../shared/Retry.js"
import * as M from "../AgentMetrics.js"
import { BufferLocked, lockBuffer } from "./BufferLock.js"
import { type BufferedRow, BufferStore, type Checkpoint, type NewRecord, type SyncMode } from "./BufferStore.js"
import { makeSignal, type Signal, waitUntil } from "./Signal.js"

export { BufferLocked }

export interface DiskBufferOptions {
  readonly dir: string
  readonly maxBytes: number
  readonly sync?: SyncMode
  /** Opens the store (tests wrap it to inject failures); `new BufferStore(dir, sync)` by default. */
  readonly open?: (dir: string, sync: SyncMode) => BufferStore
  /** Retry of a failed append: first and largest pause (default 100 ms and 5 s). */
  readonly appendRetry?: { readonly base: Duration.DurationInput; readonly cap: Duration.DurationInput }
}

/** A buffer operation failed; `code` is SQLite's (SQLITE_FULL, SQLITE_IOERR…) when there is one. */
export class BufferError extends Data.TaggedError("BufferError")<{
  readonly op: string
  readonly code: string
  readonly detail: string
}> {}

export interface DiskBufferShape {
  readonly dir: string
  readonly maxBytes: number
  readonly usedBytes: () => number
  readonly eventCount: () => number
  /** The id of the newest row inserted (see BufferStore.lastId). */
  readonly lastId: () => number
  /** False while appends fail (readiness). */
  readonly writable: () => boolean
  /**
   * Waits until `bytes` more fit under the bound (or the buffer is empty, so one oversized read can
   * still go through). Counts a pause in `spillway_agent_buffer_full_waits_total`.
   */
  readonly awaitSpace: (bytes: number) => Effect.Effect<void>
  /** Inserts records and advances a checkpoint in one transaction, retrying until it is stored; counts them for `input`. */
  readonly append: (input: string, records: ReadonlyArray<NewRecord>, checkpoint?: Checkpoint) => Effect.Effect<void>
  readonly peek: (
    afterId: number,
    maxEvents: number,
    maxBytes: number,
  ) => Effect.Effect<Array<BufferedRow>, BufferError>
  readonly remove: (first: number, last: number) => Effect.Effect<{ n: number; bytes: number }, BufferError>
  readonly checkpoint: (fileId: string) => Effect.Effect<Checkpoint | undefined>
  readonly setCheckpoint: (c: Checkpoint) => Effect.Effect<void>
  readonly checkpoints: (prefix: string) => Effect.Effect<Array<Checkpoint>>
  readonly forgetCheckpoint: (fileId: string) => Effect.Effect<void>
  /** Notified on every append and remove. */
  readonly changed: Signal
}

export class DiskBuffer extends Context.Tag("spillway/agent/DiskBuffer")<DiskBuffer, DiskBufferShape>() {
  static readonly layer = (options: DiskBufferOptions): Layer.Layer<DiskBuffer, BufferLocked> =>
    Layer.scoped(DiskBuffer, make(options))
}

const toBufferError = (op: string, e: unknown) =>
  new BufferError({
    op,
    code: String((e as { code?: unknown }).code ?? "unknown"),
    detail: e instanceof Error ? e.message : String(e),
  })

const sqlite = <A>(op: string, f: () => A): Effect.Effect<A, BufferError> =>
  Effect.try({ try: f, catch: (e) => toBufferError(op, e) })

/** Checkpoint reads and writes happen between appends: a failure there is a defect of the input (supervised). */
const sqliteOrDie = <A>(op: string, f: () => A) => sqlite(op, f).pipe(Effect.orDie)

const setGauges = (store: BufferStore) => {
  M.bufferBytes.set(store.usedBytes)
  M.bufferEvents.set(store.eventCount)
}

/**
 * Appends, retrying on the shared backoff while it fails; logs the first failure and the recovery. `failed`: the
 * error of an attempt already made (the synchronous one in `append`), counted as this path's first.
 */
const appendRetrying = (
  store: BufferStore,
  state: { writable: boolean },
  retry: NonNullable<DiskBufferOptions["appendRetry"]>,
  records: ReadonlyArray<NewRecord>,
  checkpoint: Checkpoint | undefined,
  failed?: BufferError,
) => {
  let first = failed
  return Effect.suspend(() => {
    const e = first
    first = undefined
    return e === undefined ? sqlite("append", () => store.append(records, checkpoint)) : Effect.fail(e)
  }).pipe(
    Effect.tapError((e) =>
      Effect.gen(function* () {
        yield* Metrics.inc(M.bufferWriteFailures)
        const was = state.writable
        state.writable = false
        if (was)
          yield* Effect.logError("disk buffer write failed; the input waits and retries, keeping its lines").pipe(
            Effect.annotateLogs({ code: e.code, error: e.detail, events: records.length }),
          )
        yield* Metrics.set(M.bufferWritable, 0)
      }),
    ),
    Effect.retry(backoff(retry)),
    Effect.orDie, // retried forever: never reached
    Effect.tap(() =>
      Effect.gen(function* () {
        if (state.writable) return
        state.writable = true
        yield* Metrics.set(M.bufferWritable, 1)
        yield* Effect.logInfo("disk buffer writable again; inputs resume")
      }),
    ),
  )
}

export const make = (options: DiskBufferOptions) =>
  Effect.gen(function* () {
    const open = options.open ?? ((d: string, m: SyncMode) => new BufferStore(d, m))
    yield* lockBuffer(options.dir)
    const store = yield* Effect.acquireRelease(
      sqliteOrDie("open", () => open(options.dir, options.sync ?? "FULL")),
      (s) => Effect.sync(() => s.close()),
    )
    const changed = yield* makeSignal
    /** Read synchronously by the readiness check; written only by appendRetrying. */
    const state = { writable: true }
    const retry = options.appendRetry ?? { base: Duration.millis(100), cap: Duration.seconds(5) }
    setGauges(store)
    yield* Metrics.set(M.bufferWritable, 1)
    if (store.eventCount > 0)
      yield* Effect.logInfo("disk buffer holds events from a previous run; they will be sent").pipe(
        Effect.annotateLogs({ events: store.eventCount, bytes: store.usedBytes, dir: options.dir }),
      )
    const fits = (bytes: number) => store.usedBytes === 0 || store.usedBytes + bytes <= options.maxBytes
    const shape: DiskBufferShape = {
      dir: options.dir,
      maxBytes: options.maxBytes,
      usedBytes: () => store.usedBytes,
      eventCount: () => store.eventCount,
      lastId: () => store.lastId,
      writable: () => state.writable,
      awaitSpace: (bytes) =>
        Effect.suspend(() =>
          fits(bytes)
            ? Effect.void
            : Effect.gen(function* () {
                yield* Metrics.inc(M.bufferFullWaits)
                yield* Effect.logWarning("disk buffer full: inputs paused until the ingester acknowledges").pipe(
                  Effect.annotateLogs({ usedBytes: store.usedBytes, maxBytes: options.maxBytes }),
                )
                yield* waitUntil(changed, () => fits(bytes))
                yield* Effect.logInfo("disk buffer has room again: inputs resume")
              }),
        ),
      append: (input, records, checkpoint) => {
        if (records.length === 0 && checkpoint === undefined) return Effect.void
        const stored = () => {
          if (records.length > 0) M.eventsRead.inc({ input }, records.length)
          setGauges(store)
          changed.notifySync()
        }
        // The usual case in one synchronous step; a failed write goes to the retrying path with the same records.
        return Effect.suspend(() => {
          let failed: BufferError | undefined
          if (state.writable)
            try {
              store.append(records, checkpoint)
              stored()
              return Effect.void
            } catch (e) {
              failed = toBufferError("append", e) // counted, logged and retried below
            }
          return appendRetrying(store, state, retry, records, checkpoint, failed).pipe(
            Effect.tap(() => Effect.sync(stored)),
          )
        })
      },
      peek: (afterId, maxEvents, maxBytes) => sqlite("read", () => store.peek(afterId, maxEvents, maxBytes)),
      remove: (first, last) =>
        sqlite("delete", () => {
          const r = store.remove(first, last)
          setGauges(store)
          changed.notifySync()
          return r
        }),
      checkpoint: (fileId) => sqliteOrDie("read checkpoint", () => store.checkpoint(fileId)),
      checkpoints: (prefix) => sqliteOrDie("read checkpoints", () => store.checkpoints(prefix)),
      setCheckpoint: (c) => sqliteOrDie("write checkpoint", () => store.setCheckpoint(c)),
      forgetCheckpoint: (fileId) => sqliteOrDie("delete checkpoint", () => store.forgetCheckpoint(fileId)),
      changed,
    }
    return shape
  })
