import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import { parseJsonQuietly } from "../../src/shared/Json.js"
import { configProviderFromEnvAndFile } from "../../src/shared/ProgramRuntime.js"

const configFile = (text: string) => {
  const file = join(mkdtempSync(join(tmpdir(), "spillway-config-")), "config.json")
  writeFileSync(file, text)
  return file
}

describe("SPILLWAY_CONFIG errors", () => {
  it("name the file and the place, never quote the file (it may hold a secret)", () => {
    for (const text of [
      '{"SPILLWAY_JWT_SECRET": hunter2-secret-value-0123456789}',
      '{"SPILLWAY_JWT_SECRET": "hunter2-secret-value-0123456789" "x"}',
      '{"SPILLWAY_JWT_SECRET": "hunter2-secret-value-0123456789",',
    ]) {
      const file = configFile(text)
      let message = ""
      try {
        configProviderFromEnvAndFile({ SPILLWAY_CONFIG: file })
      } catch (e) {
        message = e instanceof Error ? e.message : String(e)
      }
      expect(message).toContain(`SPILLWAY_CONFIG=${file}: is not valid JSON`)
      expect(message).not.toContain("hunter2")
      expect(message).not.toContain("SECRET")
    }
  })

  it("give line and column where the parser says where", () => {
    expect(parseJsonQuietly('{\n  "a": 1\n  "b": 2\n}')).toEqual(Either.left("is not valid JSON (line 3, column 3)"))
    expect(parseJsonQuietly('{"a": [1, 2]}')).toEqual(Either.right({ a: [1, 2] }))
  })
})
