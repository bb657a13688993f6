/**
 * An in-test ingester: a grpc-js server over real TLS (testCerts()) implementing EventService's
 * ExchangeConfig, SendEventBatches and the proof of concept's SendEvent (one EResponse per client stream).
 * With `batchRpc = false` it serves only ExchangeConfig and SendEvent, like the proof of concept's ingester
 * (SendEventBatches then answers UNIMPLEMENTED). It acks each batch (unless told to hold acks), can go down
 * and come back on the same port, refuse tokens (UNAUTHENTICATED), reject batches (BatchAck
 * FAILURE with a code) and records every event it acknowledged, decrypted.
 */
import { readFileSync } from "node:fs"
import * as grpc from "@grpc/grpc-js"
import { encryptionKeyBytes } from "../../src/domain/Tenant.js"
import { openHex } from "../../src/shared/Crypto.js"
import { EventServiceDefinition, type WireBatchAck, type WireConfig, type WireEResponse } from "../../src/wire/Wire.js"
import { testCerts } from "./certs.js"

export interface ReceivedEvent {
  readonly eventId: string
  readonly tag: string
  readonly agentId: string
  readonly accessKey: string
  readonly userId: string
  /** Unix nanoseconds. */
  readonly ts: bigint
  /** The record (decrypted when encrypted), or undefined if it could not be decrypted. */
  readonly record: Record<string, unknown> | undefined
  /** `message` as sent. */
  readonly message: string
  readonly encrypted: boolean
}

export interface FakeIngesterOptions {
  readonly accessKey?: string
  readonly encryptionKey?: string
  readonly userId?: string
  /** Accepted bearer tokens; undefined accepts any non-empty token. */
  readonly tokens?: ReadonlyArray<string>
  readonly port?: number
  /** false: no SendEventBatches (UNIMPLEMENTED), as the proof of concept's ingester. Default true. */
  readonly batchRpc?: boolean
  /** grpc.max_receive_message_length (grpc-js's default is 4 MiB; the real ingester's 8 MiB). */
  readonly maxMessageBytes?: number
}

interface WireEventIn {
  timestamp?: { seconds: string; nanos: number } | null
  /** Wire.ts decodes without keepCase (agentId, eventId, batchId); both spellings are read. */
  agent_id?: string
  agentId?: string
  tag: string
  message: string
  UserID: string
  AccessKey: string
  event_id?: string
  eventId?: string
}

/** A BatchAck with the batch id under both spellings (see WireEventIn). */
const ackOf = (batchId: string, status: "SUCCESS" | "FAILURE", code: number, detail: string) =>
  ({ batch_id: batchId, batchId, status, code, detail }) as WireBatchAck

export class FakeIngester {
  port = 0
  /** Events of acknowledged batches, in order. */
  readonly received: Array<ReceivedEvent> = []
  /** Every batch seen (acked, held or rejected). */
  batchesSeen = 0
  exchanges = 0
  authFailures = 0
  config: { AccessKey: string; EncryptionKey: string; UserID: string }
  /** undefined = any non-empty token. */
  tokens: Set<string> | undefined
  /** Return a code (e.g. 7 PERMISSION_DENIED, 3 INVALID_ARGUMENT) to reject a batch. */
  rejectBatch: (events: ReadonlyArray<WireEventIn>) => { code: number; detail: string } | undefined = () => undefined
  /** While true, batches are read but not acknowledged. */
  holdAcks = false
  /** Serve SendEventBatches (read at each start). */
  batchRpc: boolean
  /** SendEvent streams seen (answered or not). */
  streamsSeen = 0
  /** The EResponse status of a SendEvent stream (its events are recorded only on SUCCESS). */
  streamStatus: (events: ReadonlyArray<WireEventIn>) => "SUCCESS" | "FAILURE" = () => "SUCCESS"
  private readonly maxMessageBytes: number | undefined
  private server: grpc.Server | undefined
  private readonly held: Array<() => void> = []
  private readonly keys: Array<Uint8Array> = []

  constructor(options: FakeIngesterOptions = {}) {
    this.config = {
      AccessKey: options.accessKey ?? "test-key",
      EncryptionKey: options.encryptionKey ?? "883EC28EBA9A36A386FA351FBC482B34",
      UserID: options.userId ?? "2134558",
    }
    this.tokens = options.tokens ? new Set(options.tokens) : undefined
    this.port = options.port ?? 0
    this.batchRpc = options.batchRpc ?? true
    this.maxMessageBytes = options.maxMessageBytes
  }

  get address(): string {
    return `127.0.0.1:${this.port}`
  }

  /** Event ids received (acknowledged), in order. */
  get ids(): Array<string> {
    return this.received.map((e) => e.eventId)
  }

  /** The `log` fields of acknowledged records with this tag (all tags when omitted). */
  logs(tag?: string): Array<string> {
    return this.received.filter((e) => tag === undefined || e.tag === tag).map((e) => String(e.record?.log))
  }

  private authorized(md: grpc.Metadata): boolean {
    const h = md.get("authorization")[0]?.toString() ?? ""
    const token = h.startsWith("Bearer ") ? h.slice(7) : ""
    const ok = token !== "" && (this.tokens === undefined || this.tokens.has(token))
    if (!ok) this.authFailures++
    return ok
  }

  private decode(e: WireEventIn): ReceivedEvent {
    const seconds = BigInt(e.timestamp?.seconds ?? "0")
    const ts = seconds * 1_000_000_000n + BigInt(e.timestamp?.nanos ?? 0)
    let record: Record<string, unknown> | undefined
    let encrypted = false
    try {
      record = JSON.parse(e.message)
    } catch {
      encrypted = true
      for (const key of [...this.keys].reverse()) {
        try {
          record = JSON.parse(openHex(key, e.message).toString("utf8"))
          break
        } catch {
          // try an older key
        }
      }
    }
    return {
      eventId: e.event_id ?? e.eventId ?? "",
      tag: e.tag,
      agentId: e.agent_id ?? e.agentId ?? "",
      accessKey: e.AccessKey,
      userId: e.UserID,
      ts,
      record,
      message: e.message,
      encrypted,
    }
  }

  private generation = 0
  private readonly calls = new Set<grpc.ServerDuplexStream<unknown, WireBatchAck>>()

  /** Handlers of one start; once stopped they refuse (a connection that raced the shutdown must not work). */
  private handlers(gen: number): grpc.UntypedServiceImplementation {
    const down = () => gen !== this.generation || this.server === undefined
    return {
      ExchangeConfig: (call: grpc.ServerUnaryCall<unknown, WireConfig>, cb: grpc.sendUnaryData<WireConfig>) => {
        if (down()) return cb({ code: grpc.status.UNAVAILABLE, details: "down" })
        if (!this.authorized(call.metadata)) return cb({ code: grpc.status.UNAUTHENTICATED, details: "expired" })
        const req = call.request as { AccessKey: string }
        if (req.AccessKey !== this.config.AccessKey)
          return cb({ code: grpc.status.PERMISSION_DENIED, details: "not your access key" })
        this.exchanges++
        const bytes = this.config.EncryptionKey === "" ? undefined : encryptionKeyBytes(this.config.EncryptionKey)
        if (bytes) this.keys.push(bytes)
        cb(null, { ...this.config, AccessToken: "" })
      },
      SendEventBatches: (call: grpc.ServerDuplexStream<unknown, WireBatchAck>) => {
        if (down()) {
          call.emit("error", { code: grpc.status.UNAVAILABLE, details: "down" })
          return
        }
        if (!this.authorized(call.metadata)) {
          call.emit("error", { code: grpc.status.UNAUTHENTICATED, details: "expired" })
          return
        }
        this.calls.add(call)
        call.on("close", () => this.calls.delete(call))
        call.on("data", (raw: unknown) => {
          if (down()) return
          const batch = raw as { batch_id?: string; batchId?: string; events: Array<WireEventIn> }
          const batchId = batch.batch_id ?? batch.batchId ?? ""
          this.batchesSeen++
          const reject = this.rejectBatch(batch.events)
          const ack = () => {
            if (call.cancelled || call.destroyed || down()) return
            if (reject) {
              call.write(ackOf(batchId, "FAILURE", reject.code, reject.detail))
              return
            }
            for (const e of batch.events) this.received.push(this.decode(e))
            call.write(ackOf(batchId, "SUCCESS", 0, ""))
          }
          if (this.holdAcks) this.held.push(ack)
          else ack()
        })
        call.on("end", () => call.end())
        call.on("error", () => undefined)
      },
      SendEvent: (call: grpc.ServerReadableStream<unknown, WireEResponse>, cb: grpc.sendUnaryData<WireEResponse>) => {
        if (down()) return cb({ code: grpc.status.UNAVAILABLE, details: "down" })
        if (!this.authorized(call.metadata)) return cb({ code: grpc.status.UNAUTHENTICATED, details: "expired" })
        this.streamsSeen++
        const events: Array<WireEventIn> = []
        call.on("data", (raw: unknown) => events.push(raw as WireEventIn))
        call.on("error", () => undefined)
        call.on("end", () => {
          if (down()) return cb({ code: grpc.status.UNAVAILABLE, details: "down" })
          const status = this.streamStatus(events)
          if (status === "SUCCESS") for (const e of events) this.received.push(this.decode(e))
          cb(null, { status })
        })
      },
    }
  }

  /** Starts (or restarts on the same port). */
  async start(): Promise<void> {
    if (this.server) return
    const certs = await testCerts()
    const server = new grpc.Server(
      this.maxMessageBytes === undefined ? {} : { "grpc.max_receive_message_length": this.maxMessageBytes },
    )
    const gen = ++this.generation
    const { SendEventBatches, ...legacy } = EventServiceDefinition
    server.addService(this.batchRpc ? EventServiceDefinition : legacy, this.handlers(gen))
    const creds = grpc.ServerCredentials.createSsl(null, [
      { cert_chain: readFileSync(certs.serverCert), private_key: readFileSync(certs.serverKey) },
    ])
    this.port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`127.0.0.1:${this.port}`, creds, (err, port) => (err ? reject(err) : resolve(port))),
    )
    this.server = server
  }

  /** Goes down hard: every open stream fails (UNAVAILABLE on the agent's side). Held acks are dropped. */
  async stop(): Promise<void> {
    this.held.length = 0
    const s = this.server
    this.server = undefined
    this.generation++
    for (const c of this.calls) c.emit("error", { code: grpc.status.UNAVAILABLE, details: "going down" })
    this.calls.clear()
    if (s) s.forceShutdown()
  }

  /** Sends the acks held while `holdAcks` was on, and stops holding. */
  releaseAcks(): void {
    this.holdAcks = false
    for (const ack of this.held.splice(0)) ack()
  }

  async waitFor(pred: () => boolean, timeoutMs = 20_000, what = "condition"): Promise<void> {
    const end = Date.now() + timeoutMs
    while (!pred()) {
      if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
      await new Promise((r) => setTimeout(r, 50))
    }
  }
}

/** A started fake ingester. */
export const startFakeIngester = async (options: FakeIngesterOptions = {}): Promise<FakeIngester> => {
  const f = new FakeIngester(options)
  await f.start()
  return f
}
