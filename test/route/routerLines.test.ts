/**
 * RouterLines.ts `prepareRecords` for a batch: the sender fields (agent_id, tag, UserID, AccessKey) are checked
 * once per run of records that repeat them, yet every record is held to every field rule.
 */
import { assert, describe, it } from "@effect/vitest"
import { Either, FastCheck as fc } from "effect"
import {
  decodeRecord,
  formatLine,
  formatLineWithJson,
  type KeyEntry,
  prepareRecords,
  reasonCodes,
} from "../../src/route/RouterLines.js"
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

describe("the decrypted message in its line", () => {
  const sealed = (plain: string) => value({ message: sealHex(KEY, Buffer.from(plain)), event_id: "e-1" })
  const lineOf = (plain: string) => {
    const prepared = prepareRecords([sealed(plain)], true, keys)
    assert.strictEqual(reasonCodes[prepared.reasons[0]!], "", plain)
    return prepared.texts[0]!
  }

  it("is the plaintext as written: the same line as parsing and formatting it again, for compact JSON", () => {
    const event = decodeRecord(sealed("{}"))
    assert.isTrue(Either.isRight(event))
    if (Either.isLeft(event)) return
    fc.assert(
      fc.property(fc.jsonValue(), fc.boolean(), (v, withId) => {
        const e = withId ? event.right : { ...event.right, eventId: "" }
        const text = JSON.stringify(v)
        assert.strictEqual(formatLineWithJson(e, text), formatLine(e, JSON.parse(text)))
      }),
    )
    assert.strictEqual(lineOf('{"n":1}'), formatLine(event.right, { n: 1 }))
  })

  it("keeps the digits of an integer beyond 2^53 and the sender's spacing; a line break is formatted away", () => {
    const big = lineOf('{"id": 12345678901234567890, "s":"a\\nb"}')
    assert.include(big, '"message":{"id": 12345678901234567890, "s":"a\\nb"}}')
    assert.strictEqual(JSON.parse(big).message.s, "a\nb")
    // JSON allows CR and LF between tokens; an NDJSON line may not hold them.
    const broken = lineOf('{\r\n  "n": 1,\n  "m": [2]\n}')
    assert.notInclude(broken, "\n")
    assert.notInclude(broken, "\r")
    assert.include(broken, '"message":{"n":1,"m":[2]}}')
  })

  it("refuses a plaintext that is not JSON, as before", () => {
    for (const plain of ["", "{", "nope", "\ufeff{}", '{"a":1} x'])
      assert.strictEqual(reasonCodes[prepareRecords([sealed(plain)], true, keys).reasons[0]!], "undecryptable", plain)
  })
})
