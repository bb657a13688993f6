/**
 * One entry point for the router: builds the `Destination` of an `s3` or `opensearch` target. Its
 * resources (the S3 client) live as long as the scope; build once per target, not per batch.
 */
import type { Effect, Scope } from "effect"
import type { DestinationError } from "../../domain/Errors.js"
import type { OpenSearchTarget, S3Target, TargetWithStores } from "../../domain/Tenant.js"
import type { Destination } from "./Delivery.js"
import { makeOpenSearchDestination } from "./OpenSearch.js"
import { makeS3Destination } from "./S3.js"

export type StoreTarget = S3Target | OpenSearchTarget

/** Pure: whether a target is one of the batching stores (built with `makeStoreDestination`). */
export const isStoreTarget = (t: TargetWithStores): t is StoreTarget => "s3" in t || "opensearch" in t

export const makeStoreDestination = (
  target: StoreTarget,
  env: NodeJS.ProcessEnv = process.env,
): Effect.Effect<Destination, DestinationError, Scope.Scope> =>
  "s3" in target ? makeS3Destination(target, env) : makeOpenSearchDestination(target, env)
