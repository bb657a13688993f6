/**
 * `validate` of the built programs: every setting and file checked, the file or flag named, exit 1 when one is
 * wrong, and nothing contacted (the brokers and ingester named here do not exist).
 */
import { spawnSync } from "node:child_process"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { testCerts } from "../support/certs.js"

const program = (name: string) => join(import.meta.dirname, "..", "..", "dist", "programs", `${name}.js`)
const fixture = join(import.meta.dirname, "..", "fixtures", "access-tokens-db.json")
const run = (name: string, args: ReadonlyArray<string>, env: Record<string, string> = {}) => {
  const r = spawnSync(process.execPath, [program(name), "validate", ...args], {
    encoding: "utf8",
    env: { PATH: process.env.PATH ?? "", ...env },
    timeout: 20_000,
  })
  return { code: r.status, out: `${r.stdout}${r.stderr}` }
}
const dir = mkdtempSync(join(tmpdir(), "spillway-validate-"))

describe("validate", () => {
  it("router: a good configuration passes; a bad broker list and a missing tenants file fail by name", () => {
    const good = run("router", ["--tenants", fixture, "--output-dir", join(dir, "out"), "--brokers", "kafka-x:9092"])
    expect(good.out).toContain("spillway-router: configuration is valid")
    expect(good.out).toContain("ok   code cache (dist/programs/*.bundle.cache): used")
    expect(good.code).toBe(0)
    // Under a V8 flag of the operator's, V8 refuses the build's cache: said, not failed.
    const flagged = run(
      "router",
      ["--tenants", fixture, "--output-dir", join(dir, "out"), "--brokers", "kafka-x:9092"],
      { NODE_OPTIONS: "--max-old-space-size=300" },
    )
    expect(flagged.code).toBe(0)
    expect(flagged.out).toContain("ok   code cache (dist/programs/*.bundle.cache): refused by V8")
    const bad = run("router", ["--tenants", join(dir, "none.json"), "--brokers", "nohostport"])
    expect(bad.code).toBe(1)
    expect(bad.out).toContain("FAIL --brokers (SPILLWAY_KAFKA_BROKERS): must list host:port pairs")
    expect(bad.out).toContain(`FAIL --tenants (SPILLWAY_TENANTS_FILE) ${join(dir, "none.json")}: ENOENT`)
  })

  it("ingester and router: a heap setting out of range fails by name; `consumer` refuses to start on it", () => {
    const args = ["--tenants", fixture, "--output-dir", join(dir, "out"), "--brokers", "kafka-x:9092"]
    const router = run("router", args, { SPILLWAY_V8_YOUNG_GROWTH: "9" })
    expect(router.code).toBe(1)
    expect(router.out).toContain("FAIL heap (SPILLWAY_V8_*): SPILLWAY_V8_YOUNG_GROWTH must be an integer 0 to 4")
    const ingester = run("ingester", ["--tenants", fixture], { SPILLWAY_V8_OLD_GROWTH_PERCENT: "lots" })
    expect(ingester.code).toBe(1)
    expect(ingester.out).toContain(
      "FAIL heap (SPILLWAY_V8_*): SPILLWAY_V8_OLD_GROWTH_PERCENT must be an integer 0 to 400",
    )
    const consumer = spawnSync(process.execPath, [program("router"), "consumer", ...args], {
      encoding: "utf8",
      env: { PATH: process.env.PATH ?? "", SPILLWAY_V8_OLD_GROWTH_PERCENT: "-1" },
      timeout: 20_000,
    })
    expect(consumer.status).toBe(2)
    expect(consumer.stderr).toContain("SPILLWAY_V8_OLD_GROWTH_PERCENT must be an integer 0 to 400")
  })

  it("agent: a heap setting out of range fails by name in validate, and the agent refuses to start on it", () => {
    const env = { ACCESS_KEY: "k", ACCESS_TOKEN: "x.y.z", SPILLWAY_V8_OLD_GROWTH_PERCENT: "401" }
    const args = ["--insecure", "--buffer-dir", join(dir, "agent-heap"), "--tail", join(dir, "*.log")]
    const checked = run("agent", args, env)
    expect(checked.code).toBe(1)
    expect(checked.out).toContain(
      "FAIL heap (SPILLWAY_V8_*): SPILLWAY_V8_OLD_GROWTH_PERCENT must be an integer 0 to 400",
    )
    const started = spawnSync(process.execPath, [program("agent"), ...args], {
      encoding: "utf8",
      env: { PATH: process.env.PATH ?? "", ...env },
      timeout: 20_000,
    })
    expect(started.status).toBe(2)
    expect(started.stderr).toContain("spillway-agent: SPILLWAY_V8_OLD_GROWTH_PERCENT must be an integer 0 to 400")
  })

  it("agent: a good configuration passes; a CA file that is no certificate fails by name", async () => {
    const certs = await testCerts()
    const token = join(dir, "token")
    writeFileSync(token, "x.y.z")
    const common = ["--token-file", token, "--buffer-dir", join(dir, "buffer"), "--tail", join(dir, "*.log")]
    const good = run("agent", ["--ca-cert", certs.caCert, "--ingester", "ingester-x:7777", ...common], {
      ACCESS_KEY: "k",
    })
    expect(good.out).toContain("spillway-agent: configuration is valid")
    expect(good.code).toBe(0)
    const notPem = join(dir, "ca.pem")
    writeFileSync(notPem, "not a certificate")
    const bad = run("agent", ["--ca-cert", notPem, ...common], { ACCESS_KEY: "k" })
    expect(bad.code).toBe(1)
    expect(bad.out).toMatch(/FAIL .*ca\.pem/)
  })

  it("ingester: a good configuration passes; a key of another certificate and a missing secret fail by name", async () => {
    const certs = await testCerts()
    const secret = join(dir, "jwt.secret")
    writeFileSync(secret, "a-test-secret-that-is-long-enough-0123456789")
    const base = ["--tenants", fixture, "--brokers", "kafka-x:9092", "--tls-cert", certs.serverCert]
    const good = run("ingester", [...base, "--tls-key", certs.serverKey], { SPILLWAY_JWT_SECRET_FILE: secret })
    expect(good.out).toContain("spillway-ingester: configuration is valid")
    expect(good.code).toBe(0)
    const bad = run("ingester", [...base, "--tls-key", certs.clientKey])
    expect(bad.code).toBe(1)
    expect(bad.out).toContain(
      `FAIL --tls-key (SPILLWAY_TLS_KEY) ${certs.clientKey}: does not belong to the certificate`,
    )
    expect(bad.out).toMatch(/FAIL JWT secret \(SPILLWAY_JWT_SECRET or SPILLWAY_JWT_SECRET_FILE\)/)
    expect(bad.out).not.toContain("a-test-secret")
  })
})
