/**
 * RouterLines.ts `prepareRecords` for a batch: the sender fields (agent_id, tag, UserID, AccessKey) are checked
 * once per run of records that repeat them, yet every record is held to every field rule.
 */
import { assert, describe, it } from "@effect/vitest"
import { decodeRecord, type KeyEntry, prepareRecords, reasonCodes } from "../../src/route/RouterLines.js"
import { sealHex } from "../../src/shared/Crypto.js"
import { EventCodec } from "../../src/wire/Wire.js"

const KEY = Buffer.from("883EC28EBA9A36A386FA351FBC482B34")
const keys = new Map<string, KeyEntry>([
  ["tenant-a", new Uint8Array(KEY)],
  ["tenant-b", null],
])

const value = (fields: Record<string, unknown>) =>
  EventCodec.encode({
    timestamp: { seconds: "1621322656", nanos: 100476100 },
    agent_id: "agent-1",
    tag: "cpu",
    message: sealHex(KEY, Buffer.from(JSON.stringify({ n: 1 }))),
    UserID: "u-a",
    AccessKey: "tenant-a",
    event_id: "",
    ...fields,
  } as never)

const reasons = (values: ReadonlyArray<Uint8Array | null>) =>
  Array.from(prepareRecords(values, true, keys).reasons, (c) => reasonCodes[c])

describe("decodeRecord", () => {
  it("reads a value given as a view into a larger buffer as it reads the same bytes in a Buffer", () => {
    for (const v of [value({}), Buffer.from(JSON.stringify({ AccessKey: 5 })), Buffer.from([0xff, 0xff, 0xff, 0x01])]) {
      const view = Uint8Array.from([7, 7, ...v, 7]).subarray(2, 2 + v.length)
      assert.isFalse(Buffer.isBuffer(view))
      assert.deepStrictEqual(decodeRecord(view), decodeRecord(v))
    }
  })
})

describe("prepareRecords (one batch)", () => {
  it("refuses a record whose sender field breaks a rule between records that repeat a valid sender", () => {
    const good = value({})
    const badKey = value({ AccessKey: "tenant a!" })
    const longTag = value({ tag: "t".repeat(10_000) })
    assert.deepStrictEqual(reasons([good, badKey, good, longTag, good]), ["", "undecodable", "", "undecodable", ""])
  })

  it("gives each record the answer decodeRecord gives it alone, whatever came before it in the batch", () => {
    const values = [
      value({}),
      value({ AccessKey: "tenant-b", UserID: "u-b", message: JSON.stringify({ plain: true }) }),
      value({ UserID: "u".repeat(5_000) }),
      value({ agent_id: "agent-2" }),
      value({ message: "zz" }),
      null,
      value({}),
    ]
    const prepared = prepareRecords(values, true, keys)
    values.forEach((v, i) => {
      const alone = decodeRecord(v)
      assert.strictEqual(prepared.reasons[i] === 1, alone._tag === "Left", `record ${i}`)
    })
    assert.deepStrictEqual(
      Array.from(prepared.reasons, (c) => reasonCodes[c]),
      ["", "", "undecodable", "", "undecryptable", "undecodable", ""],
    )
    assert.deepStrictEqual(prepared.tenants, ["tenant-a", "tenant-b"])
    assert.include(prepared.texts[1]!, '"message":{"plain":true}')
  })
})
