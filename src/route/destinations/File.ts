/**
 * The file destination: a tenant's lines appended as NDJSON to `<output-dir>/<file>`.
 *
 * - Never through a symbolic link: every folder on the way is checked with `lstat` under the output folder's real
 *   path (a link or a non-folder is a permanent refusal), and the file is opened with `O_NOFOLLOW` (a link there is
 *   refused too). A symlink planted in the output folder cannot redirect a tenant's writes to another file.
 * - All or nothing: the lines go out in one write loop; if it fails half way (ENOSPC, EFBIG) the file is truncated
 *   back to the size it had, so the retry cannot glue a fragment to the next line. A write cut off by a crash (SIGKILL
 *   can end a large write short, as can a power cut) leaves a fragment no one can truncate then: the next append
 *   finds the file ending mid-line and starts with a newline, so the fragment stays a line of its own (its lines were
 *   never acknowledged, so they come again whole) and a warning is logged.
 * - Durable before the offset moves: `fdatasync` of the file, and when the write created the file or folders, an
 *   `fsync` of each parent folder (else a crash could forget the new names with their content).
 *
 * Writes to one file are serialized by the caller (Destinations.ts). `FileIo` lets a test inject a failing write.
 */
import { constants, type FileHandle, lstat, mkdir, open, realpath } from "node:fs/promises"
import path from "node:path"
import { Effect } from "effect"
import { DestinationError } from "../../domain/Errors.js"
import type { FileTarget } from "../../domain/Tenant.js"

export interface FileIo {
  readonly write: (fh: FileHandle, data: Buffer, offset: number, length: number) => Promise<{ bytesWritten: number }>
  /** Makes a folder's entries durable (fsync of the folder). */
  readonly syncDir: (dir: string) => Promise<void>
}

export const nodeFileIo: FileIo = {
  write: (fh, data, offset, length) => fh.write(data, offset, length),
  syncDir: async (dir) => {
    const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY)
    try {
      await fh.sync()
    } finally {
      await fh.close()
    }
  },
}

/** A refusal that retrying cannot fix (the path is unsafe). */
class Unsafe extends Error {}

const code = (e: unknown): string | undefined =>
  typeof e === "object" && e !== null && "code" in e ? String((e as { code: unknown }).code) : undefined

/** The folders of `file` under `root`, made where missing; each must be a real folder. Returns those it made. */
const ensureFolders = async (root: string, rel: string): Promise<Array<string>> => {
  const made: Array<string> = []
  let at = root
  for (const part of path.dirname(rel).split(path.sep)) {
    if (part === "" || part === ".") continue
    at = path.join(at, part)
    try {
      const st = await lstat(at)
      if (st.isSymbolicLink()) throw new Unsafe("a folder on the target's path is a symbolic link")
      if (!st.isDirectory()) throw new Unsafe("a folder on the target's path is not a folder")
    } catch (e) {
      if (code(e) !== "ENOENT") throw e
      await mkdir(at, { mode: 0o750 }).catch((m: unknown) => {
        if (code(m) !== "EEXIST") throw m
      })
      made.push(at)
      const st = await lstat(at)
      if (!st.isDirectory() || st.isSymbolicLink()) throw new Unsafe("a folder on the target's path is not a folder")
    }
  }
  return made
}

const NEWLINE = Buffer.from("\n")

/** Whether the file's last byte (at `size - 1`) is other than a newline: the file ends in the start of a line. */
const endsMidLine = async (fh: FileHandle, size: number): Promise<boolean> => {
  if (size === 0) return false
  const last = Buffer.alloc(1)
  const { bytesRead } = await fh.read(last, 0, 1, size - 1)
  return bytesRead === 1 && last[0] !== 0x0a
}

/**
 * Appends `data` at the end of the open file, `before` bytes long; on failure, truncates it back to that. A file
 * that ends mid-line holds the start of a write that was cut off (the process killed, the machine stopped): that
 * write was never acknowledged, so its lines come again whole, and the append starts with a newline so that the
 * fragment stays a line of its own instead of swallowing the first new line. No byte is removed (the fragment may be
 * someone else's). Returns whether it ended such a fragment.
 */
const appendAll = async (io: FileIo, fh: FileHandle, data: Buffer, before: number): Promise<boolean> => {
  const cut = await endsMidLine(fh, before)
  const out = cut ? Buffer.concat([NEWLINE, data]) : data
  try {
    let written = 0
    while (written < out.length) {
      const { bytesWritten } = await io.write(fh, out, written, out.length - written)
      written += bytesWritten
    }
  } catch (e) {
    await fh.truncate(before).catch(() => undefined)
    throw e
  }
  return cut
}

/** The whole append (see the module's doc), as a promise; `Unsafe` for a refusal. */
const appendFile = async (io: FileIo, realRoot: string, rel: string, data: Buffer): Promise<boolean> => {
  const made = await ensureFolders(realRoot, rel)
  const file = path.join(realRoot, rel)
  const dir = await realpath(path.dirname(file))
  if (dir !== realRoot && !dir.startsWith(realRoot + path.sep)) throw new Unsafe("escapes the output folder")
  let created = false
  let fh: FileHandle
  try {
    fh = await open(file, constants.O_RDWR | constants.O_APPEND | constants.O_NOFOLLOW, 0o640)
  } catch (e) {
    if (code(e) === "ELOOP") throw new Unsafe("the target file is a symbolic link")
    if (code(e) !== "ENOENT") throw e
    const flags = constants.O_RDWR | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW
    fh = await open(file, flags, 0o640).catch((c: unknown) => {
      throw code(c) === "ELOOP" ? new Unsafe("the target file is a symbolic link") : c
    })
    created = true
  }
  let cut: boolean
  try {
    const st = await fh.stat()
    if (!st.isFile()) throw new Unsafe("the target is not a regular file")
    // Its size holds until the write: writes to one file are serialized (Destinations.ts), and O_APPEND.
    cut = await appendAll(io, fh, data, st.size)
    await fh.datasync()
  } finally {
    await fh.close()
  }
  // New names are durable once their folders are synced: the file's folder, then each folder made, upwards.
  if (created) await io.syncDir(path.dirname(file))
  for (const m of made.reverse()) await io.syncDir(path.dirname(m))
  return cut
}

/** Delivers NDJSON lines to a file target under `realRoot` (the output folder's real path). */
export const writeFile = (
  io: FileIo,
  realRoot: string,
  target: FileTarget,
  name: string,
  lines: ReadonlyArray<string>,
): Effect.Effect<void, DestinationError> => {
  const rel = path.normalize(target.file)
  const file = path.resolve(realRoot, rel)
  if (file === realRoot || !file.startsWith(realRoot + path.sep))
    return Effect.fail(new DestinationError({ target: name, retryable: false, detail: "escapes the output folder" }))
  const data = Buffer.from(`${lines.join("\n")}\n`, "utf8")
  const cutOff = Effect.logWarning(
    "the file ended mid-line (a write cut off by a crash); the new lines start after it",
  ).pipe(Effect.annotateLogs({ target: name }))
  return Effect.tryPromise({
    try: () => appendFile(io, realRoot, path.relative(realRoot, file), data),
    catch: (cause) =>
      cause instanceof Unsafe
        ? new DestinationError({ target: name, retryable: false, detail: cause.message })
        : new DestinationError({
            target: name,
            retryable: true,
            detail: `cannot append to the file: ${code(cause) ?? (cause instanceof Error ? cause.name : "error")}`,
            cause,
          }),
  }).pipe(Effect.flatMap((cut) => (cut ? cutOff : Effect.void)))
}
