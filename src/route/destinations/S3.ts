/**
 * `s3` targets (AWS S3 and S3-compatible stores: MinIO, IBM COS, Ceph, R2). One batch is one object:
 * NDJSON, gzip by default, under a key that is a pure function of its contents (S3Object.ts), so a
 * replay of the batch overwrites the same key instead of adding an object. Objects up to
 * `partSizeBytes` go up with one PutObject, larger ones as a multipart upload (lib-storage `Upload`,
 * two parts in flight, aborted on failure). The SDK does not retry (`maxAttempts: 1`): the router
 * retries on the shared Schedule. See docs/destinations.md.
 */
import { promisify } from "node:util"
import { gzip as gzipCallback } from "node:zlib"
import { ListObjectsV2Command, PutObjectCommand, S3Client, type S3ClientConfig } from "@aws-sdk/client-s3"
import { Upload } from "@aws-sdk/lib-storage"
import { Effect, type Scope } from "effect"
import { DestinationError } from "../../domain/Errors.js"
import { type S3Target, targetName } from "../../domain/Tenant.js"
import { inc } from "../../shared/Metrics.js"
import { allDelivered, type DeliveryBatch, type Destination, subBatch } from "./Delivery.js"
import { classifyS3Error, lastOffsetOfKey, ndjson, objectKey, rangePrefix } from "./S3Object.js"
import { envValue, iniProfile, readSmallFile } from "./Secrets.js"
import { s3LinesAlreadyStored, s3ObjectBytes, s3Objects } from "./StoreMetrics.js"

const gzipAsync = promisify(gzipCallback)

type Credentials = { accessKeyId: string; secretAccessKey: string; sessionToken?: string }

/** The target's credentials: undefined for the SDK's default chain, else the keys its reference names. */
export const resolveS3Credentials = (
  target: S3Target,
  env: NodeJS.ProcessEnv = process.env,
): Effect.Effect<Credentials | undefined, DestinationError> => {
  const name = targetName(target)
  const refused = (detail: string) => new DestinationError({ target: name, retryable: false, detail })
  const c = target.s3.credentials
  if (c.from === "default") return Effect.succeed(undefined)
  if (c.from === "env") {
    const accessKeyId = envValue(env, c.accessKeyIdEnv)
    const secretAccessKey = envValue(env, c.secretAccessKeyEnv)
    const sessionToken = envValue(env, c.sessionTokenEnv)
    if (accessKeyId === undefined || secretAccessKey === undefined)
      return Effect.fail(refused(`environment variables ${c.accessKeyIdEnv} and ${c.secretAccessKeyEnv} must be set`))
    return Effect.succeed(
      sessionToken === undefined ? { accessKeyId, secretAccessKey } : { accessKeyId, secretAccessKey, sessionToken },
    )
  }
  return readSmallFile(name, c.path).pipe(
    Effect.flatMap((text) => {
      const p = iniProfile(text, c.profile)
      const accessKeyId = p?.aws_access_key_id
      const secretAccessKey = p?.aws_secret_access_key
      if (accessKeyId === undefined || secretAccessKey === undefined || accessKeyId === "" || secretAccessKey === "")
        return Effect.fail(
          refused(`${c.path} has no profile ${c.profile} with aws_access_key_id and aws_secret_access_key`),
        )
      const sessionToken = p?.aws_session_token
      return Effect.succeed(
        sessionToken === undefined || sessionToken === ""
          ? { accessKeyId, secretAccessKey }
          : { accessKeyId, secretAccessKey, sessionToken },
      )
    }),
  )
}

/** Pure: the client settings of a target. */
export const s3ClientConfig = (target: S3Target, credentials: Credentials | undefined): S3ClientConfig => {
  const t = target.s3
  // S3-compatible stores often refuse the flexible checksums that AWS accepts: send them only when required there.
  const checksums = t.endpoint === undefined ? "WHEN_SUPPORTED" : "WHEN_REQUIRED"
  return {
    region: t.region,
    forcePathStyle: t.forcePathStyle,
    maxAttempts: 1,
    requestChecksumCalculation: checksums,
    responseChecksumValidation: checksums,
    requestHandler: { connectionTimeout: Math.min(10_000, t.timeoutMs), requestTimeout: t.timeoutMs },
    ...(t.endpoint === undefined ? {} : { endpoint: t.endpoint }),
    ...(credentials === undefined ? {} : { credentials }),
  }
}

/**
 * Writes one object: one PutObject up to `partSizeBytes`, else a multipart upload (two parts in flight,
 * aborted, parts removed, on failure or when `signal` aborts).
 */
const uploadObject = (client: S3Client, t: S3Target["s3"], key: string, body: Buffer, signal: AbortSignal) => {
  const params = {
    Bucket: t.bucket,
    Key: key,
    Body: body,
    ContentType: "application/x-ndjson",
    ...(t.gzip ? { ContentEncoding: "gzip" } : {}),
  }
  if (body.length <= t.partSizeBytes)
    return client.send(new PutObjectCommand({ ...params, ContentLength: body.length }), { abortSignal: signal })
  const abortController = new AbortController()
  signal.addEventListener("abort", () => abortController.abort(), { once: true })
  return new Upload({
    client,
    params,
    partSize: t.partSizeBytes,
    queueSize: 2,
    leavePartsOnError: false,
    abortController,
  }).done()
}

/** Per partition: the first offset the next batch continues at, and how far objects of an earlier run reach. */
interface PartitionState {
  readonly next: bigint
  readonly storedUntil: bigint | undefined
}
const MAX_PARTITIONS = 4096
const MAX_CHAIN = 16

/** Pure: the index of the batch's first line whose offset is above `offset` (the line count when none). */
const firstAfter = (batch: DeliveryBatch, offset: bigint): number => {
  const i = batch.events.findIndex((e) => BigInt(e.offset) > offset)
  return i === -1 ? batch.events.length : i
}

/** What the helpers of one built target share. */
interface Ctx {
  readonly client: S3Client
  readonly t: S3Target["s3"]
  readonly name: string
  readonly failed: (cause: unknown) => DestinationError
}

const noAnswer = (ctx: Ctx, duration: number) =>
  Effect.timeoutFail({
    duration,
    onTimeout: () =>
      new DestinationError({ target: ctx.name, retryable: true, detail: `bucket ${ctx.t.bucket}: no answer in time` }),
  })

/** The last offset of an object of an earlier run that starts at line `at`'s offset (undefined: none, or no s3:ListBucket). */
const storedEnd = (ctx: Ctx, batch: DeliveryBatch, at: number) => {
  const start = rangePrefix(ctx.t.prefix, batch.topic, batch.partition, batch.events[at])
  return Effect.tryPromise({
    try: (signal) =>
      ctx.client.send(new ListObjectsV2Command({ Bucket: ctx.t.bucket, Prefix: start, MaxKeys: 100 }), {
        abortSignal: signal,
      }),
    catch: ctx.failed,
  }).pipe(
    Effect.map((r) => {
      let end: bigint | undefined
      for (const o of r.Contents ?? []) {
        const last = o.Key === undefined ? undefined : lastOffsetOfKey(o.Key, start)
        if (last !== undefined && (end === undefined || last > end)) end = last
      }
      return end
    }),
    Effect.catchIf(
      (e) => !e.retryable && e.detail.startsWith("access to bucket"),
      () => Effect.succeed(undefined),
    ),
    noAnswer(ctx, ctx.t.timeoutMs),
  )
}

/** Follows the chain of objects an earlier run wrote from this batch's start: the first line not yet stored. */
const alreadyStored = (ctx: Ctx, batch: DeliveryBatch, state: PartitionState | undefined) =>
  Effect.gen(function* () {
    let until = state?.storedUntil ?? -1n
    let from = firstAfter(batch, until)
    for (let k = 0; k < MAX_CHAIN && from < batch.events.length; k++) {
      const end = yield* storedEnd(ctx, batch, from)
      if (end === undefined || end < BigInt(batch.events[from]!.offset)) break
      until = end
      from = firstAfter(batch, until)
    }
    return { from, until }
  })

/** Writes the batch as one object under its key. */
const writeObject = (ctx: Ctx, batch: DeliveryBatch) =>
  Effect.gen(function* () {
    const { t } = ctx
    const key = objectKey(t.prefix, batch, t.gzip)
    const plain = ndjson(batch.lines)
    const body = t.gzip
      ? yield* Effect.tryPromise({
          try: () => gzipAsync(plain),
          catch: (cause) => new DestinationError({ target: ctx.name, retryable: true, detail: "gzip failed", cause }),
        })
      : plain
    const parts = Math.ceil(body.length / t.partSizeBytes)
    yield* Effect.annotateCurrentSpan({ key, bytes: body.length, parts })
    yield* Effect.tryPromise({
      try: (signal) => uploadObject(ctx.client, t, key, body, signal),
      catch: ctx.failed,
    }).pipe(noAnswer(ctx, t.timeoutMs * Math.max(1, parts)))
    yield* inc(s3Objects, 1, { destination: ctx.name })
    yield* inc(s3ObjectBytes, body.length, { destination: ctx.name })
  })

/**
 * Builds an `s3` target: resolves its credentials (fails, not retryable, when the reference is unusable)
 * and makes a client that lives as long as the scope. A batch that does not continue the previous one of
 * its partition (the first after a start, a seek) is first checked against the objects an earlier run
 * wrote from the same offset (ListObjectsV2; skipped without s3:ListBucket): lines already stored are not
 * written again, so a replay cut differently after a crash leaves no line twice.
 */
export const makeS3Destination = (
  target: S3Target,
  env: NodeJS.ProcessEnv = process.env,
): Effect.Effect<Destination, DestinationError, Scope.Scope> =>
  Effect.gen(function* () {
    const name = targetName(target)
    const t = target.s3
    const credentials = yield* resolveS3Credentials(target, env)
    const client = yield* Effect.acquireRelease(
      Effect.sync(() => new S3Client(s3ClientConfig(target, credentials))),
      (c) => Effect.sync(() => c.destroy()),
    )
    const failed = (cause: unknown) => {
      const c = classifyS3Error(t.bucket, cause)
      return new DestinationError({ target: name, retryable: c.retryable, detail: c.detail, cause })
    }
    const ctx: Ctx = { client, t, name, failed }
    const partitions = new Map<string, PartitionState>()

    const deliver = Effect.fn("S3.deliver")(function* (batch: DeliveryBatch) {
      if (batch.lines.length !== batch.events.length)
        return yield* Effect.dieMessage("a DeliveryBatch needs one event per line")
      if (batch.lines.length === 0) return allDelivered
      const tp = `${batch.topic}\u0000${batch.partition}`
      const state = partitions.get(tp)
      const last = BigInt(batch.lastOffset)
      const check = state === undefined || state.next !== BigInt(batch.firstOffset) || state.storedUntil !== undefined
      const { from, until } = check ? yield* alreadyStored(ctx, batch, state) : { from: 0, until: undefined }
      if (from > 0) yield* inc(s3LinesAlreadyStored, from, { destination: name })
      if (from < batch.lines.length)
        yield* writeObject(ctx, from === 0 ? batch : subBatch(batch, batch.lines.map((_, i) => i).slice(from)))
      partitions.delete(tp)
      if (partitions.size >= MAX_PARTITIONS) partitions.delete(partitions.keys().next().value!)
      partitions.set(tp, { next: last + 1n, storedUntil: until !== undefined && until > last ? until : undefined })
      return allDelivered
    })

    return { name, limits: t.batch, deliver } satisfies Destination
  })
