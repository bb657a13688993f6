/**
 * End to end (issue 6): the real programs as child processes, real Kafka, TLS and files. Each test feeds lines with
 * unique ids through an agent and checks the router's file for the exact set: a loss fails, duplicates are reported.
 */
import { readFileSync } from "node:fs"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import { BatchAckCodec } from "../src/wire/Wire.js"
import { brokers, privateBroker } from "./support/kafka.js"
import { type Check, Pipeline, TENANT } from "./support/pipeline.js"

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const report = (name: string, c: Check) =>
  process.stderr.write(
    `[e2e] ${name}: ${c.expected} ids, ${c.missing.length} missing, ${c.duplicates} duplicates, ${c.unexpected} unexpected\n`,
  )

let p: Pipeline | undefined
afterEach(async () => {
  if (p !== undefined) {
    const failed = p.check().missing.length > 0
    if (failed) process.stderr.write(p.diagnostics())
    await p.stop()
    p = undefined
  }
})

const run = async (brokerList: ReadonlyArray<string> = brokers) => {
  p = new Pipeline({ brokers: brokerList })
  await p.setup()
  return p
}

describe("end to end through agent, ingester, Kafka and router", () => {
  it("a normal run delivers every id exactly once", async () => {
    const p = await run()
    await p.writeOver(3000, 2000)
    const c = await p.waitAll()
    report("normal", c)
    expect(c.missing).toEqual([])
    expect(c.duplicates).toBe(0)
    expect(c.unexpected).toBe(0)
  })

  for (const target of ["ingester", "router", "agent"] as const) {
    it(`SIGKILL the ${target} mid-run and restart it: every id arrives`, async () => {
      const p = await run()
      const writing = p.writeOver(4000, 4000)
      await sleep(1500)
      const proc = p[target]
      expect(await proc.kill("SIGKILL")).toBe("SIGKILL")
      await sleep(1000)
      await proc.start()
      await writing
      const c = await p.waitAll()
      report(`kill ${target}`, c)
      expect(c.missing).toEqual([])
      expect(c.unexpected).toBe(0)
    })
  }

  describe("with its own broker", () => {
    const kafka = privateBroker(6)
    beforeAll(() => kafka.start())
    afterAll(() => kafka.destroy())

    it("stop and restart the Kafka broker mid-run: every id arrives", async () => {
      const p = await run(kafka.brokers)
      const writing = p.writeOver(4000, 4000)
      await sleep(1500)
      await kafka.stop("SIGKILL")
      await sleep(3000)
      await kafka.start()
      await writing
      const c = await p.waitAll(120_000)
      report("restart Kafka", c)
      expect(c.missing).toEqual([])
      expect(c.unexpected).toBe(0)
      expect(p.ingester.running && p.router.running && p.agent.running).toBe(true)
    })
  })

  it("bad traffic beside a good agent: clear statuses, nothing crashes, every good id arrives", async () => {
    const p = await run()
    const writing = p.writeOver(3000, 4000)
    const creds = grpc.credentials.createSsl(readFileSync(p.caCert))
    // A raw client whose requests are whatever bytes we give it.
    const Raw = grpc.makeGenericClientConstructor(
      {
        SendEventBatches: {
          path: "/api.EventService/SendEventBatches",
          requestStream: true,
          responseStream: true,
          requestSerialize: (b: Buffer) => b,
          requestDeserialize: (b: Buffer) => b,
          responseSerialize: (b: Buffer) => b,
          responseDeserialize: (b: Buffer) => BatchAckCodec.decode(b),
        },
      },
      "api.EventService",
    )
    const client = new Raw(`localhost:${p.ingesterPort}`, creds, { "grpc.max_send_message_length": 64 << 20 })
    const call = (token: string | undefined, payloads: ReadonlyArray<Buffer>) =>
      new Promise<{ code: number; details: string; acks: Array<unknown> }>((resolve) => {
        const md = new grpc.Metadata()
        if (token !== undefined) md.set("authorization", `Bearer ${token}`)
        const acks: Array<unknown> = []
        // biome-ignore lint/suspicious/noExplicitAny: generic client method
        const s = (client as any).SendEventBatches(md) as grpc.ClientDuplexStream<Buffer, unknown>
        s.on("data", (a) => acks.push(a))
        s.on("error", (e: grpc.ServiceError) => resolve({ code: e.code, details: e.details, acks }))
        s.on("end", () => resolve({ code: grpc.status.OK, details: "", acks }))
        for (const b of payloads) s.write(b)
        s.end()
      })
    const good = p.mintToken(TENANT.key)
    const results = {
      noToken: await call(undefined, [Buffer.from([])]),
      garbageToken: await call("not.a.jwt", [Buffer.from([])]),
      otherSecret: await call(
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI5YzYwZjI2Zi01YjZjLTRjODAtYjVmNS02MjViZjk2NWI2YTYifQ.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        [Buffer.from([])],
      ),
      malformed: await call(good, [Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x12])]),
      oversized: await call(good, [Buffer.alloc(20 * 1024 * 1024, 0x41)]),
    }
    client.close()
    expect(results.noToken.code).toBe(grpc.status.UNAUTHENTICATED)
    expect(results.garbageToken.code).toBe(grpc.status.UNAUTHENTICATED)
    expect(results.otherSecret.code).toBe(grpc.status.UNAUTHENTICATED)
    // Malformed protobuf: refused as INVALID_ARGUMENT, either as the stream's status or as a batch ack.
    const malformedStatus =
      results.malformed.code !== grpc.status.OK
        ? results.malformed.code
        : (results.malformed.acks[0] as { code?: number } | undefined)?.code
    expect(malformedStatus).toBe(grpc.status.INVALID_ARGUMENT)
    expect(results.oversized.code).toBe(grpc.status.RESOURCE_EXHAUSTED)
    for (const r of Object.values(results)) expect(r.details.length).toBeLessThan(300)
    await writing
    const c = await p.waitAll()
    report("bad traffic", c)
    expect(c.missing).toEqual([])
    expect(p.ingester.running && p.router.running && p.agent.running).toBe(true)
  })
})
