/**
 * SIGHUP on the built ingester: the certificate and key replaced on disk, then SIGHUP: a new client sees the new
 * certificate (it trusts only the new CA) while a stream opened before keeps going and is answered; the process
 * stays up. A broken new version is refused, logged, and the certificate in force stays.
 */
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import { Effect } from "effect"
import { makeDevCerts } from "../../src/shared/DevCerts.js"
import type { WireEResponse } from "../../src/wire/Wire.js"
import { bearer, connect, openSendEvent, sendEvents, startIngester, tenantA, wireEvent } from "../support/ingester.js"
import { uniqueTopic } from "../support/kafka.js"
import { waitFor } from "../support/router.js"

describe("SIGHUP: certificate rotation on the built ingester", () => {
  it("new clients get the new certificate; an open stream goes on; a bad version is refused", async () => {
    const root = mkdtempSync(join(tmpdir(), "spillway-rotate-"))
    const [first, second] = await Promise.all(
      ["first", "second"].map((d) => Effect.runPromise(makeDevCerts(join(root, d)))),
    )
    const cert = join(root, "server.crt")
    const key = join(root, "server.key")
    copyFileSync(first!.serverCert, cert)
    copyFileSync(first!.serverKey, key)
    const ing = await startIngester({ topic: uniqueTopic("rotate"), tlsFiles: { cert, key } })
    const clientOf = (ca: string) => connect(ing.address, { caCert: readFileSync(ca) })
    try {
      const token = await ing.tokenFor(tenantA)
      const old = clientOf(first!.caCert)
      expect((await sendEvents(old, token, [wireEvent(tenantA, 1)])).value?.status).toBe("SUCCESS")
      const open = new Promise<WireEResponse | grpc.ServiceError>((resolve) => {
        const call = openSendEvent<unknown>(old, bearer(token), (e, v) => resolve(e ?? v!))
        call.write(wireEvent(tenantA, 2))
        setTimeout(() => {
          call.write(wireEvent(tenantA, 3))
          call.end()
        }, 3000)
      })

      writeFileSync(key, "not a key")
      ing.signal("SIGHUP")
      await waitFor(
        () => /TLS files refused, keeping the certificate in force/.test(ing.output()),
        10_000,
        "refusal",
      ).catch((e) => {
        console.log(ing.output().slice(-3000))
        throw e
      })
      copyFileSync(second!.serverCert, cert)
      copyFileSync(second!.serverKey, key)
      ing.signal("SIGHUP")
      await waitFor(() => /TLS certificate reloaded/.test(ing.output()), 10_000, "reload")

      const fresh = clientOf(second!.caCert)
      expect((await sendEvents(fresh, token, [wireEvent(tenantA, 4)])).value?.status).toBe("SUCCESS")
      const stale = clientOf(first!.caCert)
      expect((await sendEvents(stale, token, [wireEvent(tenantA, 5)])).error?.code).toBe(grpc.status.UNAVAILABLE)
      expect(await open).toEqual({ status: "SUCCESS" })
      for (const c of [old, fresh, stale]) c.close()
    } finally {
      await ing.stop()
    }
  }, 60_000)
})
