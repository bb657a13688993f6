/**
 * The disk buffer's block layout (BufferStore.ts, format 2): a block per append, records removed out of order,
 * a block that shrinks, a buffer of format 1 converted, a newer format refused.
 */
import { mkdirSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "@effect/vitest"
import Database from "better-sqlite3"
import { decodeBlock, encodeBlock } from "../../src/agent/buffer/BlockCodec.js"
import { BUFFER_FORMAT, BufferStore, type NewRecord, rowBytes } from "../../src/agent/buffer/BufferStore.js"

const root = mkdtempSync(join(tmpdir(), "spillway-blocks-"))
afterAll(() => rmSync(root, { recursive: true, force: true }))
let n = 0
const dir = () => join(root, `b${++n}`)

const rec = (i: number, tag = "t"): NewRecord => ({
  tag,
  ts: `170000000000000000${i % 10}`,
  eventId: `id-${i}`,
  record: JSON.stringify({ log: `line ${i} \u2603 "quoted"\ttab`, i }),
})
const ids = (s: BufferStore) => s.peek(0, 1000, Number.POSITIVE_INFINITY).map((r) => r.eventId)

describe("BufferStore blocks", () => {
  it("one block per append; records keep ids of their own, read across blocks after any cursor", () => {
    const s = new BufferStore(dir())
    s.append([rec(1), rec(2), rec(3)])
    s.append([rec(4), rec(5)])
    expect((s.db.prepare("SELECT COUNT(*) AS c FROM blocks").get() as { c: number }).c).toBe(2)
    const rows = s.peek(0, 100, Number.POSITIVE_INFINITY)
    expect(rows.map((r) => r.id)).toEqual([1, 2, 3, 4, 5])
    expect(rows[0]).toMatchObject({ tag: "t", ts: rec(1).ts, eventId: "id-1", record: rec(1).record })
    expect(rows[0]!.bytes).toBe(rowBytes(rec(1)))
    expect(s.peek(2, 2, Number.POSITIVE_INFINITY).map((r) => r.id)).toEqual([3, 4])
    expect(s.peek(5, 10, Number.POSITIVE_INFINITY)).toEqual([])
    s.close()
  })

  it("a range acknowledged ahead of an older one is never read again, and persists; the block shrinks then goes", () => {
    const d = dir()
    const s = new BufferStore(d)
    s.append(Array.from({ length: 6 }, (_, i) => rec(i + 1)))
    const total = s.usedBytes
    expect(s.remove(4, 5)).toEqual({ n: 2, bytes: rowBytes(rec(4)) + rowBytes(rec(5)) })
    expect(s.remove(4, 5)).toEqual({ n: 0, bytes: 0 }) // a duplicate ack
    expect(ids(s)).toEqual(["id-1", "id-2", "id-3", "id-6"])
    expect(s.eventCount).toBe(4)
    s.close()
    const again = new BufferStore(d) // the removed range survives a reopen
    expect(ids(again)).toEqual(["id-1", "id-2", "id-3", "id-6"])
    expect(again.eventCount).toBe(4)
    expect(again.usedBytes).toBe(total - rowBytes(rec(4)) - rowBytes(rec(5)))
    expect(again.remove(1, 3).n).toBe(3) // the prefix reaches the removed range: the block keeps only id 6
    expect(ids(again)).toEqual(["id-6"])
    expect(again.usedBytes).toBe(rowBytes(rec(6)))
    again.close()
    const third = new BufferStore(d)
    expect(ids(third)).toEqual(["id-6"])
    expect(third.usedBytes).toBe(rowBytes(rec(6)))
    expect(third.remove(6, 6)).toEqual({ n: 1, bytes: rowBytes(rec(6)) })
    expect(third.eventCount).toBe(0)
    expect(third.usedBytes).toBe(0)
    expect((third.db.prepare("SELECT COUNT(*) AS c FROM blocks").get() as { c: number }).c).toBe(0)
    expect((third.db.prepare("SELECT COUNT(*) AS c FROM holes").get() as { c: number }).c).toBe(0)
    third.append([rec(7)])
    expect(third.peek(0, 10, Number.POSITIVE_INFINITY)[0]!.id).toBe(7) // ids are never reused
    third.close()
  })

  it("random removal orders over many blocks: every record is read until removed, counts stay exact", () => {
    const s = new BufferStore(dir(), "NORMAL")
    let next = 1
    for (let b = 0; b < 20; b++) {
      const size = 1 + ((b * 7) % 9)
      s.append(Array.from({ length: size }, () => rec(next++)))
    }
    const last = next - 1
    // batches of 1..11 records, acknowledged in a shuffled (but fixed) order
    const batches: Array<[number, number]> = []
    for (let a = 1, k = 0; a <= last; k++) {
      const z = Math.min(last, a + (k % 11))
      batches.push([a, z])
      a = z + 1
    }
    const order = batches.map((_, i) => (i * 37) % batches.length)
    expect(new Set(order).size).toBe(batches.length)
    const removed = new Set<number>()
    for (const i of order) {
      const [a, z] = batches[i]!
      expect(s.remove(a, z).n).toBe(z - a + 1)
      for (let id = a; id <= z; id++) removed.add(id)
      const left = s.peek(0, 10_000, Number.POSITIVE_INFINITY).map((r) => r.id)
      expect(left).toEqual(Array.from({ length: last }, (_, k) => k + 1).filter((id) => !removed.has(id)))
      expect(s.eventCount).toBe(left.length)
    }
    expect(s.usedBytes).toBe(0)
    s.close()
  })

  it("a buffer of format 1 (a row per record) is converted when opened: its rows, ids and checkpoints kept", () => {
    const d = dir()
    mkdirSync(d, { recursive: true })
    const old = new Database(join(d, "buffer.db"))
    old.exec(`
      CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, tag TEXT NOT NULL, ts TEXT NOT NULL,
        event_id TEXT NOT NULL, record TEXT NOT NULL, bytes INTEGER NOT NULL, inserted_at INTEGER NOT NULL);
      CREATE TABLE checkpoints (file_id TEXT PRIMARY KEY, path TEXT NOT NULL, offset INTEGER NOT NULL,
        updated_at INTEGER NOT NULL, fp TEXT NOT NULL DEFAULT '');`)
    const ins = old.prepare(
      "INSERT INTO events (tag, ts, event_id, record, bytes, inserted_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    for (let i = 1; i <= 5; i++) ins.run("t", rec(i).ts, `id-${i}`, rec(i).record, rowBytes(rec(i)), 1000 + i)
    old.exec("DELETE FROM events WHERE id IN (1, 5)") // acknowledged before the upgrade
    old.prepare("INSERT INTO checkpoints (file_id, path, offset, updated_at) VALUES ('in:1:2', '/x', 42, 0)").run()
    old.close()
    const s = new BufferStore(d)
    expect(s.db.pragma("user_version", { simple: true })).toBe(BUFFER_FORMAT)
    const rows = s.peek(0, 10, Number.POSITIVE_INFINITY)
    expect(rows.map((r) => [r.id, r.eventId, r.record, r.insertedAt])).toEqual(
      [2, 3, 4].map((i) => [i, `id-${i}`, rec(i).record, 1000 + i]),
    )
    expect(s.eventCount).toBe(3)
    expect(s.usedBytes).toBe(rowBytes(rec(2)) + rowBytes(rec(3)) + rowBytes(rec(4)))
    expect(s.checkpoint("in:1:2")).toEqual({ fileId: "in:1:2", path: "/x", offset: 42 })
    s.append([rec(6)])
    expect(s.peek(4, 10, Number.POSITIVE_INFINITY).map((r) => r.id)).toEqual([6]) // after the old sequence (5)
    expect(s.remove(2, 3).n).toBe(2)
    s.close()
    expect(ids(new BufferStore(d))).toEqual(["id-4", "id-6"])
  })

  it("a buffer of a newer format is refused with an error that says so", () => {
    const d = dir()
    new BufferStore(d).close()
    const db = new Database(join(d, "buffer.db"))
    db.pragma(`user_version = ${BUFFER_FORMAT + 1}`)
    db.close()
    expect(() => new BufferStore(d)).toThrow(/written by a newer agent/)
  })
})

describe("BlockCodec", () => {
  it("round-trips records, and a tag or event id holding U+0000 through the JSON format", () => {
    const records = [rec(1), rec(2, "a\u0000b"), { ...rec(3), eventId: "x\u0000" }, rec(4, "")]
    for (const batch of [[records[0]!, records[3]!], records]) {
      const withBytes = batch.map((r) => ({ ...r, bytes: rowBytes(r) }))
      const { data, format } = encodeBlock(withBytes)
      expect(format).toBe(batch.length === 2 ? 0 : 1)
      expect(decodeBlock(data, format, batch.length)).toEqual(withBytes)
    }
  })

  it("refuses a block that does not hold its records, and a field that is not a string", () => {
    const { data, format } = encodeBlock([
      { ...rec(1), bytes: 1 },
      { ...rec(2), bytes: 2 },
    ])
    expect(() => decodeBlock(data, format, 3)).toThrow(/does not hold/)
    expect(() => encodeBlock([{ ...rec(1), record: null as unknown as string, bytes: 1 }])).toThrow(/not a string/)
  })
})
