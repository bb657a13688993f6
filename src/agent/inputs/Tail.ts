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
 * - Inode reuse while the agent was down: the checkpoint keeps a fingerprint of the file's first bytes
 *   (up to 1 KiB); a file under a checkpointed identity whose first bytes differ is another file, read from 0.
 * - Backpressure: before each read the tailer waits for room in the buffer, so a full buffer
 *   leaves the file unread (its position does not move).
 * - Joined lines (Kubernetes CRI partials): the checkpoint stays at the first line of a pending event.
 * - Between polls, a change of a tracked file (fs.watch, Wake.ts) wakes the loop to read the tracked files at once,
 *   then it pauses `readGapMs` (30 ms) so that lines written meanwhile go into one buffer transaction (one fsync).
 */
import { createHash } from "node:crypto"
import { closeSync, fstatSync, openSync, readdirSync, readSync, statSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import { Effect } from "effect"
import { globSync } from "tinyglobby"
import { type Checkpoint, type NewRecord, rowBytes } from "../buffer/BufferStore.js"
import { DiskBuffer, type DiskBufferShape } from "../buffer/DiskBuffer.js"
import {
  flushPending,
  type Joiner,
  MAX_LINE_BYTES,
  noJoin,
  type ParsedLine,
  type Pending,
  splitLines,
  toNewRecord,
} from "./Parsers.js"
import { makeWake, type Wake } from "./Wake.js"

export interface TailSpec {
  /** Input name (metrics label). */
  readonly input: string
  /** Unique among the inputs (checkpoint keys start with it); defaults to `input`. */
  readonly id?: string
  readonly globs: ReadonlyArray<string>
  /** Turns one line (without its newline) of `path` into a record; undefined skips the line. */
  readonly parse: (line: string, path: string) => ParsedLine | undefined
  /** Joins lines into events (CRI partials); every line is an event by default. */
  readonly join?: Joiner
  readonly pollMs: number
  /** Least time between two reads woken by file changes (default 30 ms); 0 reads at every change. */
  readonly readGapMs?: number
  /** Bytes read per step (and per buffer transaction). */
  readonly chunkBytes?: number
  /** A line longer than this (at most chunkBytes) is cut into pieces of this size. */
  readonly maxLineBytes?: number
}

interface Tracked {
  readonly fileId: string
  path: string
  readonly fd: number
  /** Read position (the checkpoint may lag behind it while an event is pending). */
  offset: number
  pending: Pending | undefined
  /** Fingerprint so far ("" until the file has bytes); final once it covers FP_BYTES. */
  fingerprint: string
}

interface TailCtx {
  readonly spec: TailSpec
  readonly buffer: DiskBufferShape
  readonly chunk: number
  readonly maxLine: number
  readonly join: Joiner
  /** Checkpoint key prefix: the input's id. */
  readonly prefix: string
  readonly tracked: Map<string, Tracked>
  readonly wake: Wake
}

const FP_BYTES = 1024

/** `<n>:<hash>` of the first min(FP_BYTES, upTo) bytes of `fd` ("" for none). */
export const fingerprintOf = (fd: number, upTo: number): string => {
  const len = Math.min(FP_BYTES, upTo)
  if (len <= 0) return ""
  const buf = Buffer.alloc(len)
  const n = readSync(fd, buf, 0, len, 0)
  return `${n}:${createHash("sha256").update(buf.subarray(0, n)).digest("hex").slice(0, 32)}`
}

/** Whether the open file still starts with the bytes the checkpoint saw (no fingerprint: assumed so). */
const sameFile = (fd: number, cp: Checkpoint): boolean => {
  if (cp.fingerprint === undefined) return true
  const len = Number(cp.fingerprint.split(":")[0])
  return fstatSync(fd).size >= len && fingerprintOf(fd, len) === cp.fingerprint
}

const fileIdOf = (ctx: TailCtx, st: { dev: number; ino: number }) => `${ctx.prefix}${st.dev}:${st.ino}`

const log = (ctx: TailCtx, msg: string, t: Tracked, extra: Record<string, unknown> = {}) =>
  Effect.logInfo(msg).pipe(Effect.annotateLogs({ input: ctx.spec.input, path: t.path, fileId: t.fileId, ...extra }))

/** The checkpoint for what is stored: the read position, or a pending event's first line. */
const checkpointOf = (t: Tracked): Checkpoint => {
  const offset = t.pending?.at ?? t.offset
  if (!t.fingerprint.startsWith(`${FP_BYTES}:`)) t.fingerprint = fingerprintOf(t.fd, offset)
  return { fileId: t.fileId, path: t.path, offset, ...(t.fingerprint === "" ? {} : { fingerprint: t.fingerprint }) }
}

/** The records of the lines that fit in the buffer (at least one line when it is empty), and what they used. */
const takeLines = (ctx: TailCtx, t: Tracked, buf: Buffer, final: boolean) => {
  const { lines, ends } = splitLines(buf, final, ctx.maxLine)
  const records: Array<NewRecord> = []
  let room = ctx.buffer.maxBytes - ctx.buffer.usedBytes()
  let consumed = 0
  let pending = t.pending
  let blocked = 0
  for (let i = 0; i < lines.length; i++) {
    const p = ctx.spec.parse(lines[i]!, t.path)
    const step = p === undefined ? { pending, event: undefined } : ctx.join(pending, p, t.offset + (ends[i - 1] ?? 0))
    const r = step.event === undefined ? undefined : toNewRecord(step.event)
    const b = r === undefined ? 0 : rowBytes(r)
    if (b > room && !(ctx.buffer.usedBytes() === 0 && records.length === 0)) {
      blocked = b
      break
    }
    room -= b
    if (r !== undefined) records.push(r)
    pending = step.pending
    consumed = ends[i]!
  }
  return { records, consumed, pending, blocked, lineCount: lines.length }
}

/** One chunk of `t` from its offset; true when there is nothing more to read for now. */
const readChunk = (ctx: TailCtx, t: Tracked, final: boolean) =>
  Effect.gen(function* () {
    const size = fstatSync(t.fd).size
    if (size < t.offset) {
      yield* log(ctx, "file truncated; reading it again from the start", t, { size, offset: t.offset })
      Object.assign(t, { offset: 0, pending: undefined, fingerprint: "" })
      yield* ctx.buffer.setCheckpoint(checkpointOf(t))
    }
    if (size === t.offset) return true
    const want = Math.min(ctx.chunk, size - t.offset)
    const buf = Buffer.allocUnsafe(want)
    const n = readSync(t.fd, buf, 0, want, t.offset)
    if (n === 0) return true
    const taken = takeLines(ctx, t, buf.subarray(0, n), final && t.offset + n >= size)
    if (taken.lineCount === 0) return true // an incomplete last line: wait for its newline
    if (taken.consumed === 0) {
      yield* ctx.buffer.awaitSpace(taken.blocked) // then read again from the same offset
      return false
    }
    t.offset += taken.consumed
    t.pending = taken.pending
    yield* ctx.buffer.append(ctx.spec.input, taken.records, checkpointOf(t))
    return false
  })

/** Reads `t` to its current end (waiting for buffer room between chunks); at a final read, flushes what is pending. */
const readFile = (ctx: TailCtx, t: Tracked, final: boolean) =>
  readChunk(ctx, t, final).pipe(
    Effect.repeat({ until: (done) => done }),
    Effect.zipRight(
      Effect.suspend(() => {
        if (!final || t.pending === undefined) return Effect.void
        const event = flushPending(t.pending)
        t.pending = undefined
        return ctx.buffer.append(ctx.spec.input, [toNewRecord(event)], checkpointOf(t))
      }),
    ),
  )

/** A file named by a checkpoint: the one with that identity in the checkpoint's folder, if any. */
const findByIdentity = (ctx: TailCtx, cp: Checkpoint): string | undefined => {
  try {
    const dir = dirname(cp.path)
    for (const name of readdirSync(dir)) {
      const st = statSync(join(dir, name))
      if (st.isFile() && fileIdOf(ctx, st) === cp.fileId) return join(dir, name)
    }
  } catch {
    // folder gone
  }
  return undefined
}

/**
 * At start: checkpoints of files no longer under a matched name were rotated while the agent
 * was down. A rotated file usually stays in its folder under another name: find it by its
 * identity (and fingerprint) and read the rest; if it is gone, say so (its unread rest cannot be recovered).
 */
const finishOrphans = (ctx: TailCtx, present: ReadonlyMap<string, string>) =>
  Effect.gen(function* () {
    for (const cp of yield* ctx.buffer.checkpoints(ctx.prefix)) {
      if (present.has(cp.fileId)) continue
      const found = findByIdentity(ctx, cp)
      const fd = found === undefined ? undefined : openSync(found, "r")
      if (found === undefined || fd === undefined || !sameFile(fd, cp)) {
        if (fd !== undefined) closeSync(fd)
        yield* Effect.logWarning("a file rotated away while the agent was down is gone; its unread rest is lost").pipe(
          Effect.annotateLogs({ input: ctx.spec.input, path: cp.path, offset: cp.offset }),
        )
      } else {
        const t: Tracked = {
          fileId: cp.fileId,
          path: found,
          fd,
          offset: cp.offset,
          pending: undefined,
          fingerprint: "",
        }
        yield* readFile(ctx, t, true).pipe(Effect.ensuring(Effect.sync(() => closeSync(fd))))
        yield* log(ctx, "finished a file rotated while the agent was down", t, { offset: t.offset })
      }
      yield* ctx.buffer.forgetCheckpoint(cp.fileId)
    }
  })

/** Characters that make a pattern a glob (or an escape); without them it names one path. */
const GLOB_SYNTAX = /[*?[\]{}()!+@\\]/

/**
 * The files a pattern matches, as `globSync(…, { absolute: true, onlyFiles: true })` finds them. A pattern without
 * glob syntax that names a regular file is that file: globbing it cost 10-20 ms of CPU per scan.
 */
const globFiles = (globs: ReadonlyArray<string>): ReadonlyArray<string> => {
  if (globs.every((g) => !GLOB_SYNTAX.test(g)))
    try {
      const files = globs.map((g) => ({ path: resolve(g), st: statSync(g, { throwIfNoEntry: false }) }))
      if (files.every((f) => f.st === undefined || f.st.isFile()))
        return [...new Set(files.filter((f) => f.st !== undefined).map((f) => f.path))]
    } catch {
      // not a plain path after all (ENOTDIR, EACCES): let the glob decide
    }
  return globSync([...globs], { absolute: true, onlyFiles: true })
}

/** The matched files now: identity to path. */
const matchedFiles = (ctx: TailCtx): Map<string, string> => {
  const present = new Map<string, string>()
  for (const path of globFiles(ctx.spec.globs)) {
    try {
      const st = statSync(path)
      if (st.isFile()) present.set(fileIdOf(ctx, st), path)
    } catch {
      // gone between glob and stat
    }
  }
  return present
}

/** Files no longer under any matched name (rotated away or deleted): finish and forget them. */
const finishGone = (ctx: TailCtx, present: ReadonlyMap<string, string>) =>
  Effect.gen(function* () {
    for (const t of [...ctx.tracked.values()]) {
      const path = present.get(t.fileId)
      if (path !== undefined) {
        t.path = path
        continue
      }
      yield* readFile(ctx, t, true)
      closeSync(t.fd)
      ctx.tracked.delete(t.fileId)
      ctx.wake.unwatch(t.fileId)
      yield* ctx.buffer.forgetCheckpoint(t.fileId)
      yield* log(ctx, "file rotated or removed; finished reading it", t, { offset: t.offset })
    }
  })

/** Opens a newly matched file, from its checkpoint when it is the same file, else from 0. */
const track = (ctx: TailCtx, fileId: string, path: string) =>
  Effect.gen(function* () {
    let fd: number
    try {
      fd = openSync(path, "r")
    } catch (e) {
      yield* Effect.logWarning("cannot open file").pipe(Effect.annotateLogs({ path, error: String(e) }))
      return
    }
    if (fileIdOf(ctx, fstatSync(fd)) !== fileId) return closeSync(fd) // replaced between stat and open: next scan
    const cp = yield* ctx.buffer.checkpoint(fileId)
    const reused = cp !== undefined && !sameFile(fd, cp)
    const offset = cp === undefined || reused ? 0 : cp.offset
    const t: Tracked = { fileId, path, fd, offset, pending: undefined, fingerprint: "" }
    ctx.tracked.set(fileId, t)
    ctx.wake.watch(fileId, path)
    if (reused)
      yield* Effect.logWarning(
        "a file reuses the identity (inode) of a checkpointed one but starts with other bytes; reading it from the start",
      ).pipe(Effect.annotateLogs({ input: ctx.spec.input, path, fileId, checkpointOffset: cp.offset }))
    else yield* log(ctx, cp ? "resuming file from its checkpoint" : "reading new file", t, { offset })
  })

const scan = (ctx: TailCtx, first: boolean) =>
  Effect.gen(function* () {
    const present = matchedFiles(ctx)
    yield* finishGone(ctx, present)
    if (first) yield* finishOrphans(ctx, present)
    for (const [fileId, path] of present) if (!ctx.tracked.has(fileId)) yield* track(ctx, fileId, path)
    for (const t of ctx.tracked.values()) yield* readFile(ctx, t, false)
  })

/**
 * Default `readGapMs`. 10 ms cost the agent 0.40 of a core at 10,000 lines/s, 30 ms 0.36 (two runs each, same
 * p50); docs/benchmarks.md, agent and latency.
 */
export const DEFAULT_READ_GAP_MS = 30

/** One turn of the loop: a scan when `pollMs` passed since the last one, else a read of the tracked files if woken. */
const step = (ctx: TailCtx, clock: { nextScan: number }) =>
  Effect.gen(function* () {
    const woke = yield* ctx.wake.wait(clock.nextScan - Date.now())
    if (!woke || Date.now() >= clock.nextScan) {
      yield* scan(ctx, false)
      clock.nextScan = Date.now() + ctx.spec.pollMs
      return
    }
    for (const t of ctx.tracked.values()) yield* readFile(ctx, t, false)
    const gap = ctx.spec.readGapMs ?? DEFAULT_READ_GAP_MS
    if (gap > 0) yield* Effect.sleep(`${gap} millis`)
  })

/** Runs forever (until interrupted): the tail loop for one spec, a scan every `pollMs`, reads on file changes between. */
export const runTail = (spec: TailSpec) =>
  Effect.gen(function* () {
    const chunk = spec.chunkBytes ?? MAX_LINE_BYTES
    const ctx: TailCtx = {
      spec,
      buffer: yield* DiskBuffer,
      chunk,
      maxLine: Math.min(spec.maxLineBytes ?? chunk, chunk),
      join: spec.join ?? noJoin,
      prefix: `${spec.id ?? spec.input}:`,
      tracked: new Map(),
      wake: makeWake(),
    }
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        ctx.wake.close()
        for (const t of ctx.tracked.values()) closeSync(t.fd)
      }),
    )
    yield* scan(ctx, true)
    const clock = { nextScan: Date.now() + spec.pollMs }
    return yield* step(ctx, clock).pipe(Effect.forever)
  }).pipe(Effect.scoped)
