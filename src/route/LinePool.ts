/**
 * LinePool: where the router's per-record work (RouterLines.ts `prepareRecords`: decode, decrypt, format) runs for
 * a batch. `layerInThread` runs it on the router's thread; `layerWorkers(n)` on a fixed pool of `n` worker threads
 * (src/programs/routerWorker.ts), one batch per worker at a time, so that batches of different partitions are
 * prepared on both cores while the main thread fetches from Kafka and writes files.
 *
 * What moves: the batch's values are copied into one buffer that is transferred (not cloned) to the worker, with
 * their offsets; the worker answers with the same `PreparedRecords` the in-thread function gives. The tenants'
 * keys go to a worker only when the tenants file changed since its last batch. A batch's order and the offsets it
 * commits do not change: the router awaits the answer before delivering, as it awaited the function.
 *
 * Bounds: `n` workers, each with a small heap (`resourceLimits`), idle workers held in a queue of capacity `n`; a
 * batch waits for a free worker (at most `concurrency` batches are in flight). A worker that fails or exits is
 * replaced and its batch is prepared on the router's thread instead; small batches (under `minRecords`) are
 * prepared in thread, where the round trip would cost more than it saves.
 */
import { Worker } from "node:worker_threads"
import { Context, Effect, Either, Exit, Layer, Queue } from "effect"
import { type LineJob, type LineReply, packValues } from "./LineJob.js"
import { type KeyEntry, type PreparedRecords, prepareRecords } from "./RouterLines.js"

export class LinePool extends Context.Tag("spillway/LinePool")<
  LinePool,
  {
    readonly prepare: (
      values: ReadonlyArray<Uint8Array | null>,
      decrypt: boolean,
      keys: ReadonlyMap<string, KeyEntry>,
    ) => Effect.Effect<PreparedRecords>
  }
>() {
  static readonly layerInThread: Layer.Layer<LinePool> = Layer.succeed(LinePool, {
    prepare: (values, decrypt, keys) => Effect.sync(() => prepareRecords(values, decrypt, keys)),
  })

  static readonly layerWorkers = (options: WorkerPoolOptions): Layer.Layer<LinePool> =>
    options.workers <= 0 ? LinePool.layerInThread : Layer.scoped(LinePool, makePool(options))
}

/** Line workers by default (SPILLWAY_ROUTER_WORKERS). */
export const defaultLineWorkers = 0

export interface WorkerPoolOptions {
  readonly workers: number
  /** The worker script (default: routerWorker.js beside the router's bundle, dist/programs). */
  readonly script?: URL
  /** Batches of fewer records are prepared on the router's thread (default 256). */
  readonly minRecords?: number
}

interface Slot {
  readonly worker: Worker
  version: number
}

const defaultScript = () => new URL("../programs/routerWorker.js", import.meta.url)

const makePool = (options: WorkerPoolOptions) =>
  Effect.gen(function* () {
    const script = options.script ?? defaultScript()
    const minRecords = options.minRecords ?? 256
    const spawn = (): Slot => ({
      worker: new Worker(script, { resourceLimits: { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 96 } }),
      version: -1,
    })
    const idle = yield* Effect.acquireRelease(Queue.bounded<Slot>(options.workers), (q) =>
      Effect.flatMap(Queue.takeAll(q), (slots) =>
        Effect.promise(() => Promise.all([...slots].map((s) => s.worker.terminate()))),
      ),
    )
    for (let i = 0; i < options.workers; i++) yield* Queue.offer(idle, spawn())
    const versions = new WeakMap<ReadonlyMap<string, KeyEntry>, number>()
    let nextVersion = 0
    const versionOf = (keys: ReadonlyMap<string, KeyEntry>) => {
      const known = versions.get(keys)
      if (known !== undefined) return known
      versions.set(keys, nextVersion)
      return nextVersion++
    }
    const inThread = (
      values: ReadonlyArray<Uint8Array | null>,
      decrypt: boolean,
      keys: ReadonlyMap<string, KeyEntry>,
    ) => Effect.sync(() => prepareRecords(values, decrypt, keys))

    const prepare = (
      values: ReadonlyArray<Uint8Array | null>,
      decrypt: boolean,
      keys: ReadonlyMap<string, KeyEntry>,
    ) =>
      values.length < minRecords
        ? inThread(values, decrypt, keys)
        : Effect.acquireUseRelease(
            Queue.take(idle),
            (slot) => Effect.either(runJob(slot, values, decrypt, keys, versionOf(keys))),
            (slot, exit) =>
              // A worker that failed, or was interrupted mid-batch, is replaced (its batch is prepared in thread).
              Queue.offer(idle, Exit.isSuccess(exit) && answered(exit.value) ? slot : replace(slot, spawn)),
          ).pipe(
            Effect.flatMap((result) =>
              answered(result)
                ? Effect.succeed(result.right.prepared)
                : Effect.zipRight(
                    Effect.logWarning("a line worker failed; the batch is prepared on the router's thread").pipe(
                      Effect.annotateLogs({
                        error: Either.isRight(result) && !result.right.ok ? result.right.error : "the worker exited",
                      }),
                    ),
                    inThread(values, decrypt, keys),
                  ),
            ),
          )
    return { prepare }
  })

const answered = (
  r: Either.Either<LineReply, WorkerGone>,
): r is Either.Right<WorkerGone, { readonly ok: true; readonly prepared: PreparedRecords }> =>
  Either.isRight(r) && r.right.ok

const replace = (slot: Slot, spawn: () => Slot): Slot => {
  slot.worker.terminate().catch(() => undefined)
  return spawn()
}

class WorkerGone {
  readonly _tag = "WorkerGone"
}

/** Posts one batch to the worker and waits for its answer (or its error or exit). */
const runJob = (
  slot: Slot,
  values: ReadonlyArray<Uint8Array | null>,
  decrypt: boolean,
  keys: ReadonlyMap<string, KeyEntry>,
  version: number,
): Effect.Effect<LineReply, WorkerGone> =>
  Effect.async<LineReply, WorkerGone>((resume) => {
    const { worker } = slot
    const onMessage = (reply: LineReply) => {
      cleanup()
      resume(Effect.succeed(reply))
    }
    const onGone = () => {
      cleanup()
      resume(Effect.fail(new WorkerGone()))
    }
    const cleanup = () => {
      worker.off("message", onMessage)
      worker.off("error", onGone)
      worker.off("exit", onGone)
    }
    worker.on("message", onMessage)
    worker.on("error", onGone)
    worker.on("exit", onGone)
    const { buffer, spans } = packValues(values)
    const job: LineJob =
      slot.version === version
        ? { values: buffer, spans, decrypt, version }
        : { values: buffer, spans, decrypt, version, keys: [...keys] }
    slot.version = version
    worker.postMessage(job, [buffer, spans.buffer as ArrayBuffer])
    return Effect.sync(cleanup)
  })
