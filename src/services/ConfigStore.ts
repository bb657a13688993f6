/**
 * ConfigStore: the tenants file. STUB: the signatures are the contract; the implementation is
 * being written (issue 2).
 */
import { Context, Effect, Layer } from "effect"
import type { ConfigFileError, TenantNotFound } from "../domain/Errors.js"
import type { Tenant, TenantsFile } from "../domain/Tenant.js"

export class ConfigStore extends Context.Tag("spillway/ConfigStore")<
  ConfigStore,
  {
    /** The tenant of an access key, from the version in force. */
    readonly get: (accessKey: string) => Effect.Effect<Tenant, TenantNotFound>
    /** The whole version in force. */
    readonly current: Effect.Effect<TenantsFile>
  }
>() {
  /** Loads and validates `path` (fails at build with ConfigFileError), then watches it. */
  static readonly layerFile = (_path: string): Layer.Layer<ConfigStore, ConfigFileError> =>
    Layer.effect(ConfigStore, Effect.dieMessage("TODO"))
  /** A fixed set of tenants, for tests. */
  static readonly layerMemory = (_tenants: TenantsFile): Layer.Layer<ConfigStore> =>
    Layer.effect(ConfigStore, Effect.dieMessage("TODO"))
}
