/**
 * The pure side of s3 targets: key scheme (property tests), body, error classification, credentials
 * references, and the tenants-file config of an s3 target.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Either, FastCheck as fc, Schema } from "effect"
import { S3Target, type SafeFileName, TargetWithStores, targetName } from "../../../src/domain/Tenant.js"
import { type DeliveryBatch, deliveryEvent, splitIndexes, subBatch } from "../../../src/route/destinations/Delivery.js"
import { resolveS3Credentials, s3ClientConfig } from "../../../src/route/destinations/S3.js"
import {
  classifyS3Error,
  keySegment,
  lastOffsetOfKey,
  ndjson,
  objectKey,
  rangePrefix,
} from "../../../src/route/destinations/S3Object.js"
import { isStoreTarget } from "../../../src/route/destinations/Stores.js"

const batch = (over: Partial<DeliveryBatch> = {}, userId = "user-1", ts = Date.UTC(2026, 11, 1, 23, 59, 59)) => ({
  topic: "fb-kafka",
  partition: 3,
  firstOffset: "100",
  lastOffset: "101",
  lines: ['{"a":1}', '{"a":2}'],
  events: [
    { eventId: "e1", userId, timestampMs: ts, offset: "100" },
    { eventId: undefined, userId, timestampMs: ts + 86_400_000, offset: "101" },
  ],
  ...over,
})

const decodeS3 = Schema.decodeUnknownEither(S3Target)
const dir = mkdtempSync(join(tmpdir(), "spillway-s3-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe("s3 object keys", () => {
  it("follows {prefix}/{user_id}/{yyyy}/{mm}/{dd}/{topic}-{partition}-{first}-{last}.ndjson.gz, date of the first event (UTC)", () => {
    assert.strictEqual(objectKey("logs/", batch(), true), "logs/user-1/2026/12/01/fb-kafka-3-100-101.ndjson.gz")
    assert.strictEqual(objectKey("", batch(), false), "user-1/2026/12/01/fb-kafka-3-100-101.ndjson")
    assert.strictEqual(
      objectKey("a/b", batch({}, "../x y"), true),
      "a/b/..%2Fx%20y/2026/12/01/fb-kafka-3-100-101.ndjson.gz",
    )
    assert.strictEqual(keySegment(".."), "%2E%2E")
    assert.strictEqual(keySegment(""), "%")
  })

  it.prop(
    "a key is a pure function of the batch",
    [fc.string(), fc.nat(), fc.bigInt({ min: 0n, max: 2n ** 62n })],
    ([user, partition, first]) => {
      const b = batch({ partition, firstOffset: String(first), lastOffset: String(first + 5n) }, user)
      return objectKey("p", b, true) === objectKey("p", structuredClone(b), true)
    },
  )

  it.prop(
    "keySegment is injective and yields only safe characters",
    [fc.string({ unit: "binary" }), fc.string({ unit: "binary" })],
    ([a, b]) => {
      const ka = keySegment(a)
      assert.match(ka, /^[A-Za-z0-9._%-]+$/)
      assert.notInclude([".", ".."], ka)
      return a === b || ka !== keySegment(b)
    },
  )

  it.prop(
    "different offsets or partitions give different keys",
    [fc.nat(), fc.nat(), fc.nat(), fc.nat()],
    ([p1, p2, o1, o2]) => {
      const k = (p: number, o: number) =>
        objectKey("x", batch({ partition: p, firstOffset: String(o), lastOffset: String(o + 1) }), true)
      return (p1 === p2 && o1 === o2) || k(p1, o1) !== k(p2, o2)
    },
  )

  it.prop(
    "an object's key starts with the range prefix of its first event and gives back its last offset",
    [fc.string(), fc.nat(), fc.bigInt({ min: 0n, max: 2n ** 62n }), fc.boolean()],
    ([user, partition, first, gz]) => {
      const b = batch({ partition, firstOffset: String(first), lastOffset: String(first + 1n) }, user)
      const start = rangePrefix("p/", b.topic, partition, { ...b.events[0]!, offset: String(first) })
      return (
        lastOffsetOfKey(objectKey("p/", b, gz), start) === first + 1n &&
        lastOffsetOfKey(`${start}x.ndjson`, start) === undefined
      )
    },
  )

  it("ndjson ends every line with a newline", () => {
    assert.strictEqual(ndjson(['{"a":1}', '{"b":2}']).toString(), '{"a":1}\n{"b":2}\n')
  })
})

describe("s3 errors", () => {
  const err = (name: string, status?: number) =>
    Object.assign(new Error("server text that must not be quoted"), {
      name,
      $metadata: status === undefined ? {} : { httpStatusCode: status },
    })
  it("no such bucket and 403 are permanent and name the bucket; 5xx, throttling and network errors are retryable", () => {
    const nsb = classifyS3Error("b1", err("NoSuchBucket", 404))
    assert.deepStrictEqual(nsb, { retryable: false, detail: "bucket b1 does not exist (NoSuchBucket, http 404)" })
    const denied = classifyS3Error("b1", err("AccessDenied", 403))
    assert.isFalse(denied.retryable)
    assert.include(denied.detail, "access to bucket b1 denied")
    assert.isTrue(classifyS3Error("b1", err("InternalError", 500)).retryable)
    assert.isTrue(classifyS3Error("b1", err("SlowDown", 503)).retryable)
    assert.isTrue(classifyS3Error("b1", err("Unknown", 429)).retryable)
    assert.isTrue(
      classifyS3Error("b1", Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" })).retryable,
    )
    const other = classifyS3Error("b1", err("InvalidArgument", 400))
    assert.isFalse(other.retryable)
    assert.notInclude(other.detail, "server text")
  })
})

describe("s3 target config", () => {
  it("decodes with defaults: region, gzip on, batch limits, default credential chain", () => {
    const t = Either.getOrThrow(decodeS3({ s3: { bucket: "logs", prefix: "spillway" } }))
    assert.strictEqual(t.s3.region, "us-east-1")
    assert.isTrue(t.s3.gzip)
    assert.deepStrictEqual(t.s3.batch, { maxBytes: 8 * 1024 * 1024, maxEvents: 20_000 })
    assert.deepStrictEqual(t.s3.credentials, { from: "default" })
    assert.strictEqual(t.s3.partSizeBytes, 8 * 1024 * 1024)
    assert.strictEqual(targetName(t), "s3:logs/spillway")
    assert.isTrue(Either.isRight(Schema.decodeUnknownEither(TargetWithStores)({ s3: { bucket: "logs" } })))
  })

  it("refuses bad prefixes, buckets, endpoints and part sizes below 5 MiB", () => {
    for (const s3 of [
      { bucket: "logs", prefix: "/abs" },
      { bucket: "logs", prefix: "a/../b" },
      { bucket: "logs", prefix: "a\nb" },
      { bucket: "no/slash" },
      { bucket: "logs", endpoint: "ftp://x" },
      { bucket: "logs", partSizeBytes: 1024 },
      { bucket: "logs", credentials: { from: "plain", secret: "x" } },
    ])
      assert.isTrue(Either.isLeft(decodeS3({ s3 })), JSON.stringify(s3))
  })

  it.effect(
    "credentials come from the named variables or a profile of a credentials file, never the tenants file",
    () =>
      Effect.gen(function* () {
        const env = Either.getOrThrow(
          decodeS3({
            s3: { bucket: "bkt", credentials: { from: "env", accessKeyIdEnv: "K", secretAccessKeyEnv: "S" } },
          }),
        )
        assert.deepStrictEqual(yield* resolveS3Credentials(env, { K: "id", S: "secret" }), {
          accessKeyId: "id",
          secretAccessKey: "secret",
        })
        const missing = yield* Effect.flip(resolveS3Credentials(env, { K: "id" }))
        assert.isFalse(missing.retryable)
        assert.strictEqual(missing.detail, "environment variables K and S must be set")

        const file = join(dir, "credentials")
        writeFileSync(
          file,
          "[default]\naws_access_key_id = A\naws_secret_access_key = B\n\n[ops]\naws_access_key_id=C\naws_secret_access_key=s3cr3t-D\naws_session_token=T\n",
        )
        const ops = Either.getOrThrow(
          decodeS3({ s3: { bucket: "bkt", credentials: { from: "file", path: file, profile: "ops" } } }),
        )
        assert.deepStrictEqual(yield* resolveS3Credentials(ops, {}), {
          accessKeyId: "C",
          secretAccessKey: "s3cr3t-D",
          sessionToken: "T",
        })
        const none = Either.getOrThrow(
          decodeS3({ s3: { bucket: "bkt", credentials: { from: "file", path: file, profile: "nope" } } }),
        )
        const e = yield* Effect.flip(resolveS3Credentials(none, {}))
        assert.include(e.detail, "has no profile nope")
        assert.notInclude(e.detail, "s3cr3t")
        const cfg = s3ClientConfig(ops, { accessKeyId: "C", secretAccessKey: "D" })
        assert.strictEqual(cfg.maxAttempts, 1)
        assert.strictEqual(cfg.requestChecksumCalculation, "WHEN_SUPPORTED")
      }),
  )
})

describe("delivery helpers", () => {
  it("deliveryEvent takes the router's RFC 3339 timestamp and empty event_id", () => {
    assert.deepStrictEqual(
      deliveryEvent({ eventId: "", userId: "u", timestamp: "2026-12-01T10:00:00.123456789Z" }, "42"),
      { eventId: undefined, userId: "u", timestampMs: Date.UTC(2026, 11, 1, 10, 0, 0, 123), offset: "42" },
    )
    assert.strictEqual(deliveryEvent({ eventId: "e", userId: "u", timestamp: "nope" }, "1").timestampMs, 0)
  })
  it("subBatch keeps the lines and offsets of the chosen indexes", () => {
    const s = subBatch(batch(), [1])
    assert.deepStrictEqual([s.firstOffset, s.lastOffset, s.lines], ["101", "101", ['{"a":2}']])
  })
  it("isStoreTarget tells the batching stores from file and http", () => {
    assert.isTrue(isStoreTarget(Either.getOrThrow(decodeS3({ s3: { bucket: "bkt" } }))))
    assert.isFalse(isStoreTarget({ file: "x.log" as SafeFileName }))
  })
  it.prop(
    "splitIndexes keeps every line once, in order, within the limits",
    [
      fc.array(fc.string({ maxLength: 50 }), { maxLength: 60 }),
      fc.integer({ min: 1, max: 10 }),
      fc.integer({ min: 1, max: 200 }),
    ],
    ([lines, maxEvents, maxBytes]) => {
      const runs = splitIndexes(lines, { maxEvents, maxBytes }, 3)
      assert.deepStrictEqual(
        runs.flat(),
        lines.map((_, i) => i),
      )
      for (const run of runs) {
        assert.isAtMost(run.length, maxEvents)
        const bytes = run.reduce((n, i) => n + Buffer.byteLength(lines[i]!) + 3, 0)
        assert.isTrue(run.length === 1 || bytes <= maxBytes)
      }
    },
  )
})
