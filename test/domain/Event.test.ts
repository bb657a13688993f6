import { assert, describe, it } from "@effect/vitest"
import { Either, FastCheck as fc, Schema } from "effect"
import {
  AccessKey,
  checkWireEvent,
  EpochNanos,
  EpochNanosFromWire,
  Event,
  formatRfc3339Nano,
  Limits,
  makeWireEventChecker,
  repairTimestamp,
  toWireEvent,
  type WireEvent,
  WireEventOwn,
  WireEventSender,
} from "../../src/domain/Event.js"
import { predicateOf } from "../../src/shared/SchemaPredicate.js"

const decodeEvent = Schema.decodeUnknownEither(Event)
const decodeTimestamp = Schema.decodeUnknownEither(EpochNanosFromWire)
const encodeTimestamp = Schema.encodeSync(EpochNanosFromWire)

const wire = (overrides: Partial<Record<keyof WireEvent, unknown>> = {}): Record<string, unknown> => ({
  timestamp: { seconds: "1621322656", nanos: 100476100 },
  agent_id: "947fab0b6949",
  tag: "cpu",
  message: "{}",
  UserID: "2134558",
  AccessKey: "9c60f26f-5b6c-4c80-b5f5-625bf965b6a6",
  ...overrides,
})

describe("timestamps", () => {
  it("repairs the proof of concept's nanoseconds-in-seconds (from shared/seed/sample-router-output.log)", () => {
    // As the PoC's plugin sent them: Unix nanoseconds in `seconds`, a truncated int32 in `nanos`.
    const samples = [
      { seconds: "1621322656100476100", nanos: -1758894908, expect: "2021-05-18T07:24:16.100476100Z" },
      { seconds: "1621322657093313900", nanos: -766057108, expect: "2021-05-18T07:24:17.093313900Z" },
      { seconds: Number("1621322656100476100"), nanos: 0, expect: undefined }, // as a JS number: low digits lost
    ]
    for (const s of samples) {
      const n = repairTimestamp(s)
      assert.isDefined(n)
      if (s.expect !== undefined) assert.strictEqual(formatRfc3339Nano(EpochNanos.make(n!)), s.expect)
      else assert.strictEqual(formatRfc3339Nano(EpochNanos.make(n!)).slice(0, 23), "2021-05-18T07:24:16.100")
    }
    const decoded = decodeTimestamp({ seconds: "1621322656100476100", nanos: -1758894908 })
    assert.deepStrictEqual(decoded, Either.right(EpochNanos.make(1621322656100476100n)))
  })

  it("decodes a normal timestamp and formats RFC 3339 with nanoseconds", () => {
    const n = Either.getOrThrow(decodeTimestamp({ seconds: "1621322656", nanos: 100476100 }))
    assert.strictEqual(n, 1621322656100476100n)
    assert.strictEqual(formatRfc3339Nano(n), "2021-05-18T07:24:16.100476100Z")
    assert.strictEqual(formatRfc3339Nano(EpochNanos.make(0n)), "1970-01-01T00:00:00.000000000Z")
    assert.strictEqual(formatRfc3339Nano(EpochNanos.make(1n)), "1970-01-01T00:00:00.000000001Z")
    assert.strictEqual(formatRfc3339Nano(EpochNanos.make(999_999_999n)), "1970-01-01T00:00:00.999999999Z")
  })

  it.prop(
    "normal timestamps round-trip through the wire shape",
    [fc.bigInt({ min: 0n, max: 99_999_999_999n }), fc.integer({ min: 0, max: 999_999_999 }), fc.boolean()],
    ([seconds, nanos, asNumber]) => {
      const ts = { seconds: asNumber ? Number(seconds) : seconds.toString(), nanos }
      const n = Either.getOrThrow(decodeTimestamp(ts))
      assert.strictEqual(n, seconds * 1_000_000_000n + BigInt(nanos))
      assert.deepStrictEqual(encodeTimestamp(n), { seconds: seconds.toString(), nanos })
      // RFC 3339 keeps every digit: the fraction is the nanos, the rest is the second.
      const text = formatRfc3339Nano(n)
      assert.match(text, /^\d{4,}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$/)
      assert.strictEqual(text.slice(-10, -1), nanos.toString().padStart(9, "0"))
      assert.strictEqual(Date.parse(`${text.slice(0, 19)}Z`) / 1000, Number(seconds))
    },
  )

  it("refuses timestamps that are not a Unix time", () => {
    for (const ts of [
      { seconds: "-1", nanos: 0 },
      { seconds: "12", nanos: 1_000_000_000 },
      { seconds: "12", nanos: -1 },
      { seconds: "12", nanos: 0.5 },
      { seconds: "twelve", nanos: 0 },
      { seconds: "1.5", nanos: 0 },
    ]) {
      assert.isTrue(Either.isLeft(decodeTimestamp(ts)), JSON.stringify(ts))
    }
  })
})

describe("Event", () => {
  it("decodes the wire shape and encodes back", () => {
    const event = Either.getOrThrow(decodeEvent(wire({ event_id: "e-1" })))
    assert.strictEqual(event.timestamp, 1621322656100476100n)
    assert.strictEqual(event.agentId, "947fab0b6949")
    assert.strictEqual(event.accessKey, "9c60f26f-5b6c-4c80-b5f5-625bf965b6a6")
    assert.strictEqual(event.userId, "2134558")
    assert.strictEqual(event.eventId, "e-1")
    assert.deepStrictEqual<unknown>(Schema.encodeSync(Event)(event), {
      ...wire(),
      timestamp: { seconds: "1621322656", nanos: 100476100 },
      event_id: "e-1",
    })
  })

  it("repairs a PoC timestamp inside an event and stamps a missing one", () => {
    const poc = Either.getOrThrow(
      decodeEvent(wire({ timestamp: { seconds: "1621322656100476100", nanos: -1758894908 } })),
    )
    assert.strictEqual(poc.timestamp, 1621322656100476100n)
    const before = BigInt(Date.now()) * 1_000_000n
    for (const timestamp of [undefined, null]) {
      const stamped = Either.getOrThrow(decodeEvent(wire({ timestamp })))
      assert.isTrue(stamped.timestamp >= before)
    }
    assert.strictEqual(Either.getOrThrow(decodeEvent(wire())).eventId, "")
  })

  it("refuses an oversized message, and accepts one at the limit", () => {
    assert.isTrue(Either.isLeft(decodeEvent(wire({ message: "x".repeat(Limits.message + 1) }))))
    assert.isTrue(Either.isRight(decodeEvent(wire({ message: "x".repeat(Limits.message) }))))
    assert.isTrue(Either.isLeft(decodeEvent(wire({ tag: "t".repeat(Limits.tag + 1) }))))
    assert.isTrue(Either.isLeft(decodeEvent(wire({ agent_id: "a".repeat(Limits.agentId + 1) }))))
  })

  it("refuses bad access keys", () => {
    for (const key of [
      "",
      "../etc/passwd",
      "-leading-dash",
      "has space",
      "a/b",
      "k".repeat(Limits.accessKey + 1),
      42,
    ]) {
      assert.isTrue(Either.isLeft(decodeEvent(wire({ AccessKey: key }))), JSON.stringify(key))
    }
    const message = Either.match(decodeEvent(wire({ AccessKey: "a/b" })), {
      onLeft: (e) => e.message,
      onRight: () => "",
    })
    assert.include(message, "an access key is letters, digits")
  })

  it.prop("any valid access key is accepted", [AccessKey], ([key]) => {
    assert.isTrue(Either.isRight(decodeEvent(wire({ AccessKey: key }))))
  })

  it("refuses missing fields and wrong types", () => {
    for (const field of ["agent_id", "tag", "message", "UserID", "AccessKey"] as const) {
      const w = wire()
      delete w[field]
      assert.isTrue(Either.isLeft(decodeEvent(w)), field)
    }
    assert.isTrue(Either.isLeft(decodeEvent(wire({ message: 7 }))))
    assert.isTrue(Either.isLeft(decodeEvent(null)))
  })
})

describe("fast paths agree with the full Schema", () => {
  const decodeFull = Schema.decodeUnknownEither(Event, { errors: "first", onExcessProperty: "ignore" })
  const encodeFull = Schema.encodeSync(Event)
  const wireLike = fc.record(
    {
      timestamp: fc.option(
        fc.record({
          seconds: fc.oneof(
            fc.bigInt({ min: -2n, max: 10n ** 19n }).map(String),
            fc.integer({ min: -2, max: 2_000_000_000 }),
            fc.constant("not a number"),
          ),
          nanos: fc.oneof(fc.integer({ min: -1, max: 1_000_000_000 }), fc.double()),
        }),
        { nil: null },
      ),
      agent_id: fc.string({ maxLength: 300 }),
      tag: fc.oneof(fc.string({ maxLength: 300 }), fc.integer()),
      message: fc.string({ maxLength: 200 }),
      UserID: fc.string({ maxLength: 300 }),
      AccessKey: fc.oneof(
        fc.constantFrom("9c60f26f-5b6c-4c80-b5f5-625bf965b6a6", "", "bad key!", "-x"),
        fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,300}$/),
      ),
      event_id: fc.string({ maxLength: 200 }),
    },
    { requiredKeys: ["agent_id", "message", "UserID", "AccessKey"] },
  )

  it.prop(
    "toWireEvent is the Schema encoding",
    [wireLike],
    ([u]) => {
      const full = decodeFull(u)
      if (Either.isRight(full)) assert.deepStrictEqual(toWireEvent(full.right), encodeFull(full.right))
    },
    { fastCheck: { numRuns: 300 } },
  )

  it.prop(
    "checkWireEvent accepts and refuses exactly what the full decode does, with the same values",
    [fc.oneof({ weight: 9, arbitrary: wireLike }, { weight: 1, arbitrary: fc.anything() })],
    ([u]) => {
      const checked = checkWireEvent(u)
      const full = decodeFull(u)
      assert.strictEqual(checked._tag, full._tag)
      if (Either.isRight(checked) && Either.isRight(full)) {
        const ts = (u as { timestamp?: { seconds: unknown } | null }).timestamp
        const hasTs = ts != null
        const wire = toWireEvent(checked.right)
        const expected = encodeFull(full.right)
        if (!hasTs) {
          assert.isFalse(checked.right.asSent)
          assert.deepStrictEqual({ ...wire, timestamp: null }, { ...expected, timestamp: null })
        } else {
          assert.deepStrictEqual(wire, expected)
          // As sent: the timestamp the client sent is the one Kafka gets.
          if (checked.right.asSent) assert.strictEqual(BigInt(wire.timestamp!.seconds), BigInt(ts.seconds as string))
        }
      }
    },
    { fastCheck: { numRuns: 500 } },
  )

  it.prop(
    "makeWireEventChecker answers as checkWireEvent over a run of events that share senders",
    [
      fc.array(
        fc.tuple(
          fc.oneof({ weight: 9, arbitrary: wireLike }, { weight: 1, arbitrary: fc.anything() }),
          fc.option(fc.nat({ max: 2 })),
        ),
        { maxLength: 12 },
      ),
    ],
    ([items]) => {
      // Events that take the sender fields of an earlier one (by index), so that the checker's memo is used.
      const values = items.map(([u]) => u)
      items.forEach(([u, from], i) => {
        const src = from === null ? undefined : values[Math.max(0, i - 1 - from)]
        if (src !== undefined && typeof src === "object" && src !== null && typeof u === "object" && u !== null)
          for (const k of ["agent_id", "tag", "UserID", "AccessKey"])
            (u as Record<string, unknown>)[k] = (src as Record<string, unknown>)[k]
      })
      // Schema.is's checks (the default), and predicateOf's, as the ingester passes them (makeEventChecker)
      const checks = [
        makeWireEventChecker(),
        makeWireEventChecker(predicateOf(WireEventOwn), predicateOf(WireEventSender)),
      ]
      for (const u of values) {
        const b = checkWireEvent(u)
        for (const check of checks) {
          const a = check(u)
          assert.strictEqual(a._tag, b._tag)
          if (Either.isRight(a) && Either.isRight(b))
            assert.deepStrictEqual({ ...a.right, timestamp: 0n }, { ...b.right, timestamp: 0n })
        }
      }
    },
    { fastCheck: { numRuns: 300 } },
  )
})
