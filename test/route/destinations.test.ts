/**
 * The live Destinations layer against real files and a real local HTTP server (no Kafka).
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { createServer, type IncomingHttpHeaders } from "node:http"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Either, Redacted } from "effect"
import type { SafeFileName, Target } from "../../src/domain/Tenant.js"
import { Destinations, retryableStatus } from "../../src/route/Destinations.js"

const dir = mkdtempSync(join(tmpdir(), "spillway-dest-"))
let port = 0
let nextStatus = 200
const requests: Array<{ headers: IncomingHttpHeaders; body: string; url: string | undefined }> = []
const server = createServer((req, res) => {
  let body = ""
  req.on("data", (d) => {
    body += d
  })
  req.on("end", () => {
    requests.push({ headers: req.headers, body, url: req.url })
    res.writeHead(nextStatus).end()
  })
})
beforeAll(
  () =>
    new Promise<void>((resolve) =>
      server.listen(0, "127.0.0.1", () => {
        port = (server.address() as { port: number }).port
        resolve()
      }),
    ),
)
afterAll(() => {
  server.close()
  rmSync(dir, { recursive: true, force: true })
})

const file = (name: string): Target => ({ file: name as SafeFileName })
const http = (url: string): Target => ({
  http: { url, headers: { authorization: Redacted.make("Bearer t0k") }, timeoutMs: 2_000 },
})
const deliver = (target: Target, lines: ReadonlyArray<string>) =>
  Effect.flatMap(Destinations, (d) => Effect.either(d.deliver(target, lines))).pipe(
    Effect.provide(Destinations.layer(dir)),
  )

describe("Destinations (live)", () => {
  it("classifies http statuses", () => {
    assert.deepStrictEqual([200, 400, 401, 404, 408, 429, 500, 503].map(retryableStatus), [
      false,
      false,
      false,
      false,
      true,
      true,
      true,
      true,
    ])
  })

  it.live("appends NDJSON to files under the output folder, creating sub-folders", () =>
    Effect.gen(function* () {
      assert.isTrue(Either.isRight(yield* deliver(file("t/a.log"), ['{"n":1}', '{"n":2}'])))
      assert.isTrue(Either.isRight(yield* deliver(file("t/a.log"), ['{"n":3}'])))
      assert.strictEqual(readFileSync(join(dir, "t", "a.log"), "utf8"), '{"n":1}\n{"n":2}\n{"n":3}\n')
    }),
  )

  it.live("POSTs one NDJSON body with the target's headers; 2xx ok, 503 retryable, 400 permanent", () =>
    Effect.gen(function* () {
      nextStatus = 204
      const target = http(`http://127.0.0.1:${port}/in?x=1`)
      assert.isTrue(Either.isRight(yield* deliver(target, ['{"n":1}', '{"n":2}'])))
      const req = requests.at(-1)!
      assert.strictEqual(req.body, '{"n":1}\n{"n":2}\n')
      assert.strictEqual(req.url, "/in?x=1")
      assert.strictEqual(req.headers.authorization, "Bearer t0k")
      assert.strictEqual(req.headers["content-type"], "application/x-ndjson")

      nextStatus = 503
      const e503 = yield* deliver(target, ["{}"])
      assert.isTrue(Either.isLeft(e503) && e503.left.retryable && e503.left.detail === "http status 503")
      nextStatus = 429
      const e429 = yield* deliver(target, ["{}"])
      assert.isTrue(Either.isLeft(e429) && e429.left.retryable)
      nextStatus = 400
      const e400 = yield* deliver(target, ["{}"])
      assert.isTrue(Either.isLeft(e400) && !e400.left.retryable)
    }),
  )

  it.live("a refused connection is retryable", () =>
    Effect.gen(function* () {
      const e = yield* deliver(http("http://127.0.0.1:1/in"), ["{}"])
      assert.isTrue(Either.isLeft(e) && e.left.retryable)
    }),
  )
})
