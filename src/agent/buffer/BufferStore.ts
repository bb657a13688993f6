/**
 * The agent's crash-safe disk buffer: SQLite through better-sqlite3 (synchronous, one connection).
 *
 * Every event an input reads is inserted here, in one transaction per input batch, before anything
 * is sent; a row leaves only when the ingester acknowledged its batch (or rejected it for good, in
 * which case it is first written to the rejected folder). File inputs store their read position
 * (file identity dev+inode, byte offset) in the same transaction as the events read up to it, so a
 * checkpoint never runs ahead of what the buffer holds: after a crash the file is read again from
 * the checkpoint, and everything before it is either acknowledged or still in the buffer.
 *
 * Durability: WAL journal with `synchronous=FULL`, so a commit is fsynced before `append` returns
 * (one fsync per input batch, not per event). `NORMAL` in WAL mode survives a process crash (the
 * WAL is in the OS cache) but can lose the last commits on power loss; for tail inputs that would be
 * harmless (the checkpoint rolls back with the events) but for stdin and metrics it would lose data,
 * so FULL is what the agent uses. `NORMAL` is taken only from the constructor's caller (no setting selects it).
 *
 * Layout (format 2, `PRAGMA user_version`): one row ("block") per append, holding the records of that input batch
 * (BlockCodec.ts), not one row per record: an input batch is one INSERT, a batch of the sender one or a few reads
 * and DELETEs. Every record keeps an id of its own: a block's records are ids `id .. id + n - 1`. A block whose
 * first `skip` records were acknowledged keeps the rest; acknowledged records after a record still unacknowledged
 * (acks out of order, a record rejected ahead of others) are kept as removed ranges ("holes", at most the
 * records in flight, in the table `holes`) and never read again; the block shrinks when the records before them are
 * acknowledged. A buffer of format 1 (one row per record,
 * older versions) is converted when opened; a buffer of a newer format is refused with an error saying so.
 *
 * This module is plain synchronous code (easy to test); `DiskBuffer` wraps it in an Effect service.
 */
import type Database from "better-sqlite3"
import { type DecodedRecord, decodeBlock, encodeBlock } from "./BlockCodec.js"
import { openDb, prepare } from "./BufferDb.js"

export interface NewRecord {
  readonly tag: string
  /** Unix nanoseconds as a decimal string. */
  readonly ts: string
  readonly eventId: string
  /** The record as JSON text: the plaintext of `Event.message`. */
  readonly record: string
}

export interface BufferedRow extends NewRecord {
  readonly id: number
  readonly bytes: number
  /** Milliseconds since the epoch when it was buffered. */
  readonly insertedAt: number
}

export interface Checkpoint {
  /** `dev:ino` of the file. */
  readonly fileId: string
  readonly path: string
  readonly offset: number
  /**
   * `<n>:<hash>` of the file's first n bytes (n ≤ 1 KiB, at most the offset), to notice an inode reused by
   * another file while the agent was down. Absent (checkpoints of older versions, empty files): not checked.
   */
  readonly fingerprint?: string
}

interface CheckpointRow {
  readonly fileId: string
  readonly path: string
  readonly offset: number
  readonly fp: string
}
const fromRow = (r: CheckpointRow | undefined): Checkpoint | undefined =>
  r === undefined
    ? undefined
    : { fileId: r.fileId, path: r.path, offset: r.offset, ...(r.fp === "" ? {} : { fingerprint: r.fp }) }

/** Bytes a record counts for against the buffer bound (payload plus a fixed per-row overhead). */
export const rowBytes = (r: NewRecord): number =>
  Buffer.byteLength(r.record, "utf8") + Buffer.byteLength(r.tag, "utf8") + r.eventId.length + r.ts.length + 48

export type SyncMode = "FULL" | "NORMAL"
export { BUFFER_FORMAT, PAGE_CACHE_KIB } from "./BufferDb.js"

/** Blocks whose records BufferStore keeps decoded (each at most one input batch: a read chunk's lines). */
const DECODED_BLOCKS = 4

/** Block heads read per query by `peek`. */
const PEEK_BLOCKS = 8

export interface BlockHead {
  readonly id: number
  readonly n: number
  readonly skip: number
  readonly bytes: number
  readonly insertedAt: number
}

/** Records removed ahead of a block's kept prefix: ids first..last of one block. */
interface Hole {
  readonly first: number
  readonly last: number
}

export class BufferStore {
  readonly db: Database.Database
  private used = 0
  private count = 0
  private last = 0
  private holes: Array<Hole> = []
  /**
   * The records of the last blocks appended or decoded (block contents never change): the sender's peeks read the
   * blocks just appended, removes the same few.
   */
  private readonly decodedCache: Array<{ id: number; recs: ReadonlyArray<DecodedRecord> }> = []
  private readonly stmts: ReturnType<typeof prepare>
  private readonly appendTx: (records: ReadonlyArray<DecodedRecord>, checkpoint: Checkpoint | undefined) => number
  private readonly removeTx: (first: number, last: number) => { n: number; bytes: number }

  constructor(
    readonly dir: string,
    sync: SyncMode = "FULL",
  ) {
    this.db = openDb(dir, sync)
    const totals = this.db
      .prepare(
        "SELECT COALESCE(SUM(n - skip), 0) AS n, COALESCE(SUM(bytes), 0) AS b, MAX(id + n - 1) AS last FROM blocks",
      )
      .get() as { n: number; b: number; last: number | null }
    const meta = this.db.prepare("SELECT v FROM meta WHERE k = 'last'").get() as { v: number } | undefined
    this.holes = this.db.prepare("SELECT first, last FROM holes").all() as Array<Hole>
    const inHoles = this.db
      .prepare("SELECT COALESCE(SUM(n), 0) AS n, COALESCE(SUM(bytes), 0) AS b FROM holes")
      .get() as {
      n: number
      b: number
    }
    this.used = totals.b - inHoles.b
    this.count = totals.n - inHoles.n
    this.last = Math.max(totals.last ?? 0, meta?.v ?? 0)
    this.stmts = prepare(this.db)
    this.appendTx = this.db.transaction((records: ReadonlyArray<DecodedRecord>, checkpoint: Checkpoint | undefined) => {
      const now = Date.now()
      let total = 0
      if (records.length > 0) {
        for (const r of records) total += r.bytes
        const { data, format } = encodeBlock(records)
        this.stmts.insert.run(this.last + 1, records.length, total, now, format, data)
        this.stmts.putLast.run(this.last + records.length)
      }
      if (checkpoint !== undefined)
        this.stmts.putCheckpoint.run(
          checkpoint.fileId,
          checkpoint.path,
          checkpoint.offset,
          checkpoint.fingerprint ?? "",
          now,
        )
      return total
    })
    this.removeTx = this.db.transaction((first: number, last: number) => this.removeRange(first, last))
  }

  /** Bytes held (see `rowBytes`). */
  get usedBytes(): number {
    return this.used
  }

  get eventCount(): number {
    return this.count
  }

  /** The id of the newest record ever inserted (0 for none): records after `afterId` are at most `lastId - afterId`. */
  get lastId(): number {
    return this.last
  }

  /** Inserts the records (one block) and (optionally) advances a file checkpoint, atomically. Returns the bytes added. */
  append(records: ReadonlyArray<NewRecord>, checkpoint?: Checkpoint): number {
    const recs: Array<DecodedRecord> = new Array(records.length)
    for (let i = 0; i < records.length; i++) {
      const r = records[i]!
      recs[i] = { tag: r.tag, ts: r.ts, eventId: r.eventId, record: r.record, bytes: rowBytes(r) }
    }
    const bytes = this.appendTx(recs, checkpoint)
    // committed: the sender reads these records next, from here rather than from SQLite
    if (recs.length > 0) this.remember(this.last + 1, recs)
    this.last += records.length
    this.used += bytes
    this.count += records.length
    return bytes
  }

  /** Up to `maxEvents` records with id > `afterId`, oldest first, cut at `maxBytes` (at least one record). */
  peek(afterId: number, maxEvents: number, maxBytes: number): Array<BufferedRow> {
    const rows: Array<BufferedRow> = []
    let total = 0
    let from = afterId + 1
    for (;;) {
      // A page of block heads at a time (no other statement may run while one iterates): the block holding `from`
      // (or the newest before it), then the next ones; records before `from` are skipped.
      const page = this.stmts.fromBlock.all(from, PEEK_BLOCKS) as Array<BlockHead>
      for (const b of page) {
        const end = b.id + b.n
        const start = Math.max(from, b.id + b.skip)
        if (start >= end) continue
        const recs = this.decoded(b)
        for (let id = start; id < end; id++) {
          if (this.holes.length > 0 && this.inHole(id)) continue
          const r = recs[id - b.id]!
          total += r.bytes
          if (rows.length >= maxEvents || (total > maxBytes && rows.length > 0)) return rows
          rows.push({
            id,
            tag: r.tag,
            ts: r.ts,
            eventId: r.eventId,
            record: r.record,
            bytes: r.bytes,
            insertedAt: b.insertedAt,
          })
        }
      }
      if (page.length < PEEK_BLOCKS) return rows
      const lastBlock = page[page.length - 1]!
      from = lastBlock.id + lastBlock.n
    }
  }

  /** Removes the records first..last (a batch); returns how many records and bytes left. */
  remove(first: number, last: number): { n: number; bytes: number } {
    const holes = this.holes.slice()
    let r: { n: number; bytes: number }
    try {
      r = this.removeTx(first, last)
    } catch (e) {
      this.holes = holes // rolled back with the transaction
      throw e
    }
    this.used -= r.bytes
    this.count -= r.n
    return r
  }

  checkpoint(fileId: string): Checkpoint | undefined {
    return fromRow(this.stmts.getCheckpoint.get(fileId) as CheckpointRow | undefined)
  }

  setCheckpoint(c: Checkpoint): void {
    this.stmts.putCheckpoint.run(c.fileId, c.path, c.offset, c.fingerprint ?? "", Date.now())
  }

  /** Checkpoints whose key starts with `prefix`. */
  checkpoints(prefix: string): Array<Checkpoint> {
    return (
      this.db.prepare("SELECT file_id AS fileId, path, offset, fp FROM checkpoints").all() as Array<CheckpointRow>
    )
      .filter((c) => c.fileId.startsWith(prefix))
      .map((c) => fromRow(c)!)
  }

  forgetCheckpoint(fileId: string): void {
    this.stmts.delCheckpoint.run(fileId)
  }

  close(): void {
    if (this.db.open) this.db.close()
  }

  private inHole(id: number): boolean {
    for (const h of this.holes) if (id >= h.first && id <= h.last) return true
    return false
  }

  private decoded(b: BlockHead): ReadonlyArray<DecodedRecord> {
    const hit = this.decodedCache.find((c) => c.id === b.id)
    if (hit !== undefined) return hit.recs
    const row = this.stmts.data.get(b.id) as { format: number; data: string }
    return this.remember(b.id, decodeBlock(row.data, row.format, b.n))
  }

  /** Keeps the records of block `id` among the last DECODED_BLOCKS blocks decoded or appended. */
  private remember(id: number, recs: ReadonlyArray<DecodedRecord>): ReadonlyArray<DecodedRecord> {
    if (this.decodedCache.length >= DECODED_BLOCKS) this.decodedCache.shift()
    this.decodedCache.push({ id, recs })
    return recs
  }

  /** Inside the remove transaction: per block, moves its kept prefix forward, or records a hole. */
  private removeRange(first: number, last: number): { n: number; bytes: number } {
    let n = 0
    let bytes = 0
    for (const b of this.stmts.overlapping.all(first, last) as Array<BlockHead>) {
      const end = b.id + b.n - 1
      const kept = b.id + b.skip
      const lo = Math.max(first, kept)
      const hi = Math.min(last, end)
      if (lo > hi) continue // acknowledged before (a duplicate ack)
      const holesHere = this.holes.some((h) => h.first >= b.id && h.last <= end)
      if (lo === kept && hi === end && !holesHere) {
        n += end - lo + 1
        bytes += b.bytes
        this.stmts.deleteBlock.run(b.id)
        continue
      }
      const recs = this.decoded(b)
      let holeN = 0
      let holeBytes = 0
      for (let id = lo; id <= hi; id++)
        if (!(holesHere && this.inHole(id))) {
          holeN++
          holeBytes += recs[id - b.id]!.bytes
        }
      n += holeN
      bytes += holeBytes
      if (lo !== kept) {
        if (holeN === 0) continue
        this.holes.push({ first: lo, last: hi })
        this.stmts.putHole.run(lo, hi, holeN, holeBytes)
        continue
      }
      let to = hi
      // holes of this block that now touch the kept prefix join it (a hole lies inside one block)
      const touching = (h: Hole) => h.first >= b.id && h.first <= to + 1 && h.last > to
      for (let h = this.holes.find(touching); h !== undefined; h = this.holes.find(touching)) to = h.last
      if (holesHere) {
        this.holes = this.holes.filter((h) => h.last < b.id || h.first > to)
        this.stmts.deleteHoles.run(b.id, to)
      }
      if (to === end) {
        this.stmts.deleteBlock.run(b.id)
        continue
      }
      let gone = 0
      for (let id = kept; id <= to; id++) gone += recs[id - b.id]!.bytes
      this.stmts.skipTo.run(to - b.id + 1, b.bytes - gone, b.id)
    }
    return { n, bytes }
  }
}
