/**
 * The text of one buffer block (the records of one input batch, BufferStore.ts): per record its tag, timestamp,
 * event id, record and byte count (`rowBytes`).
 *
 * Format 0: the five fields of each record, each followed by U+0000. JSON text (the record, as JSON.stringify
 * writes it) never holds a raw U+0000, nor does a decimal timestamp or byte count; a block whose tag or event id
 * holds one is written in format 1 instead: a JSON array of `[tag, ts, eventId, record, bytes]` arrays (also what
 * rows of older buffer versions are converted to).
 */
import type { NewRecord } from "./BufferStore.js"

export interface DecodedRecord extends NewRecord {
  readonly bytes: number
}

export const FORMAT_NUL = 0
export const FORMAT_JSON = 1

const NUL = "\u0000"

const str = (v: unknown, field: string): string => {
  if (typeof v !== "string") throw new TypeError(`buffer record field ${field} is not a string`)
  return v
}

/** The block text of `records` (each with its bytes), and its format. */
export const encodeBlock = (records: ReadonlyArray<DecodedRecord>): { data: string; format: number } => {
  // one flat string from the parts (a template per record would leave a rope of ten pieces each)
  const parts: Array<string | number> = new Array(5 * records.length + 1)
  for (let i = 0, j = 0; i < records.length; i++, j += 5) {
    const r = records[i]!
    const tag = str(r.tag, "tag")
    const eventId = str(r.eventId, "eventId")
    if (tag.includes(NUL) || eventId.includes(NUL)) return { data: encodeJson(records), format: FORMAT_JSON }
    parts[j] = tag
    parts[j + 1] = str(r.ts, "ts")
    parts[j + 2] = eventId
    parts[j + 3] = str(r.record, "record")
    parts[j + 4] = r.bytes
  }
  parts[5 * records.length] = ""
  return { data: parts.join(NUL), format: FORMAT_NUL }
}

const encodeJson = (records: ReadonlyArray<DecodedRecord>): string =>
  JSON.stringify(records.map((r) => [r.tag, r.ts, r.eventId, r.record, r.bytes]))

/** The records of a block, in order (`n` of them). Throws on a block that does not hold `n` records. */
export const decodeBlock = (data: string, format: number, n: number): Array<DecodedRecord> => {
  const out: Array<DecodedRecord> = new Array(n)
  if (format === FORMAT_JSON) {
    const rows = JSON.parse(data) as Array<[string, string, string, string, number]>
    if (!Array.isArray(rows) || rows.length !== n) throw new Error("buffer block does not hold its records")
    for (let i = 0; i < n; i++) {
      const [tag, ts, eventId, record, bytes] = rows[i]!
      out[i] = { tag, ts, eventId, record, bytes }
    }
    return out
  }
  const parts = data.split(NUL)
  if (parts.length !== 5 * n + 1) throw new Error("buffer block does not hold its records")
  for (let i = 0, j = 0; i < n; i++, j += 5)
    out[i] = { tag: parts[j]!, ts: parts[j + 1]!, eventId: parts[j + 2]!, record: parts[j + 3]!, bytes: +parts[j + 4]! }
  return out
}
