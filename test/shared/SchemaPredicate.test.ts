/**
 * SchemaPredicate.ts: `predicateOf(schema)` gives `Schema.is(schema)`'s answer for every value, for the router's
 * record schemas and for the AST kinds it compiles; a schema with another kind falls back to `Schema.is` itself.
 */
import { assert, describe, it } from "@effect/vitest"
import { Schema } from "effect"
import fc from "fast-check"
import { Limits, WireEventOwn, WireEventSender, WireEventStruct } from "../../src/domain/Event.js"
import { predicateOf } from "../../src/shared/SchemaPredicate.js"

/** Strings near the rules' edges: lengths around the limits, access-key characters and others. */
const edgeString = fc.oneof(
  fc.string({ maxLength: 8 }),
  fc.stringMatching(/^[A-Za-z0-9._:-]{0,12}$/),
  fc.constantFrom("", " ", "a b", "-a", "tenant-a", "é", "a\u0000"),
  fc.integer({ min: Limits.eventId - 2, max: Limits.eventId + 2 }).map((n) => "e".repeat(n)),
  fc.integer({ min: Limits.accessKey - 2, max: Limits.accessKey + 2 }).map((n) => "k".repeat(n)),
)
const fieldValue = fc.oneof(edgeString, fc.integer(), fc.constantFrom(null, undefined, true, Number.NaN), fc.anything())
const timestamp = fc.oneof(
  fc.record({ seconds: fc.oneof(fc.string({ maxLength: 12 }), fc.integer(), fieldValue), nanos: fieldValue }),
  fc.record({ seconds: fc.string() }, { requiredKeys: [] }),
  fc.constantFrom(null, undefined, [], {}),
)
/** Wire-event-like objects: each field present or missing, valid or not; sometimes extra keys, sometimes arrays. */
const wireLike = fc.oneof(
  fc.record(
    {
      timestamp,
      agent_id: fieldValue,
      tag: fieldValue,
      message: fieldValue,
      UserID: fieldValue,
      AccessKey: fieldValue,
      event_id: fieldValue,
      extra: fc.anything(),
    },
    { requiredKeys: [] },
  ),
  fc.record({
    timestamp: fc.record({ seconds: fc.string({ maxLength: 11 }), nanos: fc.nat() }),
    agent_id: edgeString,
    tag: edgeString,
    message: edgeString,
    UserID: edgeString,
    AccessKey: edgeString,
    event_id: edgeString,
  }),
  fc.anything(),
)

const agrees = <A, I>(schema: Schema.Schema<A, I>, values: fc.Arbitrary<unknown>) => {
  const fast = predicateOf(schema)
  const is = Schema.is(schema)
  fc.assert(
    fc.property(values, (u) => fast(u) === is(u)),
    { numRuns: 3000 },
  )
}

describe("predicateOf", () => {
  it("agrees with Schema.is on the router's record checks", () => {
    agrees(WireEventOwn, wireLike)
    agrees(WireEventSender, wireLike)
    agrees(WireEventStruct, wireLike)
  })

  it("accepts a valid record and refuses each broken rule, like Schema.is", () => {
    const fast = predicateOf(WireEventStruct)
    const good = {
      timestamp: { seconds: "1621322656", nanos: 1 },
      agent_id: "a",
      tag: "t",
      message: "m",
      UserID: "u",
      AccessKey: "tenant-a",
      event_id: "",
    }
    assert.isTrue(fast(good))
    assert.isTrue(fast({ ...good, timestamp: null, event_id: undefined }))
    const { event_id: _, timestamp: __, ...required } = good
    assert.isTrue(fast(required))
    for (const broken of [
      { ...good, AccessKey: "tenant a" },
      { ...good, AccessKey: "" },
      { ...good, event_id: "e".repeat(Limits.eventId + 1) },
      { ...good, timestamp: { seconds: 1n, nanos: 0 } },
      { ...good, message: 1 },
      [good],
      null,
    ])
      assert.isFalse(fast(broken))
  })

  it("agrees on the kinds it compiles, and on empty and optional structs", () => {
    const s = Schema.Struct({
      a: Schema.Union(Schema.Literal("x", 1), Schema.Undefined),
      b: Schema.optional(Schema.Number.pipe(Schema.int(), Schema.between(0, 9))),
      c: Schema.optionalWith(Schema.String, { nullable: true }),
    })
    agrees(s, fc.oneof(fc.record({ a: fieldValue, b: fieldValue, c: fieldValue }, { requiredKeys: [] }), fc.anything()))
    agrees(Schema.Struct({}), fc.anything())
  })

  it("falls back to Schema.is for kinds it does not compile", () => {
    const s = Schema.Struct({ n: Schema.BigIntFromSelf, xs: Schema.Array(Schema.String) })
    agrees(s, fc.oneof(fc.record({ n: fc.oneof(fc.bigInt(), fieldValue), xs: fc.anything() }), fc.anything()))
  })
})
