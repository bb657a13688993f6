/**
 * The built router with `s3` and `opensearch` targets against the real servers (moto, OpenSearch 2.19 from
 * scripts/servers.mjs) and the real Kafka: N events for two tenants land as exactly N lines (S3 objects, read back
 * and gunzipped) and N documents (OpenSearch `_count`); a replay after a SIGKILL leaves no duplicate object key and
 * no duplicate document; a mapping conflict and a missing bucket reach the dead-letter topic with their reasons.
 */
import { gunzipSync } from "node:zlib"
import { GetObjectCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { sealHex } from "../../src/shared/Crypto.js"
import { EventCodec } from "../../src/wire/Wire.js"
import { consumeAll, createTopic, headerText, makeKafka, uniqueTopic } from "../support/kafka.js"
import { startRouter, waitFor } from "../support/router.js"
import { runId, useServer } from "./destinations/support.js"

const KEY = "883EC28EBA9A36A386FA351FBC482B34"
const aws = { AWS_ACCESS_KEY_ID: "testing", AWS_SECRET_ACCESS_KEY: "testing", AWS_REGION: "us-east-1" }

describe("router -> s3 and opensearch (real servers, built router)", () => {
  let s3url = ""
  let osurl = ""
  const releases: Array<() => Promise<void>> = []
  beforeAll(async () => {
    const s3 = await useServer("s3")
    const os = await useServer("opensearch")
    s3url = s3.url
    osurl = os.url
    releases.push(s3.release, os.release)
  }, 180_000)
  afterAll(async () => {
    for (const r of releases) await r()
  }, 60_000)

  it("two tenants: N lines in objects under each prefix, N documents per index; replays add no duplicate; DLQ reasons", async () => {
    const id = runId()
    const bucket = `spillway-it-${id}`
    const s3 = new S3Client({
      endpoint: s3url,
      region: "us-east-1",
      forcePathStyle: true,
      credentials: { accessKeyId: "testing", secretAccessKey: "testing" },
    })
    const { CreateBucketCommand } = await import("@aws-sdk/client-s3")
    await s3.send(new CreateBucketCommand({ Bucket: bucket }))
    const store = (prefix: string) => ({
      s3: { bucket, prefix, endpoint: s3url, forcePathStyle: true, credentials: { from: "env" } },
    })
    const search = { opensearch: { urls: [osurl], index: `it-${id}-{user_id}-{yyyy.MM.dd}` } }
    const tenants = {
      "key-a": { AccessKey: "key-a", EncryptionKey: KEY, UserID: "user-a", targets: [store("a"), search] },
      "key-b": { AccessKey: "key-b", EncryptionKey: KEY, UserID: "user-b", targets: [store("b"), search] },
      "key-c": {
        AccessKey: "key-c",
        EncryptionKey: KEY,
        UserID: "user-c",
        targets: [
          { s3: { bucket: `missing-${id}`, endpoint: s3url, forcePathStyle: true, credentials: { from: "env" } } },
        ],
      },
    }
    const { mkdtempSync, writeFileSync } = await import("node:fs")
    const { join } = await import("node:path")
    const { tmpdir } = await import("node:os")
    const dir = mkdtempSync(join(tmpdir(), "spillway-stores-"))
    const tenantsFile = join(dir, "tenants.json")
    writeFileSync(tenantsFile, JSON.stringify(tenants))

    const topic = uniqueTopic("stores")
    await createTopic(topic, 2)
    const producer = makeKafka("stores-it").producer()
    await producer.connect()
    const N = 600
    const keyBytes = Buffer.from(KEY, "utf8")
    const event = (key: string, i: number, message: unknown) => ({
      key,
      value: Buffer.from(
        EventCodec.encode({
          timestamp: { seconds: String(Math.floor(Date.now() / 1000)), nanos: 0 },
          agent_id: "agent-1",
          tag: "app",
          message: sealHex(keyBytes, Buffer.from(JSON.stringify(message))),
          UserID: tenants[key as keyof typeof tenants].UserID,
          AccessKey: key,
          event_id: `${key}-${i}`,
        }),
      ),
    })
    const messages = []
    for (let i = 0; i < N; i++) messages.push(event("key-a", i, { n: i }), event("key-b", i, { n: i }))
    messages.push(event("key-a", N, { n: "not a number" })) // a mapping conflict in OpenSearch (n is a long)
    for (let i = 0; i < 5; i++) messages.push(event("key-c", i, { n: i })) // no such bucket
    await producer.send({ topic, messages: messages.slice(0, 400) })

    const router = await startRouter({ topic, group: `${topic}-g`, tenantsFile, decrypt: true, env: aws })
    try {
      await waitFor(async () => (await router.metric("spillway_router_events_out_total")) > 100, 60_000, "first lines")
      await router.kill("SIGKILL") // mid-run: the replay writes the same keys and ids again
      await producer.send({ topic, messages: messages.slice(400) })
      await router.restart()

      const lines = async (prefix: string) => {
        const listed = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${prefix}/` }))
        const out: Array<Record<string, unknown>> = []
        const keys = (listed.Contents ?? []).map((o) => o.Key!)
        for (const key of keys) {
          const body = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }))
          const bytes = Buffer.from(await body.Body!.transformToByteArray())
          for (const l of gunzipSync(bytes).toString("utf8").split("\n")) if (l !== "") out.push(JSON.parse(l))
        }
        return { keys, out }
      }
      const count = async (user: string) => {
        await fetch(`${osurl}/_refresh`, { method: "POST" })
        const res = await fetch(`${osurl}/it-${id}-${user}-*/_count`)
        return res.ok ? ((await res.json()) as { count: number }).count : 0
      }
      await waitFor(
        async () => (await count("user-a")) >= N && (await count("user-b")) >= N,
        120_000,
        "documents in OpenSearch",
        1000,
      )
      await waitFor(
        async () => {
          const a = new Set((await lines("a")).out.map((l) => l.event_id))
          const b = new Set((await lines("b")).out.map((l) => l.event_id))
          return a.size >= N + 1 && b.size >= N
        },
        120_000,
        "lines in S3",
        1000,
      )
      const a = await lines("a")
      const b = await lines("b")
      expect(new Set(a.out.map((l) => l.event_id)).size).toBe(N + 1)
      expect(new Set(b.out.map((l) => l.event_id)).size).toBe(N)
      expect(a.out.every((l) => l.user_id === "user-a")).toBe(true)
      expect(a.out.find((l) => l.event_id === "key-a-7")?.message).toEqual({ n: 7 })
      // Object keys from partition and offsets: a replay rewrites the same key, never a second object.
      expect(new Set(a.keys).size).toBe(a.keys.length)
      console.log(
        `s3: ${a.out.length} lines of A in ${a.keys.length} objects, ${b.out.length} of B in ${b.keys.length}; ` +
          `opensearch: ${await count("user-a")} / ${await count("user-b")} documents`,
      )
      expect(await count("user-a")).toBe(N) // the conflicting one is a dead letter, replays overwrite by _id
      expect(await count("user-b")).toBe(N)

      const letters = await consumeAll(`${topic}-dlq`, 6, 30_000)
      const reasons = letters.map((l) => `${headerText(l.headers, "reason")}: ${headerText(l.headers, "detail")}`)
      expect(reasons.some((r) => /destination_rejected: .*mapper_parsing_exception/.test(r))).toBe(true)
      expect(reasons.filter((r) => r.includes(`missing-${id}`)).length).toBeGreaterThanOrEqual(5)
    } finally {
      await producer.disconnect()
      await router.stop()
      s3.destroy()
    }
  }, 300_000)
})
