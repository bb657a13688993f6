import { assert, describe, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { Partitioners } from "kafkajs"
import { memoDefaultPartitioner } from "../../src/ingest/KafkaSink.js"

const metadata = (n: number, leaderless: ReadonlyArray<number> = []) =>
  Array.from({ length: n }, (_, partitionId) => ({
    partitionId,
    leader: leaderless.includes(partitionId) ? -1 : 0,
    partitionErrorCode: 0,
    replicas: [0],
    isr: [0],
  }))

describe("memoDefaultPartitioner", () => {
  it.prop(
    "places keyed records as kafkajs' DefaultPartitioner does, as the partition count changes",
    [
      fc.array(
        fc.tuple(
          fc.constantFrom("a", "b", "9c60f26f-5b6c-4c80-b5f5-625bf965b6a6", "tenant-x"),
          fc.integer({ min: 1, max: 12 }),
        ),
        { maxLength: 40 },
      ),
    ],
    ([calls]) => {
      const memo = memoDefaultPartitioner()
      const plain = Partitioners.DefaultPartitioner()
      for (const [key, n] of calls) {
        const args = { topic: "t", partitionMetadata: metadata(n, [0]), message: { key, value: "v" } }
        assert.strictEqual(memo(args), plain(args))
      }
    },
  )

  it("leaves an explicit partition to kafkajs", () => {
    const memo = memoDefaultPartitioner()
    assert.strictEqual(
      memo({ topic: "t", partitionMetadata: metadata(3), message: { key: "a", value: "v", partition: 2 } }),
      2,
    )
  })
})
