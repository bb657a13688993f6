/**
 * The http destination: a tenant's lines POSTed as one `application/x-ndjson` body with the target's headers.
 *
 * - 2xx is success; 408, 429, 5xx, timeouts and network errors are retryable; every other status is permanent,
 *   3xx included: redirects are not followed (a redirect would carry the events, and the target's headers, to
 *   another address than the one configured).
 * - At most `maxResponseBytes` of the response body are read (to reuse the connection when it is short); the rest
 *   is not: a target that answers with an endless body cannot hold the router.
 */
import type * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import { Effect, Layer, Redacted, Stream } from "effect"
import { DestinationError } from "../../domain/Errors.js"
import type { HttpTarget } from "../../domain/Tenant.js"

/**
 * The agents of the destinations' HTTP connections (node:http and node:https): connections kept open between requests,
 * at most `maxSockets` to one host and port (more requests wait for one), at most `maxFreeSockets` idle ones kept.
 * Not `fetch`: with Node 20's fetch (undici) three concurrent POSTs of 2.5 MB bodies, 50 times over, raised the
 * client's RSS by about 100 MiB and took 0.6 CPU-seconds, against 7 MiB and 0.13 through node:http
 * (docs/benchmarks.md, "Round 2 session 14").
 */
export const agentOptions = { keepAlive: true, maxSockets: 32, maxFreeSockets: 8, scheduling: "lifo" } as const

/** The HTTP client of `http` targets (one pair of agents for all of them, closed with the layer). */
export const httpClientLayer: Layer.Layer<HttpClient.HttpClient> = NodeHttpClient.layerWithoutAgent.pipe(
  Layer.provide(NodeHttpClient.makeAgentLayer(agentOptions)),
)

/** An HTTP client with agents of its own, closed with the scope (one per `opensearch` target). */
export const scopedHttpClient = NodeHttpClient.make.pipe(
  Effect.provideServiceEffect(NodeHttpClient.HttpAgent, NodeHttpClient.makeAgent(agentOptions)),
)

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
