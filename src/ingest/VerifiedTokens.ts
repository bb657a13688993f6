/**
 * The tokens Auth has verified, kept so that a token presented again (a SendEvent call per batch, each with the
 * same `authorization` metadata) is not verified again: HMAC verification through jose and WebCrypto cost more per
 * call than the rest of a call's set-up (docs/benchmarks.md, "SendEvent: one token verification per token").
 *
 * Keyed by the token itself (the exact string: a token has one spelling, Auth.ts refuses every other), so a hit is
 * the very string whose signature was checked, under the key ring of this Auth (fixed for its life). Only accepted
 * tokens are kept; on every hit the time claims are checked again against the clock (`exp` with the clock skew,
 * `nbf` and `iat`), so an expired token is refused as expired, as jose would. Bounded: at most `MAX_ENTRIES` tokens
 * of at most `MAX_TOKEN_CHARS` characters (a longer token is verified every time); past it the oldest goes.
 * What the token's `sub` may do is not cached: the tenants file's entry is looked up on every call (Callers.ts).
 */
import type { Claims } from "../domain/Claims.js"
import type { AuthFailure } from "../domain/Errors.js"

/** Tokens kept at most. */
export const MAX_ENTRIES = 1024
/** Longer tokens are not kept (so the cache holds at most 1024 × 2 KiB of token text). */
export const MAX_TOKEN_CHARS = 2048

export interface VerifiedTokens {
  /** The claims of `token` if it was verified and its time claims still hold at `nowMs`; a refusal if they do not. */
  readonly lookup: (token: string, nowMs: number) => Claims | AuthFailure | undefined
  readonly add: (token: string, claims: Claims) => void
  readonly size: () => number
}

/** The time checks of a verified token at `nowMs` (jose's and Auth's: `exp <= now - skew` is expired). */
export const timeRefusal = (claims: Claims, nowMs: number, skewSeconds: number): AuthFailure | undefined => {
  const now = Math.floor(nowMs / 1000)
  if (claims.exp <= now - skewSeconds) return "expired"
  if ((claims.nbf !== undefined && claims.nbf > now + skewSeconds) || claims.iat > now + skewSeconds)
    return "not_yet_valid"
  return undefined
}

export const makeVerifiedTokens = (skewSeconds: number, maxEntries: number = MAX_ENTRIES): VerifiedTokens => {
  const entries = new Map<string, Claims>()
  const lookup = (token: string, nowMs: number) => {
    const claims = entries.get(token)
    if (claims === undefined) return undefined
    const refusal = timeRefusal(claims, nowMs, skewSeconds)
    if (refusal === "expired") entries.delete(token)
    return refusal ?? claims
  }
  const add = (token: string, claims: Claims) => {
    if (token.length > MAX_TOKEN_CHARS || entries.has(token)) return
    if (entries.size >= maxEntries) entries.delete(entries.keys().next().value!)
    entries.set(token, claims)
  }
  return { lookup, add, size: () => entries.size }
}
