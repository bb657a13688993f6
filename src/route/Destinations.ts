/**
 * Destinations: where a tenant's events go (the `targets` of the tenants file). One call delivers
 * one batch of NDJSON lines to one target, once; retries and their budget belong to the caller
 * (the Router), which knows what a failure costs.
 *
 * - file (destinations/File.ts): appends the lines under the output folder, never through a symbolic
 *   link, truncating a partial write back, `fdatasync`ing the file (and its folder when new) before
 *   returning, so a success means the lines are on disk. Writes to one file are serialized.
 * - http (destinations/Http.ts): POSTs the lines as one `application/x-ndjson` body with the
 *   target's headers. 2xx is success; 408, 429, 5xx, timeouts and network errors are retryable;
 *   other statuses (3xx included: redirects are not followed) are permanent (`retryable: false`).
 *
 * - s3 and opensearch (destinations/S3.ts, OpenSearch.ts; built once per target with
 *   destinations/Stores.ts): the batch is cut at the target's byte and event limits, each run written as one
 *   object or one `_bulk` request, idempotent on replay (object keys from partition and offsets, document ids
 *   from `event_id`). Lines the server refuses one by one (bulk items) come back as `refused` for the
 *   dead-letter topic; a retryable failure of any line fails the delivery as retryable (the router retries
 *   the whole batch, which the idempotent keys and ids make safe).
 *
 * `layerMemory` keeps the lines in memory and lets a test decide each outcome.
 */
import { mkdirSync, realpathSync } from "node:fs"
import path from "node:path"
import * as HttpClient from "@effect/platform/HttpClient"
import { Context, Effect, Layer, Scope } from "effect"
import { DestinationError } from "../domain/Errors.js"
import { type Target, targetName } from "../domain/Tenant.js"
import {
  type DeliveryBatch,
  type Destination,
  deliveryEvent,
  type LineFailure,
  splitIndexes,
  subBatch,
} from "./destinations/Delivery.js"
import { type FileIo, nodeFileIo, writeFile } from "./destinations/File.js"
import { httpClientLayer, post } from "./destinations/Http.js"
import { isStoreTarget, makeStoreDestination, type StoreTarget } from "./destinations/Stores.js"

export { retryableStatus } from "./destinations/Http.js"

export class Destinations extends Context.Tag("spillway/Destinations")<
  Destinations,
  {
    /**
     * Delivers `lines` (each one JSON object, no newline) to `target`, once. Succeeds with the lines the target
     * refused one by one (for the dead-letter topic); empty when it took them all.
     */
    readonly deliver: (
      target: Target,
      lines: ReadonlyArray<string>,
      origin: DeliveryOrigin,
    ) => Effect.Effect<ReadonlyArray<LineFailure>, DestinationError>
  }
>() {
  /** Files under `outputDir` (destinations/File.ts), http through node:http's keep-alive agents (destinations/Http.ts). */
  static readonly layer = (outputDir: string, io: FileIo = nodeFileIo): Layer.Layer<Destinations> =>
    Layer.scoped(Destinations, make(outputDir, io)).pipe(Layer.provide(httpClientLayer))

  static readonly layerMemory = (behaviour: MemoryBehaviour = {}): Layer.Layer<Destinations> =>
    Layer.succeed(Destinations, makeMemory(behaviour))
}

/** Where a group of lines comes from: the record batch (one partition) and each line's record offset. */
export interface DeliveryOrigin {
  readonly topic: string
  readonly partition: number
  /** The Kafka offset of each line's record, same order as the lines. */
  readonly offsets: ReadonlyArray<string>
}

const none: ReadonlyArray<LineFailure> = []

/** Pure: the batch a store destination takes, its event facts read from the routed lines. */
export const deliveryBatch = (lines: ReadonlyArray<string>, origin: DeliveryOrigin): DeliveryBatch => ({
  topic: origin.topic,
  partition: origin.partition,
  firstOffset: origin.offsets[0] ?? "0",
  lastOffset: origin.offsets.at(-1) ?? "0",
  lines,
  events: lines.map((line, i) => {
    let e: { event_id?: unknown; user_id?: unknown; timestamp?: unknown } = {}
    try {
      e = JSON.parse(line) as typeof e
    } catch {
      // the router wrote the line: it is JSON
    }
    return deliveryEvent(
      {
        eventId: typeof e.event_id === "string" ? e.event_id : "",
        userId: typeof e.user_id === "string" ? e.user_id : "",
        timestamp: typeof e.timestamp === "string" ? e.timestamp : "",
      },
      origin.offsets[i] ?? "0",
    )
  }),
})

/** Each run under the target's limits, once; refused lines (by index into `batch.lines`) back, retryable ones fail. */
const deliverToStore = (destination: Destination, batch: DeliveryBatch) =>
  Effect.gen(function* () {
    const refused: Array<LineFailure> = []
    for (const run of splitIndexes(batch.lines, destination.limits, 1)) {
      const part = run.length === batch.lines.length ? batch : subBatch(batch, run)
      const { failures } = yield* destination.deliver(part)
      const retryable = failures.find((f) => f.retryable)
      if (retryable !== undefined)
        return yield* new DestinationError({
          target: destination.name,
          retryable: true,
          detail: `${failures.filter((f) => f.retryable).length} lines to retry: ${retryable.reason}`,
        })
      for (const f of failures) refused.push({ ...f, index: run[f.index]! })
    }
    return refused
  })

/** Store destinations by target, built once each (at most this many kept; the oldest is forgotten past it). */
const MAX_STORES = 1024
const storeKey = (t: StoreTarget) => JSON.stringify(t)

const make = (outputDir: string, io: FileIo) =>
  Effect.gen(function* () {
    const client = yield* HttpClient.HttpClient
    const scope = yield* Effect.scope
    const stores = new Map<string, Destination>()
    const storeFor = (target: StoreTarget) =>
      Effect.suspend(() => {
        const key = storeKey(target)
        const known = stores.get(key)
        if (known !== undefined) return Effect.succeed(known)
        return makeStoreDestination(target).pipe(
          Scope.extend(scope),
          Effect.tap((d) =>
            Effect.sync(() => {
              if (stores.size >= MAX_STORES) stores.delete(stores.keys().next().value!)
              stores.set(key, d)
            }),
          ),
        )
      })
    // The real path of the output folder: targets are resolved, and checked, under it.
    const root = yield* Effect.sync(() => {
      mkdirSync(outputDir, { recursive: true })
      return realpathSync(path.resolve(outputDir))
    })
    /** One writer per file (two partitions may carry events of the same tenant); one entry per target file. */
    const locks = new Map<string, Effect.Semaphore>()
    const lockFor = (file: string) => {
      let s = locks.get(file)
      if (s === undefined) {
        s = Effect.unsafeMakeSemaphore(1)
        locks.set(file, s)
      }
      return s
    }
    return {
      deliver: (target: Target, lines: ReadonlyArray<string>, origin: DeliveryOrigin) => {
        if (lines.length === 0) return Effect.succeed(none)
        const name = targetName(target)
        if ("file" in target)
          return lockFor(target.file)
            .withPermits(1)(writeFile(io, root, target, name, lines))
            .pipe(Effect.as(none))
        if (isStoreTarget(target))
          return Effect.flatMap(storeFor(target), (d) => deliverToStore(d, deliveryBatch(lines, origin)))
        return post(client, target, name, lines).pipe(Effect.as(none))
      },
    }
  })

// ---------------------------------------------------------------------------------------------
// In memory

export interface MemoryBehaviour {
  /** Decides an attempt's outcome (called before anything is kept); default success. */
  readonly outcome?: (target: Target, lines: ReadonlyArray<string>) => DestinationError | undefined
  /** Lines the target refuses one by one (indexes), after the outcome said success. */
  readonly refuse?: (target: Target, lines: ReadonlyArray<string>) => ReadonlyArray<LineFailure>
  /** Delivered lines by target name. */
  readonly delivered?: Map<string, Array<string>>
}

const makeMemory = (behaviour: MemoryBehaviour): Destinations["Type"] => {
  const delivered = behaviour.delivered ?? new Map<string, Array<string>>()
  return {
    deliver: (target, lines) =>
      Effect.suspend(() => {
        const failure = behaviour.outcome?.(target, lines)
        if (failure !== undefined) return Effect.fail(failure)
        const refused = behaviour.refuse?.(target, lines) ?? none
        const name = targetName(target)
        const list = delivered.get(name) ?? []
        list.push(...lines.filter((_, i) => !refused.some((f) => f.index === i)))
        delivered.set(name, list)
        return Effect.succeed(refused)
      }),
  }
}
