/**
 * One entry point for the router: builds the `Destination` of an `s3` or `opensearch` target. Its
 * resources (the S3 client) live as long as the scope; build once per target, not per batch.
 *
 * Each store's module (the S3 one holds the AWS SDK, about 1 MB of the router's bundle) is loaded on the first
 * target that needs it (a chunk of its own in the bundle), so a router without such targets never parses it.
 */
import { Effect, type Scope } from "effect"
import { DestinationError } from "../../domain/Errors.js"
import { type OpenSearchTarget, type S3Target, type TargetWithStores, targetName } from "../../domain/Tenant.js"
import type { Destination } from "./Delivery.js"

export type StoreTarget = S3Target | OpenSearchTarget

/** Pure: whether a target is one of the batching stores (built with `makeStoreDestination`). */
export const isStoreTarget = (t: TargetWithStores): t is StoreTarget => "s3" in t || "opensearch" in t

export const makeStoreDestination = (
  target: StoreTarget,
  env: NodeJS.ProcessEnv = process.env,
): Effect.Effect<Destination, DestinationError, Scope.Scope> =>
  "s3" in target
    ? Effect.flatMap(
        load(target, () => import("./S3.js")),
        (m) => m.makeS3Destination(target, env),
      )
    : Effect.flatMap(
        load(target, () => import("./OpenSearch.js")),
        (m) => m.makeOpenSearchDestination(target, env),
      )

/** A store's module; failing to load it (a broken installation) is a lasting failure of the target. */
const load = <M>(target: StoreTarget, module: () => Promise<M>): Effect.Effect<M, DestinationError> =>
  Effect.tryPromise({
    try: module,
    catch: (cause) =>
      new DestinationError({ target: targetName(target), retryable: false, detail: "cannot load its module", cause }),
  })
