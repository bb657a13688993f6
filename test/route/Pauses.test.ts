/** The partition pauses follow the one backoff Schedule (Retry.ts): growing, capped, jittered, per partition. */
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect } from "effect"
import { makePauses } from "../../src/route/Pauses.js"

describe("Pauses", () => {
  it.effect("grow from base to cap (jittered 0.8–1.2), per partition, and start again after a reset", () =>
    Effect.gen(function* () {
      const pauses = makePauses({ base: "1 second", cap: "10 seconds" })
      const next = (key: string) => Effect.map(pauses.next(key), Duration.toMillis)
      const a: Array<number> = []
      for (let i = 0; i < 8; i++) a.push(yield* next("p0"))
      const expected = [1000, 2000, 4000, 8000, 10000, 10000, 10000, 10000]
      a.forEach((ms, i) => {
        assert.isAtLeast(ms, expected[i]! * 0.8, `pause ${i}: ${ms}`)
        assert.isAtMost(ms, expected[i]! * 1.2, `pause ${i}: ${ms}`)
      })
      const other = yield* next("p1")
      assert.isAtMost(other, 1200, "another partition starts from base")
      yield* pauses.reset("p0")
      assert.isAtMost(yield* next("p0"), 1200, "after a reset, from base again")
    }),
  )
})
