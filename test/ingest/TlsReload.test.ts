/**
 * Certificate rotation with real TLS: a grpc-js server on ReloadingCertificates; the certificate files are replaced
 * by a new CA's and reloaded: a new client sees the new certificate (it trusts only the new CA), a stream opened
 * before goes on and is answered; an invalid new version is refused with the file named and the old one stays.
 */
import { copyFileSync, mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import { Effect, Either } from "effect"
import { ReloadingCertificates } from "../../src/ingest/TlsReload.js"
import { makeDevCerts } from "../../src/shared/DevCerts.js"
import { EventServiceClient, EventServiceDefinition, type WireEResponse } from "../../src/wire/Wire.js"

type Raw = {
  SendEvent: (
    md: grpc.Metadata,
    cb: (e: grpc.ServiceError | null, v?: WireEResponse) => void,
  ) => grpc.ClientWritableStream<unknown>
}

describe("ReloadingCertificates", () => {
  it("a new client sees the new certificate after a reload while an older stream keeps going", async () => {
    const root = mkdtempSync(join(tmpdir(), "spillway-tls-"))
    const first = await Effect.runPromise(makeDevCerts(join(root, "first")))
    const second = await Effect.runPromise(makeDevCerts(join(root, "second")))
    const live = { certFile: join(root, "server.crt"), keyFile: join(root, "server.key") }
    copyFileSync(first.serverCert, live.certFile)
    copyFileSync(first.serverKey, live.keyFile)
    const certs = Either.getOrThrow(ReloadingCertificates.load(live))

    const server = new grpc.Server()
    server.addService(EventServiceDefinition as unknown as grpc.ServiceDefinition, {
      SendEvent: (call: grpc.ServerReadableStream<unknown, WireEResponse>, cb: grpc.sendUnaryData<WireEResponse>) => {
        let n = 0
        call.on("data", () => n++)
        call.on("end", () => cb(null, { status: n > 0 ? "SUCCESS" : "FAILURE" }))
      },
      ExchangeConfig: (_: unknown, cb: grpc.sendUnaryData<unknown>) => cb({ code: grpc.status.UNIMPLEMENTED }),
      SendEventBatches: (call: grpc.ServerDuplexStream<unknown, unknown>) => call.end(),
    })
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", certs.credentials(), (e, p) => (e ? reject(e) : resolve(p))),
    )
    const { readFileSync } = await import("node:fs")
    const client = (ca: string) =>
      new EventServiceClient(`127.0.0.1:${port}`, grpc.credentials.createSsl(readFileSync(ca))) as unknown as Raw &
        grpc.Client
    const send = (c: Raw & grpc.Client): Promise<{ status?: string | undefined; code?: number; details?: string }> =>
      new Promise((resolve) => {
        const call = c.SendEvent(new grpc.Metadata(), (e, v) =>
          resolve(e ? { code: e.code, details: e.details } : { status: v?.status }),
        )
        call.write({ tag: "t", message: "m" })
        call.end()
      })
    try {
      const old = client(first.caCert)
      expect(await send(old)).toEqual({ status: "SUCCESS" })
      // A stream opened before the rotation, answered after it.
      const pending = new Promise<{ status?: string | undefined; code?: number }>((resolve) => {
        const call = old.SendEvent(new grpc.Metadata(), (e, v) => resolve(e ? { code: e.code } : { status: v?.status }))
        call.write({ tag: "t", message: "before" })
        setTimeout(() => {
          call.write({ tag: "t", message: "after" })
          call.end()
        }, 500)
      })

      // An invalid new version (a key of another certificate) is refused; the old certificate stays.
      copyFileSync(second.serverCert, live.certFile)
      const refused = certs.reload()
      expect(refused).toEqual(
        Either.left(`--tls-key ${live.keyFile}: does not belong to the certificate ${live.certFile}`),
      )
      writeFileSync(live.keyFile, readFileSync(second.serverKey))
      expect(Either.isRight(certs.reload())).toBe(true)

      const fresh = client(second.caCert)
      expect(await send(fresh)).toEqual({ status: "SUCCESS" })
      // A new client that trusts only the old CA is refused: the server now shows the new certificate.
      const stale = client(first.caCert)
      expect((await send(stale)).code).toBe(grpc.status.UNAVAILABLE)
      expect(await pending).toEqual({ status: "SUCCESS" })
      for (const c of [old, fresh, stale]) c.close()
    } finally {
      server.forceShutdown()
    }
  }, 30_000)
})
