/**
 * The http destination: a tenant's lines POSTed as one `application/x-ndjson` body with the target's headers.
 *
 * - 2xx is success; 408, 429, 5xx, timeouts and network errors are retryable; every other status is permanent,
 *   3xx included: redirects are not followed (a redirect would carry the events, and the target's headers, to
 *   another address than the one configured).
 * - At most `maxResponseBytes` of the response body are read (to reuse the connection when it is short); the rest
 *   is not: a target that answers with an endless body cannot hold the router.
 */
import { type HttpClient, HttpClientRequest } from "@effect/platform"
import { Effect, Redacted, Stream } from "effect"
import { DestinationError } from "../../domain/Errors.js"
import type { HttpTarget } from "../../domain/Tenant.js"

/** Response bytes read at most (64 KiB). */
export const maxResponseBytes = 64 * 1024

/** Pure: whether an HTTP status is worth retrying. */
export const retryableStatus = (status: number): boolean => status === 429 || status === 408 || status >= 500

export const post = (
  client: HttpClient.HttpClient,
  target: HttpTarget,
  name: string,
  lines: ReadonlyArray<string>,
): Effect.Effect<void, DestinationError> => {
  const { url, headers, timeoutMs } = target.http
  const plain: Record<string, string> = {}
  for (const [k, v] of Object.entries(headers)) plain[k] = Redacted.value(v)
  const request = HttpClientRequest.post(url).pipe(
    HttpClientRequest.setHeaders(plain),
    HttpClientRequest.bodyText(`${lines.join("\n")}\n`, "application/x-ndjson"),
  )
  return Effect.gen(function* () {
    const response = yield* client.execute(request)
    // Read a bounded head of the body (then the stream is cancelled), never the whole of it.
    yield* response.stream.pipe(
      Stream.runFoldWhile(
        0,
        (n) => n < maxResponseBytes,
        (n, chunk) => n + chunk.length,
      ),
      Effect.ignore,
    )
    if (response.status >= 200 && response.status < 300) return
    return yield* new DestinationError({
      target: name,
      retryable: retryableStatus(response.status),
      detail: `http status ${response.status}`,
    })
  }).pipe(
    Effect.scoped,
    Effect.timeoutFail({
      duration: timeoutMs,
      onTimeout: () => new DestinationError({ target: name, retryable: true, detail: `no answer in ${timeoutMs} ms` }),
    }),
    Effect.catchTags({
      RequestError: (e) =>
        new DestinationError({ target: name, retryable: true, detail: `request failed: ${e.reason}`, cause: e }),
      ResponseError: (e) =>
        new DestinationError({ target: name, retryable: true, detail: `response failed: ${e.reason}`, cause: e }),
    }),
  )
}
