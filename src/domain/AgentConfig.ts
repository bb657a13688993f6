/** `api.Config`: what ExchangeConfig hands an agent. */
import { Schema } from "effect"
import { AccessKey, UserID } from "./Event.js"
import { EncryptionKey } from "./Tenant.js"

export class AgentConfig extends Schema.Class<AgentConfig>("AgentConfig")({
  AccessKey: AccessKey,
  /** The proof of concept echoed a token here; Spillway leaves it empty (tokens are not handed out). */
  AccessToken: Schema.optionalWith(Schema.String, { default: () => "" }),
  EncryptionKey: EncryptionKey,
  UserID: UserID,
}) {}
