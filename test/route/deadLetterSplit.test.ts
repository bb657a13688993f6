/** The dead-letter writer's pure parts: runs by bytes, and which kafkajs errors mean "too large". */
import { assert, describe, it } from "@effect/vitest"
import { type DeadLetter, isTooLarge, letterBytes, splitByBytes } from "../../src/shared/DeadLetter.js"

const letter = (offset: number, bytes: number): DeadLetter => ({
  reason: "undecodable",
  detail: "x",
  topic: "t",
  partition: 0,
  offset: String(offset),
  key: null,
  value: Buffer.alloc(bytes),
})

describe("DeadLetter", () => {
  it("splits letters in order into runs under the byte limit; a larger letter is a run alone", () => {
    const letters = [letter(0, 300), letter(1, 300), letter(2, 300), letter(3, 5000), letter(4, 10)]
    const runs = splitByBytes(letters, 1000)
    assert.deepStrictEqual(
      runs.map((r) => r.map((l) => l.offset)),
      [["0", "1"], ["2"], ["3"], ["4"]],
    )
    for (const r of runs.filter((x) => x.length > 1))
      assert.isAtMost(
        r.reduce((s, l) => s + letterBytes(l), 0),
        1000,
      )
    assert.deepStrictEqual(splitByBytes([], 1000), [])
  })

  it("knows kafkajs's too-large errors, also wrapped", () => {
    const protocol = { name: "KafkaJSProtocolError", type: "MESSAGE_TOO_LARGE", code: 10 }
    assert.isTrue(isTooLarge(protocol))
    assert.isTrue(isTooLarge({ name: "KafkaJSNonRetriableError", cause: { type: "RECORD_LIST_TOO_LARGE" } }))
    assert.isTrue(isTooLarge({ name: "KafkaJSAggregateError", errors: [{ type: "X" }, protocol] }))
    assert.isFalse(isTooLarge({ type: "NOT_ENOUGH_REPLICAS" }))
    assert.isFalse(isTooLarge(new Error("MESSAGE_TOO_LARGE")))
    assert.isFalse(isTooLarge(undefined))
  })
})
