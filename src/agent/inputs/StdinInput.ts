/**
 * The `stdin` input: one event per line (`{ log }`, tag `stdin` by default); a line longer than
 * MAX_LINE_BYTES (256 KiB, as for the tailer) is cut into pieces of that size. The stream pulls from
 * the Readable only as fast as the buffer takes the lines, so a full buffer (or one that cannot be
 * written: DiskBuffer retries) stops reading and the writer on the other side of the pipe blocks.
 */
import type { Readable } from "node:stream"
import { Effect, Ref, Stream } from "effect"
import { rowBytes } from "../buffer/BufferStore.js"
import { DiskBuffer } from "../buffer/DiskBuffer.js"
import { MAX_LINE_BYTES, splitLines, toNewRecord } from "./Parsers.js"

/** Byte chunks to lines (without newline), each at most `maxLine` bytes; the rest of the input is the last line. */
export const linesOf = <E>(chunks: Stream.Stream<Uint8Array, E>, maxLine: number): Stream.Stream<string, E> =>
  Stream.unwrap(
    Effect.gen(function* () {
      const carry = yield* Ref.make(Buffer.alloc(0))
      const body = chunks.pipe(
        Stream.mapEffect((chunk) =>
          Ref.modify(carry, (rest) => {
            const buf = rest.length === 0 ? Buffer.from(chunk) : Buffer.concat([rest, chunk])
            const r = splitLines(buf, false, maxLine)
            return [r.lines, Buffer.from(buf.subarray(r.consumed))] as const
          }),
        ),
        Stream.flattenIterables,
      )
      const last = Stream.fromEffect(Ref.get(carry)).pipe(
        Stream.map((rest) => (rest.length === 0 ? [] : splitLines(rest, true, maxLine).lines)),
        Stream.flattenIterables,
      )
      return Stream.concat(body, last)
    }),
  )

export const runStdin = (options: {
  readonly tag: string
  readonly input?: Readable
  readonly maxLineBytes?: number
}) =>
  Effect.gen(function* () {
    const buffer = yield* DiskBuffer
    const source = options.input ?? process.stdin
    const chunks = Stream.fromAsyncIterable(
      source as AsyncIterable<Buffer | string>,
      (e) => new Error(`stdin: ${String(e)}`),
    ).pipe(Stream.map((c): Uint8Array => (typeof c === "string" ? Buffer.from(c, "utf8") : c)))
    yield* linesOf(chunks, options.maxLineBytes ?? MAX_LINE_BYTES).pipe(
      Stream.groupedWithin(500, "200 millis"),
      Stream.mapEffect((lines) =>
        Effect.gen(function* () {
          const records = [...lines].map((line) => toNewRecord({ tag: options.tag, record: { log: line } }))
          yield* buffer.awaitSpace(records.reduce((n, r) => n + rowBytes(r), 0))
          yield* buffer.append("stdin", records)
        }),
      ),
      Stream.runDrain,
      Effect.catchAll((e) => Effect.logError("stdin input failed").pipe(Effect.annotateLogs({ error: e.message }))),
    )
    yield* Effect.logInfo("stdin closed; the stdin input is done")
  })
