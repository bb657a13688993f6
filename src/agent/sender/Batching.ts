/** Pure batching rules of the sender: by size (events, bytes) and by time (linger). */
import type { BufferedRow } from "../buffer/BufferStore.js"

export interface BatchLimits {
  readonly maxEvents: number
  readonly maxBytes: number
  /** How long the oldest event may wait for a batch to fill up. */
  readonly lingerMs: number
}

export interface BatchPlan {
  readonly rows: ReadonlyArray<BufferedRow>
  /** Send now (full, or the oldest event waited long enough, or draining). */
  readonly ready: boolean
  /** When not ready: how long until the oldest event's linger ends. */
  readonly waitMs: number
}

/**
 * Takes the longest prefix of `available` (oldest first) within the limits; always at least one row,
 * so an event larger than `maxBytes` still goes out alone. It is ready when the limits cut it (more
 * rows are waiting), when the oldest row lingered `lingerMs`, or when `flush` is set.
 */
export const planBatch = (
  available: ReadonlyArray<BufferedRow>,
  limits: BatchLimits,
  now: number,
  flush = false,
): BatchPlan => {
  if (available.length === 0) return { rows: [], ready: false, waitMs: limits.lingerMs }
  let bytes = 0
  let n = 0
  for (const row of available) {
    if (n >= limits.maxEvents) break
    if (n > 0 && bytes + row.bytes > limits.maxBytes) break
    bytes += row.bytes
    n++
  }
  const rows = available.slice(0, n)
  const cut = n < available.length || n >= limits.maxEvents || bytes >= limits.maxBytes
  const age = now - rows[0]!.insertedAt
  const ready = flush || cut || age >= limits.lingerMs
  return { rows, ready, waitMs: ready ? 0 : Math.max(1, limits.lingerMs - age) }
}

/** gRPC status codes that mean "this batch will never be accepted as it is". */
export const isPermanentRejection = (code: number): boolean =>
  code === 3 /* INVALID_ARGUMENT */ || code === 7 /* PERMISSION_DENIED */
