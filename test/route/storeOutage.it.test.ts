/**
 * The built router, the real Kafka and the real stores (OpenSearch 2.19 and moto, scripts/servers.mjs): tenant A's
 * store goes away for a while. A's partition pauses, its committed offset (read with the kafkajs admin client)
 * never moves past what the store holds, tenant B's file target keeps flowing during the outage, and once the store
 * is back all of A arrives: exactly N documents / N lines in objects whose offset ranges do not overlap.
 *
 * Partitions are chosen, not hashed: every record of A is produced to partition 0 and every record of B to
 * partition 1 (explicit `partition`), so B never shares a partition with A's failing store. Two tenants on one
 * partition (where B waits for A's partition to resume) is another test's subject.
 *
 * The outages: OpenSearch is stopped (SIGTERM) and started again (its data is on disk); moto keeps its data in
 * memory, so it is frozen with SIGSTOP instead (requests time out, which is retryable) and thawed with SIGCONT.
 */
import { mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { gunzipSync } from "node:zlib"
import { CreateBucketCommand, GetObjectCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3"
import { afterAll, describe, expect, it } from "vitest"
import { status as serverStatus } from "../../scripts/servers.mjs"
import { sealHex } from "../../src/shared/Crypto.js"
import { EventCodec } from "../../src/wire/Wire.js"
import { createTopic, makeKafka, uniqueTopic } from "../support/kafka.js"
import { readNdjson, startRouter, testScratch, waitFor } from "../support/router.js"
import { restart, runId, stopServer, useServer } from "./destinations/support.js"

const KEY = "883EC28EBA9A36A386FA351FBC482B34"
const aws = { AWS_ACCESS_KEY_ID: "testing", AWS_SECRET_ACCESS_KEY: "testing", AWS_REGION: "us-east-1" }
const A_PARTITION = 0
const B_PARTITION = 1
const N = 150 // A's events before the outage, and again during it
const { tempDir } = testScratch()
const releases: Array<() => Promise<void>> = []
const thaw: Array<() => void> = []
afterAll(async () => {
  for (const t of thaw) t()
  for (const r of releases) await r()
}, 120_000)

interface Store {
  readonly name: "opensearch" | "s3"
  readonly target: Record<string, unknown>
  /** Event ids of A the store holds, each as often as it is stored. */
  readonly storedIds: () => Promise<Array<string>>
  readonly down: () => Promise<void>
  readonly up: () => Promise<void>
  /** After the run: the store's own check that nothing is there twice. */
  readonly noDuplicates: () => Promise<void>
}

const openSearchStore = async (id: string): Promise<Store> => {
  const { url, release } = await useServer("opensearch")
  releases.push(release)
  const index = `outage-${id}`
  const docs = async () => {
    await fetch(`${url}/${index}/_refresh`, { method: "POST" })
    const res = await fetch(`${url}/${index}/_search?size=1000&_source=event_id`)
    if (!res.ok) return []
    const body = (await res.json()) as { hits: { hits: Array<{ _id: string; _source: { event_id: string } }> } }
    return body.hits.hits.map((h) => h._source.event_id)
  }
  return {
    name: "opensearch",
    target: { opensearch: { urls: [url], index, timeoutMs: 2000 } },
    storedIds: docs,
    down: () => stopServer("opensearch"),
    up: () => restart("opensearch"),
    noDuplicates: async () => {
      const res = await fetch(`${url}/${index}/_count`)
      expect(((await res.json()) as { count: number }).count).toBe(2 * N)
    },
  }
}

const s3Store = async (id: string): Promise<Store> => {
  const { url, release } = await useServer("s3")
  releases.push(release)
  const bucket = `outage-${id}`
  const s3 = new S3Client({
    endpoint: url,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: "testing", secretAccessKey: "testing" },
  })
  await s3.send(new CreateBucketCommand({ Bucket: bucket }))
  const objects = async () => {
    const listed = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: "a/" }))
    const out: Array<{ key: string; ids: Array<string> }> = []
    for (const o of listed.Contents ?? []) {
      const body = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: o.Key! }))
      const text = gunzipSync(Buffer.from(await body.Body!.transformToByteArray())).toString("utf8")
      const ids = text
        .split("\n")
        .filter((l) => l !== "")
        .map((l) => (JSON.parse(l) as { event_id: string }).event_id)
      out.push({ key: o.Key!, ids })
    }
    return out
  }
  const signal = (sig: NodeJS.Signals) => async () => {
    const st = await serverStatus("s3")
    if (st.pid === undefined) throw new Error("moto is not running")
    process.kill(st.pid, sig)
  }
  return {
    name: "s3",
    target: {
      s3: { bucket, prefix: "a", endpoint: url, forcePathStyle: true, credentials: { from: "env" }, timeoutMs: 1000 },
    },
    storedIds: async () => (await objects()).flatMap((o) => o.ids),
    down: async () => {
      const st = await serverStatus("s3")
      thaw.push(() => process.kill(st.pid!, "SIGCONT"))
      await signal("SIGSTOP")()
    },
    up: signal("SIGCONT"),
    noDuplicates: async () => {
      const all = await objects()
      expect(new Set(all.map((o) => o.key)).size).toBe(all.length)
      // Object keys end in -{first}-{last}.ndjson.gz: the ranges of A's partition must not overlap.
      const ranges = all
        .map((o) => /-(\d+)-(\d+)\.ndjson\.gz$/.exec(o.key)!)
        .map((m) => [Number(m[1]), Number(m[2])] as const)
        .sort((x, y) => x[0] - y[0])
      for (let i = 1; i < ranges.length; i++) expect(ranges[i]![0]).toBeGreaterThan(ranges[i - 1]![1])
    },
  }
}

const runOutage = async (store: Store, id: string) => {
  const dir = tempDir("outage")
  const outputDir = join(dir, "out")
  mkdirSync(outputDir)
  const tenantsFile = join(dir, "tenants.json")
  const tenants = {
    "key-a": { AccessKey: "key-a", EncryptionKey: KEY, UserID: "user-a", targets: [store.target] },
    "key-b": { AccessKey: "key-b", EncryptionKey: KEY, UserID: "user-b", targets: [{ file: "b.log" }] },
  }
  writeFileSync(tenantsFile, JSON.stringify(tenants))
  const topic = uniqueTopic(`outage-${store.name}`)
  const group = `${topic}-g`
  await createTopic(topic, 2)
  const kafka = makeKafka("outage-it")
  const producer = kafka.producer()
  const admin = kafka.admin()
  await producer.connect()
  await admin.connect()
  const keyBytes = Buffer.from(KEY, "utf8")
  const record = (key: "key-a" | "key-b", i: number) => ({
    key,
    partition: key === "key-a" ? A_PARTITION : B_PARTITION,
    value: Buffer.from(
      EventCodec.encode({
        timestamp: { seconds: String(Math.floor(Date.now() / 1000)), nanos: 0 },
        agent_id: "agent-1",
        tag: "app",
        message: sealHex(keyBytes, Buffer.from(JSON.stringify({ n: i }))),
        UserID: tenants[key].UserID,
        AccessKey: key,
        event_id: `${id}-${key}-${i}`,
      }),
    ),
  })
  const send = (key: "key-a" | "key-b", from: number, count: number) =>
    producer.send({ topic, messages: Array.from({ length: count }, (_, i) => record(key, from + i)) })
  const committedA = async () => {
    const [t] = await admin.fetchOffsets({ groupId: group, topics: [topic] })
    const p = t?.partitions.find((x) => x.partition === A_PARTITION)
    return p === undefined || p.offset === "-1" ? 0 : Number(p.offset)
  }
  const bLines = () => readNdjson(join(outputDir, "b.log"))
  const distinct = (ids: Array<string>) => new Set(ids).size

  const router = await startRouter({
    topic,
    group,
    tenantsFile,
    outputDir,
    decrypt: true,
    env: {
      ...aws,
      SPILLWAY_ROUTER_RETRY_BUDGET: "2 seconds",
      SPILLWAY_ROUTER_RETRY_CAP: "500 millis",
      SPILLWAY_ROUTER_PAUSE_BASE: "500 millis",
      SPILLWAY_ROUTER_PAUSE_MAX: "2 seconds",
      // This file proves the pause path (nothing committed past what the store holds). Setting a failing tenant
      // aside in the retry topic, which commits its partition, is test/route/isolation.it.test.ts.
      SPILLWAY_ROUTER_ISOLATE: "false",
    },
  })
  try {
    // Before: both flow.
    await send("key-a", 0, N)
    await send("key-b", 0, 50)
    await waitFor(async () => distinct(await store.storedIds()) === N, 60_000, "A's first events in the store", 500)
    await waitFor(async () => (await committedA()) === N, 30_000, "A's offset committed up to what was written")
    await waitFor(() => bLines().length === 50, 30_000, "B's first lines")

    // Outage: A's partition pauses, its committed offset stays at what the store holds, B keeps flowing.
    await store.down()
    const pausesBefore = await router.metric("spillway_router_partition_pauses_total")
    await send("key-a", N, N)
    await waitFor(
      async () => (await router.metric("spillway_router_partition_pauses_total")) > pausesBefore,
      60_000,
      "A's partition paused",
    )
    expect(await committedA()).toBe(N)
    for (let wave = 1; wave <= 3; wave++) {
      await send("key-b", wave * 50, 50)
      await waitFor(() => bLines().length === (wave + 1) * 50, 30_000, `B's lines, wave ${wave}, during the outage`)
      expect(await committedA()).toBe(N)
    }
    expect(await router.metric("spillway_router_destination_errors_total")).toBeGreaterThan(0)

    // Back: all of A arrives, once.
    await store.up()
    await waitFor(async () => distinct(await store.storedIds()) === 2 * N, 120_000, "all of A in the store", 1000)
    await waitFor(async () => (await committedA()) === 2 * N, 60_000, "A's offset committed to the end")
    const ids = await store.storedIds()
    expect(ids.length).toBe(2 * N)
    expect(distinct(ids)).toBe(2 * N)
    await store.noDuplicates()
    const b = bLines()
    expect(b.length).toBe(200)
    expect(new Set(b.map((l) => l.event_id)).size).toBe(200)
  } finally {
    await router.stop()
    await producer.disconnect()
    await admin.disconnect()
  }
}

describe("a store that goes away (built router, real Kafka, real stores)", () => {
  it("opensearch stopped: A's partition pauses, nothing committed past what was written, B flows; then all of A, N documents", async () => {
    const id = runId()
    await runOutage(await openSearchStore(id), id)
  }, 400_000)

  it("s3 (moto) frozen: the same, and no object key twice, no overlapping offset ranges", async () => {
    const id = runId()
    await runOutage(await s3Store(id), id)
  }, 300_000)
})
