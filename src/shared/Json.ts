/**
 * JSON parsing for files that may hold secrets (tenants file, SPILLWAY_CONFIG): V8's SyntaxError may quote part of
 * the text, so the error says only where the problem is (line and column), never what is there.
 */
import { Either } from "effect"

/** Pure: the parsed value, or `is not valid JSON (line L, column C)` with no part of the text in it. */
export const parseJsonQuietly = (text: string): Either.Either<unknown, string> => {
  try {
    return Either.right(JSON.parse(text) as unknown)
  } catch (e) {
    const at = /position (\d+)/.exec(e instanceof Error ? e.message : "")
    if (at?.[1] === undefined) return Either.left("is not valid JSON")
    const before = text.slice(0, Number(at[1])).split("\n")
    return Either.left(`is not valid JSON (line ${before.length}, column ${(before.at(-1)?.length ?? 0) + 1})`)
  }
}
