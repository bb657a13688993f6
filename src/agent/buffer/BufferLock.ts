/**
 * One agent per buffer folder: `<dir>/buffer.lock` holds the owner's pid while the buffer is open, created
 * with O_EXCL. A lock whose pid is alive (another process) or that this process already holds refuses the
 * second agent; a lock left by a dead process (a crash, SIGKILL), or by an earlier incarnation of this pid
 * (pid 1 in a restarted container), is taken over.
 */
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from "node:fs"
import { join } from "node:path"
import { Data, Effect } from "effect"

export class BufferLocked extends Data.TaggedError("BufferLocked")<{ readonly dir: string; readonly pid: number }> {
  override get message() {
    return `the disk buffer ${this.dir} is in use by another agent (pid ${this.pid}); give each agent its own --buffer-dir (if no agent runs, remove ${join(this.dir, "buffer.lock")})`
  }
}

/** Folders locked by this process (a second open in the same process is refused too). */
const heldHere = new Set<string>()

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as { code?: string }).code === "EPERM" // exists, owned by someone else
  }
}

const tryCreate = (file: string): boolean => {
  try {
    const fd = openSync(file, "wx", 0o600)
    writeSync(fd, `${process.pid}\n`)
    closeSync(fd)
    return true
  } catch (e) {
    if ((e as { code?: string }).code === "EEXIST") return false
    throw e
  }
}

const ownerOf = (file: string): number => {
  try {
    return Number.parseInt(readFileSync(file, "utf8").trim(), 10)
  } catch {
    return Number.NaN
  }
}

/** Takes the lock (or fails with BufferLocked); released with the scope. */
export const lockBuffer = (dir: string) =>
  Effect.acquireRelease(
    Effect.gen(function* () {
      mkdirSync(dir, { recursive: true, mode: 0o700 })
      const file = join(dir, "buffer.lock")
      if (heldHere.has(file)) return yield* new BufferLocked({ dir, pid: process.pid })
      if (!tryCreate(file)) {
        const pid = ownerOf(file)
        if (Number.isInteger(pid) && pid !== process.pid && alive(pid)) return yield* new BufferLocked({ dir, pid })
        yield* Effect.logWarning("taking over a stale disk buffer lock").pipe(
          Effect.annotateLogs({ dir, stalePid: Number.isInteger(pid) ? pid : "unreadable" }),
        )
        rmSync(file, { force: true })
        if (!tryCreate(file)) return yield* new BufferLocked({ dir, pid: ownerOf(file) })
      }
      heldHere.add(file)
      return file
    }),
    (file) =>
      Effect.sync(() => {
        heldHere.delete(file)
        if (ownerOf(file) === process.pid) rmSync(file, { force: true })
      }),
  )
