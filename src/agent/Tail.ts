/**
 * File tailing for the `tail`, `docker` and `kubernetes` inputs.
 *
 * Every `pollMs` the globs are expanded and each file is known by its identity (dev:inode), not
 * its name. A file's read position is its checkpoint in the disk buffer, written in the same
 * transaction as the events read up to it, so it only counts what the buffer holds; after a crash
 * the file is read again from there.
 * - Rotation (rename, then a new file under the name): the old inode is still open and is read to
 *   its end (a last line without a newline included), then closed and its checkpoint dropped; the
 *   new inode has no checkpoint and is read from 0.
 * - Truncation (size below the position): read again from 0.
 * - Backpressure: before each read the tailer waits for room in the buffer, so a full buffer
 *   leaves the file unread (its position does not move).
 */
import { randomUUID } from "node:crypto"
import { closeSync, fstatSync, openSync, readdirSync, readSync, statSync } from "node:fs"
import { dirname, join } from "node:path"
import { Effect, Schedule } from "effect"
import { globSync } from "tinyglobby"
import { type NewRecord, rowBytes } from "./BufferStore.js"
import { DiskBuffer } from "./DiskBuffer.js"

export interface ParsedLine {
  readonly tag: string
  readonly record: Record<string, unknown>
  /** Unix nanoseconds from the line itself, if it carries a time. */
  readonly ts?: bigint | undefined
}

export interface TailSpec {
  /** Input name (metrics label). */
  readonly input: string
  /** Unique among the inputs (checkpoint keys start with it); defaults to `input`. */
  readonly id?: string
  readonly globs: ReadonlyArray<string>
  /** Turns one line (without its newline) of `path` into a record; undefined skips the line. */
  readonly parse: (line: string, path: string) => ParsedLine | undefined
  readonly pollMs: number
  /** Bytes read per step (and per buffer transaction). */
  readonly chunkBytes?: number
  /** A line longer than this (at most chunkBytes) is cut into pieces of this size. */
  readonly maxLineBytes?: number
}

interface Tracked {
  readonly fileId: string
  path: string
  fd: number
  offset: number
}

const nowNs = () => BigInt(Date.now()) * 1_000_000n + (process.hrtime.bigint() % 1_000_000n)

/** Parses an RFC 3339 time with up to 9 fractional digits into Unix nanoseconds. */
export const parseRfc3339Nanos = (s: string): bigint | undefined => {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/.exec(s)
  if (!m) return undefined
  const ms = Date.parse(`${m[1]}${m[3]}`)
  if (Number.isNaN(ms)) return undefined
  return BigInt(ms) * 1_000_000n + BigInt((m[2] ?? "").padEnd(9, "0"))
}

export const toNewRecord = (p: ParsedLine): NewRecord => ({
  tag: p.tag,
  ts: (p.ts ?? nowNs()).toString(),
  eventId: randomUUID(),
  record: JSON.stringify(p.record),
})

/**
 * Splits `buf` into complete lines. Returns the lines, where each ends in `buf` (newline included)
 * and how many bytes they used; a trailing piece without a newline is left unless `final` or it
 * exceeds `maxLine` (then it is cut into `maxLine` pieces).
 */
export const splitLines = (
  buf: Buffer,
  final: boolean,
  maxLine: number,
): { lines: Array<string>; ends: Array<number>; consumed: number } => {
  const lines: Array<string> = []
  const ends: Array<number> = []
  let start = 0
  while (start < buf.length) {
    const nl = buf.indexOf(10, start)
    if (nl === -1 || nl - start > maxLine) {
      const rest = buf.length - start
      if (rest > maxLine || (nl !== -1 && nl - start > maxLine)) {
        lines.push(buf.subarray(start, start + maxLine).toString("utf8"))
        start += maxLine
        ends.push(start)
        continue
      }
      if (final && rest > 0) {
        lines.push(buf.subarray(start).toString("utf8").replace(/\r$/, ""))
        start = buf.length
        ends.push(start)
      }
      break
    }
    lines.push(buf.subarray(start, nl).toString("utf8").replace(/\r$/, ""))
    start = nl + 1
    ends.push(start)
  }
  return { lines, ends, consumed: start }
}

/** The longest line (bytes) an input makes one event of; longer ones are cut (the default read chunk). */
export const MAX_LINE_BYTES = 256 * 1024

/** Runs forever (until interrupted): the tail loop for one spec. */
export const runTail = (spec: TailSpec) =>
  Effect.gen(function* () {
    const buffer = yield* DiskBuffer
    const chunk = spec.chunkBytes ?? MAX_LINE_BYTES
    const maxLine = Math.min(spec.maxLineBytes ?? chunk, chunk)
    const tracked = new Map<string, Tracked>()
    /** Checkpoint key: the input's id and the file's identity. */
    const prefix = `${spec.id ?? spec.input}:`
    const fileIdOf = (st: { dev: number; ino: number }) => `${prefix}${st.dev}:${st.ino}`
    let firstScan = true
    const log = (msg: string, t: Tracked, extra: Record<string, unknown> = {}) =>
      Effect.logInfo(msg).pipe(Effect.annotateLogs({ input: spec.input, path: t.path, fileId: t.fileId, ...extra }))

    /** Reads `t` from its offset to the current end (waiting for buffer room between chunks). */
    const readFile = (t: Tracked, final: boolean) =>
      Effect.gen(function* () {
        while (true) {
          const size = fstatSync(t.fd).size
          if (size < t.offset) {
            yield* log("file truncated; reading it again from the start", t, { size, offset: t.offset })
            t.offset = 0
            yield* buffer.setCheckpoint({ fileId: t.fileId, path: t.path, offset: 0 })
          }
          if (size === t.offset) return
          const want = Math.min(chunk, size - t.offset)
          const buf = Buffer.allocUnsafe(want)
          const n = readSync(t.fd, buf, 0, want, t.offset)
          if (n === 0) return
          const atEnd = t.offset + n >= size
          const { lines, ends } = splitLines(buf.subarray(0, n), final && atEnd, maxLine)
          if (lines.length === 0) return // an incomplete last line: wait for its newline
          // Take the lines that fit in the buffer (at least one when it is empty); the rest stays unread.
          const records: Array<NewRecord> = []
          let room = buffer.maxBytes - buffer.usedBytes()
          let consumed = 0
          for (let i = 0; i < lines.length; i++) {
            const p = spec.parse(lines[i]!, t.path)
            const r = p === undefined ? undefined : toNewRecord(p)
            const b = r === undefined ? 0 : rowBytes(r)
            if (b > room && !(buffer.usedBytes() === 0 && records.length === 0)) {
              if (consumed === 0) yield* buffer.awaitSpace(b) // then read again from the same offset
              break
            }
            room -= b
            if (r !== undefined) records.push(r)
            consumed = ends[i]!
          }
          if (consumed === 0) continue
          t.offset += consumed
          yield* buffer.append(spec.input, records, { fileId: t.fileId, path: t.path, offset: t.offset })
        }
      })

    /**
     * At start: checkpoints of files no longer under a matched name were rotated while the agent
     * was down. A rotated file usually stays in its folder under another name: find it by its
     * identity and read the rest; if it is gone, say so (its unread rest cannot be recovered).
     */
    const finishOrphans = (present: ReadonlyMap<string, string>) =>
      Effect.gen(function* () {
        for (const cp of yield* buffer.checkpoints(prefix)) {
          if (present.has(cp.fileId)) continue
          let found: string | undefined
          try {
            const dir = dirname(cp.path)
            for (const name of readdirSync(dir)) {
              const st = statSync(join(dir, name))
              if (st.isFile() && fileIdOf(st) === cp.fileId) found = join(dir, name)
            }
          } catch {
            // folder gone
          }
          if (found === undefined) {
            yield* Effect.logWarning(
              "a file rotated away while the agent was down is gone; its unread rest is lost",
            ).pipe(Effect.annotateLogs({ input: spec.input, path: cp.path, offset: cp.offset }))
          } else {
            const t: Tracked = { fileId: cp.fileId, path: found, fd: openSync(found, "r"), offset: cp.offset }
            yield* readFile(t, true).pipe(Effect.ensuring(Effect.sync(() => closeSync(t.fd))))
            yield* log("finished a file rotated while the agent was down", t, { offset: t.offset })
          }
          yield* buffer.forgetCheckpoint(cp.fileId)
        }
      })

    const scan = Effect.gen(function* () {
      const present = new Map<string, string>() // fileId -> path
      for (const path of globSync([...spec.globs], { absolute: true, onlyFiles: true })) {
        try {
          const st = statSync(path)
          if (st.isFile()) present.set(fileIdOf(st), path)
        } catch {
          // gone between glob and stat
        }
      }
      // Files that are no longer under any matched name (rotated away or deleted): finish and forget.
      for (const t of [...tracked.values()]) {
        const path = present.get(t.fileId)
        if (path !== undefined) {
          t.path = path
          continue
        }
        yield* readFile(t, true)
        closeSync(t.fd)
        tracked.delete(t.fileId)
        yield* buffer.forgetCheckpoint(t.fileId)
        yield* log("file rotated or removed; finished reading it", t, { offset: t.offset })
      }
      if (firstScan) {
        firstScan = false
        yield* finishOrphans(present)
      }
      for (const [fileId, path] of present) {
        if (tracked.has(fileId)) continue
        let fd: number
        try {
          fd = openSync(path, "r")
        } catch (e) {
          yield* Effect.logWarning("cannot open file").pipe(Effect.annotateLogs({ path, error: String(e) }))
          continue
        }
        const st = fstatSync(fd)
        if (fileIdOf(st) !== fileId) {
          closeSync(fd) // replaced between stat and open: next scan
          continue
        }
        const cp = yield* buffer.checkpoint(fileId)
        const t: Tracked = { fileId, path, fd, offset: cp?.offset ?? 0 }
        tracked.set(fileId, t)
        yield* log(cp ? "resuming file from its checkpoint" : "reading new file", t, { offset: t.offset })
      }
      for (const t of tracked.values()) yield* readFile(t, false)
    })

    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const t of tracked.values()) closeSync(t.fd)
      }),
    )
    return yield* scan.pipe(Effect.repeat(Schedule.spaced(`${spec.pollMs} millis`)))
  }).pipe(Effect.scoped)

/** `tail`: each line is `{ log }`, with the file's path. */
export const tailParser =
  (tag: string) =>
  (line: string, path: string): ParsedLine => ({ tag, record: { log: line, path } })

/** Docker json-file logs (`<root>/<id>/<id>-json.log`): `{ log, stream, time }` per line; tag `docker.<id>`. */
export const dockerParser = (line: string, path: string): ParsedLine | undefined => {
  const id = /([0-9a-f]{12,64})-json\.log$/.exec(path)?.[1] ?? "unknown"
  let j: { log?: unknown; stream?: unknown; time?: unknown }
  try {
    j = JSON.parse(line)
  } catch {
    return { tag: `docker.${id}`, record: { log: line, container_id: id, parse_error: true } }
  }
  const log = typeof j.log === "string" ? j.log.replace(/\n$/, "") : String(j.log ?? "")
  const time = typeof j.time === "string" ? j.time : undefined
  return {
    tag: `docker.${id}`,
    record: { log, stream: j.stream, time, container_id: id },
    ts: time === undefined ? undefined : parseRfc3339Nanos(time),
  }
}

const K8S_FILE = /(?:^|\/)([^/_]+)_([^/_]+)_(.+)-([0-9a-f]{64})\.log$/

/** Namespace, pod, container and container id from a `/var/log/containers` file name. */
export const kubernetesFileMeta = (path: string) => {
  const m = K8S_FILE.exec(path)
  return m ? { pod_name: m[1]!, namespace_name: m[2]!, container_name: m[3]!, container_id: m[4]! } : undefined
}

/** CRI logs (`<time> <stream> <P|F> <log>`), tag `kube.<namespace>.<pod>.<container>`. */
export const kubernetesParser = (line: string, path: string): ParsedLine | undefined => {
  const meta = kubernetesFileMeta(path) ?? {
    pod_name: "unknown",
    namespace_name: "unknown",
    container_name: "unknown",
    container_id: "",
  }
  const tag = `kube.${meta.namespace_name}.${meta.pod_name}.${meta.container_name}`
  const m = /^(\S+) (stdout|stderr) ([PF])(?: (.*))?$/.exec(line)
  if (!m) return { tag, record: { log: line, kubernetes: meta, parse_error: true } }
  return {
    tag,
    record: { time: m[1], stream: m[2], logtag: m[3], log: m[4] ?? "", kubernetes: meta },
    ts: parseRfc3339Nanos(m[1]!),
  }
}
