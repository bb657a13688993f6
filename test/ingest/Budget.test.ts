import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Either, Exit, Fiber } from "effect"
import { make } from "../../src/ingest/Budget.js"

/** Lets forked fibers run up to where they wait (a take's timeout runs it in a child fiber). */
const settle = Effect.repeatN(Effect.yieldNow(), 20)

describe("Budget", () => {
  it.scoped("tryAcquire takes bytes that are there, and nothing when the stream or the process lacks them", () =>
    Effect.gen(function* () {
      const budget = yield* make({ processBytes: 100, streamBytes: 60, wait: "1 second" })
      const a = yield* budget.stream
      const b = yield* budget.stream
      assert.isTrue(a.tryAcquire(50))
      assert.isFalse(a.tryAcquire(20), "the stream's own 60 bytes are short of 70")
      assert.isTrue(b.tryAcquire(50))
      assert.isFalse(b.tryAcquire(1), "the process's 100 bytes are taken")
      a.releaseSync(50)
      assert.isTrue(b.tryAcquire(10))
      assert.isFalse(a.tryAcquire(61), "more than the per-stream budget never fits")
    }),
  )

  it.scoped("a waiter is served first: tryAcquire does not pass it, and a release wakes it", () =>
    Effect.gen(function* () {
      const budget = yield* make({ processBytes: 100, streamBytes: 100, wait: "10 seconds" })
      const a = yield* budget.stream
      const b = yield* budget.stream
      const c = yield* budget.stream
      assert.isTrue(a.tryAcquire(90))
      const got = yield* Deferred.make<void>()
      const waiter = yield* Effect.fork(Effect.zipRight(b.acquire(50), Deferred.succeed(got, undefined)))
      yield* settle
      assert.isFalse(c.tryAcquire(5), "5 bytes are free, but b waits for its 50")
      yield* a.release(90)
      yield* Deferred.await(got)
      yield* Fiber.join(waiter)
      assert.isTrue(c.tryAcquire(50))
      assert.isFalse(c.tryAcquire(1))
    }),
  )

  it.scopedLive("past its wait a message is refused with Overloaded, and an interrupted waiter takes nothing", () =>
    Effect.gen(function* () {
      const budget = yield* make({ processBytes: 100, streamBytes: 100, wait: "50 millis" })
      const a = yield* budget.stream
      const b = yield* budget.stream
      assert.isTrue(a.tryAcquire(100))
      const refused = yield* Effect.either(b.acquire(10))
      assert.isTrue(Either.isLeft(refused) && refused.left._tag === "Overloaded")
      const waiter = yield* Effect.fork(b.acquire(10))
      yield* settle
      const exit = yield* Fiber.interrupt(waiter)
      assert.isTrue(Exit.isInterrupted(exit))
      yield* a.release(100)
      assert.isTrue(b.tryAcquire(100), "neither the refused nor the interrupted take kept any bytes")
    }),
  )

  it.effect("bytes a stream still holds go back when its scope closes", () =>
    Effect.gen(function* () {
      const budget = yield* make({ processBytes: 100, streamBytes: 100, wait: "1 second" })
      yield* Effect.scoped(Effect.flatMap(budget.stream, (s) => Effect.sync(() => assert.isTrue(s.tryAcquire(100)))))
      const s = yield* Effect.scoped(Effect.map(budget.stream, (s) => s.tryAcquire(100)))
      assert.isTrue(s)
    }),
  )
})
