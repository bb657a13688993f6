/**
 * Lines to records: the line splitter shared by the file and stdin inputs, and the parsers of the `tail`,
 * `docker` and `kubernetes` inputs, with the joiner of Kubernetes CRI partial lines (`P`).
 */
import { randomUUID } from "node:crypto"
import type { NewRecord } from "../buffer/BufferStore.js"

/** The longest line (bytes) an input makes one event of; longer ones are cut (the default read chunk). */
export const MAX_LINE_BYTES = 256 * 1024

export interface ParsedLine {
  readonly tag: string
  readonly record: Record<string, unknown>
  /** Unix nanoseconds from the line itself, if it carries a time. */
  readonly ts?: bigint | undefined
}

const nowNs = () => BigInt(Date.now()) * 1_000_000n + (process.hrtime.bigint() % 1_000_000n)

/** Parses an RFC 3339 time with up to 9 fractional digits into Unix nanoseconds. */
export const parseRfc3339Nanos = (s: string): bigint | undefined => {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/.exec(s)
  if (!m) return undefined
  const ms = Date.parse(`${m[1]}${m[3]}`)
  if (Number.isNaN(ms)) return undefined
  return BigInt(ms) * 1_000_000n + BigInt((m[2] ?? "").padEnd(9, "0"))
}

export const toNewRecord = (p: ParsedLine): NewRecord => ({
  tag: p.tag,
  ts: (p.ts ?? nowNs()).toString(),
  eventId: randomUUID(),
  record: JSON.stringify(p.record),
})

/**
 * Splits `buf` into complete lines. Returns the lines, where each ends in `buf` (newline included)
 * and how many bytes they used; a trailing piece without a newline is left unless `final` or it
 * exceeds `maxLine` (then it is cut into `maxLine` pieces).
 */
export const splitLines = (
  buf: Buffer,
  final: boolean,
  maxLine: number,
): { lines: Array<string>; ends: Array<number>; consumed: number } => {
  const lines: Array<string> = []
  const ends: Array<number> = []
  let start = 0
  while (start < buf.length) {
    const nl = buf.indexOf(10, start)
    if (nl === -1 || nl - start > maxLine) {
      const rest = buf.length - start
      if (rest > maxLine || (nl !== -1 && nl - start > maxLine)) {
        lines.push(buf.subarray(start, start + maxLine).toString("utf8"))
        start += maxLine
        ends.push(start)
        continue
      }
      if (final && rest > 0) {
        lines.push(buf.subarray(start).toString("utf8").replace(/\r$/, ""))
        start = buf.length
        ends.push(start)
      }
      break
    }
    lines.push(buf.subarray(start, nl).toString("utf8").replace(/\r$/, ""))
    start = nl + 1
    ends.push(start)
  }
  return { lines, ends, consumed: start }
}

/** `tail`: each line is `{ log }`, with the file's path. */
export const tailParser =
  (tag: string) =>
  (line: string, path: string): ParsedLine => ({ tag, record: { log: line, path } })

/** Docker json-file logs (`<root>/<id>/<id>-json.log`): `{ log, stream, time }` per line; tag `docker.<id>`. */
export const dockerParser = (line: string, path: string): ParsedLine | undefined => {
  const id = /([0-9a-f]{12,64})-json\.log$/.exec(path)?.[1] ?? "unknown"
  let j: { log?: unknown; stream?: unknown; time?: unknown }
  try {
    j = JSON.parse(line)
  } catch {
    return { tag: `docker.${id}`, record: { log: line, container_id: id, parse_error: true } }
  }
  const log = typeof j.log === "string" ? j.log.replace(/\n$/, "") : String(j.log ?? "")
  const time = typeof j.time === "string" ? j.time : undefined
  return {
    tag: `docker.${id}`,
    record: { log, stream: j.stream, time, container_id: id },
    ts: time === undefined ? undefined : parseRfc3339Nanos(time),
  }
}

const K8S_FILE = /(?:^|\/)([^/_]+)_([^/_]+)_(.+)-([0-9a-f]{64})\.log$/

/** Namespace, pod, container and container id from a `/var/log/containers` file name. */
export const kubernetesFileMeta = (path: string) => {
  const m = K8S_FILE.exec(path)
  return m ? { pod_name: m[1]!, namespace_name: m[2]!, container_name: m[3]!, container_id: m[4]! } : undefined
}

/** CRI logs (`<time> <stream> <P|F> <log>`), tag `kube.<namespace>.<pod>.<container>`. */
export const kubernetesParser = (line: string, path: string): ParsedLine | undefined => {
  const meta = kubernetesFileMeta(path) ?? {
    pod_name: "unknown",
    namespace_name: "unknown",
    container_name: "unknown",
    container_id: "",
  }
  const tag = `kube.${meta.namespace_name}.${meta.pod_name}.${meta.container_name}`
  const m = /^(\S+) (stdout|stderr) ([PF])(?: (.*))?$/.exec(line)
  if (!m) return { tag, record: { log: line, kubernetes: meta, parse_error: true } }
  return {
    tag,
    record: { time: m[1], stream: m[2], logtag: m[3], log: m[4] ?? "", kubernetes: meta },
    ts: parseRfc3339Nanos(m[1]!),
  }
}

/** The first lines of an event not complete yet (a CRI partial), and where the first one starts in the file. */
export interface Pending {
  readonly first: ParsedLine
  readonly parts: ReadonlyArray<string>
  readonly bytes: number
  readonly at: number
}

/**
 * Joins parsed lines of one file into events, as a pure step: a line either is an event, or waits (pending)
 * for the lines that complete it. The tailer checkpoints no further than a pending event's first line, so a
 * crash never loses a part, and it commits the new state only for the lines it stored.
 */
export type Joiner = (
  pending: Pending | undefined,
  p: ParsedLine,
  at: number,
) => { readonly pending: Pending | undefined; readonly event: ParsedLine | undefined }

/** Every line is an event. */
export const noJoin: Joiner = (_pending, p) => ({ pending: undefined, event: p })

const joined = (p: Pending, logtag: string): ParsedLine => ({
  ...p.first,
  record: {
    ...p.first.record,
    log: p.parts.join(""),
    logtag,
    ...(p.parts.length > 1 ? { parts: p.parts.length } : {}),
  },
})

/** A pending event as it is (the end of a rotated file): tagged `logtag: "P"`. */
export const flushPending = (p: Pending): ParsedLine => joined(p, "P")

/**
 * Kubernetes CRI: `P` lines are joined with the `F` line that ends them into one event (the first part's time
 * and stream, `log` the concatenation, `parts` their number). Past `maxBytes` of log the event goes out as it
 * is, tagged `logtag: "P"`, and the following parts start a new one.
 */
export const criJoiner =
  (maxBytes: number): Joiner =>
  (pending, p, at) => {
    const logtag = p.record.logtag
    if (pending === undefined && logtag !== "P") return { pending: undefined, event: p }
    const piece = String(p.record.log ?? "")
    const base: Pending = pending ?? { first: p, parts: [], bytes: 0, at }
    const cur: Pending = { ...base, parts: [...base.parts, piece], bytes: base.bytes + Buffer.byteLength(piece) }
    if (logtag === "P" && cur.bytes < maxBytes) return { pending: cur, event: undefined }
    return { pending: undefined, event: joined(cur, logtag === "P" ? "P" : "F") }
  }
