/**
 * The rejected folder (`<buffer-dir>/rejected/`): rows that can never be delivered as they are (refused for good
 * by the ingester, or too large for any message) are written there as JSON, then deleted from the buffer.
 */
import { mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import * as grpc from "@grpc/grpc-js"
import { Effect } from "effect"
import * as Metrics from "../../shared/Metrics.js"
import * as M from "../AgentMetrics.js"
import type { BufferedRow } from "../buffer/BufferStore.js"
import type { DiskBufferShape } from "../buffer/DiskBuffer.js"
import { SendError } from "./Connection.js"

export interface Rejection {
  /** The batch id, or a name for rows set aside by the agent itself. */
  readonly id: string
  readonly code: number
  readonly detail: string
  readonly reason: "ingester" | "oversized"
  readonly rows: ReadonlyArray<BufferedRow>
}

const fileName = (r: Rejection) => `${new Date().toISOString().replaceAll(":", "-")}-${r.id}.json`

/** Writes the rows to a new file in `dir`; returns its path. */
export const saveRejected = (dir: string, r: Rejection) => {
  const file = join(dir, fileName(r))
  return Effect.try({
    try: () => {
      mkdirSync(dir, { recursive: true })
      const body = {
        batch_id: r.id,
        code: grpc.status[r.code] ?? r.code,
        detail: r.detail,
        rejected_at: new Date().toISOString(),
        events: r.rows.map((x) => ({ event_id: x.eventId, tag: x.tag, ts: x.ts, record: x.record })),
      }
      writeFileSync(file, `${JSON.stringify(body, null, 1)}\n`)
      return file
    },
    catch: (e) => new SendError({ kind: "unavailable", detail: `cannot write ${file}: ${String(e)}` }),
  }).pipe(
    Effect.tapError((e) =>
      Effect.logError("cannot write rejected events; they stay in the buffer").pipe(
        Effect.annotateLogs({ error: e.detail }),
      ),
    ),
  )
}

/** Row ids as contiguous ranges (a batch is one range; rows set aside one by one may be several). */
const ranges = (rows: ReadonlyArray<BufferedRow>): Array<readonly [number, number]> =>
  rows.map((r) => [r.id, r.id] as const)

/**
 * Saves the rows to the rejected folder, then deletes them from the buffer (in that order: a crash between the
 * two leaves them in both places, never in neither). Fails, leaving them buffered, when either step fails.
 */
export const rejectRows = (buffer: DiskBufferShape, r: Rejection, whole: boolean) =>
  Effect.gen(function* () {
    const file = yield* saveRejected(join(buffer.dir, "rejected"), r)
    const spans = whole ? [[r.rows[0]!.id, r.rows[r.rows.length - 1]!.id] as const] : ranges(r.rows)
    let n = 0
    for (const [first, last] of spans)
      n += (yield* buffer
        .remove(first, last)
        .pipe(Effect.mapError((e) => new SendError({ kind: "unavailable", detail: `buffer ${e.op}: ${e.detail}` })))).n
    yield* Metrics.inc(M.eventsRejected, n, { reason: r.reason })
    if (r.reason === "ingester") yield* Metrics.inc(M.batchesRejected)
    yield* Effect.logError(
      r.reason === "ingester"
        ? "ingester rejected a batch; moved to the rejected folder"
        : "an event can never fit in the ingester's message limit; moved to the rejected folder",
    ).pipe(Effect.annotateLogs({ batch: r.id, code: grpc.status[r.code] ?? r.code, detail: r.detail, events: n, file }))
  })
