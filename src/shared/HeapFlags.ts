/**
 * How much garbage V8 may keep before it collects. The programs' peak RSS at their full rate is
 * mostly heap sized for the allocation rate, not data (docs/benchmarks.md, "Peak RSS at full rate"):
 *
 * - `SPILLWAY_V8_YOUNG_GROWTH` (default 0, the agent 1: `heapDefaultsFor`): V8's `--semi-space-growth-factor`.
 *   Node grows the young generation from 1 MiB semi-spaces to 16 MiB (32 MiB of new space) under a high allocation
 *   rate, and to 8 MiB already while it loads the bundle. 1 keeps it at the size it has when the program's code
 *   starts (2–4 MiB of new space): 30–70 MiB less RSS at full rate, for about a tenth more CPU in the router and
 *   half again as much in the ingester's batch RPC, so it is not their default (the agent's it is); 2 is V8's own
 *   growth; 0 leaves the flag as Node was started.
 * - `SPILLWAY_V8_OLD_GROWTH_PERCENT` (default 100, the ingester 0: `heapDefaultsFor`): V8's
 *   `--heap-growing-percent`. After each full collection the old generation may grow to (1 + percent / 100) ×
 *   what was live before the next one; V8's own factor goes up to 4 × when collections are cheap, which let
 *   60–100 MB of old garbage pile up. 0 leaves V8's own factor.
 *
 * Both are read from the environment when the program loads (`HeapAtLoad.ts`, the first import of every bundle
 * file), before the rest of its code runs; so they cannot come from the SPILLWAY_CONFIG file, and this
 * module imports nothing. V8 reads both flags each time it resizes a space, so setting them once Node runs takes
 * effect; the young generation's largest size (`--max-semi-space-size`) is fixed when V8 starts. Node documents
 * `v8.setFlagsFromString` after start as unsupported in general; `test/shared/HeapFlags.test.ts` checks that these
 * two flags act on this Node.
 */

export interface HeapSettings {
  readonly youngGrowth: number
  readonly oldGrowthPercent: number
}

export const defaultHeapSettings: HeapSettings = { youngGrowth: 0, oldGrowthPercent: 100 }

/**
 * The defaults of one program (`ingester`, `router`, `agent`: the bundle's file name). The ingester keeps V8's own
 * old-generation growth: bounded at 100 %, its batch RPC at full rate lost 15–25 % of its rate to the more frequent
 * full collections in each of six interleaved pairs (docs/benchmarks.md, "Round 2 session 5"), for 157 against
 * 204 MiB. The router and the agent lost nothing measurable and keep 100. The agent, one per host, also keeps its
 * young generation small (young growth 1): at 10,000 lines/s 106–108 against 137–142 MiB of peak RSS, for about 7 %
 * more CPU (4.33 against 4.05 CPU-s per 100k lines, medians of six interleaved pairs; docs/benchmarks.md, "Round 2
 * session 6"). The router and the ingester hold batches in flight that outlive a small young generation, and pay
 * a tenth to a half more CPU for it.
 */
export const heapDefaultsFor = (program: string): HeapSettings => programDefaults[program] ?? defaultHeapSettings

const programDefaults: Readonly<Record<string, HeapSettings>> = {
  ingester: { youngGrowth: 0, oldGrowthPercent: 0 },
  agent: { youngGrowth: 1, oldGrowthPercent: 100 },
}

interface Setting {
  readonly env: string
  readonly key: keyof HeapSettings
  readonly flag: string
  readonly min: number
  readonly max: number
}

export const heapSettingRanges: ReadonlyArray<Setting> = [
  { env: "SPILLWAY_V8_YOUNG_GROWTH", key: "youngGrowth", flag: "--semi-space-growth-factor", min: 0, max: 4 },
  { env: "SPILLWAY_V8_OLD_GROWTH_PERCENT", key: "oldGrowthPercent", flag: "--heap-growing-percent", min: 0, max: 400 },
]

/** The V8 flags for `settings` (none for a setting of 0). */
export const heapFlags = (settings: HeapSettings): ReadonlyArray<string> =>
  heapSettingRanges.filter((s) => settings[s.key] > 0).map((s) => `${s.flag}=${settings[s.key]}`)

/**
 * The settings in `env` (else `defaults`), or the first one that is not an integer in its range, named. Read from
 * the environment (not through Effect's Config: `HeapAtLoad.ts` runs before the rest of the bundle); a refused value
 * sets nothing, and `api`, `consumer` and `validate` report it.
 */
export const heapSettingsOf = (
  env: Readonly<Record<string, string | undefined>>,
  defaults: HeapSettings = defaultHeapSettings,
): { readonly settings: HeapSettings } | { readonly error: string } => {
  const out: Record<string, number> = {}
  for (const s of heapSettingRanges) {
    const text = env[s.env]?.trim()
    const value = text === undefined || text === "" ? defaults[s.key] : Number(text)
    if (!Number.isInteger(value) || value < s.min || value > s.max)
      return { error: `${s.env} must be an integer ${s.min} to ${s.max}` }
    out[s.key] = value
  }
  return { settings: out as unknown as HeapSettings }
}
