/**
 * What the router's thread and a line worker (LinePool.ts, src/programs/routerWorker.ts) pass each other, and the
 * packing of a batch's values into one transferable buffer. No Effect here: the worker's bundle stays small.
 */
import type { KeyEntry, PreparedRecords } from "./RouterLines.js"

/** A job as the worker takes it (routerWorker.ts). `keys` only when `version` is new to the worker. */
export interface LineJob {
  readonly values: ArrayBuffer
  /** Per record: start and length in `values`; length -1 for a record without a value. */
  readonly spans: Int32Array
  readonly decrypt: boolean
  readonly version: number
  readonly keys?: ReadonlyArray<readonly [string, KeyEntry]>
}

export type LineReply =
  | { readonly ok: true; readonly prepared: PreparedRecords }
  | { readonly ok: false; readonly error: string }

/** The values of a batch in one transferable buffer, with their spans. */
export const packValues = (values: ReadonlyArray<Uint8Array | null>): { buffer: ArrayBuffer; spans: Int32Array } => {
  let total = 0
  for (const v of values) if (v !== null) total += v.length
  const buffer = new ArrayBuffer(total)
  const bytes = new Uint8Array(buffer)
  const spans = new Int32Array(values.length * 2)
  let at = 0
  values.forEach((v, i) => {
    spans[2 * i] = at
    spans[2 * i + 1] = v === null ? -1 : v.length
    if (v !== null) {
      bytes.set(v, at)
      at += v.length
    }
  })
  return { buffer, spans }
}

/** The values of a packed batch again (views into `buffer`). */
export const unpackValues = (buffer: ArrayBuffer, spans: Int32Array): Array<Uint8Array | null> => {
  const out: Array<Uint8Array | null> = new Array(spans.length / 2)
  for (let i = 0; i < out.length; i++) {
    const length = spans[2 * i + 1]!
    out[i] = length < 0 ? null : Buffer.from(buffer, spans[2 * i]!, length)
  }
  return out
}
