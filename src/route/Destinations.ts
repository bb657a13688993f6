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
 * `layerMemory` keeps the lines in memory and lets a test decide each outcome.
 */
import { mkdirSync, realpathSync } from "node:fs"
import path from "node:path"
import { FetchHttpClient, HttpClient } from "@effect/platform"
import { Context, Effect, Layer } from "effect"
import type { DestinationError } from "../domain/Errors.js"
import { type Target, targetName } from "../domain/Tenant.js"
import { type FileIo, nodeFileIo, writeFile } from "./destinations/File.js"
import { post } from "./destinations/Http.js"

export { retryableStatus } from "./destinations/Http.js"

export class Destinations extends Context.Tag("spillway/Destinations")<
  Destinations,
  {
    /** Delivers `lines` (each one JSON object, no newline) to `target`, once. */
    readonly deliver: (target: Target, lines: ReadonlyArray<string>) => Effect.Effect<void, DestinationError>
  }
>() {
  /** Files under `outputDir` (destinations/File.ts), http through the platform's fetch client (destinations/Http.ts). */
  static readonly layer = (outputDir: string, io: FileIo = nodeFileIo): Layer.Layer<Destinations> =>
    Layer.effect(Destinations, make(outputDir, io)).pipe(
      Layer.provide(FetchHttpClient.layer),
      // fetch would follow redirects; they are failures here (destinations/Http.ts).
      Layer.provide(Layer.succeed(FetchHttpClient.RequestInit, { redirect: "manual" })),
    )

  static readonly layerMemory = (behaviour: MemoryBehaviour = {}): Layer.Layer<Destinations> =>
    Layer.succeed(Destinations, makeMemory(behaviour))
}

const make = (outputDir: string, io: FileIo) =>
  Effect.gen(function* () {
    const client = yield* HttpClient.HttpClient
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
      deliver: (target: Target, lines: ReadonlyArray<string>) => {
        if (lines.length === 0) return Effect.void
        const name = targetName(target)
        if ("file" in target) return lockFor(target.file).withPermits(1)(writeFile(io, root, target, name, lines))
        return post(client, target, name, lines)
      },
    }
  })

// ---------------------------------------------------------------------------------------------
// In memory

export interface MemoryBehaviour {
  /** Decides an attempt's outcome (called before anything is kept); default success. */
  readonly outcome?: (target: Target, lines: ReadonlyArray<string>) => DestinationError | undefined
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
        const name = targetName(target)
        const list = delivered.get(name) ?? []
        list.push(...lines)
        delivered.set(name, list)
        return Effect.void
      }),
  }
}
