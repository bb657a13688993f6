/**
 * SIGHUP on the built agent: it re-reads its token file and keeps running (Node's default would end it); a token
 * file that became unreadable is refused and logged, and the agent goes on.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { startAgent } from "../support/agent.js"
import { testCerts } from "../support/certs.js"

describe("SIGHUP", () => {
  it("agent: re-reads the token file, refuses a missing one, and keeps running", async () => {
    const certs = await testCerts()
    const dir = mkdtempSync(join(tmpdir(), "spillway-sighup-"))
    const tokenFile = join(dir, "token")
    writeFileSync(tokenFile, "x.y.z")
    const agent = await startAgent({
      ingester: "127.0.0.1:1", // nothing listens: the agent keeps retrying meanwhile
      caCert: certs.caCert,
      tokenFile,
      bufferDir: join(dir, "buffer"),
      tail: [join(dir, "*.log")],
    })
    try {
      agent.child().kill("SIGHUP")
      await agent.waitForOutput(/token file read; new connections use it/, 10_000)
      rmSync(tokenFile)
      agent.child().kill("SIGHUP")
      await agent.waitForOutput(/token file refused/, 10_000)
      expect(agent.child().exitCode).toBe(null)
      expect((await fetch(`http://127.0.0.1:${agent.metricsPort}/healthz`)).status).toBe(200)
    } finally {
      await agent.stop()
    }
  }, 30_000)
})
