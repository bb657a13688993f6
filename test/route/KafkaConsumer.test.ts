/**
 * The kafkajs side of a RecordBatch: its commit against a fake eachBatch payload whose commit fails with kafkajs' own
 * errors (KafkaJSProtocolError from kafkajs' table of protocol errors, as a broker's answer becomes one).
 */
import { createRequire } from "node:module"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, FiberSet } from "effect"
import type { Consumer, EachBatchPayload, Kafka } from "kafkajs"
import { KafkaJSNumberOfRetriesExceeded, type KafkaJSProtocolError } from "kafkajs"
import { commitRetriable, recordBatchOf } from "../../src/route/KafkaConsumer.js"
import type { GroupMember } from "../../src/shared/Kafka.js"

const { createErrorFromCode } = createRequire(import.meta.url)("kafkajs/src/protocol/error.js") as {
  createErrorFromCode: (code: number) => KafkaJSProtocolError
}
const NOT_COORDINATOR = 16
const ILLEGAL_GENERATION = 22
const REBALANCE_IN_PROGRESS = 27

interface Fake {
  readonly payload: EachBatchPayload
  readonly calls: Array<string>
  stale: boolean
}

/** An eachBatch payload whose commits fail with `failures` in turn, then succeed; `calls` lists each try. */
const fakePayload = (failures: ReadonlyArray<Error>): Fake => {
  const left = [...failures]
  const fake: Fake = {
    calls: [],
    stale: false,
    payload: {
      batch: { topic: "t", partition: 0, highWatermark: "10" },
      resolveOffset: () => undefined,
      commitOffsetsIfNecessary: async (o?: { topics: Array<{ partitions: Array<{ offset: string }> }> }) => {
        fake.calls.push(o?.topics[0]?.partitions[0]?.offset ?? "")
        const e = left.shift()
        if (e !== undefined) throw e
      },
      isRunning: () => true,
      isStale: () => fake.stale,
      heartbeat: async () => undefined,
    } as unknown as EachBatchPayload,
  }
  return fake
}

/**
 * A kafkajs client whose (private) cluster factory finds a coordinator that takes every OffsetCommit into `direct`:
 * the coordinator as found now, where kafkajs' consumer keeps the one of its last join.
 */
const fakeKafka = (direct: Array<unknown>): Kafka =>
  ({
    [Symbol("private:Kafka:createCluster")]: () => ({
      connect: async () => undefined,
      disconnect: async () => undefined,
      findGroupCoordinator: async () => ({
        offsetCommit: async (request: unknown) => {
          direct.push(request)
        },
      }),
    }),
  }) as unknown as Kafka

const commit = (fake: Fake, offset: string, kafka = {} as Kafka, member?: GroupMember) =>
  Effect.gen(function* () {
    const resumers = yield* FiberSet.make()
    const released = yield* Deferred.make<void>()
    const batch = recordBatchOf(
      { consumer: {} as Consumer, topic: "t", resumers, kafka, member: () => member },
      fake.payload,
      { records: [] },
      released,
    )
    yield* batch.commit(offset)
  }).pipe(Effect.scoped)

describe("RecordBatch.commit (kafkajs)", () => {
  it("kafkajs' NOT_COORDINATOR is retriable; a generation that is over is not", () => {
    const notCoordinator = createErrorFromCode(NOT_COORDINATOR)
    assert.strictEqual(notCoordinator.type, "NOT_COORDINATOR_FOR_GROUP")
    assert.isTrue(notCoordinator.retriable)
    assert.isTrue(commitRetriable(notCoordinator))
    assert.isTrue(commitRetriable(new KafkaJSNumberOfRetriesExceeded(notCoordinator, { retryCount: 5, retryTime: 1 })))
    assert.isFalse(commitRetriable(createErrorFromCode(ILLEGAL_GENERATION)))
    assert.isFalse(commitRetriable(createErrorFromCode(REBALANCE_IN_PROGRESS)))
    assert.isFalse(commitRetriable(new Error("not kafkajs")))
  })

  it.live("a commit refused with NOT_COORDINATOR is tried again until it is taken", () =>
    Effect.gen(function* () {
      const fake = fakePayload([createErrorFromCode(NOT_COORDINATOR), createErrorFromCode(NOT_COORDINATOR)])
      yield* commit(fake, "4")
      // The next offset to read, three times: twice refused, then committed.
      assert.deepStrictEqual(fake.calls, ["5", "5", "5"])
    }),
  )

  it.live("tried again, the commit goes to the coordinator as found now, as the member and generation last seen", () =>
    Effect.gen(function* () {
      const fake = fakePayload([createErrorFromCode(NOT_COORDINATOR)])
      const direct: Array<unknown> = []
      const member = { groupId: "g", memberId: "m-1", generationId: 7 }
      yield* commit(fake, "4", fakeKafka(direct), member)
      assert.deepStrictEqual(fake.calls, ["5"])
      assert.deepStrictEqual(direct, [
        {
          groupId: "g",
          memberId: "m-1",
          groupGenerationId: 7,
          topics: [{ topic: "t", partitions: [{ partition: 0, offset: "5" }] }],
        },
      ])
    }),
  )

  it.live("a generation that is over (ILLEGAL_GENERATION) is not retried: the records will come again", () =>
    Effect.gen(function* () {
      const fake = fakePayload([createErrorFromCode(ILLEGAL_GENERATION)])
      yield* commit(fake, "4")
      assert.deepStrictEqual(fake.calls, ["5"])
    }),
  )

  it.live("a batch that went stale (sought) is not committed again", () =>
    Effect.gen(function* () {
      const fake = fakePayload([createErrorFromCode(NOT_COORDINATOR), createErrorFromCode(NOT_COORDINATOR)])
      fake.stale = true
      yield* commit(fake, "4")
      assert.deepStrictEqual(fake.calls, ["5"])
    }),
  )
})
