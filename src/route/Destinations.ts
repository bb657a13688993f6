/**
 * Destinations: where a tenant's events go (the `targets` of the tenants file). One call delivers
 * one batch of NDJSON lines to one target, once; retries and their budget belong to the caller
 * (the Router), which knows what a failure costs.
 *
 * - file: appends the lines under the output folder (one write), then `fdatasync`s and closes the
 *   file before returning, so a success means the lines are on disk. Writes to one file are
 *   serialized (two partitions may carry events of the same tenant).
 * - http: POSTs the lines as one `application/x-ndjson` body with the target's headers.
 *   2xx is success; 429, 5xx, timeouts and network errors are retryable; other statuses are
 *   permanent (`retryable: false`).
 *
 * `layerMemory` keeps the lines in memory and lets a test decide each outcome.
 */
import { mkdir, open } from "node:fs/promises"
import path from "node:path"
import { FetchHttpClient, HttpClient, HttpClientRequest } from "@effect/platform"
import { Context, Effect, Layer, Redacted } from "effect"
import { DestinationError } from "../domain/Errors.js"
import { type FileTarget, type HttpTarget, type Target, targetName } from "../domain/Tenant.js"

export class Destinations extends Context.Tag("spillway/Destinations")<
  Destinations,
  {
    /** Delivers `lines` (each one JSON object, no newline) to `target`, once. */
    readonly deliver: (target: Target, lines: ReadonlyArray<string>) => Effect.Effect<void, DestinationError>
  }
>() {
  /** Files under `outputDir`, http through the platform's fetch client. */
  static readonly layer = (outputDir: string): Layer.Layer<Destinations> =>
    Layer.effect(Destinations, make(outputDir)).pipe(Layer.provide(FetchHttpClient.layer))

  static readonly layerMemory = (behaviour: MemoryBehaviour = {}): Layer.Layer<Destinations> =>
    Layer.succeed(Destinations, makeMemory(behaviour))
}

const ndjson = (lines: ReadonlyArray<string>) => `${lines.join("\n")}\n`

/** Pure: whether an HTTP status is worth retrying. */
export const retryableStatus = (status: number): boolean => status === 429 || status === 408 || status >= 500

const make = (outputDir: string) =>
  Effect.gen(function* () {
    const client = yield* HttpClient.HttpClient
    const root = path.resolve(outputDir)
    const locks = new Map<string, Effect.Semaphore>()
    const lockFor = (file: string) => {
      let s = locks.get(file)
      if (s === undefined) {
        s = Effect.unsafeMakeSemaphore(1)
        locks.set(file, s)
      }
      return s
    }

    const writeFile = (target: FileTarget, lines: ReadonlyArray<string>) => {
      const name = targetName(target)
      const file = path.resolve(root, target.file)
      if (file !== root && !file.startsWith(root + path.sep))
        return Effect.fail(
          new DestinationError({ target: name, retryable: false, detail: "escapes the output folder" }),
        )
      const data = Buffer.from(ndjson(lines), "utf8")
      return Effect.tryPromise({
        try: async () => {
          await mkdir(path.dirname(file), { recursive: true })
          const fh = await open(file, "a", 0o640)
          try {
            let written = 0
            while (written < data.length) {
              const { bytesWritten } = await fh.write(data, written, data.length - written)
              written += bytesWritten
            }
            await fh.datasync()
          } finally {
            await fh.close()
          }
        },
        catch: (cause) =>
          new DestinationError({
            target: name,
            retryable: true,
            detail: `cannot append to the file: ${cause instanceof Error ? cause.message : String(cause)}`,
            cause,
          }),
      }).pipe(lockFor(file).withPermits(1))
    }

    const post = (target: HttpTarget, lines: ReadonlyArray<string>) => {
      const name = targetName(target)
      const { url, headers, timeoutMs } = target.http
      const plain: Record<string, string> = {}
      for (const [k, v] of Object.entries(headers)) plain[k] = Redacted.value(v)
      const request = HttpClientRequest.post(url).pipe(
        HttpClientRequest.setHeaders(plain),
        HttpClientRequest.bodyText(ndjson(lines), "application/x-ndjson"),
      )
      return Effect.gen(function* () {
        const response = yield* client.execute(request)
        yield* response.text.pipe(Effect.ignore) // release the connection
        if (response.status >= 200 && response.status < 300) return
        return yield* new DestinationError({
          target: name,
          retryable: retryableStatus(response.status),
          detail: `http status ${response.status}`,
        })
      }).pipe(
        Effect.timeoutFail({
          duration: timeoutMs,
          onTimeout: () =>
            new DestinationError({ target: name, retryable: true, detail: `no answer in ${timeoutMs} ms` }),
        }),
        Effect.catchTags({
          RequestError: (e) =>
            new DestinationError({ target: name, retryable: true, detail: `request failed: ${e.reason}`, cause: e }),
          ResponseError: (e) =>
            new DestinationError({ target: name, retryable: true, detail: `response failed: ${e.reason}`, cause: e }),
        }),
      )
    }

    return {
      deliver: (target: Target, lines: ReadonlyArray<string>) =>
        lines.length === 0 ? Effect.void : "file" in target ? writeFile(target, lines) : post(target, lines),
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
