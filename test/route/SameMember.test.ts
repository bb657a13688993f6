/**
 * SameMember: a consumer restarted by kafkajs rejoins as the member it was. The joins run through kafkajs' own
 * `Broker.joinGroup` and `leaveGroup` (its MEMBER_ID_REQUIRED handling included) against a fake coordinator that
 * answers as Kafka's does: a join without an id is refused with a fresh id, which it then holds as a pending member
 * until it expires; a join with an id it does not know is refused with UNKNOWN_MEMBER_ID.
 */
import { createRequire } from "node:module"
import { describe, expect, it } from "@effect/vitest"
import { Kafka, type KafkaJSProtocolError } from "kafkajs"
import {
  consumerKeepingMemberId,
  type MemberIdCell,
  rememberMemberId,
  symbolNamed,
} from "../../src/route/SameMember.js"

const require = createRequire(import.meta.url)
const Broker = require("kafkajs/src/broker/index.js") as { prototype: object }
const { createErrorFromCode } = require("kafkajs/src/protocol/error.js") as {
  createErrorFromCode: (code: number) => KafkaJSProtocolError
}
const { KafkaJSMemberIdRequired } = require("kafkajs/src/errors.js") as {
  KafkaJSMemberIdRequired: new (e: Error, args: { memberId: string }) => Error
}
const JOIN_GROUP = 11
const LEAVE_GROUP = 13
const UNKNOWN_MEMBER_ID = 25
const MEMBER_ID_REQUIRED = 79
const REQUEST_TIMED_OUT = 7

interface Request {
  readonly apiKey: number
  readonly memberId: string
}

/** A coordinator: the ids it handed out, the members it knows, and failures to answer the next joins with. */
const coordinator = () => {
  const state = { handedOut: [] as Array<string>, known: new Set<string>(), failNextJoins: 0 }
  const answer = async (req: Request): Promise<unknown> => {
    if (req.apiKey === LEAVE_GROUP) {
      if (!state.known.delete(req.memberId)) throw createErrorFromCode(UNKNOWN_MEMBER_ID)
      return {}
    }
    if (req.apiKey !== JOIN_GROUP) throw new Error(`unexpected request ${req.apiKey}`)
    if (req.memberId === "") {
      const id = `member-${state.handedOut.length + 1}`
      state.handedOut.push(id)
      state.known.add(id) // pending until it joins or its session expires
      throw new KafkaJSMemberIdRequired(createErrorFromCode(MEMBER_ID_REQUIRED), { memberId: id })
    }
    if (state.failNextJoins > 0) {
      state.failNextJoins--
      throw createErrorFromCode(REQUEST_TIMED_OUT)
    }
    if (!state.known.has(req.memberId)) throw createErrorFromCode(UNKNOWN_MEMBER_ID)
    return { memberId: req.memberId, generationId: 1, leaderId: req.memberId, members: [], groupProtocol: "rr" }
  }
  return { state, answer }
}

/** kafkajs' Broker with its request building and sending replaced by the fake coordinator. */
const fakeBroker = (answer: (req: Request) => Promise<unknown>) => {
  const send = symbolNamed(Broker.prototype, "private:Broker:sendRequest")
  if (send === undefined) throw new Error("kafkajs' Broker has no private send")
  const broker = Object.create(Broker.prototype) as Record<string | symbol, unknown>
  broker.lookupRequest = (apiKey: number) => (args: object) => ({ apiKey, ...args })
  broker[send] = answer
  return broker as unknown as Parameters<typeof rememberMemberId>[0]
}

const join = (broker: ReturnType<typeof fakeBroker>, memberId = "") =>
  broker.joinGroup({ groupId: "g", sessionTimeout: 30_000, rebalanceTimeout: 60_000, memberId, groupProtocols: [] })

describe("SameMember", () => {
  it("a join whose second request failed is retried as the member the coordinator handed out, not a new one", async () => {
    const c = coordinator()
    const cell: MemberIdCell = { id: undefined }
    const broker = rememberMemberId(fakeBroker(c.answer), cell)
    c.state.failNextJoins = 1
    await expect(join(broker)).rejects.toThrow()
    expect(cell.id).toBe("member-1")
    // kafkajs' retry (or its restarted consumer) joins again without an id.
    const joined = await join(broker)
    expect(joined.memberId).toBe("member-1")
    expect(c.state.handedOut).toEqual(["member-1"])
  })

  it("without it, kafkajs' own Broker leaves a second pending member behind (what the coordinator waited out)", async () => {
    const c = coordinator()
    const broker = fakeBroker(c.answer)
    c.state.failNextJoins = 1
    await expect(join(broker)).rejects.toThrow()
    await join(broker)
    expect(c.state.handedOut).toEqual(["member-1", "member-2"])
  })

  it("a consumer restarted after a crash rejoins as the member it was", async () => {
    const c = coordinator()
    const cell: MemberIdCell = { id: undefined }
    const broker = rememberMemberId(fakeBroker(c.answer), cell)
    expect((await join(broker)).memberId).toBe("member-1")
    expect((await join(broker)).memberId).toBe("member-1")
    expect(c.state.handedOut).toEqual(["member-1"])
  })

  it("an id the coordinator no longer knows is forgotten, and the next join starts afresh", async () => {
    const c = coordinator()
    const cell: MemberIdCell = { id: undefined }
    const broker = rememberMemberId(fakeBroker(c.answer), cell)
    await join(broker)
    c.state.known.clear() // its session expired
    await expect(join(broker)).rejects.toMatchObject({ type: "UNKNOWN_MEMBER_ID" })
    expect(cell.id).toBeUndefined()
    expect((await join(broker)).memberId).toBe("member-2")
  })

  it("a member that left is forgotten; a kafkajs join that names its id is passed as it is", async () => {
    const c = coordinator()
    const cell: MemberIdCell = { id: undefined }
    const broker = rememberMemberId(fakeBroker(c.answer), cell)
    await join(broker)
    await broker.leaveGroup({ groupId: "g", memberId: "member-1" })
    expect(cell.id).toBeUndefined()
    c.state.known.add("other")
    expect((await join(broker, "other")).memberId).toBe("other")
    expect(cell.id).toBe("other")
  })

  it("patching is idempotent, and the pinned kafkajs has the parts used", () => {
    const c = coordinator()
    const cell: MemberIdCell = { id: undefined }
    const broker = fakeBroker(c.answer)
    expect(rememberMemberId(rememberMemberId(broker, cell), cell)).toBe(broker)
    const kafka = new Kafka({ brokers: ["127.0.0.1:1"], clientId: "same-member-test" })
    const consumer = consumerKeepingMemberId(kafka, { groupId: "g" }, cell)
    expect(typeof consumer.run).toBe("function")
  })
})
