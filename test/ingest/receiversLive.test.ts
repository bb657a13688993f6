/** receiversLayer (the flags' layer) with the in-memory sink: settings from Config, the shared key file, wiring. */
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { FluentClient } from "@fluent-org/logger"
import { ConfigProvider, Effect, Exit, Layer, ManagedRuntime, Redacted } from "effect"
import { AccessKey, UserID } from "../../src/domain/Event.js"
import { Auth } from "../../src/ingest/Auth.js"
import { forwardPassword } from "../../src/ingest/forward/ForwardPassword.js"
import { KafkaSink, MemorySink } from "../../src/ingest/KafkaSink.js"
import { encodeRequest } from "../../src/ingest/otlp/OtlpCodec.js"
import { receiversLayer } from "../../src/ingest/receivers/ReceiversLive.js"
import { ConfigStore } from "../../src/shared/ConfigStore.js"
import { freePort } from "../support/ingester.js"

const key = AccessKey.make("live-tenant")
const tenants = {
  [key]: { AccessKey: key, EncryptionKey: Redacted.make(""), UserID: UserID.make("u"), targets: [] },
}

const build = async (settings: Record<string, string>, keyFileContent: string | undefined) => {
  const dir = mkdtempSync(join(tmpdir(), "spillway-live-"))
  const keyFile = join(dir, "shared.key")
  if (keyFileContent !== undefined) writeFileSync(keyFile, keyFileContent)
  const [grpc, http, forward] = [await freePort(), await freePort(), await freePort()]
  const live = receiversLayer({
    host: "127.0.0.1",
    tls: undefined,
    otlpGrpcPort: grpc,
    otlpHttpPort: http,
    forwardPort: forward,
    forwardSharedKeyFile: keyFile,
  }).pipe(
    Layer.provideMerge(
      Layer.mergeAll(
        KafkaSink.layerMemory,
        ConfigStore.layerMemory(tenants),
        Layer.orDie(Auth.layerFromSecrets("s".repeat(48))),
      ),
    ),
    Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(settings))))),
  )
  return { rt: ManagedRuntime.make(live), grpc, http, forward }
}

describe("receiversLayer", () => {
  it("applies the SPILLWAY_* limits and the shared key file; records reach the sink", async () => {
    const { rt, http, forward } = await build({ SPILLWAY_OTLP_MAX_RECORDS: "1" }, "  shared-key-from-file\n")
    try {
      const token = await rt.runPromise(Effect.flatMap(Auth, (a) => a.sign(key)))
      const post = (n: number) =>
        fetch(`http://127.0.0.1:${http}/v1/logs`, {
          method: "POST",
          headers: { "content-type": "application/x-protobuf", authorization: `Bearer ${token}` },
          body: encodeRequest({
            resourceLogs: [
              { scopeLogs: [{ logRecords: Array.from({ length: n }, () => ({ body: { stringValue: "x" } })) }] },
            ],
          }),
        })
      expect((await post(2)).status).toBe(400)
      expect((await post(1)).status).toBe(200)
      const password = await rt.runPromise(Effect.flatMap(Auth, (a) => forwardPassword(a, key)))
      const c = new FluentClient("live", {
        eventMode: "Message",
        socket: { host: "127.0.0.1", port: forward },
        security: { clientHostname: "h", sharedKey: "shared-key-from-file", username: key, password },
        ack: { ackTimeout: 5000 },
      })
      await c.emit("t", { a: 1 })
      await c.disconnect()
      const records = await rt.runPromise(Effect.map(MemorySink, (m) => m.records()))
      expect(records).toHaveLength(2)
    } finally {
      await rt.dispose()
    }
  })

  it("refuses to start with an empty shared key file or a bad setting, naming the file, not its content", async () => {
    const empty = await build({}, "   \n")
    const e1 = await empty.rt.runPromiseExit(Effect.void)
    expect(Exit.isFailure(e1) && String(e1.cause)).toMatch(/shared key file .* is empty/)
    const bad = await build({ SPILLWAY_RECEIVER_MAX_CONNECTIONS: "0" }, "k")
    const e2 = await bad.rt.runPromiseExit(Effect.void)
    expect(Exit.isFailure(e2) && String(e2.cause)).toMatch(/positive integers/)
  })
})
