/**
 * How much garbage V8 may keep before it collects. The programs' peak RSS at their full rate is
 * mostly heap sized for the allocation rate, not data (docs/benchmarks.md, "Peak RSS at full rate"):
 *
 * - `SPILLWAY_V8_YOUNG_GROWTH` (default 0: `heapDefaultsFor`): V8's `--semi-space-growth-factor`.
 *   Node grows the young generation from 1 MiB semi-spaces to 16 MiB (32 MiB of new space) under a high allocation
 *   rate, and to 8 MiB already while it loads the bundle. 1 keeps it at the size it has when the program's code
 *   starts (2–4 MiB of new space): 30–70 MiB less RSS at full rate, for about a tenth more CPU in the router and
 *   half again as much in the ingester's batch RPC, so it is no program's default (the agent's it was until round 2
 *   session 15); 2 is V8's own growth; 0 leaves the flag as Node was started.
 * - `SPILLWAY_V8_OLD_GROWTH_PERCENT` (default 100: `heapDefaultsFor`): V8's `--heap-growing-percent`. After each
 *   full collection the old generation may grow to (1 + percent / 100) × what was live before the next one; V8's
 *   own factor goes up to 4 × when collections are cheap, which let 60–100 MB of old garbage pile up. 0 leaves V8's
 *   own factor.
 * - `SPILLWAY_V8_YOUNG_LIMIT_MIB` (default 0, the ingester and the agent 4, the router 8: `heapDefaultsFor`): the
 *   young generation grows only while each of its two semi-spaces is smaller than this. V8's own largest size
 *   (`--max-semi-space-size`, 16 MiB here) is fixed when V8 starts, so the limit is kept from the outside
 *   (`YoungLimit.ts`): the growth factor is 1 while the bundle loads, then, after each collection, 2 below the limit
 *   and 1 at it (`youngGrowthAt`). So under a limit a semi-space doubles from Node's 1 MiB (1, 2, 4, 8, 16 MiB) and a
 *   limit between two steps stops at the larger one; a limit above V8's largest size limits nothing. 0: no limit.
 *   With `SPILLWAY_V8_YOUNG_GROWTH=1` the generation does not grow and the limit has nothing to do; its other values
 *   do not apply under a limit.
 *
 * All are read from the environment when the program loads (`HeapAtLoad.ts`, the first import of every bundle
 * file), before the rest of its code runs; so they cannot come from the SPILLWAY_CONFIG file, and this
 * module imports nothing. V8 reads both flags each time it resizes a space, so setting them once Node runs takes
 * effect. Node documents `v8.setFlagsFromString` after start as unsupported in general;
 * `test/shared/HeapFlags.test.ts` checks that these two flags and the limit act on this Node.
 */

export interface HeapSettings {
  readonly youngGrowth: number
  readonly oldGrowthPercent: number
  /** MiB per semi-space the young generation grows to at most; 0: V8's own largest size. */
  readonly youngLimitMiB: number
}

export const defaultHeapSettings: HeapSettings = { youngGrowth: 0, oldGrowthPercent: 100, youngLimitMiB: 0 }

/**
 * The defaults of one program (`ingester`, `router`, `agent`: the bundle's file name). The ingester's young
 * generation grows to 4 MiB semi-spaces at most and its old generation by 100 %: at its full rate 145 against
 * 231 MiB of peak RSS, for about a fifth more CPU per event on the batch RPC (1.86 against 1.53 CPU-s per 100k) and
 * 14 % less rate on it (1.00 against 1.18 × the bare producer; SendEvent from grpc-go clients 0.81 against 0.86;
 * medians of seven interleaved pairs, docs/benchmarks.md, "Round 2 session 9"). The router's grows to 8 MiB
 * semi-spaces at most: at its full rate 126–133 against 141–152 MiB of peak RSS (route row; 135–142 against 149–159
 * with OpenSearch), for the same rate and CPU per event (seven interleaved pairs, "Round 2 session 14"); kept at its
 * first size (young growth 1) it cost a tenth more CPU. The agent, one per host, grows to 4 MiB semi-spaces at
 * most: at 10,000 lines/s 0.248–0.253 against 0.273–0.279 of a core for 106–107 against 99–100 MiB of peak RSS, kept
 * at its first size (young growth 1, its default before); 8 MiB gave 0.241–0.243 of a core for 116 MiB, near its
 * 120 MiB budget (three interleaved pairs each, "Round 2 session 15").
 */
export const heapDefaultsFor = (program: string): HeapSettings => programDefaults[program] ?? defaultHeapSettings

const programDefaults: Readonly<Record<string, HeapSettings>> = {
  ingester: { youngGrowth: 0, oldGrowthPercent: 100, youngLimitMiB: 4 },
  router: { youngGrowth: 0, oldGrowthPercent: 100, youngLimitMiB: 8 },
  agent: { youngGrowth: 0, oldGrowthPercent: 100, youngLimitMiB: 4 },
}

interface Setting {
  readonly env: string
  readonly key: keyof HeapSettings
  /** The V8 flag it sets; none for the young limit, which is kept by watching the collections. */
  readonly flag?: string
  readonly min: number
  readonly max: number
}

export const heapSettingRanges: ReadonlyArray<Setting> = [
  { env: "SPILLWAY_V8_YOUNG_GROWTH", key: "youngGrowth", flag: "--semi-space-growth-factor", min: 0, max: 4 },
  { env: "SPILLWAY_V8_OLD_GROWTH_PERCENT", key: "oldGrowthPercent", flag: "--heap-growing-percent", min: 0, max: 400 },
  { env: "SPILLWAY_V8_YOUNG_LIMIT_MIB", key: "youngLimitMiB", min: 0, max: 64 },
]

/** The V8 flags for `settings` (none for a setting of 0), the young limit aside. */
export const heapFlags = (settings: HeapSettings): ReadonlyArray<string> =>
  heapSettingRanges
    .filter((s) => s.flag !== undefined && settings[s.key] > 0)
    .map((s) => `${s.flag}=${settings[s.key]}`)

export interface HeapPlan {
  /** Set before the bundle is evaluated. */
  readonly atLoad: ReadonlyArray<string>
  /** Set once it has been (the old generation's bound: see HeapAtLoad.ts). */
  readonly afterLoad: ReadonlyArray<string>
  /** Watch the collections and keep the semi-spaces within `youngLimitMiB` (`youngGrowthAt`). */
  readonly limitYoung: boolean
}

/**
 * When each flag is set: under a young limit (set, and the young generation allowed to grow) it does not grow while
 * the bundle loads.
 */
export const heapPlan = (settings: HeapSettings): HeapPlan => {
  const limitYoung = settings.youngLimitMiB > 0 && settings.youngGrowth !== 1
  return {
    atLoad: limitYoung
      ? ["--semi-space-growth-factor=1"]
      : heapFlags({ ...settings, oldGrowthPercent: 0, youngLimitMiB: 0 }),
    afterLoad: heapFlags({ ...settings, youngGrowth: 0, youngLimitMiB: 0 }),
    limitYoung,
  }
}

/**
 * The young generation's growth factor once a semi-space holds `semiSpaceBytes` (its used and available bytes, as
 * V8 reports them: about 98 % of its size): 2 below the limit, 1 (no growth) at it. A tenth of slack for that
 * difference; V8's sizes double, so no step falls within it.
 */
export const youngGrowthAt = (semiSpaceBytes: number, settings: HeapSettings): number =>
  semiSpaceBytes >= 0.9 * settings.youngLimitMiB * 1_048_576 ? 1 : 2

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
