/** Unit tests of the agent's parts: disk buffer, batching, line splitting, parsers, metrics records, settings. */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Either, Option } from "effect"
import { type BufferedRow, BufferStore, type NewRecord, rowBytes } from "../../src/agent/buffer/BufferStore.js"
import { cpuRecord, memRecord, netifRecords, parseNetDev, parseProcStat } from "../../src/agent/inputs/MetricsInput.js"
import {
  dockerParser,
  kubernetesFileMeta,
  kubernetesParser,
  newEventId,
  parseRfc3339Nanos,
  splitLines,
} from "../../src/agent/inputs/Parsers.js"
import { type CliValues, decodeAgentFile, resolveSettings } from "../../src/agent/Settings.js"
import { type BatchLimits, isPermanentRejection, planBatch } from "../../src/agent/sender/Batching.js"
import { channelSettings, hostOf, IP_SNI_PLACEHOLDER } from "../../src/agent/sender/Connection.js"
import { toWireBatch } from "../../src/agent/sender/Outbox.js"
import { classify } from "../../src/agent/sender/Sender.js"
import { openHex } from "../../src/shared/Crypto.js"

const root = mkdtempSync(join(tmpdir(), "spillway-agent-unit-"))
afterAll(() => rmSync(root, { recursive: true, force: true }))
let n = 0
const dir = () => join(root, `b${++n}`)

const rec = (i: number, size = 10): NewRecord => ({
  tag: "t",
  ts: "1700000000000000000",
  eventId: `id-${i}`,
  record: JSON.stringify({ log: "x".repeat(size), i }),
})

describe("BufferStore (SQLite disk buffer)", () => {
  it("lastId is the newest row id, also after deletes and after reopening (what a partial batch waits on)", () => {
    const d = dir()
    const b = new BufferStore(d)
    expect(b.lastId).toBe(0)
    b.append(Array.from({ length: 5 }, (_, i) => rec(i)))
    const rows = b.peek(0, 10, Number.POSITIVE_INFINITY)
    expect(b.lastId).toBe(rows.at(-1)!.id)
    b.remove(rows[0]!.id, rows.at(-1)!.id)
    expect(b.lastId).toBe(rows.at(-1)!.id)
    b.close()
    const again = new BufferStore(d)
    expect(again.lastId).toBe(rows.at(-1)!.id)
    again.append([rec(9)])
    expect(again.lastId).toBe(rows.at(-1)!.id + 1)
    again.close()
  })

  it("appends in order, peeks after a cursor, removes a batch range, tracks bytes", () => {
    const b = new BufferStore(dir())
    const records = Array.from({ length: 10 }, (_, i) => rec(i))
    const added = b.append(records)
    expect(added).toBe(records.reduce((s, r) => s + rowBytes(r), 0))
    expect(b.usedBytes).toBe(added)
    expect(b.eventCount).toBe(10)
    const first = b.peek(0, 4, Number.POSITIVE_INFINITY)
    expect(first.map((r) => r.eventId)).toEqual(["id-0", "id-1", "id-2", "id-3"])
    const next = b.peek(first.at(-1)!.id, 100, Number.POSITIVE_INFINITY)
    expect(next.length).toBe(6)
    const removed = b.remove(first[0]!.id, first.at(-1)!.id)
    expect(removed.n).toBe(4)
    expect(b.eventCount).toBe(6)
    expect(b.usedBytes).toBe(added - removed.bytes)
    // removing again is a no-op (a duplicate ack)
    expect(b.remove(first[0]!.id, first.at(-1)!.id)).toEqual({ n: 0, bytes: 0 })
    // byte cut keeps at least one row
    expect(b.peek(0, 100, 1).length).toBe(1)
    b.close()
  })

  it("survives a reopen: rows, byte count and checkpoints persist; ids keep growing", () => {
    const d = dir()
    const b = new BufferStore(d)
    b.append([rec(1), rec(2)], { fileId: "1:2", path: "/x.log", offset: 42 })
    const used = b.usedBytes
    const lastId = b.peek(0, 10, Number.POSITIVE_INFINITY).at(-1)!.id
    b.remove(lastId, lastId)
    b.close()
    const again = new BufferStore(d)
    expect(again.eventCount).toBe(1)
    expect(again.usedBytes).toBe(used - rowBytes(rec(2)))
    expect(again.checkpoint("1:2")).toEqual({ fileId: "1:2", path: "/x.log", offset: 42 })
    again.append([rec(3)])
    const rows = again.peek(0, 10, Number.POSITIVE_INFINITY)
    expect(rows.map((r) => r.eventId)).toEqual(["id-1", "id-3"])
    expect(rows[1]!.id).toBeGreaterThan(lastId) // AUTOINCREMENT: a removed id is never reused
    again.forgetCheckpoint("1:2")
    expect(again.checkpoint("1:2")).toBeUndefined()
    again.close()
  })

  it("events and their checkpoint commit together: a failing insert leaves neither", () => {
    const b = new BufferStore(dir())
    b.append([rec(1)], { fileId: "f", path: "/f", offset: 10 })
    const bad = { ...rec(2), record: null as unknown as string } // NOT NULL violation inside the transaction
    expect(() => b.append([rec(3), bad], { fileId: "f", path: "/f", offset: 99 })).toThrow()
    expect(b.checkpoint("f")!.offset).toBe(10)
    expect(b.eventCount).toBe(1)
    expect(b.peek(0, 10, Number.POSITIVE_INFINITY).map((r) => r.eventId)).toEqual(["id-1"])
    b.close()
  })

  it("uses WAL with synchronous=FULL", () => {
    const b = new BufferStore(dir())
    expect(b.db.pragma("journal_mode", { simple: true })).toBe("wal")
    expect(b.db.pragma("synchronous", { simple: true })).toBe(2) // FULL
    b.close()
  })
})

const row = (id: number, bytes: number, insertedAt: number): BufferedRow => ({
  id,
  bytes,
  insertedAt,
  tag: "t",
  ts: "0",
  eventId: `e${id}`,
  record: "{}",
})

describe("planBatch (batching by size and time)", () => {
  const limits: BatchLimits = { maxEvents: 3, maxBytes: 100, lingerMs: 200 }
  it("waits while the batch is not full and the oldest event is young", () => {
    const p = planBatch([row(1, 10, 1000)], limits, 1050)
    expect(p.ready).toBe(false)
    expect(p.waitMs).toBe(150)
  })
  it("sends once the oldest event lingered long enough", () => {
    expect(planBatch([row(1, 10, 1000)], limits, 1200).ready).toBe(true)
  })
  it("cuts by event count and sends at once", () => {
    const p = planBatch([row(1, 10, 1000), row(2, 10, 1000), row(3, 10, 1000), row(4, 10, 1000)], limits, 1000)
    expect(p.rows.map((r) => r.id)).toEqual([1, 2, 3])
    expect(p.ready).toBe(true)
  })
  it("cuts by bytes, but an oversized event goes alone", () => {
    const p = planBatch([row(1, 60, 1000), row(2, 60, 1000)], limits, 1000)
    expect(p.rows.map((r) => r.id)).toEqual([1])
    expect(p.ready).toBe(true)
    const big = planBatch([row(1, 500, 1000)], limits, 1000)
    expect(big.rows.length).toBe(1)
    expect(big.ready).toBe(true)
  })
  it("flushes everything at once when draining", () => {
    expect(planBatch([row(1, 10, 1000)], limits, 1000, true).ready).toBe(true)
  })
  it("nothing to send", () => {
    expect(planBatch([], limits, 0).rows).toEqual([])
  })
  it("PERMISSION_DENIED and INVALID_ARGUMENT are permanent; UNAVAILABLE is not", () => {
    expect([3, 7, 14, 8].map(isPermanentRejection)).toEqual([true, true, false, false])
  })
})

describe("gRPC error classification", () => {
  it("maps status codes to what the sender does", () => {
    const kind = (code: number) => classify({ code, details: "x" }, "call").kind
    expect(kind(16)).toBe("unauthenticated")
    expect(kind(7)).toBe("denied")
    expect(kind(4)).toBe("timeout")
    expect(kind(14)).toBe("unavailable")
    expect(kind(8)).toBe("unavailable")
    expect(kind(12)).toBe("unimplemented") // SendEventBatches on the proof of concept's ingester
    expect(classify(new Error("socket hang up"), "call").kind).toBe("unavailable")
    expect(classify({ code: 16, details: "expired" }, "ExchangeConfig").detail).toBe(
      "ExchangeConfig: UNAUTHENTICATED (expired)",
    )
  })
})

describe("TLS settings for the ingester's address", () => {
  it("hostOf: names, IPv4, [IPv6]", () => {
    expect(hostOf("ingest.example.com:7777")).toBe("ingest.example.com")
    expect(hostOf("10.0.0.5:7777")).toBe("10.0.0.5")
    expect(hostOf("[::1]:7777")).toBe("::1")
    expect(hostOf("ingest")).toBe("ingest")
  })
  it("an IP without --server-name: the reserved SNI placeholder, the certificate checked against the IP", () => {
    const byIp = channelSettings({
      address: "127.0.0.1:7777",
      caCert: undefined,
      insecure: false,
      serverName: undefined,
    })
    expect(byIp.channelOptions["grpc.ssl_target_name_override"]).toBe(IP_SNI_PLACEHOLDER)
    const byName = channelSettings({
      address: "localhost:7777",
      caCert: undefined,
      insecure: false,
      serverName: undefined,
    })
    expect(byName.channelOptions["grpc.ssl_target_name_override"]).toBeUndefined()
    const named = channelSettings({
      address: "127.0.0.1:7777",
      caCert: undefined,
      insecure: false,
      serverName: "ingest",
    })
    expect(named.channelOptions["grpc.ssl_target_name_override"]).toBe("ingest")
    const ipName = channelSettings({
      address: "ingest:7777",
      caCert: undefined,
      insecure: false,
      serverName: "10.1.2.3",
    })
    expect(ipName.channelOptions["grpc.ssl_target_name_override"]).toBe(IP_SNI_PLACEHOLDER)
  })
})

describe("splitLines", () => {
  it("keeps an incomplete last line for later, and returns where each line ends", () => {
    const r = splitLines(Buffer.from("a\nbb\r\nccc"), false, 100)
    expect(r.lines).toEqual(["a", "bb"])
    expect(r.ends).toEqual([2, 6])
    expect(r.consumed).toBe(6)
  })
  it("takes the incomplete last line when final (a rotated file's end)", () => {
    expect(splitLines(Buffer.from("a\nbb"), true, 100).lines).toEqual(["a", "bb"])
  })
  it("cuts lines longer than the limit", () => {
    const r = splitLines(Buffer.from(`${"x".repeat(10)}\n`), false, 4)
    expect(r.lines).toEqual(["xxxx", "xxxx", "xx"])
    expect(r.consumed).toBe(11)
  })
  it("keeps multi-byte characters whole", () => {
    expect(splitLines(Buffer.from("héllo ✓\n"), false, 100).lines).toEqual(["héllo ✓"])
  })
})

describe("newEventId", () => {
  it("gives version 4 UUIDs as randomUUID does, none twice across refills of its entropy", () => {
    const ids = Array.from({ length: 2000 }, () => newEventId()) // several refills of 256
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    expect(new Set(ids).size).toBe(ids.length)
  })
})

describe("docker and kubernetes parsers", () => {
  it("docker json-file lines", () => {
    const id = "a".repeat(64)
    const p = dockerParser(
      '{"log":"hello\\n","stream":"stdout","time":"2024-01-02T03:04:05.123456789Z"}',
      `/var/lib/docker/containers/${id}/${id}-json.log`,
    )!
    expect(p.tag).toBe(`docker.${id}`)
    expect(p.record).toEqual({
      log: "hello",
      stream: "stdout",
      time: "2024-01-02T03:04:05.123456789Z",
      container_id: id,
    })
    expect(p.ts).toBe(1704164645123456789n)
  })
  it("kubernetes CRI lines, metadata from the file name", () => {
    const cid = "b".repeat(64)
    const path = `/var/log/containers/web-7d4b9c-xk2lp_shop_nginx-${cid}.log`
    expect(kubernetesFileMeta(path)).toEqual({
      pod_name: "web-7d4b9c-xk2lp",
      namespace_name: "shop",
      container_name: "nginx",
      container_id: cid,
    })
    const p = kubernetesParser("2024-01-02T03:04:05.5+00:00 stderr F oops: it broke", path)!
    expect(p.tag).toBe("kube.shop.web-7d4b9c-xk2lp.nginx")
    expect(p.record).toMatchObject({ stream: "stderr", logtag: "F", log: "oops: it broke" })
    expect(p.ts).toBe(1704164645500000000n)
    expect(kubernetesParser("garbage", path)!.record).toMatchObject({ log: "garbage", parse_error: true })
  })
  it("parseRfc3339Nanos", () => {
    expect(parseRfc3339Nanos("1970-01-01T00:00:01Z")).toBe(1_000_000_000n)
    expect(parseRfc3339Nanos("1970-01-01T01:00:01.000000001+01:00")).toBe(1_000_000_001n)
    expect(parseRfc3339Nanos("nope")).toBeUndefined()
  })
})

describe("metrics records (proof of concept shapes)", () => {
  const stat1 = "cpu  100 0 50 850 0 0 0 0 0 0\ncpu0 50 0 25 425 0 0 0 0 0 0\ncpu1 50 0 25 425 0 0 0 0 0 0\nintr 1\n"
  const stat2 = "cpu  110 0 60 1030 0 0 0 0 0 0\ncpu0 60 0 30 510 0 0 0 0 0 0\ncpu1 50 0 30 520 0 0 0 0 0 0\nintr 1\n"
  it("cpu: per-CPU and overall percentages of the interval", () => {
    const r = cpuRecord(parseProcStat(stat1), parseProcStat(stat2))
    expect(Object.keys(r).sort()).toEqual(
      [
        "cpu0.p_cpu",
        "cpu0.p_system",
        "cpu0.p_user",
        "cpu1.p_cpu",
        "cpu1.p_system",
        "cpu1.p_user",
        "cpu_p",
        "system_p",
        "user_p",
      ].sort(),
    )
    expect(r["cpu0.p_user"]).toBeCloseTo(10)
    expect(r["cpu0.p_system"]).toBeCloseTo(5)
    expect(r["cpu0.p_cpu"]).toBeCloseTo(15)
    expect(r["cpu1.p_cpu"]).toBeCloseTo(5)
    expect(r.cpu_p).toBeCloseTo(10)
    expect(r.user_p).toBeCloseTo(5)
    expect(r.system_p).toBeCloseTo(5)
  })
  it("memory: the seed sample's fields, used = total - free", () => {
    const r = memRecord("MemTotal: 6862744 kB\nMemFree: 425912 kB\nSwapTotal: 1048572 kB\nSwapFree: 1021268 kB\n")
    expect(r).toEqual({
      "Mem.free": 425912,
      "Mem.total": 6862744,
      "Mem.used": 6436832,
      "Swap.free": 1021268,
      "Swap.total": 1048572,
      "Swap.used": 27304,
    })
  })
  it("netif: per-interface deltas, lo left out", () => {
    const head =
      "Inter-| Receive | Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes ...\n"
    const a = parseNetDev(
      `${head}    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n  eth0: 1000 10 0 0 0 0 0 0 5000 20 1 0 0 0 0 0\n`,
    )
    const b = parseNetDev(
      `${head}    lo: 200 2 0 0 0 0 0 0 200 2 0 0 0 0 0 0\n  eth0: 2326 27 0 0 0 0 0 0 12963 34 1 0 0 0 0 0\n`,
    )
    expect(netifRecords(a, b, undefined)).toEqual([
      {
        "eth0.rx.bytes": 1326,
        "eth0.rx.errors": 0,
        "eth0.rx.packets": 17,
        "eth0.tx.bytes": 7963,
        "eth0.tx.errors": 0,
        "eth0.tx.packets": 14,
      },
    ])
    expect(netifRecords(a, b, ["lo"]).length).toBe(1)
  })
})

describe("agent settings and config file", () => {
  const decode = (text: string) => Effect.either(decodeAgentFile("agent.json", text))
  /** Settings from the flags and the given environment only (not the caller's). */
  const resolveWith = (values: CliValues, env: ReadonlyArray<readonly [string, string]> = []) =>
    resolveSettings(values).pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map(env))))
  it.effect("decodes a config file with inputs", () =>
    Effect.gen(function* () {
      const r = yield* decode(
        JSON.stringify({
          ingester: "ingest:7777",
          inputs: [
            { type: "tail", paths: ["/var/log/*.log"] },
            { type: "docker" },
            { type: "kubernetes", path: "/logs" },
            { type: "metrics", interval: 5 },
            { type: "stdin" },
          ],
        }),
      )
      expect(Either.isRight(r)).toBe(true)
    }),
  )
  it.effect("errors name the file and the field", () =>
    Effect.gen(function* () {
      const r = yield* decode(
        JSON.stringify({ inputs: [{ type: "tail", paths: [] }, { type: "tial" }], batch: { maxEvents: -1 }, bogus: 1 }),
      )
      expect(Either.isLeft(r)).toBe(true)
      const msg = Either.isLeft(r) ? r.left.message : ""
      expect(msg).toMatch(/^agent\.json: /)
      expect(msg).toContain("inputs[0].paths")
      expect(msg).toContain("inputs[1].type")
      expect(msg).toContain("batch.maxEvents: Expected a number between 1 and 10000, actual -1")
      expect(msg).toContain("bogus: is unexpected")
      expect(Either.isLeft(yield* decode("{not json"))).toBe(true)
    }),
  )

  const cli: CliValues = {
    ingester: Option.none(),
    caCert: Option.none(),
    config: Option.none(),
    bufferDir: Option.none(),
    bufferMaxBytes: Option.none(),
    metricsPort: Option.none(),
    tail: [],
    stdin: false,
    metricsInterval: Option.none(),
    tokenFile: Option.none(),
    accessKey: Option.some("key-1"),
    insecure: false,
    serverName: Option.none(),
  }
  it.effect("flags win over the config file; inputs from both; a token is required", () =>
    Effect.gen(function* () {
      const file = join(root, "agent.json")
      writeFileSync(
        file,
        JSON.stringify({
          ingester: "file:1",
          bufferDir: "/b",
          tokenFile: "/t",
          inputs: [{ type: "metrics", interval: 30 }],
        }),
      )
      const s = yield* resolveWith({
        ...cli,
        config: Option.some(file),
        ingester: Option.some("flag:2"),
        tail: ["/x/*.log"],
        metricsInterval: Option.some(3),
      })
      expect(s.address).toBe("flag:2")
      expect(s.bufferDir).toBe("/b")
      expect(s.token).toEqual({ _tag: "file", path: "/t" })
      expect(s.inputs).toEqual([
        { type: "metrics", interval: 3 },
        { type: "tail", paths: ["/x/*.log"] },
      ])
      const noToken = yield* Effect.either(resolveWith({ ...cli, tail: ["/x"] }))
      expect(Either.isLeft(noToken) && noToken.left._tag === "SettingsError" && noToken.left.detail).toMatch(/token/)
    }),
  )
  it.effect("the ingester's message limit: 8 MiB by default, SPILLWAY_MAX_MESSAGE_BYTES overrides", () =>
    Effect.gen(function* () {
      const base = { ...cli, tail: ["/x"], tokenFile: Option.some("/t") }
      expect((yield* resolveWith(base)).maxMessageBytes).toBe(8 * 1024 * 1024)
      expect((yield* resolveWith(base, [["SPILLWAY_MAX_MESSAGE_BYTES", "4194304"]])).maxMessageBytes).toBe(4194304)
    }),
  )
})

describe("a batch for the wire (toWireBatch)", () => {
  const rows: Array<BufferedRow> = Array.from({ length: 3 }, (_, i) => ({
    id: i + 1,
    tag: "t",
    ts: "1764600000000000001",
    eventId: `00000000-0000-4000-8000-00000000000${i}`,
    record: JSON.stringify({ log: `line ${i}` }),
    bytes: 100,
    insertedAt: 0,
  }))
  const base = { userId: "u", accessKey: "k", keySpec: "" }

  it.effect("each record is sealed with its own nonce (one random draw per batch) and opens to the record", () =>
    Effect.gen(function* () {
      const key = new Uint8Array(32).fill(7)
      const events = yield* toWireBatch({ ...base, key: { bytes: key } } as never, "host", rows)
      expect(events.map((e) => openHex(key, e.message).toString("utf8"))).toEqual(rows.map((r) => r.record))
      expect(new Set(events.map((e) => e.message.slice(0, 24))).size).toBe(3) // the 12-byte nonces differ
      expect(events.map((e) => e.event_id)).toEqual(rows.map((r) => r.eventId))
    }),
  )

  it.effect("without a key the record goes as it is", () =>
    Effect.gen(function* () {
      const events = yield* toWireBatch({ ...base, key: { bytes: undefined } } as never, "host", rows)
      expect(events.map((e) => e.message)).toEqual(rows.map((r) => r.record))
    }),
  )
})
