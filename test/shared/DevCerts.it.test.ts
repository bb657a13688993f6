import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { connect, createServer } from "node:tls"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { makeDevCerts } from "../../src/shared/DevCerts.js"

const dir = mkdtempSync(join(tmpdir(), "spillway-certs-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe("development certificates", () => {
  it("make a CA and server/client certificates that real TLS accepts, with mutual TLS", async () => {
    const p = await Effect.runPromise(makeDevCerts(dir))
    const server = createServer(
      {
        cert: readFileSync(p.serverCert),
        key: readFileSync(p.serverKey),
        ca: readFileSync(p.caCert),
        requestCert: true,
        rejectUnauthorized: true,
      },
      (s) => s.end(`hello ${s.getPeerCertificate().subject.CN}`),
    )
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
    const port = (server.address() as { port: number }).port
    const reply = await new Promise<string>((resolve, reject) => {
      const c = connect(
        {
          host: "127.0.0.1",
          port,
          servername: "localhost",
          ca: readFileSync(p.caCert),
          cert: readFileSync(p.clientCert),
          key: readFileSync(p.clientKey),
        },
        () => {
          let data = ""
          c.on("data", (d) => (data += d))
          c.on("end", () => resolve(data))
        },
      )
      c.on("error", reject)
    })
    server.close()
    expect(reply).toBe("hello spillway-client")
    // Keeps existing files: a second call does not re-create the CA.
    const before = readFileSync(p.caCert, "utf8")
    await Effect.runPromise(makeDevCerts(dir))
    expect(readFileSync(p.caCert, "utf8")).toBe(before)
  })

  it("a client that does not trust the CA is refused", async () => {
    const p = await Effect.runPromise(makeDevCerts(dir))
    const server = createServer({ cert: readFileSync(p.serverCert), key: readFileSync(p.serverKey) }, (s) => s.end("x"))
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
    const port = (server.address() as { port: number }).port
    const err = await new Promise<Error>((resolve) => {
      const c = connect({ host: "127.0.0.1", port, servername: "localhost" }, () => resolve(new Error("connected")))
      c.on("error", resolve)
    })
    server.close()
    expect(err.message).toMatch(/self.signed|unable to (get|verify)/i)
  })
})
