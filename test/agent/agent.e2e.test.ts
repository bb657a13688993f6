/**
 * The built agent (child process) against the in-test fake ingester over real TLS.
 * Needs `npm run build` first (dist/programs/agent.js).
 */
import {
  appendFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "@effect/vitest"
import { type AgentProcess, startAgent } from "../support/agent.js"
import { testCerts } from "../support/certs.js"
import { type FakeIngester, startFakeIngester } from "../support/fakeIngester.js"

const root = mkdtempSync(join(tmpdir(), "spillway-agent-e2e-"))
afterAll(() => rmSync(root, { recursive: true, force: true }))

let caCert = ""
beforeAll(async () => {
  caCert = (await testCerts()).caCert
})

const running: Array<{ agent?: AgentProcess; ingester?: FakeIngester }> = []
afterEach(async () => {
  for (const r of running.splice(0)) {
    await r.agent?.kill("SIGKILL")
    await r.ingester?.stop()
  }
})

let n = 0
const setup = async (
  opts: { tokens?: ReadonlyArray<string>; token?: string; env?: Record<string, string>; bufferMaxBytes?: number } = {},
) => {
  const dir = join(root, `case-${++n}`)
  const logs = join(dir, "logs")
  mkdirSync(logs, { recursive: true })
  const tokenFile = join(dir, "token")
  writeFileSync(tokenFile, opts.token ?? "good-token")
  const ingester = await startFakeIngester({ tokens: opts.tokens ?? ["good-token"] })
  const entry: { agent?: AgentProcess; ingester?: FakeIngester } = { ingester }
  running.push(entry)
  const agent = await startAgent({
    ingester: ingester.address,
    caCert,
    tokenFile,
    bufferDir: join(dir, "buffer"),
    tail: [join(logs, "*.log")],
    ...(opts.bufferMaxBytes ? { bufferMaxBytes: opts.bufferMaxBytes } : {}),
    ...(opts.env ? { env: opts.env } : {}),
  })
  entry.agent = agent
  return { dir, logs, tokenFile, ingester, agent }
}

const lines = (prefix: string, from: number, to: number) =>
  Array.from({ length: to - from }, (_, i) => `${prefix}-${from + i}`)
const write = (file: string, ls: ReadonlyArray<string>) => appendFileSync(file, ls.map((l) => `${l}\n`).join(""))
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Every expected line arrived exactly once (and nothing else with that prefix). */
const expectOnce = (ingester: FakeIngester, expected: ReadonlyArray<string>, prefix: string) => {
  const got = ingester.logs().filter((l) => l.startsWith(`${prefix}-`))
  const counts = new Map<string, number>()
  for (const l of got) counts.set(l, (counts.get(l) ?? 0) + 1)
  const missing = expected.filter((l) => !counts.has(l))
  const dup = [...counts].filter(([, c]) => c > 1).map(([l]) => l)
  expect({ missing: missing.slice(0, 10), missingCount: missing.length, dup: dup.slice(0, 10) }).toEqual({
    missing: [],
    missingCount: 0,
    dup: [],
  })
  expect(got.length).toBe(expected.length)
}

/** Polls spillway_agent_buffer_events for up to 5 s until it is 0; returns the last value seen. */
const bufferEmptied = async (agent: { metric: (name: string) => Promise<number> }): Promise<number> => {
  let n = await agent.metric("spillway_agent_buffer_events")
  for (let i = 0; i < 50 && n !== 0; i++) {
    await new Promise((r) => setTimeout(r, 100))
    n = await agent.metric("spillway_agent_buffer_events")
  }
  return n
}

describe("agent end to end (fake ingester, TLS)", () => {
  it("tails appended, rotated and truncated lines, each arriving once, encrypted, with event fields", async () => {
    const { logs, ingester } = await setup()
    const file = join(logs, "app.log")
    write(file, lines("a", 0, 300))
    await ingester.waitFor(() => ingester.logs().length >= 300, 15_000, "300 appended lines")
    // rotation: rename, write a few more lines to the old inode, then a new file under the name
    write(file, lines("a", 300, 310))
    renameSync(file, join(logs, "app.log.1"))
    write(join(logs, "app.log.1"), lines("a", 310, 320)) // late writes to the rotated file
    write(file, lines("a", 320, 400))
    await ingester.waitFor(() => ingester.logs().length >= 400, 15_000, "lines after rotation")
    // truncation (copytruncate style)
    await sleep(300)
    truncateSync(file, 0)
    await sleep(300)
    write(file, lines("a", 400, 450))
    await ingester.waitFor(() => ingester.logs().length >= 450, 15_000, "lines after truncation")
    await sleep(500)
    expectOnce(ingester, lines("a", 0, 450), "a")
    const e = ingester.received[0]!
    expect(e.encrypted).toBe(true)
    expect(e.agentId).toBe("test-agent")
    expect(e.accessKey).toBe("test-key")
    expect(e.userId).toBe("2134558")
    expect(e.tag).toBe("tail")
    expect(e.eventId).toMatch(/^[0-9a-f-]{36}$/)
    expect(Number(e.ts / 1_000_000n)).toBeGreaterThan(Date.now() - 120_000)
    expect(new Set(ingester.ids).size).toBe(ingester.ids.length)
  }, 60_000)

  it("a restart resumes from the checkpoint: no acknowledged line is sent again, none is lost", async () => {
    const { logs, ingester, agent } = await setup()
    const file = join(logs, "app.log")
    write(file, lines("r", 0, 200))
    await ingester.waitFor(() => ingester.logs().length >= 200, 15_000, "first 200")
    expect(await agent.stop()).toBe(0)
    write(file, lines("r", 200, 300)) // written while the agent is down
    await agent.restart()
    write(file, lines("r", 300, 350))
    await ingester.waitFor(() => ingester.logs().length >= 350, 15_000, "all 350")
    await sleep(500)
    expectOnce(ingester, lines("r", 0, 350), "r")
    expect(agent.output()).toMatch(/resuming file from its checkpoint/)
  }, 60_000)

  it("rotation while the agent is down: the rotated file's rest and the new file both arrive once", async () => {
    const { logs, ingester, agent } = await setup()
    const file = join(logs, "app.log")
    write(file, lines("o", 0, 100))
    await ingester.waitFor(() => ingester.logs().length >= 100, 15_000, "first 100")
    expect(await agent.stop()).toBe(0)
    write(file, lines("o", 100, 150)) // unread when it is rotated
    renameSync(file, join(logs, "app.log.1"))
    write(file, lines("o", 150, 200))
    await agent.restart()
    await ingester.waitFor(() => ingester.logs().length >= 200, 15_000, "all 200")
    await sleep(500)
    expectOnce(ingester, lines("o", 0, 200), "o")
    expect(agent.output()).toMatch(/finished a file rotated while the agent was down/)
  }, 60_000)

  it("the ingester down for a while: events wait on disk and all arrive after it is back", async () => {
    const { logs, ingester, agent } = await setup()
    const file = join(logs, "app.log")
    write(file, lines("d", 0, 50))
    await ingester.waitFor(() => ingester.logs().length >= 50, 15_000, "first 50")
    await ingester.stop()
    write(file, lines("d", 50, 1050))
    await sleep(2500)
    expect(await agent.metric("spillway_agent_buffer_events")).toBe(1000)
    expect(await agent.metric("spillway_agent_retries_total")).toBeGreaterThan(0)
    expect(ingester.logs().length).toBe(50)
    // SIGTERM while the ingester is down: it tries for the grace (2 s here), exits 0, keeps the rest on disk
    const t0 = Date.now()
    expect(await agent.stop()).toBe(0)
    const stopMs = Date.now() - t0
    expect(stopMs).toBeLessThan(6000)
    expect(agent.output()).toMatch(/shutdown: buffer left for the next start.*"bufferedEvents":1000/)
    await agent.restart()
    await ingester.start()
    await ingester.waitFor(() => new Set(ingester.logs()).size >= 1050, 20_000, "all 1050 after the ingester is back")
    await ingester.waitFor(() => ingester.logs().length >= 1050, 5_000)
    const expected = lines("d", 0, 1050)
    const got = new Set(ingester.logs())
    expect(expected.filter((l) => !got.has(l))).toEqual([])
    // the ingester went down with nothing in flight, so nothing was acknowledged twice
    expectOnce(ingester, expected, "d")
    // The fake ingester records a batch before its ack reaches the agent: wait for the acks to empty the buffer.
    expect(await bufferEmptied(agent)).toBe(0)
  }, 60_000)

  it("SIGKILL mid-run and restart: nothing is lost (duplicates possible, same event ids)", async () => {
    const { logs, ingester, agent } = await setup()
    const file = join(logs, "app.log")
    const total = 3000
    let written = 0
    const writer = (async () => {
      while (written < total) {
        write(file, lines("k", written, written + 100))
        written += 100
        await sleep(20)
      }
    })()
    await ingester.waitFor(() => ingester.logs().length >= 500, 15_000, "500 before the kill")
    expect(await agent.kill("SIGKILL")).toBe(null)
    const atKill = ingester.logs().length
    await writer
    await agent.restart()
    await ingester.waitFor(() => new Set(ingester.logs()).size >= total, 30_000, `all ${total}`)
    const got = ingester.logs()
    const expected = lines("k", 0, total)
    const set = new Set(got)
    expect(expected.filter((l) => !set.has(l))).toEqual([])
    const dups = got.length - set.size
    // A duplicate is an event re-sent after the kill: it carries the event id of its first copy.
    const byLog = new Map<string, Set<string>>()
    for (const e of ingester.received) {
      const l = String(e.record?.log)
      if (!byLog.has(l)) byLog.set(l, new Set())
      byLog.get(l)!.add(e.eventId)
    }
    expect([...byLog.values()].every((ids) => ids.size === 1)).toBe(true)
    console.log(`SIGKILL test: ${atKill} received at the kill, ${dups} duplicates of ${total}`)
  }, 90_000)

  it("buffer full: the tail input pauses (file left unread) and nothing is dropped", async () => {
    const max = 40_000
    const { logs, ingester, agent } = await setup({ bufferMaxBytes: max })
    await ingester.stop()
    const file = join(logs, "app.log")
    const total = 2000 // about 2000 × 200 accounted bytes = 400 KB, ten times the bound
    write(file, lines("f", 0, total))
    await agent.waitForOutput(/disk buffer full/)
    await sleep(1000)
    const read1 = await agent.metric("spillway_agent_events_read_total", { input: "tail" })
    await sleep(1000)
    const read2 = await agent.metric("spillway_agent_events_read_total", { input: "tail" })
    const bytes = await agent.metric("spillway_agent_buffer_bytes")
    expect(read1).toBeLessThan(total / 4)
    expect(read2).toBe(read1) // paused
    expect(bytes).toBeLessThanOrEqual(max)
    expect(await agent.metric("spillway_agent_buffer_full_waits_total")).toBeGreaterThan(0)
    await ingester.start()
    await ingester.waitFor(() => new Set(ingester.logs()).size >= total, 40_000, `all ${total}`)
    await sleep(300)
    expectOnce(ingester, lines("f", 0, total), "f")
    console.log(`buffer-full test: paused after ${read1} of ${total} lines at ${bytes} of ${max} bytes`)
  }, 60_000)

  it("an expired token replaced by a fresh one (token file): nothing lost", async () => {
    const { logs, ingester, agent, tokenFile } = await setup()
    const file = join(logs, "app.log")
    write(file, lines("t", 0, 100))
    await ingester.waitFor(() => ingester.logs().length >= 100, 15_000, "first 100")
    // the token expires: the ingester now only accepts a new one, and drops the connection
    ingester.tokens = new Set(["fresh-token"])
    await ingester.stop()
    await ingester.start()
    write(file, lines("t", 100, 300))
    await agent.waitForOutput(/UNAUTHENTICATED/)
    await sleep(1000)
    expect(ingester.logs().length).toBe(100)
    expect(await agent.metric("spillway_agent_auth_failures_total")).toBeGreaterThan(0)
    writeFileSync(tokenFile, "fresh-token\n")
    await ingester.waitFor(() => ingester.logs().length >= 300, 20_000, "all 300 after the new token")
    await sleep(300)
    expectOnce(ingester, lines("t", 0, 300), "t")
    expect(agent.output()).toMatch(/token file changed/)
    expect(agent.output()).not.toMatch(/fresh-token|good-token/) // secrets never logged
  }, 60_000)

  it("a batch rejected with PERMISSION_DENIED goes to the rejected folder; the others arrive", async () => {
    const { dir, logs, ingester, agent } = await setup({ env: { SPILLWAY_BATCH_MAX_EVENTS: "10" } })
    ingester.rejectBatch = (events) =>
      events.some((e) => e.message.length > 0 && ingester.config.EncryptionKey === "" && e.message.includes("poison"))
        ? { code: 7, detail: "not allowed" }
        : undefined
    // plain JSON so the fake can look into messages
    ingester.config.EncryptionKey = ""
    await agent.waitForOutput(/"encrypted":false/, 10_000)
    const file = join(logs, "app.log")
    write(file, lines("p", 0, 10))
    await ingester.waitFor(() => ingester.logs().length >= 10, 15_000, "first 10")
    write(file, ["poison-1"])
    await sleep(400)
    write(file, lines("p", 10, 20))
    await ingester.waitFor(() => ingester.logs().length >= 20, 15_000, "next 10")
    await sleep(300)
    expect(ingester.logs()).not.toContain("poison-1")
    expect(await agent.metric("spillway_agent_events_rejected_total")).toBe(1)
    const rejected = readdirSync(join(dir, "buffer", "rejected"))
    expect(rejected.length).toBe(1)
    const saved = JSON.parse(readFileSync(join(dir, "buffer", "rejected", rejected[0]!), "utf8"))
    expect(saved.code).toBe("PERMISSION_DENIED")
    expect(saved.events.map((e: { record: string }) => JSON.parse(e.record).log)).toEqual(["poison-1"])
    expect(ingester.received.at(-1)!.encrypted).toBe(false) // the key change applied live
    expect(await bufferEmptied(agent)).toBe(0)
  }, 60_000)

  it("SIGTERM sends what is buffered within the grace and exits 0", async () => {
    const { logs, ingester, agent } = await setup({ env: { SPILLWAY_BATCH_LINGER_MS: "3000" } })
    write(join(logs, "app.log"), lines("s", 0, 30))
    await ingester.waitFor(() => false, 400).catch(() => undefined)
    expect(await agent.stop()).toBe(0)
    expectOnce(ingester, lines("s", 0, 30), "s")
    expect(agent.output()).toMatch(/shutting down: sending what is buffered/)
  }, 30_000)

  it("a second agent on the same buffer folder refuses with a clear error (exit 2); the first goes on", async () => {
    const { dir, logs, tokenFile, ingester } = await setup()
    const second = startAgent({
      ingester: ingester.address,
      caCert,
      tokenFile,
      bufferDir: join(dir, "buffer"),
      tail: [join(logs, "*.log")],
    })
    await expect(second).rejects.toThrow(/exited with 2[\s\S]*in use by another agent \(pid \d+\)/)
    write(join(logs, "app.log"), lines("lk", 0, 10))
    await ingester.waitFor(() => ingester.logs().length >= 10, 15_000, "10 lines from the first agent")
    expectOnce(ingester, lines("lk", 0, 10), "lk")
  }, 30_000)

  it("--ingester as an IP address without --server-name: TLS verified against the IP, no DEP0123 warning", async () => {
    const { logs, ingester, agent } = await setup()
    expect(ingester.address).toMatch(/^127\.0\.0\.1:/)
    write(join(logs, "app.log"), lines("ip", 0, 20))
    await ingester.waitFor(() => ingester.logs().length >= 20, 15_000, "20 lines")
    expectOnce(ingester, lines("ip", 0, 20), "ip")
    expect(agent.output()).not.toMatch(/DEP0123|ServerName to an IP/)
  }, 30_000)
})

describe("agent inputs (child process)", () => {
  it("metrics: cpu, memory and netif records shaped like the proof of concept's", async () => {
    const dir = join(root, "metrics")
    mkdirSync(dir, { recursive: true })
    writeFileSync(join(dir, "token"), "good-token")
    const ingester = await startFakeIngester({ tokens: ["good-token"] })
    const entry: { agent?: AgentProcess; ingester?: FakeIngester } = { ingester }
    running.push(entry)
    entry.agent = await startAgent({
      ingester: ingester.address,
      caCert,
      tokenFile: join(dir, "token"),
      bufferDir: join(dir, "buffer"),
      metricsInterval: 1,
    })
    await ingester.waitFor(
      () => ["cpu", "memory"].every((t) => ingester.received.some((e) => e.tag === t)),
      15_000,
      "cpu and memory records",
    )
    const cpu = ingester.received.find((e) => e.tag === "cpu")!.record!
    for (const k of ["cpu_p", "user_p", "system_p", "cpu0.p_cpu", "cpu0.p_user", "cpu0.p_system"])
      expect(typeof cpu[k], k).toBe("number")
    expect(Object.keys(cpu).every((k) => /^(cpu\d+\.p_(cpu|user|system)|cpu_p|user_p|system_p)$/.test(k))).toBe(true)
    const mem = ingester.received.find((e) => e.tag === "memory")!.record!
    expect(Object.keys(mem).sort()).toEqual([
      "Mem.free",
      "Mem.total",
      "Mem.used",
      "Swap.free",
      "Swap.total",
      "Swap.used",
    ])
    expect(mem["Mem.used"]).toBe((mem["Mem.total"] as number) - (mem["Mem.free"] as number))
    const netif = ingester.received.find((e) => e.tag === "netif")?.record
    if (netif) {
      for (const k of Object.keys(netif)) expect(k).toMatch(/^[^.]+\.(rx|tx)\.(bytes|packets|errors)$/)
      expect(Object.keys(netif).length % 6).toBe(0)
    }
  }, 30_000)

  it("stdin: one event per line", async () => {
    const dir = join(root, "stdin")
    mkdirSync(dir, { recursive: true })
    writeFileSync(join(dir, "token"), "good-token")
    const ingester = await startFakeIngester({ tokens: ["good-token"] })
    const entry: { agent?: AgentProcess; ingester?: FakeIngester } = { ingester }
    running.push(entry)
    const agent = await startAgent({
      ingester: ingester.address,
      caCert,
      tokenFile: join(dir, "token"),
      bufferDir: join(dir, "buffer"),
      stdin: true,
    })
    entry.agent = agent
    agent.child().stdin!.write(`${lines("i", 0, 500).join("\n")}\n`)
    await ingester.waitFor(() => ingester.logs("stdin").length >= 500, 15_000, "500 stdin lines")
    expectOnce(ingester, lines("i", 0, 500), "i")
  }, 30_000)

  it("stdin pauses when the buffer is full, and nothing is dropped", async () => {
    const dir = join(root, "stdin-full")
    mkdirSync(dir, { recursive: true })
    writeFileSync(join(dir, "token"), "good-token")
    const ingester = await startFakeIngester({ tokens: ["good-token"] })
    const entry: { agent?: AgentProcess; ingester?: FakeIngester } = { ingester }
    running.push(entry)
    const agent = await startAgent({
      ingester: ingester.address,
      caCert,
      tokenFile: join(dir, "token"),
      bufferDir: join(dir, "buffer"),
      bufferMaxBytes: 40_000,
      stdin: true,
    })
    entry.agent = agent
    await ingester.stop()
    const total = 5000
    agent.child().stdin!.write(`${lines("q", 0, total).join("\n")}\n`)
    await agent.waitForOutput(/disk buffer full/)
    await sleep(1000)
    const read1 = await agent.metric("spillway_agent_events_read_total", { input: "stdin" })
    await sleep(1000)
    expect(await agent.metric("spillway_agent_events_read_total", { input: "stdin" })).toBe(read1)
    expect(read1).toBeLessThan(total / 4)
    await ingester.start()
    await ingester.waitFor(() => ingester.logs().length >= total, 40_000, `all ${total}`)
    await sleep(300)
    expectOnce(ingester, lines("q", 0, total), "q")
  }, 60_000)

  it("docker and kubernetes inputs from a config file", async () => {
    const dir = join(root, "containers")
    const docker = join(dir, "docker")
    const kube = join(dir, "kube")
    const cid = "c".repeat(64)
    mkdirSync(join(docker, cid), { recursive: true })
    mkdirSync(kube, { recursive: true })
    writeFileSync(join(dir, "token"), "good-token")
    const config = join(dir, "agent.json")
    writeFileSync(
      config,
      JSON.stringify({
        inputs: [
          { type: "docker", path: docker },
          { type: "kubernetes", path: kube },
        ],
      }),
    )
    const ingester = await startFakeIngester({ tokens: ["good-token"] })
    const entry: { agent?: AgentProcess; ingester?: FakeIngester } = { ingester }
    running.push(entry)
    entry.agent = await startAgent({
      ingester: ingester.address,
      caCert,
      tokenFile: join(dir, "token"),
      bufferDir: join(dir, "buffer"),
      config,
    })
    writeFileSync(
      join(docker, cid, `${cid}-json.log`),
      '{"log":"from docker\\n","stream":"stdout","time":"2024-01-02T03:04:05.000000001Z"}\n',
    )
    writeFileSync(join(kube, `web-1_shop_nginx-${cid}.log`), "2024-01-02T03:04:05.5Z stdout F from kubernetes\n")
    await ingester.waitFor(() => ingester.received.length >= 2, 15_000, "docker and kubernetes records")
    const d = ingester.received.find((e) => e.tag.startsWith("docker."))!
    expect(d.tag).toBe(`docker.${cid}`)
    expect(d.record).toMatchObject({ log: "from docker", stream: "stdout", container_id: cid })
    expect(d.ts).toBe(1704164645000000001n)
    const k = ingester.received.find((e) => e.tag.startsWith("kube."))!
    expect(k.tag).toBe("kube.shop.web-1.nginx")
    expect(k.record).toMatchObject({
      log: "from kubernetes",
      kubernetes: { namespace_name: "shop", pod_name: "web-1", container_name: "nginx" },
    })
  }, 30_000)

  it("an ack that never comes: the batch is re-sent on a new stream after the ack timeout", async () => {
    const dir = join(root, "ack-timeout")
    mkdirSync(join(dir, "logs"), { recursive: true })
    writeFileSync(join(dir, "token"), "good-token")
    const ingester = await startFakeIngester({ tokens: ["good-token"] })
    const entry: { agent?: AgentProcess; ingester?: FakeIngester } = { ingester }
    running.push(entry)
    const agent = await startAgent({
      ingester: ingester.address,
      caCert,
      tokenFile: join(dir, "token"),
      bufferDir: join(dir, "buffer"),
      tail: [join(dir, "logs", "*.log")],
      env: { SPILLWAY_ACK_TIMEOUT_SECONDS: "1" },
    })
    entry.agent = agent
    ingester.holdAcks = true
    write(join(dir, "logs", "a.log"), lines("h", 0, 50))
    await agent.waitForOutput(/not acknowledged within 1000 ms/)
    ingester.holdAcks = false
    await ingester.waitFor(() => ingester.logs().length >= 50, 15_000, "50 after the timeout")
    await sleep(300)
    expectOnce(ingester, lines("h", 0, 50), "h")
    expect(ingester.batchesSeen).toBeGreaterThan(1)
  }, 30_000)

  it("several batches in flight, never more than the window", async () => {
    const dir = join(root, "window")
    mkdirSync(join(dir, "logs"), { recursive: true })
    writeFileSync(join(dir, "token"), "good-token")
    const ingester = await startFakeIngester({ tokens: ["good-token"] })
    const entry: { agent?: AgentProcess; ingester?: FakeIngester } = { ingester }
    running.push(entry)
    const agent = await startAgent({
      ingester: ingester.address,
      caCert,
      tokenFile: join(dir, "token"),
      bufferDir: join(dir, "buffer"),
      tail: [join(dir, "logs", "*.log")],
      env: { SPILLWAY_BATCH_MAX_EVENTS: "10", SPILLWAY_INFLIGHT: "4" },
    })
    entry.agent = agent
    ingester.holdAcks = true
    write(join(dir, "logs", "a.log"), lines("w", 0, 100))
    await ingester.waitFor(() => ingester.batchesSeen >= 4, 10_000, "4 batches")
    await sleep(700)
    expect(ingester.batchesSeen).toBe(4)
    expect(await agent.metric("spillway_agent_inflight_batches")).toBe(4)
    expect(await agent.metric("spillway_agent_events_sent_total")).toBe(40)
    ingester.releaseAcks()
    await ingester.waitFor(() => ingester.logs().length >= 100, 15_000, "all 100")
    await sleep(300)
    expectOnce(ingester, lines("w", 0, 100), "w")
    expect(ingester.batchesSeen).toBe(10)
  }, 30_000)
})
