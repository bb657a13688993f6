/**
 * The `stdin` input: one event per line (`{ log }`, tag `stdin` by default). The stream pulls from
 * the Readable only as fast as the buffer takes the lines, so a full buffer stops reading and the
 * writer on the other side of the pipe blocks.
 */
import type { Readable } from "node:stream"
import { Effect, Stream } from "effect"
import { rowBytes } from "./BufferStore.js"
import { DiskBuffer } from "./DiskBuffer.js"
import { toNewRecord } from "./Tail.js"

export const runStdin = (options: { readonly tag: string; readonly input?: Readable }) =>
  Effect.gen(function* () {
    const buffer = yield* DiskBuffer
    const source = options.input ?? process.stdin
    yield* Stream.fromAsyncIterable(
      source as AsyncIterable<Buffer | string>,
      (e) => new Error(`stdin: ${String(e)}`),
    ).pipe(
      Stream.map((c): Uint8Array => (typeof c === "string" ? Buffer.from(c, "utf8") : c)),
      Stream.decodeText(),
      Stream.splitLines,
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
