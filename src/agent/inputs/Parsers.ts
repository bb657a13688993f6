/**
 * Lines to records: the line splitter shared by the file and stdin inputs, and the parsers of the `tail`,
 * `docker` and `kubernetes` inputs, with the joiner of Kubernetes CRI partial lines (`P`).
 */
import { randomFillSync } from "node:crypto"
import type { NewRecord } from "../buffer/BufferStore.js"

/** The longest line (bytes) an input makes one event of; longer ones are cut (the default read chunk). */
export const MAX_LINE_BYTES = 256 * 1024

export interface ParsedLine {
  readonly tag: string
  readonly record: Record<string, unknown>
  /** Unix nanoseconds from the line itself, if it carries a time. */
  readonly ts?: bigint | undefined
}

/**
 * Now in Unix nanoseconds as decimal text: the millisecond clock, then the monotonic clock's nanoseconds within its
 * millisecond (so lines read in one millisecond keep apart), without the BigInts of a product.
 */
const nowNsText = (): string => {
  const sub = Math.floor((performance.now() % 1) * 1e6)
  return `${Date.now()}${sub >= 100_000 ? sub : String(sub).padStart(6, "0")}`
}

/** Parses an RFC 3339 time with up to 9 fractional digits into Unix nanoseconds. */
export const parseRfc3339Nanos = (s: string): bigint | undefined => {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/.exec(s)
  if (!m) return undefined
  const ms = Date.parse(`${m[1]}${m[3]}`)
  if (Number.isNaN(ms)) return undefined
  return BigInt(ms) * 1_000_000n + BigInt((m[2] ?? "").padEnd(9, "0"))
}

/** UUIDs formatted per refill of `newEventId`'s entropy. */
const IDS_PER_FILL = 256
const idRandom = Buffer.alloc(16 * IDS_PER_FILL)
const idText = Buffer.alloc(36 * IDS_PER_FILL)
let idNext = IDS_PER_FILL
const HEX_DIGITS = Buffer.from("0123456789abcdef", "latin1")

const fillEventIds = () => {
  randomFillSync(idRandom)
  for (let i = 0; i < IDS_PER_FILL; i++) {
    const r = i * 16
    idRandom[r + 6] = (idRandom[r + 6]! & 0x0f) | 0x40 // version 4
    idRandom[r + 8] = (idRandom[r + 8]! & 0x3f) | 0x80 // variant 10
    let o = i * 36
    for (let b = 0; b < 16; b++) {
      if (b === 4 || b === 6 || b === 8 || b === 10) idText[o++] = 0x2d // "-"
      const v = idRandom[r + b]!
      idText[o++] = HEX_DIGITS[v >> 4]!
      idText[o++] = HEX_DIGITS[v & 15]!
    }
  }
  idNext = 0
}

/**
 * A random UUID (version 4, as `crypto.randomUUID` makes): the entropy of 256 is drawn at once (randomUUID caches
 * 128) and each is formatted into one flat string; randomUUID's string of 20 concatenated pieces was the agent's
 * largest allocation per line.
 */
export const newEventId = (): string => {
  if (idNext === IDS_PER_FILL) fillEventIds()
  const o = 36 * idNext++
  return idText.toString("latin1", o, o + 36)
}

export const toNewRecord = (p: ParsedLine): NewRecord => ({
  tag: p.tag,
  ts: p.ts === undefined ? nowNsText() : p.ts.toString(),
  eventId: newEventId(),
  record: JSON.stringify(p.record),
})

/** The end of the line `buf[start, end)` without its last byte if that is a carriage return. */
const withoutCr = (buf: Buffer, start: number, end: number): number =>
  end > start && buf[end - 1] === 13 ? end - 1 : end

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
        lines.push(buf.toString("utf8", start, start + maxLine))
        start += maxLine
        ends.push(start)
        continue
      }
      if (final && rest > 0) {
        lines.push(buf.toString("utf8", start, withoutCr(buf, start, buf.length)))
        start = buf.length
        ends.push(start)
      }
      break
    }
    lines.push(buf.toString("utf8", start, withoutCr(buf, start, nl)))
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
