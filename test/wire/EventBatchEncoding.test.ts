import { assert, describe, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { type AccessKey, EpochNanos, type EventId, toWireEvent, type UserID } from "../../src/domain/Event.js"
import { encodeEventBatch } from "../../src/wire/EventBatchEncoding.js"
import { EventBatchCodec } from "../../src/wire/Wire.js"

const text = (maxLength: number) => fc.string({ maxLength, unit: "grapheme" })

const batch = fc.record({
  batchId: fc.string({ minLength: 1, maxLength: 40 }),
  sender: fc.record({ agentId: text(40), userId: text(20), accessKey: text(40) }),
  events: fc.array(
    fc.record({
      // tags repeat (events after the first that share its tag are copied from its encoding)
      tag: fc.oneof(text(30), fc.constantFrom("app", "täg", "")),
      ts: fc
        .oneof(
          fc.bigInt({ min: 0n, max: 10n ** 19n - 1n }),
          fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
          fc.constantFrom(0n, 1n, 127n, 128n, 999_999_999n, 1_000_000_000n, -1n, -1_000_000_001n),
        )
        .map(String),
      eventId: text(40),
      message: fc.oneof(
        text(300),
        fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b).toString("hex")),
      ),
    }),
    { maxLength: 20 },
  ),
})

/** What the agent sent before: `toWireEvent` objects through protobufjs. */
const viaProtobufjs = (b: typeof batch extends fc.Arbitrary<infer T> ? T : never) =>
  Buffer.from(
    EventBatchCodec.encode({
      batch_id: b.batchId,
      events: b.events.map((e) =>
        toWireEvent({
          timestamp: EpochNanos.make(BigInt(e.ts)),
          agentId: b.sender.agentId,
          tag: e.tag,
          message: e.message,
          userId: b.sender.userId as UserID,
          accessKey: b.sender.accessKey as AccessKey,
          eventId: e.eventId as EventId,
        }),
      ),
    }),
  )

describe("encodeEventBatch", () => {
  it.prop("writes the bytes protobufjs writes for the same batch", [batch], ([b]) => {
    const bytes: Buffer = encodeEventBatch(
      b.batchId,
      b.sender,
      b.events,
      b.events.map((e) => e.message),
    )
    assert.deepStrictEqual(bytes, viaProtobufjs(b))
    return true
  })

  it("decodes to the batch's fields", () => {
    const rows = [
      { tag: "app", ts: "1764613800123456789", eventId: "e-1", message: "00ff" },
      { tag: "täg", ts: "-1500000000", eventId: "e-2", message: '{"log":"ü"}' },
    ]
    const sender = { agentId: "host", userId: "u", accessKey: "k" }
    const decoded = EventBatchCodec.decode(
      encodeEventBatch(
        "b-1",
        sender,
        rows,
        rows.map((r) => r.message),
      ),
    ) as {
      batch_id: string
      events: Array<Record<string, unknown>>
    }
    assert.strictEqual(decoded.batch_id, "b-1")
    assert.deepStrictEqual(decoded.events[0], {
      timestamp: { seconds: "1764613800", nanos: 123456789 },
      agent_id: "host",
      tag: "app",
      message: "00ff",
      UserID: "u",
      AccessKey: "k",
      event_id: "e-1",
    })
    assert.deepStrictEqual(decoded.events[1]!.timestamp, { seconds: "-1", nanos: -500000000 })
    assert.strictEqual(decoded.events[1]!.tag, "täg")
    assert.strictEqual(decoded.events[1]!.message, '{"log":"ü"}')
  })
})
