/**
 * The store destinations' modules are loaded when a target first needs them (destinations/Stores.ts): an `s3` and
 * an `opensearch` target each build a working Destination through `makeStoreDestination`, named after the target.
 * (Their behaviour against real servers: test/route/destinations/*.it.test.ts and test/route/stores.it.test.ts.)
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { TargetWithStores, targetName } from "../../src/domain/Tenant.js"
import { isStoreTarget, makeStoreDestination } from "../../src/route/destinations/Stores.js"

const storeTarget = (json: unknown) => {
  const t = Schema.decodeUnknownSync(TargetWithStores)(json)
  if (!isStoreTarget(t)) throw new Error("not a store target")
  return t
}

describe("store destinations, loaded on first use", () => {
  it.scoped("an s3 target builds its destination (the AWS SDK loaded then)", () =>
    Effect.gen(function* () {
      const t = storeTarget({ s3: { bucket: "spillway-test", endpoint: "http://127.0.0.1:1", forcePathStyle: true } })
      const d = yield* makeStoreDestination(t, {})
      assert.strictEqual(d.name, targetName(t))
      assert.strictEqual(d.limits.maxEvents, 20_000)
      assert.strictEqual(typeof d.deliver, "function")
    }),
  )

  it.scoped("an opensearch target builds its destination", () =>
    Effect.gen(function* () {
      const t = storeTarget({ opensearch: { urls: ["http://127.0.0.1:1"] } })
      const d = yield* makeStoreDestination(t, {})
      assert.strictEqual(d.name, targetName(t))
      assert.strictEqual(d.limits.maxEvents, 5_000)
    }),
  )
})
