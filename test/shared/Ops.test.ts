/** The operations port: /healthz always, /readyz only once something registered a check and every check passes. */
import { createServer } from "node:net"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Logger, LogLevel } from "effect"
import { Health } from "../../src/shared/Health.js"
import { OpsServerLive } from "../../src/shared/Ops.js"

const freePort = () =>
  Effect.async<number>((resume) => {
    const s = createServer()
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port
      s.close(() => resume(Effect.succeed(port)))
    })
  })

const get = (port: number, path: string) =>
  Effect.promise(async () => {
    const r = await fetch(`http://127.0.0.1:${port}${path}`)
    return { status: r.status, body: await r.text() }
  })

describe("operations port", () => {
  it.scoped("/readyz is 503 while nothing is registered (starting), 200 once every check passes", () =>
    Effect.gen(function* () {
      const port = yield* freePort()
      yield* Layer.build(OpsServerLive({ host: "127.0.0.1", port }))
      expect((yield* get(port, "/healthz")).status).toBe(200)
      const starting = yield* get(port, "/readyz")
      expect(starting.status).toBe(503)
      expect(JSON.parse(starting.body)).toEqual({ ready: false, checks: [] })
      const health = yield* Health
      yield* health.register("kafka", Effect.succeed(true))
      expect((yield* get(port, "/readyz")).status).toBe(200)
      yield* health.register("tenants", Effect.succeed(false))
      const one = yield* get(port, "/readyz")
      expect(one.status).toBe(503)
      expect(JSON.parse(one.body).checks).toEqual([
        { name: "kafka", ok: true },
        { name: "tenants", ok: false },
      ])
    }).pipe(Effect.provide(Health.Default), Logger.withMinimumLogLevel(LogLevel.None)),
  )
})
