/**
 * The SQLite side of BufferStore: opening the buffer file (pragmas, schema, the format check and the conversion
 * of older buffers) and the statements it runs.
 */
import { mkdirSync } from "node:fs"
import { join } from "node:path"
import Database from "better-sqlite3"
import type { SyncMode } from "./BufferStore.js"

/** The SQLite page cache of the buffer, in KiB. */
export const PAGE_CACHE_KIB = 2048

/** The buffer layout this version writes (`PRAGMA user_version`); 0 or 1: one row per record (converted). */
export const BUFFER_FORMAT = 2

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS blocks (
    id INTEGER PRIMARY KEY, n INTEGER NOT NULL, skip INTEGER NOT NULL, bytes INTEGER NOT NULL,
    inserted_at INTEGER NOT NULL, format INTEGER NOT NULL, data TEXT NOT NULL);
  CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
  CREATE TABLE IF NOT EXISTS holes (first INTEGER NOT NULL, last INTEGER NOT NULL, n INTEGER NOT NULL, bytes INTEGER NOT NULL);
  CREATE TABLE IF NOT EXISTS checkpoints (
    file_id TEXT PRIMARY KEY, path TEXT NOT NULL, offset INTEGER NOT NULL, updated_at INTEGER NOT NULL);`

/** Format 1 (a row per record in `events`) to blocks of one record each, keeping ids and the id sequence. */
const CONVERT_V1 = `
  INSERT INTO blocks (id, n, skip, bytes, inserted_at, format, data)
    SELECT id, 1, 0, bytes, inserted_at, 1, json_array(json_array(tag, ts, event_id, record, bytes)) FROM events;
  INSERT OR REPLACE INTO meta (k, v)
    VALUES ('last', COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), (SELECT MAX(id) FROM events), 0));
  DROP TABLE events;`

/** The newest block at or before id `?`, and the blocks after it. */
const FROM_BLOCK = "id >= COALESCE((SELECT id FROM blocks WHERE id <= ? ORDER BY id DESC LIMIT 1), 0)"

export const openDb = (dir: string, sync: SyncMode): Database.Database => {
  // The buffer holds records in plaintext (they are encrypted when sent, with the key of the day): owner only.
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const db = new Database(join(dir, "buffer.db"))
  const format = db.pragma("user_version", { simple: true }) as number
  if (format > BUFFER_FORMAT) {
    db.close()
    throw new Error(
      `the disk buffer in ${dir} has format ${format}, written by a newer agent; this agent reads formats up to ${BUFFER_FORMAT}`,
    )
  }
  db.pragma("journal_mode = WAL")
  db.pragma(`synchronous = ${sync}`)
  // better-sqlite3 builds SQLite with a 16 MiB page cache per connection; the buffer's hot pages are the newest
  // rows (the sender reads them right after the inputs wrote them): SQLite's own default of 2 MiB bounds it lower.
  db.pragma(`cache_size = -${PAGE_CACHE_KIB}`)
  db.transaction(() => {
    db.exec(SCHEMA)
    const cols = db.prepare("PRAGMA table_info(checkpoints)").all() as Array<{ name: string }>
    if (!cols.some((c) => c.name === "fp")) db.exec("ALTER TABLE checkpoints ADD COLUMN fp TEXT NOT NULL DEFAULT ''") // buffers of older versions
    if (db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'").get() !== undefined)
      db.exec(CONVERT_V1)
    db.pragma(`user_version = ${BUFFER_FORMAT}`)
  })()
  return db
}

export const prepare = (db: Database.Database) => ({
  insert: db.prepare("INSERT INTO blocks (id, n, skip, bytes, inserted_at, format, data) VALUES (?, ?, 0, ?, ?, ?, ?)"),
  putLast: db.prepare("INSERT INTO meta (k, v) VALUES ('last', ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v"),
  fromBlock: db.prepare(
    `SELECT id, n, skip, bytes, inserted_at AS insertedAt FROM blocks WHERE ${FROM_BLOCK} ORDER BY id LIMIT ?`,
  ),
  overlapping: db.prepare(
    `SELECT id, n, skip, bytes, inserted_at AS insertedAt FROM blocks WHERE ${FROM_BLOCK} AND id <= ? ORDER BY id`,
  ),
  data: db.prepare("SELECT format, data FROM blocks WHERE id = ?"),
  deleteBlock: db.prepare("DELETE FROM blocks WHERE id = ?"),
  putHole: db.prepare("INSERT INTO holes (first, last, n, bytes) VALUES (?, ?, ?, ?)"),
  deleteHoles: db.prepare("DELETE FROM holes WHERE first >= ? AND last <= ?"),
  skipTo: db.prepare("UPDATE blocks SET skip = ?, bytes = ? WHERE id = ?"),
  putCheckpoint: db.prepare(
    "INSERT INTO checkpoints (file_id, path, offset, fp, updated_at) VALUES (?, ?, ?, ?, ?) " +
      "ON CONFLICT(file_id) DO UPDATE SET path = excluded.path, offset = excluded.offset, fp = excluded.fp, " +
      "updated_at = excluded.updated_at",
  ),
  getCheckpoint: db.prepare("SELECT file_id AS fileId, path, offset, fp FROM checkpoints WHERE file_id = ?"),
  delCheckpoint: db.prepare("DELETE FROM checkpoints WHERE file_id = ?"),
})
