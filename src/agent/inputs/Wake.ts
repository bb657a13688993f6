/**
 * Wake-ups of the tail loop when a tracked file changes (fs.watch: inotify on Linux), so an appended line is read
 * within `readGapMs` instead of at the next poll. The poll stays: it finds new files and rotations, and it is the
 * fallback where watching is not possible (an inotify limit, a file system without it): a watcher that fails is
 * closed and that file is read at every poll only. One watcher per tracked file (bounded by the tracked files).
 */
import { type FSWatcher, watch } from "node:fs"
import { Effect } from "effect"

export interface Wake {
  /** Watches `path` (a tracked file) under `key`; a change wakes `wait`. A file that cannot be watched is polled. */
  readonly watch: (key: string, path: string) => void
  readonly unwatch: (key: string) => void
  /** Waits for a change (true) or `maxMs` (false); a change since the last wait returns at once. */
  readonly wait: (maxMs: number) => Effect.Effect<boolean>
  readonly close: () => void
}

export const makeWake = (): Wake => {
  const watchers = new Map<string, FSWatcher>()
  let changed = false
  let resume: (() => void) | undefined
  const poke = () => {
    changed = true
    const r = resume
    resume = undefined
    r?.()
  }
  const unwatch = (key: string) => {
    watchers.get(key)?.close()
    watchers.delete(key)
  }
  return {
    watch: (key, path) => {
      if (watchers.has(key)) return
      try {
        const w = watch(path, { persistent: false }, poke)
        w.on("error", () => unwatch(key))
        watchers.set(key, w)
      } catch {
        // not watchable (ENOSPC: inotify watches used up, EMFILE...): the poll reads it
      }
    },
    unwatch,
    // One timer per wait inside the callback, not `timeoutTo` (which forks a fiber to race a sleep): ~33 waits a second.
    wait: (maxMs) =>
      Effect.async<boolean>((cb) => {
        if (changed) {
          changed = false
          return cb(Effect.succeed(true))
        }
        const timer = setTimeout(
          () => {
            resume = undefined
            cb(Effect.succeed(false))
          },
          Math.max(0, maxMs),
        )
        resume = () => {
          clearTimeout(timer)
          changed = false
          cb(Effect.succeed(true))
        }
        return Effect.sync(() => {
          clearTimeout(timer)
          resume = undefined
        })
      }),
    close: () => {
      for (const w of watchers.values()) w.close()
      watchers.clear()
    },
  }
}
