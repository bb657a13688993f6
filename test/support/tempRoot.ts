/**
 * Setup file of both vitest projects: a test file's temporary folders go into one folder of its own, removed after
 * the file's last hook. `os.tmpdir()` reads TMPDIR at each call, so every `mkdtemp` under it lands there, and so do
 * those of the programs the file starts (they inherit TMPDIR). Without it, each run of the suite left about a hundred
 * folders in /tmp. The setup file's `afterAll` runs after the test file's own (vitest runs after-hooks in reverse
 * order of registration), so the programs a file stops in its hooks are gone first.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"

const before = process.env.TMPDIR
const root = mkdtempSync(join(tmpdir(), "spillway-test-"))
process.env.TMPDIR = root

afterAll(() => {
  if (before === undefined) delete process.env.TMPDIR
  else process.env.TMPDIR = before
  rmSync(root, { recursive: true, force: true })
})
