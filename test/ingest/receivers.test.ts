/** Unit tests of the receivers' pure parts: msgpack framing, Forward modes and handshake, OTLP conversion. */
import { createHash } from "node:crypto"
import { gzipSync } from "node:zlib"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Either, FastCheck as fc, Layer, Redacted } from "effect"
import { pack, unpack } from "msgpackr"
import { AccessKey, UserID } from "../../src/domain/Event.js"
import { Tenant } from "../../src/domain/Tenant.js"
import { Auth } from "../../src/ingest/Auth.js"
import { forwardPassword } from "../../src/ingest/forward/ForwardPassword.js"
import {
  decodeEvents,
  EventTime,
  encode,
  newHandshake,
  type Ping,
  passwordMatches,
  sharedKeyMatches,
  timeNanos,
} from "../../src/ingest/forward/ForwardProtocol.js"
import { MsgpackFramer } from "../../src/ingest/forward/MsgpackFramer.js"
import { decodeJson, decodeProtobuf, encodeRequest, nestingWithin } from "../../src/ingest/otlp/OtlpCodec.js"
import { decodeExportRequest, toRecords } from "../../src/ingest/otlp/OtlpLogs.js"
import { makeRecord, tenantKey } from "../../src/ingest/receivers/TenantRecords.js"
import { batchSealer, openHex } from "../../src/shared/Crypto.js"
import { EventCodec } from "../../src/wire/Wire.js"

const limits = { maxRecords: 1000, maxDecompressedBytes: 1 << 20 }
const eventTimeBytes = (s: number, ns: number) => {
  const b = Buffer.alloc(10)
  b[0] = 0xd7
  b[1] = 0x00
  b.writeUInt32BE(s, 2)
  b.writeUInt32BE(ns, 6)
  return b
}

describe("MsgpackFramer", () => {
  it.prop(
    "cuts any sequence of values, however the bytes are split, into exactly those values",
    [
      fc.array(fc.jsonValue(), { minLength: 1, maxLength: 8 }),
      fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 20 }),
    ],
    ([values, cuts]) => {
      const bytes = Buffer.concat(values.map((v) => pack(v)))
      const framer = new MsgpackFramer(1 << 20)
      const out: Array<Buffer> = []
      let pos = 0
      let i = 0
      while (pos < bytes.length) {
        const n = cuts[i++ % cuts.length]!
        framer.push(bytes.subarray(pos, pos + n))
        pos += n
        for (let next = framer.next(); next !== "more"; next = framer.next()) {
          if (typeof next === "string") return false
          out.push(Buffer.from(next))
        }
      }
      return out.length === values.length && Buffer.concat(out).equals(bytes)
    },
  )

  it("refuses a value over the limit as soon as its header says so, and never-used bytes", () => {
    const f = new MsgpackFramer(100)
    f.push(Buffer.from([0xdb, 0x00, 0x10, 0x00, 0x00])) // str32 of 1 MiB
    assert.strictEqual(f.next(), "too_large")
    const g = new MsgpackFramer(100)
    g.push(Buffer.from([0xc1]))
    assert.strictEqual(g.next(), "malformed")
  })
})

describe("Forward modes", () => {
  const record = { msg: "hi", n: 1 }
  it("Message, Forward, PackedForward and CompressedPackedForward give the same events", () => {
    const entries = [
      [1_700_000_000, record],
      [1_700_000_001.5, record],
    ]
    const packed = Buffer.concat(entries.map((e) => pack(e)))
    const cases = [
      encode(["t", 1_700_000_000, record, { chunk: "c" }]),
      encode(["t", entries, { chunk: "c" }]),
      encode(["t", packed, { chunk: "c" }]),
      encode(["t", gzipSync(packed), { chunk: "c", compressed: "gzip" }]),
    ]
    const decoded = cases.map((c) => decodeEvents(unpackOne(c), limits))
    for (const d of decoded) {
      assert.isTrue(Either.isRight(d))
      if (Either.isRight(d)) {
        assert.strictEqual(d.right.tag, "t")
        assert.strictEqual(d.right.chunk, "c")
        assert.deepStrictEqual(d.right.entries[0], { time: 1_700_000_000n * 1_000_000_000n, record })
      }
    }
    if (Either.isRight(decoded[1]!)) assert.strictEqual(decoded[1].right.entries[1]!.time, 1_700_000_001_500_000_000n)
  })

  it("reads EventTime (ext 0) with its nanoseconds", () => {
    const msg = Buffer.concat([Buffer.from([0x93, 0xa1, 0x74]), eventTimeBytes(1_700_000_000, 123), pack({ a: 1 })])
    const d = decodeEvents(unpackOne(msg), limits)
    assert.isTrue(Either.isRight(d) && d.right.entries[0]!.time === 1_700_000_000_000_000_123n)
    assert.strictEqual(timeNanos(new EventTime(1, 2)), 1_000_000_002n)
  })

  it("refuses what is not a Forward message, too many entries and gzip bombs, with fixed reasons", () => {
    const bad = [
      ["t", 1, "not a map"],
      ["t", [[1, { a: 1 }], "x"]],
      ["t", Array.from({ length: 1001 }, () => [1, {}])],
      ["t", gzipSync(Buffer.alloc(2 << 20)), { compressed: "gzip" }],
      ["t", Buffer.from([1, 2, 3]), { compressed: "zstd" }],
      { not: "an array" },
    ]
    for (const m of bad) {
      const d = decodeEvents(unpackOne(encode(m)), limits)
      assert.isTrue(Either.isLeft(d))
      if (Either.isLeft(d)) assert.notInclude(d.left, "not a map")
    }
  })
})

const unpackOne = (b: Buffer): unknown => {
  const f = new MsgpackFramer(1 << 22)
  f.push(b)
  const v = f.next()
  if (typeof v === "string") throw new Error(v)
  return unpack(v)
}

describe("Forward handshake", () => {
  const sha = (...p: Array<string | Buffer>) => {
    const h = createHash("sha512")
    for (const x of p) h.update(x)
    return h.digest("hex")
  }
  it("checks the shared key and the password digests as the spec computes them", () => {
    const hs = newHandshake()
    const ping: Ping = [
      "PING",
      "client",
      "salt",
      sha("salt", "client", hs.nonce, "key"),
      "user",
      sha(hs.authSalt, "user", "pw"),
    ]
    assert.isTrue(sharedKeyMatches(ping, hs, "key"))
    assert.isFalse(sharedKeyMatches(ping, hs, "other"))
    assert.isTrue(passwordMatches(ping, hs, "pw"))
    assert.isFalse(passwordMatches(ping, hs, "pw2"))
    assert.isFalse(passwordMatches(ping, newHandshake(), "pw"))
  })

  it.effect("a tenant's Forward password is stable, per tenant, per secret, and not a JWT", () =>
    Effect.gen(function* () {
      const auth = yield* Auth
      const a1 = yield* forwardPassword(auth, AccessKey.make("tenant-a"))
      const a2 = yield* forwardPassword(auth, AccessKey.make("tenant-a"))
      const b = yield* forwardPassword(auth, AccessKey.make("tenant-b"))
      assert.strictEqual(a1, a2)
      assert.notStrictEqual(a1, b)
      assert.match(a1, /^sfp1\.[A-Za-z0-9_-]{43}$/)
      const other = yield* Effect.flatMap(Auth, (x) => forwardPassword(x, AccessKey.make("tenant-a"))).pipe(
        Effect.provide(Auth.layerFromSecrets("y".repeat(48))),
      )
      assert.notStrictEqual(a1, other)
    }).pipe(Effect.provide(Layer.orDie(Auth.layerFromSecrets("x".repeat(48))))),
  )
})

describe("OTLP conversion", () => {
  const key = "0123456789abcdef0123456789abcdef"
  const tk = tenantKey(
    Tenant.make({
      AccessKey: AccessKey.make("t-1"),
      EncryptionKey: Redacted.make(key),
      UserID: UserID.make("u-1"),
      targets: [],
    }),
  )
  const request = {
    resourceLogs: [
      {
        resource: {
          attributes: [
            { key: "host.name", value: { stringValue: "h" } },
            { key: "service.name", value: { stringValue: "s" } },
          ],
        },
        scopeLogs: [
          {
            logRecords: [
              { timeUnixNano: "5", body: { stringValue: "a" }, traceId: Buffer.from("0102", "hex").toString("base64") },
              { observedTimeUnixNano: "7", body: { intValue: "9007199254740993" } },
              { body: { bytesValue: "AAE=" } },
            ],
          },
        ],
      },
    ],
  }

  it("protobuf and JSON requests give the same events: times, host, service, encrypted JSON", () => {
    const viaProto = decodeProtobuf(encodeRequest(request))
    assert.isTrue(Either.isRight(viaProto))
    if (Either.isLeft(viaProto)) return
    const req = decodeExportRequest(viaProto.right.value)
    assert.isTrue(Either.isRight(req))
    if (Either.isLeft(req)) return
    const { records, rejected } = toRecords(req.right, viaProto.right.ids, tk, 11n, 1_000_000)
    assert.strictEqual(rejected, 0)
    const events = records.map(
      (r) =>
        EventCodec.decode(r.value) as {
          timestamp: { seconds: string; nanos: number }
          agent_id: string
          tag: string
          message: string
          UserID: string
        },
    )
    assert.deepStrictEqual(
      events.map((e) => e.timestamp.nanos),
      [5, 7, 11],
    )
    assert.isTrue(events.every((e) => e.agent_id === "h" && e.tag === "s" && e.UserID === "u-1"))
    const plain = events.map(
      (e) => JSON.parse(openHex(Buffer.from(key), e.message).toString()) as Record<string, unknown>,
    )
    assert.strictEqual(plain[0]!.trace_id, "0102")
    assert.strictEqual(plain[1]!.body, "9007199254740993")
    assert.strictEqual(plain[2]!.body, "AAE=")
    const json = decodeJson(
      Buffer.from(
        JSON.stringify({
          ...request,
          resourceLogs: [
            {
              ...request.resourceLogs[0],
              scopeLogs: [{ logRecords: [{ timeUnixNano: 5, body: { stringValue: "a" }, traceId: "0102" }] }],
            },
          ],
        }),
      ),
    )
    assert.isTrue(Either.isRight(json))
    if (Either.isLeft(json)) return
    const r2 = decodeExportRequest(json.right.value)
    if (Either.isLeft(r2)) return assert.fail("JSON request refused")
    const again = toRecords(r2.right, json.right.ids, tk, 11n, 1_000_000)
    const p2 = JSON.parse(
      openHex(Buffer.from(key), (EventCodec.decode(again.records[0]!.value) as { message: string }).message).toString(),
    )
    assert.strictEqual(p2.trace_id, "0102")
  })

  it("every kind of value becomes the same JSON from protobuf and from OTLP/JSON (a `__proto__` key is a key)", () => {
    const body = {
      kvlistValue: {
        values: [
          { key: "s", value: { stringValue: 'x"y\n' } },
          { key: "b", value: { boolValue: true } },
          { key: "i", value: { intValue: "-42" } },
          { key: "big", value: { intValue: "9223372036854775807" } },
          { key: "d", value: { doubleValue: 1.5 } },
          { key: "bytes", value: { bytesValue: "AAE=" } },
          { key: "__proto__", value: { arrayValue: { values: [{ stringValue: "a" }, { intValue: "1" }, {}] } } },
        ],
      },
    }
    const one = {
      resourceLogs: [
        {
          resource: { attributes: [{ key: "host.name", value: { stringValue: "h" } }] },
          scopeLogs: [
            {
              scope: { name: "sc", version: "1" },
              logRecords: [
                {
                  timeUnixNano: "5",
                  severityText: "WARN",
                  severityNumber: 13,
                  body,
                  attributes: [{ key: "k", value: { stringValue: "v" } }],
                  flags: 1,
                  eventName: "ev",
                },
              ],
            },
          ],
        },
      ],
    }
    const expected = {
      body: {
        s: 'x"y\n',
        b: true,
        i: -42,
        big: "9223372036854775807",
        d: 1.5,
        bytes: "AAE=",
        ["__proto__"]: ["a", 1, null],
      },
      severity_text: "WARN",
      severity_number: 13,
      attributes: { k: "v" },
      resource: { "host.name": "h" },
      scope: { name: "sc", version: "1" },
      flags: 1,
      event_name: "ev",
    }
    const viaProto = decodeProtobuf(encodeRequest(one))
    const viaJson = decodeJson(Buffer.from(JSON.stringify(one)))
    for (const decoded of [viaProto, viaJson]) {
      if (Either.isLeft(decoded)) return assert.fail("request refused")
      const req = decodeExportRequest(decoded.right.value)
      if (Either.isLeft(req)) return assert.fail("request refused by the schema")
      const { records } = toRecords(req.right, decoded.right.ids, tk, 11n, 1_000_000)
      const message = (EventCodec.decode(records[0]!.value) as { message: string }).message
      const text = openHex(Buffer.from(key), message).toString()
      // The same text, keys in the same order, as JSON.stringify of the whole object gives.
      assert.strictEqual(text, JSON.stringify(expected))
      assert.include(text, '"__proto__":["a",1,null]')
    }
  })

  it("the same record gives the same event id (a retried export can be deduplicated)", () => {
    const r = { timestamp: 1n, agentId: "h", tag: "t", json: '{"a":1}' }
    const id = (x: ReturnType<typeof makeRecord>) => (EventCodec.decode(x!.value) as { event_id: string }).event_id
    assert.strictEqual(
      id(makeRecord(tk, "otlp", r, 1e6, batchSealer(1))),
      id(makeRecord(tk, "otlp", r, 1e6, batchSealer(1))),
    )
    assert.notStrictEqual(
      id(makeRecord(tk, "otlp", r, 1e6, batchSealer(1))),
      id(makeRecord(tk, "otlp", { ...r, timestamp: 2n }, 1e6, batchSealer(1))),
    )
    assert.isUndefined(makeRecord(tk, "otlp", { ...r, json: "x".repeat(1000) }, 500, batchSealer(1)))
  })

  it("bounds nesting without recursion", () => {
    let deep: unknown = 1
    for (let i = 0; i < 100_000; i++) deep = [deep]
    assert.isFalse(nestingWithin(deep, 64))
    assert.isTrue(nestingWithin({ a: [{ b: 1 }] }, 64))
  })
})
