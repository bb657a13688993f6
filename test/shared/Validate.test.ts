import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import {
  checkBrokers,
  checkCertificate,
  checkPrivateKey,
  checkReadable,
  checkTenants,
} from "../../src/shared/Validate.js"
import { testCerts } from "../support/certs.js"

const dir = mkdtempSync(join(tmpdir(), "spillway-validate-"))
const file = (name: string, text: string) => {
  const p = join(dir, name)
  writeFileSync(p, text)
  return p
}

describe("validate checks", () => {
  it("certificates and keys: good ones pass, a mismatched key, an expired or a non-certificate file fail", async () => {
    const c = await testCerts()
    expect(checkCertificate("--tls-cert", c.serverCert)).toMatchObject({ ok: true })
    expect(checkPrivateKey("--tls-key", c.serverKey, c.serverCert)).toMatchObject({ ok: true })
    const mismatch = checkPrivateKey("--tls-key", c.clientKey, c.serverCert)
    expect(mismatch).toMatchObject({ ok: false, detail: `does not belong to the certificate ${c.serverCert}` })
    expect(checkCertificate("--tls-cert", c.serverCert, new Date("2200-01-01"))).toMatchObject({ ok: false })
    expect(checkCertificate("--tls-cert", file("x.crt", "hello"))).toMatchObject({
      ok: false,
      detail: "is not a PEM certificate",
    })
    expect(checkPrivateKey("--tls-key", file("x.key", "secret-ish"))).toMatchObject({
      ok: false,
      detail: "is not a PEM private key",
    })
    expect(checkReadable("--ca-cert", join(dir, "missing.pem"))).toMatchObject({ ok: false, detail: "ENOENT" })
  })

  it("the tenants file: errors name the key and field, never the file's secrets", () => {
    const good = file(
      "t.json",
      JSON.stringify({
        k1: { AccessKey: "k1", EncryptionKey: "883EC28EBA9A36A386FA351FBC482B34", UserID: "u", targets: [] },
      }),
    )
    expect(checkTenants("--tenants", good)).toMatchObject({ ok: true, detail: "1 tenants" })
    const badKey = file(
      "b.json",
      JSON.stringify({ k1: { AccessKey: "k1", EncryptionKey: "short-secret-value", UserID: "u", targets: [] } }),
    )
    const f = checkTenants("--tenants", badKey)
    expect(f.ok).toBe(false)
    expect(f.detail).toContain('["k1"].EncryptionKey')
    expect(f.detail).not.toContain("short-secret-value")
  })

  it("brokers: host:port pairs only", () => {
    expect(checkBrokers("--brokers", "127.0.0.1:9092,b:9093")).toMatchObject({ ok: true })
    expect(checkBrokers("--brokers", "127.0.0.1")).toMatchObject({ ok: false })
    expect(checkBrokers("--brokers", " , ")).toMatchObject({ ok: false })
  })
})
