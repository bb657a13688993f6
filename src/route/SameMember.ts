/**
 * A kafkajs consumer that rejoins its group as the member it already was, as Kafka's own Java client does (KIP-394).
 *
 * kafkajs 2.2.4 (pinned in package.json) forgets its member id whenever its consumer crashes and restarts, and also
 * when the second JoinGroup of a first join (the one that carries the id the coordinator handed out with
 * MEMBER_ID_REQUIRED) fails. Each fresh join then leaves behind a member the coordinator keeps for a whole session
 * timeout (30 s), and a rebalance cannot finish until every such member has joined or expired. In a broker outage
 * kafkajs restarts its consumer again and again, so once the brokers are back routing waited out those members
 * (29–40 s, issue #17). Remembering the last id this consumer was given, and offering it on the next join, makes the
 * coordinator see the same member coming back: no stale member, no wait. An id the coordinator no longer knows
 * (UNKNOWN_MEMBER_ID: it expired, or the member left) is forgotten, and kafkajs' retry joins afresh.
 *
 * This reaches into kafkajs' private parts (its cluster factory and the Broker's send), located by their symbols'
 * descriptions; a kafkajs without them is refused at start, not silently ignored.
 */
import type { Consumer, ConsumerConfig, Kafka } from "kafkajs"

/** The member id this consumer last had, or was handed out before its join finished. */
export interface MemberIdCell {
  id: string | undefined
}

interface JoinRequest {
  readonly memberId?: string
  readonly [k: string]: unknown
}

/** kafkajs' Broker, the little of it used here. */
interface Broker {
  joinGroup(req: JoinRequest): Promise<{ readonly memberId: string }>
  leaveGroup(req: { readonly groupId: string; readonly memberId: string }): Promise<unknown>
  [k: symbol]: unknown
}

/** kafkajs' Cluster, the little of it used here. */
interface Cluster {
  findGroupCoordinator(args: unknown): Promise<Broker>
}

/** The symbol-keyed property described `description` on `o` or its prototypes. */
export const symbolNamed = (o: object, description: string): symbol | undefined => {
  for (let p: object | null = o; p !== null; p = Object.getPrototypeOf(p)) {
    const s = Object.getOwnPropertySymbols(p).find((k) => k.description === description)
    if (s !== undefined) return s
  }
  return undefined
}

const patched = new WeakSet<object>()

/**
 * Makes `broker` (kafkajs' Broker of one consumer's own cluster) remember in `cell` the member id it is handed and
 * offer it on a join that has none. Idempotent.
 */
export const rememberMemberId = (broker: Broker, cell: MemberIdCell): Broker => {
  if (patched.has(broker)) return broker
  const sendKey = symbolNamed(broker, "private:Broker:sendRequest")
  const send = sendKey === undefined ? undefined : broker[sendKey]
  if (sendKey === undefined || typeof send !== "function") {
    throw new Error("this kafkajs Broker has no private send (kafkajs 2.2.4 has)")
  }
  patched.add(broker)
  const join = broker.joinGroup
  const leave = broker.leaveGroup
  broker[sendKey] = async (...args: Array<unknown>) => {
    try {
      return await send.apply(broker, args)
    } catch (e) {
      // The first JoinGroup of a new member answers MEMBER_ID_REQUIRED with the id to join as.
      const required = e as { readonly name?: unknown; readonly memberId?: unknown }
      if (required.name === "KafkaJSMemberIdRequired" && typeof required.memberId === "string") {
        cell.id = required.memberId
      }
      throw e
    }
  }
  broker.joinGroup = async (req) => {
    const memberId = req.memberId || cell.id || ""
    try {
      const joined = await join.call(broker, { ...req, memberId })
      cell.id = joined.memberId
      return joined
    } catch (e) {
      if ((e as { readonly type?: unknown }).type === "UNKNOWN_MEMBER_ID") cell.id = undefined
      throw e
    }
  }
  broker.leaveGroup = async (req) => {
    const left = await leave.call(broker, req)
    if (req.memberId === cell.id) cell.id = undefined
    return left
  }
  return broker
}

/**
 * `kafka.consumer(config)`, with its own cluster's group coordinator remembering the member id (`rememberMemberId`).
 * Throws at once when this kafkajs lacks the parts used.
 */
export const consumerKeepingMemberId = (kafka: Kafka, config: ConsumerConfig, cell: MemberIdCell): Consumer => {
  const createKey = symbolNamed(kafka, "private:Kafka:createCluster")
  const create = createKey === undefined ? undefined : (kafka as unknown as Record<symbol, unknown>)[createKey]
  if (createKey === undefined || typeof create !== "function") {
    throw new Error("this kafkajs has no cluster factory (kafkajs 2.2.4 has)")
  }
  const view = Object.create(kafka) as Kafka & Record<symbol, unknown>
  view[createKey] = (options: unknown) => {
    const cluster = create.call(kafka, options) as Cluster
    const find = cluster.findGroupCoordinator.bind(cluster)
    cluster.findGroupCoordinator = async (args) => rememberMemberId(await find(args), cell)
    return cluster
  }
  return kafka.consumer.call(view, config)
}
