/**
 * `opensearch` targets (OpenSearch and Elasticsearch: the same `_bulk` API). One batch is one `_bulk`
 * request of `index` actions, each document's `_id` its `event_id` (or a digest of topic, partition
 * and offset), so a replay overwrites instead of duplicating. The answer is read per item
 * (OpenSearchBulk.ts). Plain HTTP (node:http through @effect/platform-node, keep-alive agents of the target's
 * own, destinations/Http.ts; no OpenSearch client library): the bulk API is one documented HTTP call whose
 * per-item results are plain JSON, and bounding and decoding that answer ourselves is the part that matters. See
 * docs/destinations.md.
 */
import type * as HttpClient from "@effect/platform/HttpClient"
import type * as HttpClientError from "@effect/platform/HttpClientError"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import type * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import { Effect, Either, Redacted, Schema, type Scope, Stream } from "effect"
import { DestinationError } from "../../domain/Errors.js"
import { type OpenSearchTarget, targetName } from "../../domain/Tenant.js"
import { inc } from "../../shared/Metrics.js"
import {
  allDelivered,
  boundedReason,
  type DeliveryBatch,
  type Destination,
  type LineFailure,
  splitIndexes,
  subBatch,
} from "./Delivery.js"
import { scopedHttpClient } from "./Http.js"
import {
  BULK_FILTER_PATH,
  type BulkRequest,
  bulkFailures,
  bulkRequest,
  ErrorResponse,
  retryableItemStatus,
  serverReason,
} from "./OpenSearchBulk.js"
import { resolveSecret } from "./Secrets.js"
import { openSearchItems } from "./StoreMetrics.js"

/** The most of a bulk answer read: 64 KiB plus 2 KiB per document, at most 64 MiB. */
export const maxBulkAnswerBytes = (documents: number): number => Math.min(64 * 1024 * 1024, 65_536 + documents * 2048)
const MAX_ERROR_ANSWER_BYTES = 16 * 1024
/** About the size of one `index` action line, counted against `batch.maxBytes`. */
const ACTION_BYTES = 160

/** Reads at most `cap` bytes of a body; undefined when it is longer (the rest is not read). */
export const readCapped = (
  response: HttpClientResponse.HttpClientResponse,
  cap: number,
): Effect.Effect<string | undefined, HttpClientError.ResponseError> =>
  response.stream.pipe(
    Stream.runFoldWhile(
      { size: 0, chunks: [] as Array<Uint8Array> },
      (read) => read.size <= cap,
      (read, chunk) => {
        read.size += chunk.byteLength
        if (read.size <= cap) read.chunks.push(chunk)
        return read
      },
    ),
    Effect.map((read) => (read.size > cap ? undefined : Buffer.concat(read.chunks).toString("utf8"))),
  )

/** The `Authorization` header of a target, its secret resolved now (fails when the reference is unusable). */
export const authorizationOf = (
  target: OpenSearchTarget,
  env: NodeJS.ProcessEnv = process.env,
): Effect.Effect<Redacted.Redacted<string> | undefined, DestinationError> => {
  const auth = target.opensearch.auth
  const name = targetName(target)
  if (auth === undefined) return Effect.succeed(undefined)
  if ("basic" in auth)
    return resolveSecret(name, auth.basic.password, env).pipe(
      Effect.map((password) =>
        Redacted.make(
          `Basic ${Buffer.from(`${auth.basic.username}:${Redacted.value(password)}`, "utf8").toString("base64")}`,
        ),
      ),
    )
  return resolveSecret(name, auth.apiKey, env).pipe(Effect.map((key) => Redacted.make(`ApiKey ${Redacted.value(key)}`)))
}

/** Pure: a network error's code (`ECONNREFUSED`, in the `cause` of the HTTP client's error), else the error's name. */
export const networkCode = (e: unknown): string => {
  for (let x: unknown = e, depth = 0; typeof x === "object" && x !== null && depth < 4; depth++) {
    const code = (x as { code?: unknown }).code
    if (typeof code === "string" && /^[A-Z][A-Z0-9_]{1,40}$/.test(code)) return code
    x = (x as { cause?: unknown }).cause
  }
  return e instanceof Error ? boundedReason(e.name, 60) : "error"
}

type Answer =
  | { readonly _tag: "Items"; readonly text: string }
  | { readonly _tag: "Status"; readonly status: number; readonly text: string | undefined }
  | { readonly _tag: "TooLarge"; readonly cap: number }

const decodeError = Schema.decodeUnknownEither(Schema.parseJson(ErrorResponse))

/** Pure: the whole-request failure of a non-200 answer. */
export const statusFailure = (status: number, text: string | undefined): { retryable: boolean; detail: string } => {
  let why = ""
  if (text !== undefined && text !== "") {
    const e = decodeError(text)
    if (Either.isRight(e)) {
      const err = e.right.error
      why = `: ${typeof err === "string" ? boundedReason(err, 200) : serverReason(err.type, err.reason)}`
    }
  }
  if (retryableItemStatus(status) || status === 408)
    return { retryable: true, detail: `opensearch unavailable (http ${status})${why}` }
  if (status === 401 || status === 403)
    return { retryable: false, detail: `opensearch refused the credentials (http ${status})${why}` }
  if (status === 413)
    return { retryable: false, detail: "opensearch refused the request as too large (http 413): lower batch.maxBytes" }
  return { retryable: false, detail: `opensearch refused the bulk request (http ${status})${why}` }
}

interface BulkEndpoint {
  readonly name: string
  readonly timeoutMs: number
  readonly authorization: Redacted.Redacted<string> | undefined
  readonly client: HttpClient.HttpClient
  /** The next of the target's urls (round robin). */
  readonly base: () => string
}

/** One `_bulk` POST: the server's per-item answer (read up to a cap), or its status; retryable when unreachable. */
const postBulk = (to: BulkEndpoint, request: BulkRequest, documents: number) => {
  const headers: Record<string, string> = {}
  if (to.authorization !== undefined) headers.authorization = Redacted.value(to.authorization)
  const post = HttpClientRequest.post(`${to.base()}/_bulk?filter_path=${BULK_FILTER_PATH}`).pipe(
    HttpClientRequest.setHeaders(headers),
    HttpClientRequest.bodyUint8Array(request.body, "application/x-ndjson"),
  )
  return Effect.gen(function* () {
    const res = yield* to.client.execute(post)
    if (res.status === 200) {
      const cap = maxBulkAnswerBytes(documents)
      const text = yield* readCapped(res, cap)
      return text === undefined ? ({ _tag: "TooLarge", cap } as const) : ({ _tag: "Items", text } as const)
    }
    return { _tag: "Status", status: res.status, text: yield* readCapped(res, MAX_ERROR_ANSWER_BYTES) } as const
  }).pipe(
    Effect.scoped,
    Effect.mapError(
      (cause) =>
        new DestinationError({
          target: to.name,
          retryable: true,
          detail: `opensearch unreachable: ${networkCode(cause)}`,
          cause,
        }),
    ),
    Effect.timeoutFail({
      duration: to.timeoutMs,
      onTimeout: () =>
        new DestinationError({ target: to.name, retryable: true, detail: "opensearch: no answer in time" }),
    }),
  ) satisfies Effect.Effect<Answer, DestinationError>
}

/**
 * Builds an `opensearch` target: resolves its auth secret (fails, not retryable, when the reference is
 * unusable). Each delivery goes to the next of the target's urls. Its connections live as long as the scope.
 */
export const makeOpenSearchDestination = (
  target: OpenSearchTarget,
  env: NodeJS.ProcessEnv = process.env,
): Effect.Effect<Destination, DestinationError, Scope.Scope> =>
  Effect.gen(function* () {
    const name = targetName(target)
    const t = target.opensearch
    const authorization = yield* authorizationOf(target, env)
    const client = yield* scopedHttpClient
    const bases = t.urls.map((u) => u.replace(/\/+$/, ""))
    let next = 0

    const to: BulkEndpoint = {
      name,
      timeoutMs: t.timeoutMs,
      authorization,
      client,
      base: () => bases[next++ % bases.length]!,
    }

    const deliverOne = (batch: DeliveryBatch) =>
      Effect.gen(function* () {
        const request = bulkRequest(t.index, batch)
        if (request.indexes.length === 0) return { failures: request.refused }
        yield* Effect.annotateCurrentSpan({ documents: request.indexes.length, bytes: request.body.length })
        const answer = yield* postBulk(to, request, request.indexes.length)
        if (answer._tag === "TooLarge")
          return yield* new DestinationError({
            target: name,
            retryable: true,
            detail: `the bulk answer is larger than ${answer.cap} bytes`,
          })
        if (answer._tag === "Status") {
          const f = statusFailure(answer.status, answer.text)
          return yield* new DestinationError({ target: name, retryable: f.retryable, detail: f.detail })
        }
        const failures = bulkFailures(request, answer.text)
        if (Either.isLeft(failures))
          return yield* new DestinationError({ target: name, retryable: true, detail: failures.left })
        const retryable = failures.right.filter((f) => f.retryable).length
        const permanent = failures.right.length - retryable - request.refused.length
        yield* inc(openSearchItems, request.indexes.length - retryable - permanent, {
          destination: name,
          result: "written",
        })
        if (retryable > 0) yield* inc(openSearchItems, retryable, { destination: name, result: "retryable" })
        if (permanent > 0) yield* inc(openSearchItems, permanent, { destination: name, result: "permanent" })
        return { failures: failures.right }
      })

    /** A batch above the target's limits (the server refuses bodies above http.max_content_length) goes in several requests. */
    const deliver = Effect.fn("OpenSearch.deliver")(function* (batch: DeliveryBatch) {
      if (batch.lines.length !== batch.events.length)
        return yield* Effect.dieMessage("a DeliveryBatch needs one event per line")
      if (batch.lines.length === 0) return allDelivered
      const runs = splitIndexes(batch.lines, t.batch, ACTION_BYTES)
      if (runs.length === 1) return yield* deliverOne(batch)
      const failures: Array<LineFailure> = []
      for (const run of runs) {
        const r = yield* deliverOne(subBatch(batch, run))
        for (const f of r.failures) failures.push({ ...f, index: run[f.index]! })
      }
      return { failures }
    })

    return { name, limits: t.batch, deliver } satisfies Destination
  })
