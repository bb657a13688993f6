/**
 * The built router against the real local Kafka, real files and a real local HTTP server.
 * Needs `npm run build` (the router runs as a child process: test/support/router.ts).
 */
import { readFileSync, writeFileSync } from "node:fs"
import { createServer, type Server } from "node:http"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import type { Message } from "kafkajs"
import { sealHex } from "../../src/shared/Crypto.js"
import { EventCodec } from "../../src/wire/Wire.js"
import { consumeAll, createTopic, headerText, makeKafka, uniqueTopic } from "../support/kafka.js"
import { readNdjson, runRouterOnce, sleep, startRouter, testScratch, waitFor } from "../support/router.js"

const KEY = "883EC28EBA9A36A386FA351FBC482B34"
const A = "9c60f26f-5b6c-4c80-b5f5-625bf965b6a6"
const B = "9c60f26f-5b6c-4c80-b5f5-611bf965c6a8"

const { tempDir, routers } = testScratch()

const writeTenants = (dir: string, tenants: Record<string, unknown>) => {
  const file = join(dir, "tenants.json")
  writeFileSync(file, JSON.stringify(tenants, null, 2))
  return file
}
const tenant = (key: string, targets: ReadonlyArray<unknown>, encryptionKey = KEY) => ({
  AccessKey: key,
  EncryptionKey: encryptionKey,
  UserID: `user-${key.slice(-4)}`,
  targets,
})

/** The protobuf value of an event whose plaintext message is `{ n, who }`, encrypted with KEY. */
const value = (accessKey: string, n: number, opts: { eventId?: boolean; message?: string } = {}) =>
  Buffer.from(
    EventCodec.encode({
      timestamp: { seconds: String(1_700_000_000 + n), nanos: 123_456_789 },
      agent_id: "agent-it",
      agentId: "agent-it", // both spellings: valid whether or not Wire.ts loads the proto with keepCase
      tag: "cpu",
      message: opts.message ?? sealHex(Buffer.from(KEY), Buffer.from(JSON.stringify({ n, who: accessKey }))),
      UserID: `user-${accessKey.slice(-4)}`,
      AccessKey: accessKey,
      event_id: opts.eventId ? `ev-${n}` : "",
      eventId: opts.eventId ? `ev-${n}` : "",
    } as never),
  )

const produce = async (topic: string, messages: ReadonlyArray<Message>, chunk = 200) => {
  const producer = makeKafka("spillway-test-router-producer").producer({ idempotent: true, maxInFlightRequests: 1 })
  await producer.connect()
  try {
    for (let i = 0; i < messages.length; i += chunk)
      await producer.send({ topic, acks: -1, messages: messages.slice(i, i + chunk) as Array<Message> })
  } finally {
    await producer.disconnect()
  }
}

/** Sum of the group's committed offsets on `topic` (records committed, when the topic started at 0). */
const committedTotal = async (groupId: string, topic: string) => {
  const admin = makeKafka("spillway-test-admin").admin()
  await admin.connect()
  try {
    const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] })
    return (committed?.partitions ?? []).reduce((s, p) => s + Math.max(0, Number(p.offset)), 0)
  } finally {
    await admin.disconnect()
  }
}

const ns = (lines: ReadonlyArray<Record<string, unknown>>) =>
  lines.map((l) => (l.message as { n: number } | undefined)?.n ?? -1)

const isJson = (line: string): boolean => {
  try {
    JSON.parse(line)
    return true
  } catch {
    return false
  }
}

/** Distinct values and how many repeats. */
const tally = (values: ReadonlyArray<number>) => {
  const distinct = new Set(values)
  return { distinct, duplicates: values.length - distinct.size }
}

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i)

describe("router (built, real Kafka)", () => {
  it("delivers each event once to its tenant's file, decrypted, keyed and keyless; SIGTERM commits it all", async () => {
    const topic = uniqueTopic("router-deliver")
    await createTopic(topic, 3)
    const dir = tempDir("deliver")
    const tenantsFile = writeTenants(dir, {
      [A]: tenant(A, [{ file: `${A}.log` }]),
      [B]: tenant(B, [{ file: `sub/${B}.log` }]),
    })
    const N = 600
    // Even n: tenant A, odd n: tenant B. Every third record is keyless and has no event id (as the proof of concept wrote them).
    const messages: Array<Message> = range(0, N).map((n) => {
      const who = n % 2 === 0 ? A : B
      return n % 3 === 0 ? { key: null, value: value(who, n) } : { key: who, value: value(who, n, { eventId: true }) }
    })
    await produce(topic, messages)

    const started = Date.now()
    const router = await startRouter({
      topic,
      group: `${topic}-g`,
      tenantsFile,
      decrypt: true,
      outputDir: join(dir, "out"),
    })
    routers.push(router)
    const fileA = join(router.outputDir, `${A}.log`)
    const fileB = join(router.outputDir, "sub", `${B}.log`)
    await waitFor(() => readNdjson(fileA).length + readNdjson(fileB).length >= N, 60_000, `${N} lines`)
    const seconds = (Date.now() - started) / 1000
    await sleep(500)

    const linesA = readNdjson(fileA)
    const linesB = readNdjson(fileB)
    assert.deepStrictEqual(
      ns(linesA).sort((x, y) => x - y),
      range(0, N).filter((n) => n % 2 === 0),
    )
    assert.deepStrictEqual(
      ns(linesB).sort((x, y) => x - y),
      range(0, N).filter((n) => n % 2 === 1),
    )
    for (const line of [...linesA, ...linesB]) {
      const m = line.message as { n: number; who: string }
      assert.strictEqual(line.access_key, m.who)
      assert.strictEqual(line.agent_id, "agent-it")
      assert.strictEqual(line.tag, "cpu")
      assert.strictEqual(line.user_id, `user-${m.who.slice(-4)}`)
      assert.strictEqual(
        line.timestamp,
        new Date((1_700_000_000 + m.n) * 1000).toISOString().replace(".000Z", ".123456789Z"),
      )
      if (m.n % 3 === 0) assert.isUndefined(line.event_id)
      else assert.strictEqual(line.event_id, `ev-${m.n}`)
    }
    // Labelled by the target's kind and position (both tenants' first target is a file), never by its file name.
    assert.strictEqual(
      await router.metric("spillway_router_events_out_total", { destination: "file", position: "0" }),
      N,
    )
    assert.notInclude(await router.metrics(), A, "no metric label carries an access key or a file name")
    assert.strictEqual(await router.metric("spillway_router_consumer_lag"), 0)

    // SIGTERM: a clean exit that committed every written offset.
    assert.strictEqual(await router.stop(), 0)
    const admin = makeKafka("spillway-test-admin").admin()
    await admin.connect()
    try {
      const [committed] = await admin.fetchOffsets({ groupId: `${topic}-g`, topics: [topic] })
      const ends = await admin.fetchTopicOffsets(topic)
      const total = (committed?.partitions ?? []).reduce((s, p) => s + Number(p.offset), 0)
      assert.strictEqual(total, N, "committed offsets cover every record")
      assert.strictEqual(
        ends.reduce((s, p) => s + Number(p.high), 0),
        N,
      )
    } finally {
      await admin.disconnect()
    }
    console.log(`[router-it] delivered ${N} events over 3 partitions in ${seconds.toFixed(1)} s (incl. group join)`)
  })

  it("loses nothing when the router is SIGKILLed mid-run and restarted (duplicates counted)", async () => {
    const topic = uniqueTopic("router-kill")
    await createTopic(topic, 3)
    const dir = tempDir("kill")
    const tenantsFile = writeTenants(dir, { [A]: tenant(A, [{ file: "a.log" }]), [B]: tenant(B, [{ file: "b.log" }]) })
    const N = 3000
    const messages: Array<Message> = range(0, N).map((n) => {
      const who = n % 2 === 0 ? A : B
      return { key: n % 5 === 0 ? null : who, value: value(who, n, { eventId: true }) }
    })
    // Most of it is a backlog, so the router is busy (many small batches) when it is killed.
    await produce(topic, messages.slice(0, 2500))
    const router = await startRouter({
      topic,
      group: `${topic}-g`,
      tenantsFile,
      decrypt: true,
      outputDir: join(dir, "out"),
      env: { SPILLWAY_ROUTER_SESSION_TIMEOUT_MS: "6000", SPILLWAY_ROUTER_MAX_BYTES_PER_PARTITION: "8192" },
    })
    routers.push(router)
    const files = [join(router.outputDir, "a.log"), join(router.outputDir, "b.log")]
    const all = () => files.flatMap((f) => ns(readNdjson(f)))
    // Two crashes, each at a moment unrelated to the batch cycle (not right after a write we saw).
    const atKill: Array<number> = []
    for (const threshold of [300, 900]) {
      await waitFor(() => all().length >= threshold, 60_000, `${threshold} lines before a kill`, 5)
      await sleep(20 + Math.floor(Math.random() * 80))
      atKill.push(all().length)
      assert.strictEqual(await router.kill("SIGKILL"), null)
      if (threshold === 900) await produce(topic, messages.slice(2500)) // more while it is down
      await router.restart()
    }
    // Done when every record is committed (then a lost event shows as a missing number, quickly).
    await waitFor(
      async () => tally(all()).distinct.size >= N || (await committedTotal(`${topic}-g`, topic)) >= N,
      90_000,
      `all ${N} records committed`,
      500,
    )
    await sleep(1000)
    const { distinct, duplicates } = tally(all())
    const missing = range(0, N).filter((n) => !distinct.has(n))
    assert.deepStrictEqual(missing.slice(0, 20), [], `${missing.length} events lost`)
    assert.strictEqual(distinct.size, N)
    assert.deepStrictEqual(
      [...distinct].sort((x, y) => x - y),
      range(0, N),
    )
    // Every line is in its tenant's file.
    for (const [i, f] of files.entries())
      for (const n of ns(readNdjson(f))) assert.strictEqual(n % 2, i, `${n} in ${f}`)
    // A kill can cut a write short (ext4 ends a write at a page when SIGKILL is pending): its fragment stays a line
    // of its own, never glued to the next line (else that line's event would be lost to a reader). At most one a kill.
    const fragments = files.flatMap((f) =>
      readFileSync(f, "utf8")
        .split("\n")
        .filter((l) => l !== "" && !isJson(l)),
    )
    assert.isAtMost(fragments.length, atKill.length, "fragments of cut writes")
    for (const l of fragments) assert.notMatch(l, /\}\{/, "a fragment glued to a whole line")
    console.log(
      `[router-it] SIGKILL after ${atKill.join(" and ")} lines; after restarts ${distinct.size} distinct of ${N}, ${duplicates} duplicates, ${fragments.length} fragments of cut writes`,
    )
    await router.stop()
  })

  it("two routers share the partitions; a join and a SIGTERM leave (rebalances) lose nothing", async () => {
    const topic = uniqueTopic("router-rebalance")
    await createTopic(topic, 4)
    const dir = tempDir("rebalance")
    const tenantsFile = writeTenants(dir, { [A]: tenant(A, [{ file: "a.log" }]), [B]: tenant(B, [{ file: "b.log" }]) })
    const common = { topic, group: `${topic}-g`, tenantsFile, decrypt: true }
    const first = await startRouter({ ...common, outputDir: join(dir, "out1") })
    routers.push(first)
    const lines = (o: string) => [...ns(readNdjson(join(o, "a.log"))), ...ns(readNdjson(join(o, "b.log")))]
    const all = () => [...lines(join(dir, "out1")), ...lines(join(dir, "out2"))]
    // Keyless records (spread over all partitions), 50 every ~100 ms until told to stop.
    let produced = 0
    let stopProducing = false
    const producing = (async () => {
      while (!stopProducing) {
        const slice = range(produced, produced + 50).map((n) => {
          const who = n % 2 === 0 ? A : B
          return { key: null, value: value(who, n, { eventId: true }) }
        })
        await produce(topic, slice)
        produced += slice.length
        await sleep(100)
      }
    })()
    await waitFor(() => all().length >= 200, 60_000, "200 lines before the second router", 20)
    const second = await startRouter({ ...common, outputDir: join(dir, "out2") })
    routers.push(second)
    await waitFor(() => lines(join(dir, "out2")).length > 0, 30_000, "the second router to take partitions")
    const beforeLeave = produced
    assert.strictEqual(await first.stop(), 0, "SIGTERM exits cleanly")
    await waitFor(() => produced >= beforeLeave + 300, 30_000, "300 more records after the leave")
    stopProducing = true
    await producing
    const N = produced
    await waitFor(() => tally(all()).distinct.size >= N, 60_000, `all ${N} distinct events`)
    await sleep(500)
    const { distinct, duplicates } = tally(all())
    assert.deepStrictEqual(
      [...distinct].sort((x, y) => x - y),
      range(0, N),
    )
    console.log(
      `[router-it] two routers, one join + one SIGTERM leave: ${N} distinct (${lines(join(dir, "out2")).length} by the second), ${duplicates} duplicates`,
    )
    await second.stop()
  })

  it("a failing HTTP destination recovers and gets all its events while another tenant's file kept flowing", async () => {
    const topic = uniqueTopic("router-http")
    await createTopic(topic, 2)
    const dir = tempDir("http")
    let failing = true
    let refusedRequests = 0
    const received: Array<Record<string, unknown>> = []
    const seenHeaders: Array<string | undefined> = []
    const server: Server = createServer((req, res) => {
      let body = ""
      req.on("data", (d) => {
        body += d
      })
      req.on("end", () => {
        if (failing) {
          refusedRequests++
          res.writeHead(503).end("down")
          return
        }
        seenHeaders.push(req.headers["x-api-key"] as string | undefined)
        for (const line of body.split("\n")) if (line.trim() !== "") received.push(JSON.parse(line))
        res.writeHead(200).end("ok")
      })
    })
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
    const port = (server.address() as { port: number }).port
    try {
      const H = A // http tenant, partition 0
      const F = B // file tenant, partition 1
      const tenantsFile = writeTenants(dir, {
        [H]: tenant(H, [{ http: { url: `http://127.0.0.1:${port}/ingest`, headers: { "x-api-key": "s3cret" } } }]),
        [F]: tenant(F, [{ file: "f.log" }]),
      })
      const router = await startRouter({
        topic,
        group: `${topic}-g`,
        tenantsFile,
        decrypt: true,
        outputDir: join(dir, "out"),
        env: {
          SPILLWAY_ROUTER_RETRY_BASE: "50 millis",
          SPILLWAY_ROUTER_RETRY_CAP: "300 millis",
          SPILLWAY_ROUTER_RETRY_BUDGET: "1 second",
          SPILLWAY_ROUTER_PAUSE_BASE: "500 millis",
          SPILLWAY_ROUTER_PAUSE_MAX: "2 seconds",
          // The pause-and-rewind path (isolation off); the retry topic path is test/route/isolation.it.test.ts.
          SPILLWAY_ROUTER_ISOLATE: "false",
        },
      })
      routers.push(router)
      const fileF = join(router.outputDir, "f.log")
      const h = range(0, 200).map((n) => ({ key: H, partition: 0, value: value(H, n, { eventId: true }) }))
      const f1 = range(1000, 1200).map((n) => ({ key: F, partition: 1, value: value(F, n, { eventId: true }) }))
      await produce(topic, [...h, ...f1])
      await waitFor(() => readNdjson(fileF).length >= 200, 30_000, "the file tenant's first 200 events")
      // More file events while the http destination is still down: they flow too.
      await produce(
        topic,
        range(1200, 1300).map((n) => ({ key: F, partition: 1, value: value(F, n, { eventId: true }) })),
      )
      await waitFor(() => readNdjson(fileF).length >= 300, 30_000, "the file tenant's next 100 events")
      assert.strictEqual(received.length, 0, "nothing reached the http destination while it failed")
      assert.isAbove(refusedRequests, 2)
      assert.isAbove(await router.metric("spillway_router_partition_pauses_total"), 0)
      assert.isAbove(await router.metric("spillway_router_destination_retries_total"), 0)
      assert.isAbove(
        await router.metric("spillway_router_destination_errors_total", { destination: "http", position: "0" }),
        0,
      )
      assert.notInclude(await router.metrics(), `${port}`, "no metric label carries a url")
      assert.strictEqual(await router.readyz(), 200, "still ready while a destination fails")

      // SIGTERM while the destination still fails: a clean, prompt exit that committed the file tenant's
      // partition and nothing of the http tenant's.
      const stopAt = Date.now()
      assert.strictEqual(await router.stop(), 0)
      const stopSeconds = (Date.now() - stopAt) / 1000
      const admin = makeKafka("spillway-test-admin").admin()
      await admin.connect()
      try {
        const [committed] = await admin.fetchOffsets({ groupId: `${topic}-g`, topics: [topic] })
        const at = (p: number) => Number(committed?.partitions.find((x) => x.partition === p)?.offset ?? "-1")
        assert.isAtMost(at(0), 0, "nothing of the failing destination's partition is committed")
        assert.strictEqual(at(1), 300, "the file tenant's partition is committed to its end")
      } finally {
        await admin.disconnect()
      }
      await router.restart()

      failing = false
      const recoveredAt = Date.now()
      await waitFor(() => tally(ns(received)).distinct.size >= 200, 30_000, "all 200 http events after recovery")
      const recoverySeconds = (Date.now() - recoveredAt) / 1000
      const { distinct, duplicates } = tally(ns(received))
      assert.deepStrictEqual(
        [...distinct].sort((x, y) => x - y),
        range(0, 200),
      )
      assert.isTrue(seenHeaders.every((v) => v === "s3cret"))
      assert.deepStrictEqual(
        ns(readNdjson(fileF)).sort((x, y) => x - y),
        range(1000, 1300),
      )
      assert.notInclude(router.output(), "s3cret", "header values stay out of the logs")
      console.log(
        `[router-it] http down: ${refusedRequests} refused requests; SIGTERM took ${stopSeconds.toFixed(1)} s; recovered in ${recoverySeconds.toFixed(1)} s after restart; ${duplicates} duplicate http events`,
      )
      await router.stop()
    } finally {
      server.close()
    }
  })

  it("sends poison records to <topic>-dlq with reasons and keeps running", async () => {
    const topic = uniqueTopic("router-poison")
    await createTopic(topic, 1)
    await createTopic(`${topic}-dlq`, 1)
    const dir = tempDir("poison")
    const tenantsFile = writeTenants(dir, { [A]: tenant(A, [{ file: "a.log" }]) })
    const router = await startRouter({
      topic,
      group: `${topic}-g`,
      tenantsFile,
      decrypt: true,
      printEvents: true,
      outputDir: join(dir, "out"),
    })
    routers.push(router)
    await produce(topic, [
      { key: null, value: Buffer.from([0xff, 0xfe, 0x00, 0x13]) }, // offset 0: undecodable
      { key: "stranger", value: value("stranger", 1) }, // 1: unknown tenant
      { key: A, value: value(A, 2, { message: "00112233445566778899aabbccddeeff00112233445566778899" }) }, // 2: undecryptable
      ...range(3, 13).map((n) => ({ key: A, value: value(A, n) })), // 3..12: good
    ])
    const fileA = join(router.outputDir, "a.log")
    await waitFor(() => readNdjson(fileA).length >= 10, 30_000, "the 10 good events")
    const letters = await consumeAll(`${topic}-dlq`, 3, 20_000)
    assert.deepStrictEqual(
      letters.map((l) => [
        headerText(l.headers, "reason"),
        headerText(l.headers, "source-topic"),
        headerText(l.headers, "source-partition"),
        headerText(l.headers, "source-offset"),
      ]),
      [
        ["undecodable", topic, "0", "0"],
        ["unknown_tenant", topic, "0", "1"],
        ["undecryptable", topic, "0", "2"],
      ],
    )
    assert.deepStrictEqual(letters[1]?.key?.toString(), "stranger", "the original key is kept")
    assert.deepStrictEqual(ns(readNdjson(fileA)), range(3, 13))
    assert.strictEqual(await router.metric("spillway_router_dead_letters_total"), 3)
    assert.strictEqual(await router.readyz(), 200)
    // Still consuming after the poison.
    await produce(topic, [{ key: A, value: value(A, 99) }])
    await waitFor(() => ns(readNdjson(fileA)).includes(99), 20_000, "an event after the poison")
    assert.include(router.output(), `"message":{"n":99,"who":"${A}"}`, "--print-events prints the events")

    // The tenants file is watched: a tenant added while running gets its events (no dead letter).
    writeTenants(dir, { [A]: tenant(A, [{ file: "a.log" }]), stranger: tenant("stranger", [{ file: "stranger.log" }]) })
    await waitFor(() => router.output().includes("tenants reloaded"), 10_000, "the tenants reload")
    await produce(topic, [{ key: "stranger", value: value("stranger", 100) }])
    await waitFor(
      () => readNdjson(join(router.outputDir, "stranger.log")).length === 1,
      20_000,
      "the new tenant's event",
    )
    assert.strictEqual(await router.metric("spillway_router_dead_letters_total"), 3)
    await router.stop()
  })

  it("refuses a tenants file whose target escapes the output folder, naming the file and the field", async () => {
    const dir = tempDir("refuse")
    for (const bad of ["../../etc/x", "/etc/passwd"]) {
      const tenantsFile = writeTenants(dir, { [A]: tenant(A, [{ file: bad }]) })
      const { code, output } = await runRouterOnce([
        "consumer",
        "--tenants",
        tenantsFile,
        "--output-dir",
        join(dir, "out"),
        "--metrics-port",
        "0",
        "--topic",
        uniqueTopic("router-refuse"),
      ])
      assert.strictEqual(code, 2, output)
      assert.include(output, tenantsFile)
      assert.include(output, `["${A}"].targets[0].file`)
      assert.include(output, JSON.stringify(bad))
    }
    const missing = await runRouterOnce(["consumer", "--tenants", join(dir, "nope.json"), "--metrics-port", "0"])
    assert.strictEqual(missing.code, 2)
    assert.include(missing.output, "--tenants")
    const badBrokers = await runRouterOnce(["consumer", "--brokers", "nohost", "--metrics-port", "0"])
    assert.strictEqual(badBrokers.code, 2)
    assert.include(badBrokers.output, "--brokers")
  })
})
