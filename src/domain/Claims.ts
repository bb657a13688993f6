/** JWT claims of a Spillway access token (HS256). */
import { Schema } from "effect"
import { AccessKey } from "./Event.js"

const NumericDate = Schema.Int.pipe(Schema.nonNegative())

export class Claims extends Schema.Class<Claims>("Claims")({
  /** The access key the token is bound to. */
  sub: AccessKey,
  iat: NumericDate,
  exp: NumericDate,
  nbf: Schema.optional(NumericDate),
  role: Schema.optionalWith(Schema.String.pipe(Schema.maxLength(64)), { default: () => "" }),
}) {}
