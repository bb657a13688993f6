/**
 * The agent's encoder of `api.EventBatch`: a batch written straight into one Buffer from the buffered rows' own
 * strings, byte for byte what `EventBatchCodec.encode` writes for the same batch of `toWireEvent` objects (fields in
 * field-number order, proto3: empty strings and zeros left out, the timestamp always written), without the wire objects, protobufjs' message objects
 * and writer operations per event, or the copy `requestSerialize` makes of protobufjs' output. The gRPC serializer
 * of `SendEventBatches` (Wire.ts) passes such bytes through as they are.
 */

/** One event of a batch: what varies per event (the sender's fields are the batch's). */
export interface BatchEventFields {
  readonly tag: string
  /** Unix nanoseconds as a decimal string (the buffer's `ts`). */
  readonly ts: string
  readonly eventId: string
}

/** The fields every event of a batch shares. */
export interface BatchSender {
  readonly agentId: string
  readonly userId: string
  readonly accessKey: string
}

/** An encoded `api.EventBatch` (a Buffer the serializer sends as it is). */
export type EncodedEventBatch = Buffer & { readonly EncodedEventBatch: unique symbol }

const NANOS = 1_000_000_000n
const PLAIN_NANOS = /^\d{1,19}$/

/** Bytes of a varint of a non-negative integer below 2^53. */
const varintSize = (v: number): number => {
  let n = 1
  while (v >= 0x80) {
    v = Math.floor(v / 128)
    n++
  }
  return n
}

const writeVarint = (out: Buffer, pos: number, v: number): number => {
  while (v >= 0x80) {
    out[pos++] = (v % 128) | 0x80
    v = Math.floor(v / 128)
  }
  out[pos++] = v
  return pos
}

/** A varint of a 64-bit two's complement integer (protobufjs' int64, and int32 when negative), as bytes. */
const varint64 = (v: bigint): Array<number> => {
  let u = BigInt.asUintN(64, v)
  const bytes: Array<number> = []
  while (u >= 0x80n) {
    bytes.push(Number(u & 0x7fn) | 0x80)
    u >>= 7n
  }
  bytes.push(Number(u))
  return bytes
}

/**
 * The `google.protobuf.Timestamp` body of a `ts` that is not a plain decimal of at most 19 digits (a negative
 * time): seconds and nanos as `toWireEvent` derives them (truncated division), through BigInt.
 */
const timestampSlow = (ts: string): Buffer => {
  const n = BigInt(ts) // throws on a value that is not an integer, as toWireEvent's BigInt does
  const seconds = n / NANOS
  const nanos = n % NANOS
  return Buffer.from([
    ...(seconds === 0n ? [] : [0x08, ...varint64(seconds)]),
    ...(nanos === 0n ? [] : [0x10, ...varint64(nanos)]),
  ])
}

/** Field 1 of an Event: the Timestamp, from its numbers or (`slow`) its bytes. */
const writeTimestamp = (out: Buffer, pos: number, seconds: number, nanos: number, slow: Buffer | undefined): number => {
  out[pos++] = 0x0a
  if (slow !== undefined) {
    pos = writeVarint(out, pos, slow.length)
    return pos + slow.copy(out, pos)
  }
  pos = writeVarint(out, pos, numberFieldSize(seconds) + numberFieldSize(nanos))
  if (seconds !== 0) {
    out[pos++] = 0x08
    pos = writeVarint(out, pos, seconds)
  }
  if (nanos === 0) return pos
  out[pos++] = 0x10
  return writeVarint(out, pos, nanos)
}

/** Bytes of a varint field (proto3: a zero is not written). */
const numberFieldSize = (v: number): number => (v === 0 ? 0 : 1 + varintSize(v))

/** Bytes of a string field (proto3: an empty one is not written). */
const strSize = (fieldBytes: number): number => (fieldBytes === 0 ? 0 : 1 + varintSize(fieldBytes) + fieldBytes)

const writeStr = (out: Buffer, pos: number, tag: number, s: string, bytes: number): number => {
  if (bytes === 0) return pos
  out[pos++] = tag
  pos = writeVarint(out, pos, bytes)
  return pos + out.write(s, pos, bytes, "utf8")
}

/** Bytes of a message field: written even when empty (protobufjs writes a set message field). */
const messageSize = (fieldBytes: number): number => 1 + varintSize(fieldBytes) + fieldBytes

/** A string field as it is written (its tag, length and UTF-8), empty for an empty string (proto3). */
const stringField = (tag: number, s: string): Buffer => {
  const bytes = Buffer.byteLength(s)
  const out = Buffer.allocUnsafe(strSize(bytes))
  writeStr(out, 0, tag, s, bytes)
  return out
}

/**
 * A string field of `s` whose UTF-8 is `bytes` long: copied as Latin-1 when that many characters are all ASCII (a
 * string of n UTF-16 units has n UTF-8 bytes only then; the hex of an encrypted message always is), which skips
 * the UTF-8 encoder's checks.
 */
const writeAscii = (out: Buffer, pos: number, tag: number, s: string, bytes: number): number => {
  if (bytes === 0 || bytes !== s.length) return writeStr(out, pos, tag, s, bytes)
  out[pos++] = tag
  pos = writeVarint(out, pos, bytes)
  return pos + out.write(s, pos, bytes, "latin1")
}

/**
 * `api.EventBatch { batch_id, events }` of `rows` with their `messages` (the `message` field of each, encrypted or
 * not), in two passes over the batch: sizes, then one allocation and the writes. The sender's fields, the same in
 * every event, are encoded once and copied into each (agent_id is field 2, UserID and AccessKey fields 5 and 6, so
 * two copies), and so is the first event's tag for the events that share it.
 */
export const encodeEventBatch = (
  batchId: string,
  sender: BatchSender,
  rows: ReadonlyArray<BatchEventFields>,
  messages: ReadonlyArray<string>,
): EncodedEventBatch => {
  const agentField = stringField(0x12, sender.agentId)
  const userFields = Buffer.concat([stringField(0x2a, sender.userId), stringField(0x32, sender.accessKey)])
  const shared = agentField.length + userFields.length
  const n = rows.length
  const commonTag = n === 0 ? "" : rows[0]!.tag
  const tagField = stringField(0x1a, commonTag)
  // per event: seconds, nanos (fast path) or -1 with the bytes in `slow`; then body, tag, message, event_id bytes
  const sizes = new Float64Array(n * 6)
  const slow = new Map<number, Buffer>()
  const idBytes = Buffer.byteLength(batchId)
  let total = strSize(idBytes)
  for (let i = 0; i < n; i++) {
    const row = rows[i]!
    const at = i * 6
    let stamp: number
    if (PLAIN_NANOS.test(row.ts)) {
      const cut = row.ts.length - 9
      const seconds = cut > 0 ? Number(row.ts.slice(0, cut)) : 0
      const nanos = cut > 0 ? Number(row.ts.slice(cut)) : Number(row.ts)
      sizes[at] = seconds
      sizes[at + 1] = nanos
      stamp = numberFieldSize(seconds) + numberFieldSize(nanos)
    } else {
      const bytes = timestampSlow(row.ts)
      slow.set(i, bytes)
      sizes[at] = -1
      stamp = bytes.length
    }
    const tag = row.tag === commonTag ? -1 : Buffer.byteLength(row.tag)
    const message = Buffer.byteLength(messages[i]!)
    const eventId = Buffer.byteLength(row.eventId)
    const body =
      messageSize(stamp) + shared + (tag === -1 ? tagField.length : strSize(tag)) + strSize(message) + strSize(eventId)
    sizes[at + 2] = body
    sizes[at + 3] = tag
    sizes[at + 4] = message
    sizes[at + 5] = eventId
    total += 1 + varintSize(body) + body
  }
  const out = Buffer.allocUnsafe(total)
  let pos = writeStr(out, 0, 0x0a, batchId, idBytes)
  for (let i = 0; i < n; i++) {
    const row = rows[i]!
    const at = i * 6
    out[pos++] = 0x12
    pos = writeVarint(out, pos, sizes[at + 2]!)
    pos = writeTimestamp(out, pos, sizes[at]!, sizes[at + 1]!, slow.get(i))
    out.set(agentField, pos)
    pos += agentField.length
    const tag = sizes[at + 3]!
    if (tag === -1) {
      out.set(tagField, pos)
      pos += tagField.length
    } else pos = writeStr(out, pos, 0x1a, row.tag, tag)
    pos = writeAscii(out, pos, 0x22, messages[i]!, sizes[at + 4]!)
    out.set(userFields, pos)
    pos += userFields.length
    pos = writeAscii(out, pos, 0x3a, row.eventId, sizes[at + 5]!)
  }
  if (pos !== total) throw new Error(`encodeEventBatch: wrote ${pos} of ${total} bytes`) // a bug, never input
  return out as EncodedEventBatch
}
