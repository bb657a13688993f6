/**
 * Auth: HS256 access tokens bound to an access key (jose). STUB: the signatures are the contract;
 * the implementation is being written (issue 2).
 */
import { Effect } from "effect"
import type { Claims } from "../domain/Claims.js"
import type { AuthError } from "../domain/Errors.js"
import type { AccessKey } from "../domain/Event.js"

export interface SignOptions {
  /** Seconds until `exp` (default 600, as in the proof of concept). */
  readonly expirySeconds?: number
  readonly role?: string
}

export class Auth extends Effect.Service<Auth>()("spillway/Auth", {
  effect: Effect.gen(function* () {
    return {
      /** A signed token for `accessKey` with the current secret (its `kid` in the header). */
      sign: (_accessKey: AccessKey, _options?: SignOptions): Effect.Effect<string> => Effect.dieMessage("TODO"),
      /** Verifies a bare JWT. */
      verify: (_token: string): Effect.Effect<Claims, AuthError> => Effect.dieMessage("TODO"),
      /** Verifies the value of the `authorization` metadata/header: `Bearer <jwt>`. */
      authorize: (_header: string | undefined): Effect.Effect<Claims, AuthError> => Effect.dieMessage("TODO"),
    }
  }),
}) {}
