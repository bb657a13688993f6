/**
 * The built ingester with its receivers on: `--otlp-http-port` serves OTLP/HTTP JSON with the tenant's JWT, and the
 * record reaches Kafka (encrypted with the tenant's key) before the 200; a bad token gets 401 and writes nothing.
 * The receivers themselves are tested with the OpenTelemetry SDK and a Fluent Forward client in test/ingest.
 */
import { describe, expect, it } from "@effect/vitest"
import { openHex } from "../../src/shared/Crypto.js"
import { EventCodec } from "../../src/wire/Wire.js"
import { freePort, startIngester, tenantA } from "../support/ingester.js"
import { consumeAll, uniqueTopic } from "../support/kafka.js"

describe("the ingester program's receivers", () => {
  it("--otlp-http-port: an OTLP/HTTP JSON export lands in Kafka for the token's tenant", async () => {
    const topic = uniqueTopic("otlp-program")
    const otlp = await freePort()
    const ing = await startIngester({ topic, extraArgs: ["--otlp-http-port", String(otlp)] })
    try {
      const body = JSON.stringify({
        resourceLogs: [
          {
            resource: { attributes: [{ key: "host.name", value: { stringValue: "host-1" } }] },
            scopeLogs: [{ logRecords: [{ timeUnixNano: "1764583200000000000", body: { stringValue: "hello otlp" } }] }],
          },
        ],
      })
      // Node's fetch does not take a custom CA: call through https with the test CA instead.
      const https = await import("node:https")
      const send = (token: string) =>
        new Promise<number>((resolve, reject) => {
          const req = https.request(
            {
              host: "127.0.0.1",
              port: otlp,
              path: "/v1/logs",
              method: "POST",
              ca: ing.caCert,
              headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
            },
            (res) => {
              res.resume()
              res.on("end", () => {
                resolve(res.statusCode ?? 0)
              })
            },
          )
          req.on("error", reject)
          req.end(body)
        })
      expect(await send("not-a-token")).toBe(401)
      expect(await send(await ing.tokenFor(tenantA))).toBe(200)
      const records = await consumeAll(topic, 1, 20_000)
      expect(records.length).toBe(1)
      const event = EventCodec.decode(records[0]!.value!) as { AccessKey: string; agent_id: string; message: string }
      expect(event.AccessKey).toBe(tenantA)
      expect(event.agent_id).toBe("host-1")
      const plain = openHex(Buffer.from("883EC28EBA9A36A386FA351FBC482B34", "utf8"), event.message).toString("utf8")
      expect(plain).toContain("hello otlp")
    } finally {
      await ing.stop()
    }
  }, 60_000)
})
