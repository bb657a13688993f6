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
 * This module is plain synchronous code (easy to test); `DiskBuffer` wraps it in an Effect service.
 */
import { mkdirSync } from "node:fs"
import { join } from "node:path"
import Database from "better-sqlite3"

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

/** The SQLite page cache of the buffer, in KiB. */
export const PAGE_CACHE_KIB = 2048

export class BufferStore {
  readonly db: Database.Database
  private used = 0
  private count = 0
  private last = 0
  private readonly insertStmt: Database.Statement
  private readonly claimStmt: Database.Statement
  private readonly deleteRangeStmt: Database.Statement
  private readonly sumRangeStmt: Database.Statement
  private readonly putCheckpointStmt: Database.Statement
  private readonly getCheckpointStmt: Database.Statement
  private readonly delCheckpointStmt: Database.Statement
  private readonly appendTx: (
    records: ReadonlyArray<NewRecord>,
    checkpoint: Checkpoint | undefined,
  ) => { bytes: number; last: number }
  private readonly deleteTx: (first: number, last: number) => { n: number; bytes: number }

  constructor(
    readonly dir: string,
    sync: SyncMode = "FULL",
  ) {
    // The buffer holds records in plaintext (they are encrypted when sent, with the key of the day): owner only.
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    this.db = new Database(join(dir, "buffer.db"))
    this.db.pragma("journal_mode = WAL")
    this.db.pragma(`synchronous = ${sync}`)
    // better-sqlite3 builds SQLite with a 16 MiB page cache per connection; the buffer's hot pages are the newest
    // rows (the sender reads them right after the inputs wrote them): SQLite's own default of 2 MiB bounds it lower.
    this.db.pragma(`cache_size = -${PAGE_CACHE_KIB}`)
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        tag TEXT NOT NULL, ts TEXT NOT NULL, event_id TEXT NOT NULL, record TEXT NOT NULL,
        bytes INTEGER NOT NULL, inserted_at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS checkpoints (
        file_id TEXT PRIMARY KEY, path TEXT NOT NULL, offset INTEGER NOT NULL, updated_at INTEGER NOT NULL);
    `)
    const cols = this.db.prepare("PRAGMA table_info(checkpoints)").all() as Array<{ name: string }>
    if (!cols.some((c) => c.name === "fp"))
      this.db.exec("ALTER TABLE checkpoints ADD COLUMN fp TEXT NOT NULL DEFAULT ''") // buffers of older versions
    const totals = this.db.prepare("SELECT COUNT(*) AS n, COALESCE(SUM(bytes), 0) AS b FROM events").get() as {
      n: number
      b: number
    }
    this.used = totals.b
    this.count = totals.n
    const seq = this.db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'events'").get() as
      | { seq: number }
      | undefined
    this.last = seq?.seq ?? 0
    this.insertStmt = this.db.prepare(
      "INSERT INTO events (tag, ts, event_id, record, bytes, inserted_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    this.claimStmt = this.db.prepare(
      "SELECT id, tag, ts, event_id AS eventId, record, bytes, inserted_at AS insertedAt FROM events WHERE id > ? ORDER BY id LIMIT ?",
    )
    this.deleteRangeStmt = this.db.prepare("DELETE FROM events WHERE id BETWEEN ? AND ?")
    this.sumRangeStmt = this.db.prepare(
      "SELECT COUNT(*) AS n, COALESCE(SUM(bytes), 0) AS b FROM events WHERE id BETWEEN ? AND ?",
    )
    this.putCheckpointStmt = this.db.prepare(
      "INSERT INTO checkpoints (file_id, path, offset, fp, updated_at) VALUES (?, ?, ?, ?, ?) " +
        "ON CONFLICT(file_id) DO UPDATE SET path = excluded.path, offset = excluded.offset, fp = excluded.fp, " +
        "updated_at = excluded.updated_at",
    )
    this.getCheckpointStmt = this.db.prepare(
      "SELECT file_id AS fileId, path, offset, fp FROM checkpoints WHERE file_id = ?",
    )
    this.delCheckpointStmt = this.db.prepare("DELETE FROM checkpoints WHERE file_id = ?")
    this.appendTx = this.db.transaction((records: ReadonlyArray<NewRecord>, checkpoint: Checkpoint | undefined) => {
      const now = Date.now()
      let bytes = 0
      let last = this.last
      for (const r of records) {
        const b = rowBytes(r)
        bytes += b
        last = Number(this.insertStmt.run(r.tag, r.ts, r.eventId, r.record, b, now).lastInsertRowid)
      }
      if (checkpoint !== undefined)
        this.putCheckpointStmt.run(
          checkpoint.fileId,
          checkpoint.path,
          checkpoint.offset,
          checkpoint.fingerprint ?? "",
          now,
        )
      return { bytes, last }
    })
    this.deleteTx = this.db.transaction((first: number, last: number) => {
      const s = this.sumRangeStmt.get(first, last) as { n: number; b: number }
      this.deleteRangeStmt.run(first, last)
      return { n: s.n, bytes: s.b }
    })
  }

  /** Bytes held (see `rowBytes`). */
  get usedBytes(): number {
    return this.used
  }

  get eventCount(): number {
    return this.count
  }

  /** The id of the newest row ever inserted (0 for none): rows after `afterId` are at most `lastId - afterId`. */
  get lastId(): number {
    return this.last
  }

  /** Inserts the records and (optionally) advances a file checkpoint, atomically. Returns the bytes added. */
  append(records: ReadonlyArray<NewRecord>, checkpoint?: Checkpoint): number {
    const { bytes, last } = this.appendTx(records, checkpoint)
    this.last = last
    this.used += bytes
    this.count += records.length
    return bytes
  }

  /** Up to `maxEvents` rows with id > `afterId`, oldest first, cut at `maxBytes` (at least one row). */
  peek(afterId: number, maxEvents: number, maxBytes: number): Array<BufferedRow> {
    const rows = this.claimStmt.all(afterId, maxEvents) as Array<BufferedRow>
    let total = 0
    for (let i = 0; i < rows.length; i++) {
      total += rows[i]!.bytes
      if (total > maxBytes && i > 0) return rows.slice(0, i)
    }
    return rows
  }

  /** Deletes the rows first..last (a batch); returns how many rows and bytes left. */
  remove(first: number, last: number): { n: number; bytes: number } {
    const r = this.deleteTx(first, last)
    this.used -= r.bytes
    this.count -= r.n
    return r
  }

  checkpoint(fileId: string): Checkpoint | undefined {
    return fromRow(this.getCheckpointStmt.get(fileId) as CheckpointRow | undefined)
  }

  setCheckpoint(c: Checkpoint): void {
    this.putCheckpointStmt.run(c.fileId, c.path, c.offset, c.fingerprint ?? "", Date.now())
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
    this.delCheckpointStmt.run(fileId)
  }

  close(): void {
    if (this.db.open) this.db.close()
  }
}
