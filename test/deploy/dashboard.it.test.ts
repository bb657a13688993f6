/**
 * The Grafana dashboard (deploy/grafana/spillway-dashboard.json) queries only metrics the programs export: every
 * `spillway_*` name in its queries is on the `/metrics` of a running ingester, router or agent (the built programs).
 */
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { startAgent } from "../support/agent.js"
import { fixtureTenantsFile, startIngester, tenantA } from "../support/ingester.js"
import { uniqueTopic } from "../support/kafka.js"
import { startRouter } from "../support/router.js"

const dashboard = join(import.meta.dirname, "..", "..", "deploy", "grafana", "spillway-dashboard.json")

/** The metric names a PromQL expression uses (histogram series reduced to the histogram's name). */
const namesIn = (expr: string): Array<string> =>
  [...expr.matchAll(/\bspillway_[a-z0-9_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, ""))

const exported = (text: string): Set<string> => new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!))

describe("the Grafana dashboard", () => {
  it("queries only metrics that the running programs export", async () => {
    const panels = (
      JSON.parse(readFileSync(dashboard, "utf8")) as {
        panels: Array<{ title: string; targets: Array<{ expr: string }> }>
      }
    ).panels
    const queried = new Set(panels.flatMap((p) => p.targets.flatMap((t) => namesIn(t.expr))))
    expect(queried.size).toBeGreaterThan(10)

    const topic = uniqueTopic("dashboard")
    const ingester = await startIngester({ topic })
    const router = await startRouter({ topic, group: `${topic}-g`, tenantsFile: fixtureTenantsFile })
    const dir = mkdtempSync(join(tmpdir(), "spillway-dashboard-"))
    const tokenFile = join(dir, "token")
    writeFileSync(tokenFile, await ingester.tokenFor(tenantA))
    const agent = await startAgent({
      ingester: ingester.address,
      caCert: ingester.certs.caCert,
      tokenFile,
      accessKey: tenantA,
      bufferDir: join(dir, "buffer"),
      tail: [join(dir, "*.log")],
    })
    try {
      const all = new Set([
        ...exported(await ingester.metrics()),
        ...exported(await router.metrics()),
        ...exported(await agent.metrics()),
      ])
      const missing = [...queried].filter((n) => !all.has(n))
      expect(missing).toEqual([])
      // One vocabulary: every exported name has the prefix of its program.
      expect([...all].filter((n) => !/^spillway_(ingester|router|agent)_/.test(n))).toEqual([])
    } finally {
      await agent.stop()
      await router.stop()
      await ingester.stop()
    }
  }, 120_000)
})
