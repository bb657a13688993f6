/** LineJob.ts: a batch's values packed into one transferable buffer for a line worker, and back. */
import { assert, describe, it } from "@effect/vitest"
import { packValues, unpackValues } from "../../src/route/LineJob.js"

describe("LineJob packing", () => {
  it("gives back the same values, nulls and empty values included", () => {
    const values = [Buffer.from("abc"), null, new Uint8Array(0), Buffer.from([0, 255, 7])]
    const { buffer, spans } = packValues(values)
    const back = unpackValues(buffer, spans)
    assert.strictEqual(back.length, 4)
    assert.deepStrictEqual(Buffer.from(back[0]!), Buffer.from("abc"))
    assert.strictEqual(back[1], null)
    assert.strictEqual(back[2]!.length, 0)
    assert.deepStrictEqual(Buffer.from(back[3]!), Buffer.from([0, 255, 7]))
  })
})
