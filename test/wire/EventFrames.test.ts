import { assert, describe, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import protobuf from "protobufjs"
import { decodeBatchFrames, decodeEvent, decodeEventFrame, MalformedBatch } from "../../src/wire/EventFrames.js"
import { EventBatchCodec, EventCodec } from "../../src/wire/Wire.js"

const wireEvent = fc.record(
  {
    timestamp: fc.option(
      fc.record(
        {
          seconds: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map(String),
          nanos: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
        },
        { requiredKeys: [] },
      ),
      { nil: null },
    ),
    agent_id: fc.string({ maxLength: 40, unit: "grapheme" }),
    tag: fc.string({ maxLength: 20 }),
    message: fc.string({ maxLength: 300, unit: "binary" }),
    UserID: fc.string({ maxLength: 20 }),
    AccessKey: fc.string({ maxLength: 40 }),
    event_id: fc.string({ maxLength: 40 }),
  },
  { requiredKeys: [] },
)

/**
 * The plain encoding (`plain`), or one that is not: unknown fields, repeated fields, a field invalid as UTF-8, a
 * truncation, random bytes (`plain: false`, `irregular: true` for those that must never be clean).
 */
const encodings = (e: object) => {
  const plain = Buffer.from(EventCodec.encode(e as never))
  return fc.oneof(
    fc.constant({ bytes: plain, plain: true, irregular: false }),
    fc.tuple(fc.integer({ min: 8, max: 40 }), fc.uint8Array({ maxLength: 10 })).map(([field, bytes]) => ({
      bytes: Buffer.concat([
        plain,
        Buffer.from(
          protobuf.Writer.create()
            .uint32((field << 3) | 2)
            .bytes(bytes)
            .finish(),
        ),
      ]),
      plain: false,
      irregular: true,
    })),
    // Every field sent twice (protobuf: the last string wins, the timestamps merge).
    fc.constant({ bytes: Buffer.concat([plain, plain]), plain: false, irregular: plain.length > 0 }),
    fc.tuple(fc.integer({ min: 2, max: 7 }), fc.uint8Array({ minLength: 1, maxLength: 6 })).map(([field, bytes]) => ({
      bytes: Buffer.from(
        protobuf.Writer.create()
          .uint32((field << 3) | 2)
          .bytes(Uint8Array.from([0xff, ...bytes]))
          .finish(),
      ),
      plain: false,
      irregular: false,
    })),
    fc.nat({ max: 50 }).map((n) => ({ bytes: plain.subarray(0, n), plain: false, irregular: false })),
    fc.uint8Array({ maxLength: 60 }).map((b) => ({ bytes: Buffer.from(b), plain: false, irregular: false })),
  )
}

const decodeOrError = (f: () => unknown) => {
  try {
    return { ok: f() }
  } catch {
    return { error: true }
  }
}

describe("EventFrames", () => {
  it.prop(
    "decodeEventFrame gives EventCodec.decode's value, and clean bytes hold exactly it",
    [wireEvent.chain((e) => encodings(e))],
    ([{ bytes, plain, irregular }]) => {
      const expected = decodeOrError(() => EventCodec.decode(bytes))
      const got = decodeOrError(() => decodeEventFrame(bytes))
      assert.strictEqual("error" in got, "error" in expected)
      if ("ok" in got && "ok" in expected) {
        const frame = got.ok as ReturnType<typeof decodeEventFrame>
        assert.deepStrictEqual(frame.value, expected.ok)
        assert.strictEqual(frame.bytes, bytes)
        if (irregular) assert.isFalse(frame.clean)
        if (frame.clean) assert.isAtMost(bytes.length, EventCodec.encode(frame.value as never).length)
        if (plain && !JSON.stringify(frame.value).includes("\uFFFD")) assert.isTrue(frame.clean)
      }
    },
    { fastCheck: { numRuns: 1000 } },
  )

  it.prop(
    "decodeEvent (the router's) gives EventCodec.decode's value or refuses what it refuses",
    [wireEvent.chain((e) => encodings(e))],
    ([{ bytes }]) => {
      assert.deepStrictEqual(
        decodeOrError(() => decodeEvent(bytes)),
        decodeOrError(() => EventCodec.decode(bytes)),
      )
    },
    { fastCheck: { numRuns: 1000 } },
  )

  it("marks unknown, repeated and padded fields as not clean", () => {
    const base = { agent_id: "a", tag: "t", message: "m", UserID: "u", AccessKey: "k", event_id: "e" }
    const plain = Buffer.from(EventCodec.encode({ ...base, timestamp: { seconds: "1", nanos: 2 } }))
    assert.isTrue(decodeEventFrame(plain).clean)
    const unknown = Buffer.concat([plain, Buffer.from([(9 << 3) | 2, 1, 0x41])])
    assert.isFalse(decodeEventFrame(unknown).clean)
    const padded = Buffer.from([(4 << 3) | 2, 0x81, 0x00, 0x41])
    assert.isFalse(decodeEventFrame(padded).clean)
    assert.strictEqual((decodeEventFrame(padded).value as { message: string }).message, "A")
    const repeated = Buffer.concat([plain, Buffer.from([(4 << 3) | 2, 1, 0x41])])
    assert.isFalse(decodeEventFrame(repeated).clean)
    assert.strictEqual((decodeEventFrame(repeated).value as { message: string }).message, "A")
    // protobufjs refuses invalid UTF-8; a valid U+FFFD is decoded by protobufjs and encoded again.
    assert.throws(() => decodeEventFrame(Buffer.from([(4 << 3) | 2, 1, 0xff])))
    const replacement = Buffer.from([(4 << 3) | 2, 3, 0xef, 0xbf, 0xbd])
    assert.isFalse(decodeEventFrame(replacement).clean)
    assert.strictEqual((decodeEventFrame(replacement).value as { message: string }).message, "\uFFFD")
  })

  it.prop(
    "decodeBatchFrames gives EventBatchCodec.decode's batch_id and events, each event's bytes its own",
    [fc.string({ maxLength: 20 }), fc.array(wireEvent, { maxLength: 8 })],
    ([batch_id, events]) => {
      const bytes = Buffer.from(EventBatchCodec.encode({ batch_id, events: events as never }))
      const expected = EventBatchCodec.decode(bytes) as { batch_id: string; events: Array<unknown> }
      const got = decodeBatchFrames(bytes)
      assert.strictEqual(got.batch_id, expected.batch_id)
      assert.deepStrictEqual(
        got.events.map((f) => f.value),
        expected.events,
      )
      for (const f of got.events) assert.deepStrictEqual(EventCodec.decode(f.bytes), f.value)
    },
    { fastCheck: { numRuns: 300 } },
  )

  it("refuses malformed batches, keeping the batch_id read before the fault and no received bytes", () => {
    assert.throws(() => decodeBatchFrames(Buffer.from([(2 << 3) | 2, 50, 1, 2])), MalformedBatch)
    assert.throws(() => decodeBatchFrames(Buffer.from([(2 << 3) | 2, 3, (4 << 3) | 2, 9, 0x41])), MalformedBatch)
    const withId = Buffer.from([(1 << 3) | 2, 2, 0x62, 0x31, (2 << 3) | 2, 50, 1, 2])
    try {
      decodeBatchFrames(withId)
      assert.fail("decoded a malformed batch")
    } catch (e) {
      assert.instanceOf(e, MalformedBatch)
      assert.strictEqual((e as MalformedBatch).batch_id, "b1")
      assert.strictEqual((e as MalformedBatch).message, "malformed protobuf message")
    }
  })

  it("stops building events at the limit: ~4 million empty events under 8 MiB are counted, not decoded", () => {
    const n = Math.floor((8 * 1024 * 1024 - 16) / 2)
    const bytes = Buffer.alloc(n * 2 + 4)
    for (let i = 0; i < n; i++) bytes[i * 2] = 0x12 // field 2, length 0
    bytes.set([(1 << 3) | 2, 2, 0x62, 0x32], n * 2) // batch_id "b2" last
    const start = performance.now()
    const got = decodeBatchFrames(bytes)
    const ms = performance.now() - start
    assert.strictEqual(got.eventCount, n)
    assert.strictEqual(got.events.length, 0)
    assert.strictEqual(got.batch_id, "b2")
    assert.isBelow(ms, 2_000)
    const small = decodeBatchFrames(bytes.subarray(0, 20), 10)
    assert.strictEqual(small.events.length, 10)
    assert.strictEqual(small.eventCount, 10)
  })
})
