/**
 * One Forward connection: read, frame (MsgpackFramer), handshake when auth is on, then each message in turn:
 * records → Kafka (KafkaSink) → `{ack: chunk}`. See ForwardReceiver for the rules.
 */
import type * as net from "node:net"
import { Duration, Effect, Either, Option, Schema } from "effect"
import { Unpackr } from "msgpackr"
import { AccessKey } from "../../domain/Event.js"
import type { ConfigStore } from "../../shared/ConfigStore.js"
import { batchSealer } from "../../shared/Crypto.js"
import type { Auth } from "../Auth.js"
import { countRecords, countRequest, makeRecord, tenantKey, toJson } from "../receivers/TenantRecords.js"
import type { Sink, SinkRecord } from "../SinkPort.js"
import { forwardPassword } from "./ForwardPassword.js"
import {
  ack,
  decodeEvents,
  type EventLimits,
  type Handshake,
  helo,
  isPing,
  newHandshake,
  passwordMatches,
  pong,
  sharedKeyMatches,
} from "./ForwardProtocol.js"
import { MsgpackFramer } from "./MsgpackFramer.js"

export interface ConnectionContext {
  readonly auth: Auth
  readonly store: ConfigStore["Type"]
  readonly sink: Sink
  readonly sharedKey: string | undefined
  readonly anonymous: AccessKey | undefined
  readonly serverHostname: string
  readonly maxMessageBytes: number
  readonly limits: EventLimits
  readonly maxEventBytes: number
  readonly handshakeTimeout: Duration.Duration
  /** Sockets handling a message now (the others can be closed at once on shutdown). */
  readonly busy: Set<net.Socket>
  /** True once the receiver shuts down: connections end after the message in hand. */
  readonly draining: () => boolean
}

const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: "bigint" })
const decodeAccessKey = Schema.decodeUnknownEither(AccessKey)

/** The next bytes of the socket; None at its end (or when it failed or closed). */
const readMore = (socket: net.Socket): Effect.Effect<Option.Option<Buffer>> =>
  Effect.async<Option.Option<Buffer>>((resume) => {
    let done = false
    const finish = (v: Option.Option<Buffer>) => {
      if (done) return
      done = true
      off()
      resume(Effect.succeed(v))
    }
    const onReadable = () => {
      const chunk = socket.read() as Buffer | null
      if (chunk !== null) finish(Option.some(chunk))
    }
    const onEnd = () => finish(Option.none())
    const off = () => {
      socket.off("readable", onReadable)
      socket.off("end", onEnd)
      socket.off("close", onEnd)
      socket.off("error", onEnd)
    }
    socket.on("readable", onReadable)
    socket.on("end", onEnd)
    socket.on("close", onEnd)
    socket.on("error", onEnd)
    if (socket.readableEnded || socket.destroyed) onEnd()
    else onReadable()
    return Effect.sync(off)
  })

const write = (socket: net.Socket, bytes: Buffer) =>
  Effect.async<void>((resume) => {
    if (socket.destroyed) return resume(Effect.void)
    socket.write(bytes, () => resume(Effect.void))
  })

/** Logs why a connection is closed (a fixed reason, never a received value). */
const closeWith = (reason: string) =>
  Effect.zipRight(countRequest("forward", "invalid"), Effect.logWarning(`Forward connection closed: ${reason}`))

type Outcome = "continue" | "close"

/** Who a connection writes as, once known. */
interface Peer {
  readonly accessKey: AccessKey
  readonly agentId: string
}

/** The PING of the handshake: PONG true and the peer, or PONG false and None (the caller closes). */
const handshake = (ctx: ConnectionContext, socket: net.Socket, value: unknown, h: Handshake, sharedKey: string) =>
  Effect.gen(function* () {
    if (!isPing(value)) {
      yield* closeWith("a message arrived before the handshake")
      return Option.none<Peer>()
    }
    const refuse = (reason: string) =>
      Effect.gen(function* () {
        yield* write(socket, pong(value, h, false, reason, ctx.serverHostname, sharedKey))
        yield* countRequest("forward", "unauthenticated")
        yield* Effect.logWarning("Forward handshake refused").pipe(Effect.annotateLogs({ reason }))
        return Option.none<Peer>()
      })
    if (!sharedKeyMatches(value, h, sharedKey)) return yield* refuse("shared key mismatch")
    const key = decodeAccessKey(value[4])
    const tenant = Either.isRight(key) ? yield* Effect.option(ctx.store.get(key.right)) : Option.none()
    // Unknown user and wrong password give the same answer.
    if (Either.isLeft(key) || Option.isNone(tenant)) return yield* refuse("username/password mismatch")
    const password = yield* forwardPassword(ctx.auth, key.right)
    if (!passwordMatches(value, h, password)) return yield* refuse("username/password mismatch")
    yield* write(socket, pong(value, h, true, "", ctx.serverHostname, sharedKey))
    return Option.some<Peer>({ accessKey: key.right, agentId: value[1] })
  })

/** One message: its records to Kafka, then the ack ("close": the connection must end, no ack sent). */
const handleMessage = (ctx: ConnectionContext, socket: net.Socket, bytes: Uint8Array, peer: Peer) =>
  Effect.gen(function* () {
    let value: unknown
    try {
      value = unpackr.unpack(bytes)
    } catch {
      yield* closeWith("undecodable msgpack")
      return "close" satisfies Outcome
    }
    const events = decodeEvents(value, ctx.limits)
    if (Either.isLeft(events)) {
      yield* closeWith(events.left)
      return "close" satisfies Outcome
    }
    const tenant = yield* Effect.option(ctx.store.get(peer.accessKey))
    if (Option.isNone(tenant)) {
      yield* closeWith("the connection's tenant is no longer in the tenants file")
      return "close" satisfies Outcome
    }
    const tk = tenantKey(tenant.value)
    const now = BigInt(Date.now()) * 1_000_000n
    const records: Array<SinkRecord> = []
    let rejected = 0
    const seal = batchSealer(events.right.entries.length)
    for (const e of events.right.entries) {
      const record = makeRecord(
        tk,
        "forward",
        { timestamp: e.time ?? now, agentId: peer.agentId, tag: events.right.tag, json: toJson(e.record) },
        ctx.maxEventBytes,
        seal,
      )
      if (record === undefined) rejected++
      else records.push(record)
    }
    const published = yield* Effect.either(ctx.sink.publishRecords(records))
    if (Either.isLeft(published)) {
      yield* countRequest("forward", "unavailable")
      yield* Effect.logWarning("Forward message not stored: Kafka unavailable; closing without ack")
      return "close" satisfies Outcome
    }
    yield* countRecords("forward", records.length, rejected)
    if (rejected > 0)
      yield* Effect.logWarning("Forward records dropped: over the event size limit").pipe(
        Effect.annotateLogs({ dropped: rejected, tenant: tk.tenant.UserID }),
      )
    yield* countRequest("forward", rejected === 0 ? "ok" : "partial")
    if (events.right.chunk !== undefined) yield* write(socket, ack(events.right.chunk))
    return "continue" satisfies Outcome
  })

export const handleConnection = (ctx: ConnectionContext, socket: net.Socket) =>
  Effect.gen(function* () {
    const framer = new MsgpackFramer(ctx.maxMessageBytes)
    const hs: Handshake | undefined = ctx.sharedKey === undefined ? undefined : newHandshake()
    let peer: Option.Option<Peer> =
      ctx.anonymous === undefined ? Option.none() : Option.some({ accessKey: ctx.anonymous, agentId: "" })
    if (hs !== undefined) yield* write(socket, helo(hs))
    const deadline = Date.now() + Duration.toMillis(ctx.handshakeTimeout)
    // Before the handshake, reading is bounded by its deadline.
    const read = () =>
      Option.isSome(peer)
        ? readMore(socket)
        : readMore(socket).pipe(
            Effect.timeoutTo({
              duration: Math.max(0, deadline - Date.now()),
              onTimeout: () => Option.none<Buffer>(),
              onSuccess: (o) => o,
            }),
          )

    while (true) {
      const next = framer.next()
      if (next === "malformed") return yield* closeWith("malformed msgpack")
      if (next === "too_large") return yield* closeWith(`a message exceeds ${ctx.maxMessageBytes} bytes`)
      if (next === "more") {
        if (ctx.draining() && framer.buffered === 0) return
        const more = yield* read()
        if (Option.isNone(more)) return
        framer.push(more.value)
        continue
      }
      if (Option.isNone(peer)) {
        if (hs === undefined || ctx.sharedKey === undefined) return
        peer = yield* handshake(ctx, socket, unpackOrUndefined(next), hs, ctx.sharedKey)
        if (Option.isNone(peer)) return
        continue
      }
      // The message's bytes are a view into the framer: it is fully handled before the next push.
      ctx.busy.add(socket)
      const outcome = yield* handleMessage(ctx, socket, next, peer.value).pipe(
        Effect.ensuring(Effect.sync(() => ctx.busy.delete(socket))),
      )
      if (outcome === "close") return
    }
  })

const unpackOrUndefined = (bytes: Uint8Array): unknown => {
  try {
    return unpackr.unpack(bytes)
  } catch {
    return undefined
  }
}
