import { describe, expect, it } from "@effect/vitest"
import { programVariable } from "../support/cleanEnv.js"

describe("the test environment", () => {
  it("holds none of the programs' variables, whatever the caller exported", () => {
    expect(Object.keys(process.env).filter(programVariable)).toEqual([])
  })

  it("keeps the harness's own variables and drops the programs'", () => {
    expect(programVariable("SPILLWAY_JWT_SECRET")).toBe(true)
    expect(programVariable("SPILLWAY_KAFKA_BROKERS")).toBe(true)
    expect(programVariable("ACCESS_TOKEN_FILE")).toBe(true)
    expect(programVariable("SPILLWAY_KAFKA_PORT")).toBe(false)
    expect(programVariable("SPILLWAY_KEEP_KAFKA")).toBe(false)
    expect(programVariable("PATH")).toBe(false)
  })
})
