/**
 * The built agent against the REAL built ingester (dist/programs/ingester.js) and the shared local Kafka broker:
 * tailed lines end up in Kafka as `api.Event` records keyed by the access key, encrypted, each once; the ingester
 * going down (SIGKILL) and coming back loses nothing. Run with `SPILLWAY_KEEP_KAFKA=1 npx vitest run test/agent`.
 */
import { appendFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { openHex } from "../../src/shared/Crypto.js"
import { EventCodec } from "../../src/wire/Wire.js"
import { type AgentProcess, startAgent } from "../support/agent.js"
import { type RunningIngester, startIngester } from "../support/ingester.js"
import { consumeAll, createTopic, uniqueTopic } from "../support/kafka.js"

const TENANT = { key: "9c60f26f-5b6c-4c80-b5f5-625bf965b6a6", user: "2134558", enc: "883EC28EBA9A36A386FA351FBC482B34" }
const work = mkdtempSync(join(tmpdir(), "spillway-agent-it-"))
const topic = uniqueTopic("agent-it")
const tokenFile = join(work, "token")
const logs = join(work, "logs")
let ingester: RunningIngester | undefined
let agent: AgentProcess | undefined

const diagnostics = () =>
  `---- agent ----\n${agent?.output().slice(-3000) ?? ""}\n---- ingester ----\n${ingester?.output().slice(-3000) ?? ""}`
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

beforeAll(async () => {
  mkdirSync(logs, { recursive: true })
  await createTopic(topic, 3)
  ingester = await startIngester({
    topic,
    env: { SPILLWAY_JWT_CLOCK_SKEW_SECONDS: "0" },
    tenants: {
      [TENANT.key]: {
        AccessKey: TENANT.key,
        EncryptionKey: TENANT.enc,
        UserID: TENANT.user,
        targets: [{ file: "t.log" }],
      },
    },
  })
  writeFileSync(tokenFile, await ingester.tokenFor(TENANT.key), { mode: 0o600 })
}, 120_000)

afterAll(async () => {
  await agent?.kill("SIGKILL")
  await ingester?.stop()
  rmSync(work, { recursive: true, force: true })
})

const lines = (prefix: string, from: number, to: number) =>
  Array.from({ length: to - from }, (_, i) => `${prefix}-${from + i}`)

describe("agent -> real ingester -> Kafka", () => {
  it("tailed lines arrive in Kafka once each, encrypted, keyed by the access key; an ingester crash loses nothing", async () => {
    const file = join(logs, "app.log")
    const ing = ingester!
    agent = await startAgent({
      ingester: ing.address,
      caCert: ing.certs.caCert,
      tokenFile,
      accessKey: TENANT.key,
      bufferDir: join(work, "buffer"),
      tail: [join(logs, "*.log")],
    })
    appendFileSync(file, `${lines("k", 0, 500).join("\n")}\n`)
    const t0 = Date.now()
    while ((await agent.metric("spillway_agent_events_acked_total")) < 500 && Date.now() - t0 < 30_000) await sleep(200)
    const firstMs = Date.now() - t0
    expect(await agent.metric("spillway_agent_events_acked_total"), diagnostics()).toBe(500)

    // the ingester crashes; lines keep coming; it comes back
    await ing.kill("SIGKILL")
    appendFileSync(file, `${lines("k", 500, 800).join("\n")}\n`)
    await sleep(1500)
    expect(await agent.metric("spillway_agent_buffer_events")).toBe(300)
    await ing.restart()
    const t1 = Date.now()
    while ((await agent.metric("spillway_agent_buffer_events")) > 0 && Date.now() - t1 < 40_000) await sleep(200)
    expect(await agent.metric("spillway_agent_buffer_events"), diagnostics()).toBe(0)

    const records = await consumeAll(topic, 800, 30_000)
    const byLog = new Map<string, number>()
    const key = Buffer.from(TENANT.enc, "utf8")
    for (const r of records) {
      expect(r.key?.toString()).toBe(TENANT.key)
      const e = EventCodec.decode(r.value!) as Record<string, unknown>
      expect(e.AccessKey).toBe(TENANT.key)
      expect(e.UserID).toBe(TENANT.user)
      expect(e.agentId ?? e.agent_id).toBe("test-agent")
      const rec = JSON.parse(openHex(key, String(e.message)).toString("utf8")) as { log: string }
      byLog.set(rec.log, (byLog.get(rec.log) ?? 0) + 1)
    }
    const missing = lines("k", 0, 800).filter((l) => !byLog.has(l))
    expect(missing).toEqual([])
    const dups = [...byLog.values()].reduce((s, n) => s + n - 1, 0)
    console.log(
      `real ingester: first 500 acked in ${firstMs} ms; ${records.length} records for 800 lines, ${dups} duplicates`,
    )
  }, 120_000)

  it("an expired token is refused (UNAUTHENTICATED); a fresh one in the token file lets everything through", async () => {
    const ing = ingester!
    await agent?.kill("SIGKILL")
    const dir = join(work, "expired")
    mkdirSync(join(dir, "logs"), { recursive: true })
    const file = join(dir, "token")
    writeFileSync(file, await ing.tokenFor(TENANT.key, 1))
    await sleep(2100) // expired (this ingester allows no clock skew)
    agent = await startAgent({
      ingester: ing.address,
      caCert: ing.certs.caCert,
      tokenFile: file,
      accessKey: TENANT.key,
      bufferDir: join(dir, "buffer"),
      tail: [join(dir, "logs", "*.log")],
    })
    appendFileSync(join(dir, "logs", "a.log"), `${lines("x", 0, 200).join("\n")}\n`)
    await agent.waitForOutput(/UNAUTHENTICATED/, 15_000).catch(() => undefined)
    const refused = /UNAUTHENTICATED/.test(agent.output())
    const t = Date.now()
    while ((await agent.metric("spillway_agent_buffer_events")) < 200 && Date.now() - t < 10_000) await sleep(100)
    await sleep(1000) // a few refused retries
    expect(await agent.metric("spillway_agent_buffer_events")).toBe(200)
    expect(await agent.metric("spillway_agent_events_acked_total")).toBe(0)
    writeFileSync(file, await ing.tokenFor(TENANT.key, 600))
    const t0 = Date.now()
    while ((await agent.metric("spillway_agent_events_acked_total")) < 200 && Date.now() - t0 < 30_000) await sleep(200)
    expect(await agent.metric("spillway_agent_events_acked_total"), diagnostics()).toBe(200)
    expect(refused, `the expired token was not refused:\n${diagnostics()}`).toBe(true)
  }, 90_000)
})
