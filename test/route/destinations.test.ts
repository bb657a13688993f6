/**
 * The live Destinations layer against real files and a real local HTTP server (no Kafka).
 */
import { mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from "node:fs"
import { createServer, type IncomingHttpHeaders, type Server } from "node:http"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Either, Logger, Redacted } from "effect"
import type { SafeFileName, Target } from "../../src/domain/Tenant.js"
import { Destinations, retryableStatus } from "../../src/route/Destinations.js"
import { type FileIo, nodeFileIo } from "../../src/route/destinations/File.js"

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
const deliver = (target: Target, lines: ReadonlyArray<string>, io: FileIo = nodeFileIo, root = dir) =>
  Effect.flatMap(Destinations, (d) =>
    Effect.either(d.deliver(target, lines, { topic: "t", partition: 0, offsets: lines.map((_, i) => String(i)) })),
  ).pipe(Effect.provide(Destinations.layer(root, io)))

const listen = (server: Server) =>
  new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)),
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

  it.live("never writes through a symbolic link, to a file or a folder (issue 12 item 7)", () =>
    Effect.gen(function* () {
      const root = mkdtempSync(join(tmpdir(), "spillway-dest-links-"))
      const outside = mkdtempSync(join(tmpdir(), "spillway-dest-outside-"))
      try {
        const victim = join(outside, "other-tenant.log")
        writeFileSync(victim, "theirs\n")
        symlinkSync(victim, join(root, "a.log"))
        symlinkSync(outside, join(root, "sub"))
        const viaFile = yield* deliver(file("a.log"), ['{"n":1}'], nodeFileIo, root)
        const viaFolder = yield* deliver(file("sub/other-tenant.log"), ['{"n":2}'], nodeFileIo, root)
        const viaNewFile = yield* deliver(file("sub/new.log"), ['{"n":3}'], nodeFileIo, root)
        for (const e of [viaFile, viaFolder, viaNewFile])
          assert.isTrue(Either.isLeft(e) && !e.left.retryable, String(e))
        assert.strictEqual(readFileSync(victim, "utf8"), "theirs\n")
        assert.throws(() => readFileSync(join(outside, "new.log")))
        // A link to a folder inside the output folder is refused as well (a tenant could point at another's).
        mkdirSync(join(root, "real"))
        symlinkSync(join(root, "real"), join(root, "alias"))
        const inside = yield* deliver(file("alias/x.log"), ['{"n":4}'], nodeFileIo, root)
        assert.isTrue(Either.isLeft(inside) && !inside.left.retryable)
      } finally {
        rmSync(root, { recursive: true, force: true })
        rmSync(outside, { recursive: true, force: true })
      }
    }),
  )

  it.live("a partial write (ENOSPC) is truncated back before the retry (issue 12 item 8)", () =>
    Effect.gen(function* () {
      assert.isTrue(Either.isRight(yield* deliver(file("partial.log"), ['{"n":1}'])))
      let calls = 0
      const full: FileIo = {
        ...nodeFileIo,
        write: async (fh, data, offset, length) => {
          calls++
          if (calls === 1) return fh.write(data, offset, Math.floor(length / 2)) // half of it lands
          throw Object.assign(new Error("no space left on device"), { code: "ENOSPC" })
        },
      }
      const failed = yield* deliver(file("partial.log"), ['{"n":2,"pad":"xxxxxxxxxxxxxxxx"}', '{"n":3}'], full)
      assert.isTrue(Either.isLeft(failed) && failed.left.retryable)
      assert.strictEqual(readFileSync(join(dir, "partial.log"), "utf8"), '{"n":1}\n', "the fragment is gone")
      assert.isTrue(
        Either.isRight(yield* deliver(file("partial.log"), ['{"n":2,"pad":"xxxxxxxxxxxxxxxx"}', '{"n":3}'])),
      )
      assert.deepStrictEqual(
        readFileSync(join(dir, "partial.log"), "utf8")
          .trimEnd()
          .split("\n")
          .map((l) => JSON.parse(l).n),
        [1, 2, 3],
      )
    }),
  )

  it.live("a file left ending mid-line by a crash: the fragment stays a line of its own, untouched", () =>
    Effect.gen(function* () {
      // What a write cut off by SIGKILL leaves: whole lines, then the start of one.
      writeFileSync(join(dir, "cut.log"), '{"n":1}\n{"n":2,"pa')
      const logs: Array<string> = []
      const logger = Logger.make(({ message }) => void logs.push(String(message)))
      const once = yield* deliver(file("cut.log"), ['{"n":2,"pad":"x"}', '{"n":3}']).pipe(
        Effect.provide(Logger.replace(Logger.defaultLogger, logger)),
      )
      assert.isTrue(Either.isRight(once))
      assert.isTrue(Either.isRight(yield* deliver(file("cut.log"), ['{"n":4}'])))
      assert.strictEqual(
        readFileSync(join(dir, "cut.log"), "utf8"),
        '{"n":1}\n{"n":2,"pa\n{"n":2,"pad":"x"}\n{"n":3}\n{"n":4}\n',
        "one newline after the fragment, none added after whole lines",
      )
      assert.strictEqual(logs.filter((m) => m.includes("ended mid-line")).length, 1, logs.join("; "))
    }),
  )

  it.live("new files and folders are made durable in their parent folders (issue 12 item 17)", () =>
    Effect.gen(function* () {
      const synced: Array<string> = []
      const io: FileIo = { ...nodeFileIo, syncDir: async (d) => void synced.push(d) }
      assert.isTrue(Either.isRight(yield* deliver(file("d1/d2/x.log"), ['{"n":1}'], io)))
      const real = realpathSync(dir)
      assert.deepStrictEqual(synced, [join(real, "d1", "d2"), join(real, "d1"), real])
      synced.length = 0
      assert.isTrue(Either.isRight(yield* deliver(file("d1/d2/x.log"), ['{"n":2}'], io)))
      assert.deepStrictEqual(synced, [], "an append to an existing file names nothing new")
      assert.isTrue(Either.isRight(yield* deliver(file("d1/y.log"), ['{"n":1}'], io)))
      assert.deepStrictEqual(synced, [join(real, "d1")])
    }),
  )

  it.live("does not follow redirects: a 3xx is a permanent failure (issue 12 item 16)", () =>
    Effect.gen(function* () {
      let elsewhere = 0
      const other = createServer((_req, res) => {
        elsewhere++
        res.writeHead(200).end()
      })
      const redirecting = createServer((req, res) => {
        req.resume()
        res.writeHead(307, { location: `http://127.0.0.1:${(other.address() as { port: number }).port}/in` }).end()
      })
      try {
        yield* Effect.promise(() => listen(other))
        const port = yield* Effect.promise(() => listen(redirecting))
        const e = yield* deliver(http(`http://127.0.0.1:${port}/in`), ['{"n":1}'])
        assert.isTrue(Either.isLeft(e) && !e.left.retryable && e.left.detail === "http status 307", String(e))
        assert.strictEqual(elsewhere, 0, "the events and the headers stayed with the configured address")
      } finally {
        other.close()
        redirecting.close()
      }
    }),
  )

  it.live("keeps one connection open across deliveries to an http target, and closes it with the layer", () =>
    Effect.gen(function* () {
      const ports = new Set<number>()
      const counting = createServer((req, res) => {
        ports.add(req.socket.remotePort ?? 0)
        req.resume()
        req.on("end", () => res.writeHead(200).end())
      })
      try {
        const p = yield* Effect.promise(() => listen(counting))
        const target = http(`http://127.0.0.1:${p}/in`)
        const results = yield* Effect.flatMap(Destinations, (d) =>
          Effect.forEach([1, 2, 3, 4, 5], (n) =>
            Effect.either(d.deliver(target, [`{"n":${n}}`], { topic: "t", partition: 0, offsets: ["0"] })),
          ),
        ).pipe(Effect.provide(Destinations.layer(dir)))
        assert.isTrue(results.every(Either.isRight), String(results))
        assert.strictEqual(ports.size, 1, "five requests, one connection")
        const open = () => new Promise<number>((resolve) => counting.getConnections((_, n) => resolve(n)))
        const deadline = Date.now() + 5_000
        while ((yield* Effect.promise(open)) > 0 && Date.now() < deadline) yield* Effect.sleep("20 millis")
        assert.strictEqual(yield* Effect.promise(open), 0, "the layer's end closed the idle connection")
      } finally {
        counting.closeAllConnections()
        counting.close()
      }
    }),
  )

  it.live("reads at most a bounded head of the response body (issue 12 item 16)", () =>
    Effect.gen(function* () {
      let sent = 0
      const endless = createServer((req, res) => {
        req.resume()
        res.writeHead(200, { "content-type": "text/plain" })
        const chunk = Buffer.alloc(64 * 1024, 0x61)
        const pump = () => {
          while (!res.destroyed && sent < 512 * 1024 * 1024 && res.write(chunk)) sent += chunk.length
        }
        res.on("drain", pump)
        pump()
      })
      try {
        const port = yield* Effect.promise(() => listen(endless))
        const started = Date.now()
        const e = yield* deliver(http(`http://127.0.0.1:${port}/in`), ['{"n":1}'])
        assert.isTrue(Either.isRight(e), `an endless 200 body is a success, not a timeout: ${String(e)}`)
        assert.isBelow(Date.now() - started, 1500)
        assert.isBelow(sent, 64 * 1024 * 1024, "the router stopped reading")
      } finally {
        endless.closeAllConnections()
        endless.close()
      }
    }),
  )
})
