/**
 * The `metrics` input: cpu, memory and netif samples with the record fields of the proof of
 * concept's Fluent Bit inputs (`cpu`, `mem` tagged "memory", `netif`), read from /proc:
 * - cpu: `cpuN.p_cpu`, `cpuN.p_user`, `cpuN.p_system` per CPU and `cpu_p`, `user_p`, `system_p`
 *   overall, percentages of the interval (user = user+nice, as Fluent Bit counts it);
 * - memory: `Mem.total`, `Mem.used`, `Mem.free`, `Swap.total`, `Swap.used`, `Swap.free` in KiB;
 * - netif: `<if>.rx.bytes|packets|errors`, `<if>.tx.bytes|packets|errors` for the interval, one
 *   record per interface (all but `lo`, or the configured ones).
 */
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { Effect, Schedule } from "effect"
import { type NewRecord, rowBytes } from "../buffer/BufferStore.js"
import { DiskBuffer } from "../buffer/DiskBuffer.js"
import { toNewRecord } from "./Parsers.js"

export interface CpuTimes {
  readonly user: number
  readonly system: number
  readonly total: number
}
export type CpuSample = ReadonlyMap<string, CpuTimes> // "cpu" (all) and "cpu0"...

/** Pure: parses /proc/stat's cpu lines. */
export const parseProcStat = (text: string): CpuSample => {
  const out = new Map<string, CpuTimes>()
  for (const line of text.split("\n")) {
    const m = /^(cpu\d*)\s+(.*)$/.exec(line)
    if (!m) continue
    const v = m[2]!.trim().split(/\s+/).map(Number)
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = v
    out.set(m[1]!, { user: user + nice, system, total: user + nice + system + idle + iowait + irq + softirq + steal })
  }
  return out
}

const pct = (d: number, total: number) => (total > 0 ? (d / total) * 100 : 0)

/** Pure: the `cpu` record for the interval between two samples. */
export const cpuRecord = (prev: CpuSample, cur: CpuSample): Record<string, number> => {
  const rec: Record<string, number> = {}
  const names = [...cur.keys()].filter((k) => k !== "cpu").sort((a, b) => Number(a.slice(3)) - Number(b.slice(3)))
  for (const name of names) {
    const a = prev.get(name)
    const b = cur.get(name)!
    if (!a) continue
    const total = b.total - a.total
    const user = pct(b.user - a.user, total)
    const system = pct(b.system - a.system, total)
    rec[`${name}.p_cpu`] = user + system
    rec[`${name}.p_system`] = system
    rec[`${name}.p_user`] = user
  }
  const a = prev.get("cpu")
  const b = cur.get("cpu")
  if (a && b) {
    const total = b.total - a.total
    const user = pct(b.user - a.user, total)
    const system = pct(b.system - a.system, total)
    rec.cpu_p = user + system
    rec.system_p = system
    rec.user_p = user
  }
  return rec
}

/** Pure: the `memory` record from /proc/meminfo (KiB). */
export const memRecord = (meminfo: string): Record<string, number> => {
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(meminfo)?.[1] ?? 0)
  const total = kb("MemTotal")
  const free = kb("MemFree")
  const swapTotal = kb("SwapTotal")
  const swapFree = kb("SwapFree")
  return {
    "Mem.free": free,
    "Mem.total": total,
    "Mem.used": total - free,
    "Swap.free": swapFree,
    "Swap.total": swapTotal,
    "Swap.used": swapTotal - swapFree,
  }
}

export interface NetCounters {
  readonly rxBytes: number
  readonly rxPackets: number
  readonly rxErrors: number
  readonly txBytes: number
  readonly txPackets: number
  readonly txErrors: number
}

/** Pure: parses /proc/net/dev. */
export const parseNetDev = (text: string): ReadonlyMap<string, NetCounters> => {
  const out = new Map<string, NetCounters>()
  for (const line of text.split("\n").slice(2)) {
    const m = /^\s*([^:\s]+):\s*(.*)$/.exec(line)
    if (!m) continue
    const v = m[2]!.trim().split(/\s+/).map(Number)
    out.set(m[1]!, {
      rxBytes: v[0] ?? 0,
      rxPackets: v[1] ?? 0,
      rxErrors: v[2] ?? 0,
      txBytes: v[8] ?? 0,
      txPackets: v[9] ?? 0,
      txErrors: v[10] ?? 0,
    })
  }
  return out
}

/** Pure: one `netif` record per interface, counting the interval between two samples. */
export const netifRecords = (
  prev: ReadonlyMap<string, NetCounters>,
  cur: ReadonlyMap<string, NetCounters>,
  interfaces: ReadonlyArray<string> | undefined,
): Array<Record<string, number>> => {
  const names = [...cur.keys()].filter((n) => (interfaces ? interfaces.includes(n) : n !== "lo")).sort()
  const out: Array<Record<string, number>> = []
  for (const n of names) {
    const a = prev.get(n)
    const b = cur.get(n)!
    if (!a) continue
    const d = (k: keyof NetCounters) => Math.max(0, b[k] - a[k])
    out.push({
      [`${n}.rx.bytes`]: d("rxBytes"),
      [`${n}.rx.errors`]: d("rxErrors"),
      [`${n}.rx.packets`]: d("rxPackets"),
      [`${n}.tx.bytes`]: d("txBytes"),
      [`${n}.tx.errors`]: d("txErrors"),
      [`${n}.tx.packets`]: d("txPackets"),
    })
  }
  return out
}

export interface MetricsInputOptions {
  readonly intervalMs: number
  /** Interfaces for netif; all but `lo` when undefined. */
  readonly interfaces?: ReadonlyArray<string> | undefined
  /** `/proc` (tests point it elsewhere). */
  readonly procRoot?: string
}

/** Runs forever: one cpu, one memory and the netif records per interval, in one buffer transaction. */
export const runMetrics = (options: MetricsInputOptions) =>
  Effect.gen(function* () {
    const buffer = yield* DiskBuffer
    const root = options.procRoot ?? "/proc"
    const read = (f: string) => readFileSync(join(root, f), "utf8")
    const sample = () => ({ cpu: parseProcStat(read("stat")), net: parseNetDev(read("net/dev")) })
    let prev = yield* Effect.sync(sample)
    const step = Effect.gen(function* () {
      const cur = sample()
      const records: Array<NewRecord> = [
        toNewRecord({ tag: "cpu", record: cpuRecord(prev.cpu, cur.cpu) }),
        toNewRecord({ tag: "memory", record: memRecord(read("meminfo")) }),
        ...netifRecords(prev.net, cur.net, options.interfaces).map((r) => toNewRecord({ tag: "netif", record: r })),
      ]
      prev = cur
      yield* buffer.awaitSpace(records.reduce((n, r) => n + rowBytes(r), 0))
      yield* buffer.append("metrics", records)
    }).pipe(
      Effect.catchAllDefect((e) =>
        Effect.logWarning("metrics sample failed").pipe(Effect.annotateLogs({ error: String(e) })),
      ),
    )
    // first sample after one interval (the cpu and netif records are deltas), then every interval
    return yield* step.pipe(Effect.schedule(Schedule.spaced(`${options.intervalMs} millis`)))
  })
