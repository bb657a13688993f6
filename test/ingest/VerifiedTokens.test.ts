import { assert, describe, it } from "@effect/vitest"
import { Claims } from "../../src/domain/Claims.js"
import { AccessKey } from "../../src/domain/Event.js"
import { MAX_TOKEN_CHARS, makeVerifiedTokens, timeRefusal } from "../../src/ingest/VerifiedTokens.js"

const KEY = AccessKey.make("9c60f26f-5b6c-4c80-b5f5-625bf965b6a6")
/** 2025-06-01T00:00:00Z, in seconds */
const T0 = 1_748_736_000
const claims = (over: Partial<{ iat: number; exp: number; nbf: number }> = {}) =>
  new Claims({ sub: KEY, iat: T0, exp: T0 + 600, role: "", ...over })

describe("VerifiedTokens", () => {
  it("gives back the claims of a kept token while its time claims hold, then refuses it as expired", () => {
    const tokens = makeVerifiedTokens(30)
    const c = claims()
    tokens.add("a.b.c", c)
    assert.strictEqual(tokens.lookup("a.b.c", T0 * 1000), c)
    assert.strictEqual(tokens.lookup("a.b.c", (T0 + 629) * 1000 + 999), c)
    assert.strictEqual(tokens.lookup("a.b.c", (T0 + 630) * 1000), "expired")
    // An expired token is dropped: from then on it is verified again (and refused by jose).
    assert.strictEqual(tokens.lookup("a.b.c", T0 * 1000), undefined)
    assert.strictEqual(tokens.size(), 0)
  })

  it("knows only the exact token string it was given", () => {
    const tokens = makeVerifiedTokens(30)
    tokens.add("a.b.c", claims())
    assert.strictEqual(tokens.lookup("a.b.C", T0 * 1000), undefined)
    assert.strictEqual(tokens.lookup("a.b.c ", T0 * 1000), undefined)
    assert.strictEqual(tokens.lookup("", T0 * 1000), undefined)
  })

  it("re-checks nbf and iat: a clock set back before them gives not_yet_valid", () => {
    const tokens = makeVerifiedTokens(30)
    tokens.add("n", claims({ nbf: T0 + 100 }))
    tokens.add("i", claims({ iat: T0 + 100 }))
    assert.strictEqual(tokens.lookup("n", (T0 + 69) * 1000), "not_yet_valid")
    assert.strictEqual(tokens.lookup("i", (T0 + 69) * 1000), "not_yet_valid")
    assert.notStrictEqual(tokens.lookup("n", (T0 + 70) * 1000), "not_yet_valid")
    assert.strictEqual(tokens.size(), 2)
  })

  it("is bounded: past its size the oldest token goes; long tokens are not kept", () => {
    const tokens = makeVerifiedTokens(30, 3)
    for (const t of ["t1", "t2", "t3", "t4"]) tokens.add(t, claims())
    assert.strictEqual(tokens.size(), 3)
    assert.strictEqual(tokens.lookup("t1", T0 * 1000), undefined)
    assert.instanceOf(tokens.lookup("t4", T0 * 1000), Claims)
    tokens.add("x".repeat(MAX_TOKEN_CHARS + 1), claims())
    assert.strictEqual(tokens.lookup("x".repeat(MAX_TOKEN_CHARS + 1), T0 * 1000), undefined)
    assert.strictEqual(tokens.size(), 3)
  })

  it("timeRefusal follows jose: exp <= now - skew is expired", () => {
    assert.strictEqual(timeRefusal(claims(), (T0 + 629) * 1000, 30), undefined)
    assert.strictEqual(timeRefusal(claims(), (T0 + 630) * 1000, 30), "expired")
    assert.strictEqual(timeRefusal(claims(), (T0 + 600) * 1000, 0), "expired")
    assert.strictEqual(timeRefusal(claims(), (T0 + 599) * 1000, 0), undefined)
  })
})
