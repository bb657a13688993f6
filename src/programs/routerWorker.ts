/**
 * A line worker of the router (src/route/LinePool.ts): started by the router, never by hand. Takes one batch at a
 * time (its values packed in one transferred buffer), runs RouterLines.ts `prepareRecords` on it (decode, decrypt,
 * format: pure and synchronous) and answers with the result; its two typed arrays are transferred back.
 */
import { parentPort } from "node:worker_threads"
import { type LineJob, type LineReply, unpackValues } from "../route/LineJob.js"
import { type KeyEntry, prepareRecords } from "../route/RouterLines.js"

let keys: ReadonlyMap<string, KeyEntry> = new Map()

parentPort?.on("message", (job: LineJob) => {
  let reply: LineReply
  try {
    if (job.keys !== undefined) keys = new Map(job.keys)
    const prepared = prepareRecords(unpackValues(job.values, job.spans), job.decrypt, keys)
    reply = { ok: true, prepared }
  } catch (e) {
    reply = { ok: false, error: e instanceof Error ? e.name : "error" }
  }
  const transfer = reply.ok ? [reply.prepared.reasons.buffer, reply.prepared.tenantIndex.buffer] : []
  parentPort?.postMessage(reply, transfer as Array<ArrayBuffer>)
})
