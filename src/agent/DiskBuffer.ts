/**
 * DiskBuffer: the Effect face of BufferStore. Inputs `awaitSpace` before they read (so a full
 * buffer leaves files unread and stdin paused: backpressure, never a drop), then `append`; the
 * sender `peek`s unsent rows and `remove`s a batch once the ingester acknowledged it.
 */
import { Context, Effect, Layer, Metric } from "effect"
import * as M from "./AgentMetrics.js"
import { type BufferedRow, BufferStore, type Checkpoint, type NewRecord, type SyncMode } from "./BufferStore.js"
import { makeSignal, type Signal, waitUntil } from "./Signal.js"

export interface DiskBufferOptions {
  readonly dir: string
  readonly maxBytes: number
  readonly sync?: SyncMode
}

export interface DiskBufferShape {
  readonly dir: string
  readonly maxBytes: number
  readonly usedBytes: () => number
  readonly eventCount: () => number
  /**
   * Waits until `bytes` more fit under the bound (or the buffer is empty, so one oversized read can
   * still go through). Counts a pause in `agent_buffer_full_waits_total`.
   */
  readonly awaitSpace: (bytes: number) => Effect.Effect<void>
  /** Inserts records and advances a checkpoint in one transaction; counts them for `input`. */
  readonly append: (input: string, records: ReadonlyArray<NewRecord>, checkpoint?: Checkpoint) => Effect.Effect<void>
  readonly peek: (afterId: number, maxEvents: number, maxBytes: number) => Effect.Effect<Array<BufferedRow>>
  readonly remove: (first: number, last: number) => Effect.Effect<{ n: number; bytes: number }>
  readonly checkpoint: (fileId: string) => Effect.Effect<Checkpoint | undefined>
  readonly setCheckpoint: (c: Checkpoint) => Effect.Effect<void>
  readonly checkpoints: (prefix: string) => Effect.Effect<Array<Checkpoint>>
  readonly forgetCheckpoint: (fileId: string) => Effect.Effect<void>
  /** Notified on every append and remove. */
  readonly changed: Signal
}

export class DiskBuffer extends Context.Tag("spillway/agent/DiskBuffer")<DiskBuffer, DiskBufferShape>() {
  static readonly layer = (options: DiskBufferOptions): Layer.Layer<DiskBuffer> =>
    Layer.scoped(DiskBuffer, make(options))
}

const sqlite = <A>(what: string, f: () => A) =>
  Effect.try({ try: f, catch: (e) => new Error(`disk buffer ${what} failed: ${String(e)}`) }).pipe(Effect.orDie)

export const make = (options: DiskBufferOptions) =>
  Effect.gen(function* () {
    const store = yield* Effect.acquireRelease(
      sqlite("open", () => new BufferStore(options.dir, options.sync ?? "FULL")),
      (s) => Effect.sync(() => s.close()),
    )
    const changed = yield* makeSignal
    const gauges = Effect.suspend(() =>
      Effect.all([Metric.set(M.bufferBytes, store.usedBytes), Metric.set(M.bufferEvents, store.eventCount)]),
    )
    yield* gauges
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
      awaitSpace: (bytes) =>
        Effect.suspend(() =>
          fits(bytes)
            ? Effect.void
            : Effect.gen(function* () {
                yield* Metric.increment(M.bufferFullWaits)
                yield* Effect.logWarning("disk buffer full: inputs paused until the ingester acknowledges").pipe(
                  Effect.annotateLogs({ usedBytes: store.usedBytes, maxBytes: options.maxBytes }),
                )
                yield* waitUntil(changed, () => fits(bytes))
                yield* Effect.logInfo("disk buffer has room again: inputs resume")
              }),
        ),
      append: (input, records, checkpoint) =>
        Effect.gen(function* () {
          if (records.length === 0 && checkpoint === undefined) return
          yield* sqlite("append", () => store.append(records, checkpoint))
          if (records.length > 0) yield* Metric.incrementBy(M.eventsRead(input), records.length)
          yield* gauges
          yield* changed.notify
        }),
      peek: (afterId, maxEvents, maxBytes) => sqlite("read", () => store.peek(afterId, maxEvents, maxBytes)),
      remove: (first, last) =>
        Effect.gen(function* () {
          const r = yield* sqlite("delete", () => store.remove(first, last))
          yield* gauges
          yield* changed.notify
          return r
        }),
      checkpoint: (fileId) => sqlite("read checkpoint", () => store.checkpoint(fileId)),
      checkpoints: (prefix) => sqlite("read checkpoints", () => store.checkpoints(prefix)),
      setCheckpoint: (c) => sqlite("write checkpoint", () => store.setCheckpoint(c)),
      forgetCheckpoint: (fileId) => sqlite("delete checkpoint", () => store.forgetCheckpoint(fileId)),
      changed,
    }
    return shape
  })
