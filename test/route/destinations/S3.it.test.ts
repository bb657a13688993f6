/**
 * `s3` targets against a real S3-compatible server (moto in server mode, scripts/servers.mjs): objects
 * read back with the SDK, gunzipped and parsed; replays; multipart; a missing bucket; the server stopped.
 */
import { randomBytes } from "node:crypto"
import { gunzipSync } from "node:zlib"
import {
  CreateBucketCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  S3Client,
} from "@aws-sdk/client-s3"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Either, Schema, type Scope } from "effect"
import { S3Target } from "../../../src/domain/Tenant.js"
import { type Destination, subBatch } from "../../../src/route/destinations/Delivery.js"
import { makeS3Destination } from "../../../src/route/destinations/S3.js"
import { s3LinesAlreadyStored } from "../../../src/route/destinations/StoreMetrics.js"
import { makeBatch, paddedMessage, reportThroughput, restart, runId, stopServer, useServer } from "./support.js"

const env = { SPILLWAY_IT_KEY: "test", SPILLWAY_IT_SECRET: "test" }
const run = runId()
const bucket = `spillway-${run}`
let url = ""
let release: () => Promise<void> = async () => {}
let admin: S3Client

const target = (over: object = {}) =>
  Either.getOrThrow(
    Schema.decodeUnknownEither(S3Target)({
      s3: {
        bucket,
        prefix: "tenants",
        endpoint: url,
        forcePathStyle: true,
        credentials: { from: "env", accessKeyIdEnv: "SPILLWAY_IT_KEY", secretAccessKeyEnv: "SPILLWAY_IT_SECRET" },
        timeoutMs: 5000,
        ...over,
      },
    }),
  )

const build = (over: object = {}): Effect.Effect<Destination, never, Scope.Scope> =>
  makeS3Destination(target(over), env).pipe(Effect.orDie)

const keysUnder = (prefix: string) =>
  Effect.promise(async () => {
    const r = await admin.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }))
    return (r.Contents ?? []).map((o) => o.Key!).sort()
  })

const linesOf = (key: string) =>
  Effect.promise(async () => {
    const r = await admin.send(new GetObjectCommand({ Bucket: bucket, Key: key }))
    const text = gunzipSync(await r.Body!.transformToByteArray()).toString("utf8")
    assert.isTrue(text.endsWith("\n"))
    return text.slice(0, -1).split("\n")
  })

const createBucket = () => admin.send(new CreateBucketCommand({ Bucket: bucket }))

beforeAll(async () => {
  const s = await useServer("s3")
  url = s.url
  release = s.release
  admin = new S3Client({
    region: "us-east-1",
    endpoint: url,
    forcePathStyle: true,
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
  })
  await createBucket()
})
afterAll(async () => {
  admin?.destroy()
  await release()
})

describe("s3 target (real S3-compatible server)", () => {
  it.scopedLive("N events of two tenants land as exactly N lines each under their prefix, as given", () =>
    Effect.gen(function* () {
      const d = yield* build()
      const sent = new Map<string, Array<string>>()
      for (const [user, partition] of [
        ["tenant-a", 0],
        ["tenant-b", 1],
      ] as const) {
        const batches = [0, 400].map((first) => makeBatch({ userId: user, partition, firstOffset: first, count: 400 }))
        for (const b of batches) assert.deepStrictEqual(yield* d.deliver(b), { failures: [] })
        sent.set(
          user,
          batches.flatMap((b) => [...b.lines]),
        )
      }
      for (const [user, lines] of sent) {
        const keys = yield* keysUnder(`tenants/${user}/`)
        assert.deepStrictEqual(keys, [
          `tenants/${user}/2026/12/01/fb-kafka-${user === "tenant-a" ? 0 : 1}-0-399.ndjson.gz`,
          `tenants/${user}/2026/12/01/fb-kafka-${user === "tenant-a" ? 0 : 1}-400-799.ndjson.gz`,
        ])
        const got = (yield* Effect.forEach(keys, linesOf)).flat()
        assert.strictEqual(got.length, 800)
        assert.deepStrictEqual(got, lines)
        for (const l of got) assert.strictEqual(JSON.parse(l).user_id, user)
      }
      const head = yield* Effect.promise(() =>
        admin.send(
          new HeadObjectCommand({ Bucket: bucket, Key: "tenants/tenant-a/2026/12/01/fb-kafka-0-0-399.ndjson.gz" }),
        ),
      )
      assert.strictEqual(head.ContentEncoding, "gzip")
      assert.strictEqual(head.ContentType, "application/x-ndjson")
    }),
  )

  it.scopedLive("a replay of a batch writes the same single key again (no second object)", () =>
    Effect.gen(function* () {
      const d = yield* build({ prefix: "replay/" })
      const b = makeBatch({ userId: "tenant-r", partition: 2, firstOffset: 1000, count: 300 })
      yield* d.deliver(b)
      const first = yield* keysUnder("replay/")
      yield* d.deliver(b)
      yield* d.deliver(structuredClone(b))
      assert.deepStrictEqual(yield* keysUnder("replay/"), first)
      assert.deepStrictEqual(first, ["replay/tenant-r/2026/12/01/fb-kafka-2-1000-1299.ndjson.gz"])
      assert.deepStrictEqual(yield* linesOf(first[0]!), [...b.lines])
    }),
  )

  it.scopedLive(
    "after a restart, a replay cut differently writes only what no earlier object holds: every line once",
    () =>
      Effect.gen(function* () {
        const all = makeBatch({ userId: "tenant-k", partition: 5, firstOffset: 0, count: 300 })
        const cut = (from: number, to: number) => subBatch(all, all.lines.map((_, i) => i).slice(from, to + 1))
        const run1 = yield* build({ prefix: "resume" }) // wrote two objects, then "crashed" before committing
        yield* run1.deliver(cut(0, 99))
        yield* run1.deliver(cut(100, 199))
        const run2 = yield* build({ prefix: "resume" }) // restarted at offset 0, its first batch is longer
        yield* run2.deliver(cut(0, 249))
        const run3 = yield* build({ prefix: "resume" }) // restarted again, now with shorter batches
        for (const [a, b] of [
          [0, 49],
          [50, 149],
          [150, 299],
        ] as const)
          yield* run3.deliver(cut(a, b))
        const keys = yield* keysUnder("resume/")
        const dir = "resume/tenant-k/2026/12/01/fb-kafka-5"
        assert.deepStrictEqual(keys, [
          `${dir}-0-99.ndjson.gz`,
          `${dir}-100-199.ndjson.gz`,
          `${dir}-200-249.ndjson.gz`,
          `${dir}-250-299.ndjson.gz`,
        ])
        const lines = (yield* Effect.forEach(keys, linesOf)).flat()
        assert.deepStrictEqual(lines, [...all.lines])
        const skipped = yield* Effect.promise(() => s3LinesAlreadyStored.get())
        const mine = skipped.values.find((v) => v.labels.destination === `s3:${bucket}/resume`)
        assert.strictEqual(mine?.value, 200 + 50 + 100 + 100) // run 2: 0-199; run 3: 0-49, 50-149, 150-249
      }),
  )

  it.scopedLive("an object larger than partSizeBytes goes up as a multipart upload and reads back whole", () =>
    Effect.gen(function* () {
      const d = yield* build({ prefix: "multipart", partSizeBytes: 5 * 1024 * 1024 })
      // random hex compresses to about half: ~13 MiB of lines make a ~7 MiB object, two parts
      const b = makeBatch({
        userId: "tenant-m",
        firstOffset: 0,
        count: 1600,
        message: () => ({ blob: randomBytes(4096).toString("hex") }),
      })
      yield* d.deliver(b)
      const keys = yield* keysUnder("multipart/")
      assert.strictEqual(keys.length, 1)
      const head = yield* Effect.promise(() => admin.send(new HeadObjectCommand({ Bucket: bucket, Key: keys[0]! })))
      assert.isAbove(head.ContentLength ?? 0, 5 * 1024 * 1024)
      assert.match(head.ETag ?? "", /-2"?$/) // a multipart ETag ends in -<parts>
      assert.deepStrictEqual(yield* linesOf(keys[0]!), [...b.lines])
    }),
  )

  it.scopedLive("gzip off writes plain NDJSON under .ndjson", () =>
    Effect.gen(function* () {
      const d = yield* build({ prefix: "plain", gzip: false })
      const b = makeBatch({ userId: "tenant-p", firstOffset: 5, count: 3 })
      yield* d.deliver(b)
      const keys = yield* keysUnder("plain/")
      assert.deepStrictEqual(keys, ["plain/tenant-p/2026/12/01/fb-kafka-0-5-7.ndjson"])
      const r = yield* Effect.promise(() => admin.send(new GetObjectCommand({ Bucket: bucket, Key: keys[0]! })))
      assert.strictEqual(yield* Effect.promise(() => r.Body!.transformToString()), `${b.lines.join("\n")}\n`)
    }),
  )

  it.scopedLive("a missing bucket is a permanent failure that names the bucket", () =>
    Effect.gen(function* () {
      const d = yield* build({ bucket: `missing-${run}` })
      const e = yield* Effect.flip(d.deliver(makeBatch({ userId: "tenant-x", firstOffset: 0, count: 2 })))
      assert.isFalse(e.retryable)
      assert.strictEqual(e.detail, `bucket missing-${run} does not exist (NoSuchBucket, http 404)`)
      assert.strictEqual(e.target, `s3:missing-${run}/tenants`)
    }),
  )

  it.scopedLive("the server stopped: a retryable failure; once it is back (bucket made again), the batch lands", () =>
    Effect.gen(function* () {
      const d = yield* build({ prefix: "outage" })
      const b = makeBatch({ userId: "tenant-o", firstOffset: 0, count: 50 })
      yield* Effect.promise(() => stopServer("s3"))
      const e = yield* Effect.flip(d.deliver(b))
      assert.isTrue(e.retryable, e.detail)
      assert.strictEqual(e.detail, `bucket ${bucket} unavailable (ECONNREFUSED)`)
      yield* Effect.promise(() => restart("s3")) // moto keeps data in memory: the bucket is gone
      yield* Effect.promise(() => createBucket())
      assert.deepStrictEqual(yield* d.deliver(b), { failures: [] })
      const keys = yield* keysUnder("outage/")
      assert.strictEqual(keys.length, 1)
      assert.deepStrictEqual(yield* linesOf(keys[0]!), [...b.lines])
    }),
  )

  it.scopedLive("20 000 events in 4 objects of 5 000 (measured)", () =>
    Effect.gen(function* () {
      const d = yield* build({ prefix: "throughput" })
      const batches = [0, 1, 2, 3].map((k) =>
        makeBatch({ userId: "tenant-t", firstOffset: k * 5000, count: 5000, message: paddedMessage(300) }),
      )
      const bytes = batches.reduce((n, b) => n + b.lines.reduce((m, l) => m + l.length + 1, 0), 0)
      const t0 = performance.now()
      for (const b of batches) yield* d.deliver(b)
      reportThroughput("s3 (moto), gzip", 20_000, bytes, performance.now() - t0)
      const keys = yield* keysUnder("throughput/")
      assert.strictEqual(keys.length, 4)
      const listed = yield* Effect.promise(() =>
        admin.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: "throughput/" })),
      )
      const stored = (listed.Contents ?? []).reduce((n, o) => n + (o.Size ?? 0), 0)
      console.log(`[throughput] s3 objects: ${(stored / 1e6).toFixed(2)} MB gzip (${(bytes / stored).toFixed(1)}x)`)
      assert.strictEqual((yield* Effect.forEach(keys, linesOf)).flat().length, 20_000)
    }),
  )
})
