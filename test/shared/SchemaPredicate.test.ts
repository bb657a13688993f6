/**
 * SchemaPredicate.ts: `predicateOf(schema)` gives `Schema.is(schema)`'s answer for every value, for the router's
 * record schemas and for the AST kinds it compiles; a schema with another kind falls back to `Schema.is` itself.
 */
import { assert, describe, it } from "@effect/vitest"
import { Schema } from "effect"
import fc from "fast-check"
import { Limits, WireEventOwn, WireEventSender, WireEventStruct } from "../../src/domain/Event.js"
import { ExportRequest } from "../../src/ingest/otlp/OtlpLogs.js"
import { predicateOf } from "../../src/shared/SchemaPredicate.js"

/** Strings near the rules' edges: lengths around the limits, access-key characters and others. */
const edgeString = fc.oneof(
  fc.string({ maxLength: 8 }),
  fc.stringMatching(/^[A-Za-z0-9._:-]{0,12}$/),
  fc.constantFrom("", " ", "a b", "-a", "tenant-a", "é", "a\u0000"),
  fc.integer({ min: Limits.eventId - 2, max: Limits.eventId + 2 }).map((n) => "e".repeat(n)),
  fc.integer({ min: Limits.accessKey - 2, max: Limits.accessKey + 2 }).map((n) => "k".repeat(n)),
)
const fieldValue = fc.oneof(
  edgeString,
  fc.integer(),
  fc.constantFrom(null, undefined, true, 0, Number.NaN),
  fc.anything(),
)
/** Mostly a valid value, sometimes any field value: a value with one broken field among valid ones. */
const mostly = <T>(valid: fc.Arbitrary<T>) =>
  fc.oneof({ weight: 6, arbitrary: valid }, { weight: 1, arbitrary: fieldValue as fc.Arbitrary<unknown> })
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
    agrees(Schema.Tuple(Schema.String, Schema.Number), fc.oneof(fc.tuple(fieldValue, fieldValue), fc.anything()))
  })

  it("agrees on booleans, arrays (holes too) and recursion through Schema.suspend", () => {
    interface Tree {
      readonly name?: string | undefined
      readonly on?: boolean | undefined
      readonly kids?: ReadonlyArray<Tree> | undefined
    }
    const Tree: Schema.Schema<Tree> = Schema.Struct({
      name: Schema.optional(Schema.String.pipe(Schema.maxLength(3))),
      on: Schema.optional(Schema.Boolean),
      kids: Schema.optional(Schema.Array(Schema.suspend((): Schema.Schema<Tree> => Tree))),
    })
    const tree = fc.letrec((tie) => ({
      node: fc.oneof(
        { depthSize: "small", maxDepth: 5 },
        fc.record(
          { name: mostly(fc.string({ maxLength: 4 })), on: mostly(fc.boolean()), kids: tie("kids") },
          { requiredKeys: [] },
        ),
        fieldValue,
      ),
      kids: mostly(fc.array(tie("node"), { maxLength: 3 })),
    })).node
    agrees(Tree, tree)
    const fast = predicateOf(Tree)
    const holey: Array<unknown> = [{ name: "a" }]
    holey[2] = { on: true }
    assert.isFalse(fast({ kids: holey }))
    assert.isFalse(fast({ kids: [{ kids: [{ on: 0 }] }] }))
    assert.isTrue(fast({ kids: [{ kids: [{ kids: [{ name: "abc", on: false }] }] }] }))
  })

  it("agrees with Schema.is on OTLP export requests", () => {
    const anyValue = fc.letrec((tie) => ({
      value: fc.oneof(
        { depthSize: "small", maxDepth: 4 },
        fc.record({ stringValue: mostly(fc.string({ maxLength: 4 })) }, { requiredKeys: [] }),
        fc.record({ boolValue: mostly(fc.boolean()) }),
        fc.record({ intValue: mostly(fc.oneof(fc.string({ maxLength: 26 }), fc.integer())) }),
        fc.record({ doubleValue: mostly(fc.oneof(fc.double(), fc.string({ maxLength: 18 }))) }),
        fc.record({ bytesValue: mostly(fc.base64String({ maxLength: 8 })) }),
        fc.record({ arrayValue: mostly(fc.record({ values: mostly(fc.array(tie("value"), { maxLength: 3 })) })) }),
        fc.record({ kvlistValue: mostly(fc.record({ values: mostly(fc.array(tie("kv"), { maxLength: 3 })) })) }),
        fieldValue,
      ),
      kv: fc.record({ key: mostly(fc.string({ maxLength: 4 })), value: tie("value") }, { requiredKeys: [] }),
    }))
    const attributes = mostly(fc.array(anyValue.kv, { maxLength: 3 }))
    const logRecord = fc.record(
      {
        timeUnixNano: mostly(fc.oneof(fc.string({ maxLength: 26 }), fc.integer())),
        severityNumber: mostly(fc.oneof(fc.integer(), fc.string({ maxLength: 34 }))),
        severityText: mostly(fc.string({ maxLength: 4 })),
        body: anyValue.value,
        attributes,
        flags: mostly(fc.integer()),
        traceId: mostly(fc.string({ maxLength: 66 })),
        spanId: mostly(fc.string({ maxLength: 34 })),
        eventName: mostly(fc.string({ maxLength: 4 })),
      },
      { requiredKeys: [] },
    )
    const scope = fc.record({ name: mostly(fc.string()), version: mostly(fc.string()) }, { requiredKeys: [] })
    const scopeLogs = fc.record(
      { scope: mostly(scope), logRecords: mostly(fc.array(logRecord, { maxLength: 3 })) },
      { requiredKeys: [] },
    )
    const resourceLogs = fc.record(
      {
        resource: mostly(fc.record({ attributes }, { requiredKeys: [] })),
        scopeLogs: mostly(fc.array(scopeLogs, { maxLength: 2 })),
      },
      { requiredKeys: [] },
    )
    const request = fc.record({ resourceLogs: mostly(fc.array(resourceLogs, { maxLength: 2 })) }, { requiredKeys: [] })
    agrees(ExportRequest, fc.oneof(request, fc.anything()))
    // the generator reaches both answers often
    const is = Schema.is(ExportRequest)
    const sample = fc.sample(request, { numRuns: 500, seed: 1 })
    assert.isAbove(sample.filter(is).length, 100)
    assert.isAbove(sample.filter((u) => !is(u)).length, 100)
  })
})
