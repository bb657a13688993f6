/**
 * Helpers of the destination integration tests: the real servers of scripts/servers.mjs (started when
 * not running, stopped at the end only when started here) and batches of real router lines.
 */
import { randomBytes } from "node:crypto"
import { type Server, start, stop } from "../../../scripts/servers.mjs"
import type { AccessKey, UserID } from "../../../src/domain/Event.js"
import type { DeliveryBatch } from "../../../src/route/destinations/Delivery.js"
import { formatLine } from "../../../src/route/RouterLines.js"

const log = (which: string) => (m: string) => process.stderr.write(`[${which}] ${m}\n`)

/** Starts `which` unless it runs; the returned function stops it only if this call started it. */
export const useServer = async (
  which: Server,
): Promise<{ readonly url: string; readonly release: () => Promise<void> }> => {
  const r = await start(which, { log: log(which) })
  return {
    url: r.url,
    release: async () => {
      if (r.started) await stop(which)
    },
  }
}

export const restart = async (which: Server): Promise<void> => {
  await start(which, { log: log(which) })
}

export const stopServer = async (which: Server): Promise<void> => {
  await stop(which)
}

/** A unique, lowercase name part for this run. */
export const runId = (): string => `${Date.now().toString(36)}${randomBytes(3).toString("hex")}`

export interface BatchSpec {
  readonly userId: string
  readonly topic?: string
  readonly partition?: number
  readonly firstOffset: number
  readonly count: number
  /** Default: every event but each third has an event_id. */
  readonly eventId?: (i: number) => string | undefined
  /** The decrypted message object of event `i` (default: a small object). */
  readonly message?: (i: number) => unknown
  readonly timestampMs?: number
}

/** A batch of `count` real router lines (`formatLine`) of one tenant, offsets from `firstOffset`. */
export const makeBatch = (spec: BatchSpec): DeliveryBatch => {
  const topic = spec.topic ?? "fb-kafka"
  const t0 = spec.timestampMs ?? Date.UTC(2026, 11, 1, 10, 0, 0)
  const lines: Array<string> = []
  const events: Array<DeliveryBatch["events"][number]> = []
  for (let i = 0; i < spec.count; i++) {
    const offset = String(spec.firstOffset + i)
    const eventId = spec.eventId ? spec.eventId(i) : i % 3 === 2 ? undefined : `${spec.userId}-${offset}`
    const ms = t0 + i
    lines.push(
      formatLine(
        {
          timestamp: `${new Date(ms).toISOString().slice(0, 19)}.${String((ms % 1000) * 1_000_000).padStart(9, "0")}Z`,
          agentId: "agent-1",
          tag: "app.log",
          message: "",
          userId: spec.userId as UserID,
          accessKey: `key-${spec.userId}` as AccessKey,
          eventId: eventId ?? "",
        },
        spec.message ? spec.message(i) : { level: "info", msg: `event ${offset} of ${spec.userId}`, n: i },
      ),
    )
    events.push({ eventId, userId: spec.userId, timestampMs: ms, offset })
  }
  return {
    topic,
    partition: spec.partition ?? 0,
    firstOffset: String(spec.firstOffset),
    lastOffset: String(spec.firstOffset + spec.count - 1),
    lines,
    events,
  }
}

const WORDS = "GET POST /api/v1/orders /healthz user session cache miss hit upstream timeout retry 200 404 500 ms bytes"
  .split(" ")
  .concat(Array.from({ length: 64 }, (_, i) => `id${(i * 2654435761) % 100000}`))

/** A log-like message of about `bytes` bytes (words and numbers from a fixed LCG: compresses like logs, ~5x). */
export const paddedMessage =
  (bytes: number) =>
  (i: number): unknown => {
    let x = (i * 2654435761 + 12345) >>> 0
    let msg = `request ${i}`
    while (msg.length < bytes) {
      x = (Math.imul(x, 1664525) + 1013904223) >>> 0
      msg += ` ${WORDS[x % WORDS.length]}=${x % 9973}`
    }
    return { level: "info", n: i, msg }
  }

/** Prints a throughput line (events/s, MB/s of NDJSON) for the report. */
export const reportThroughput = (what: string, events: number, bytes: number, ms: number): void => {
  console.log(
    `[throughput] ${what}: ${events} events, ${(bytes / 1e6).toFixed(1)} MB NDJSON in ${(ms / 1000).toFixed(2)} s = ` +
      `${Math.round((events * 1000) / ms)} events/s, ${((bytes * 1000) / ms / 1e6).toFixed(1)} MB/s`,
  )
}
