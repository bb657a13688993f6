/**
 * Linear grouping of a send's records by partition inside kafkajs 2.2.4 (package.json pins it): see `groupingReduce`.
 * The unit test (test/ingest/ProduceRequest.test.ts) compares the grouping with kafkajs' own and fails if kafkajs
 * calls `reduce` on a send's messages anywhere else.
 */
type Groups = Record<string, Array<unknown>>
type GroupStep = (groups: Groups, message: unknown) => Groups

/**
 * `reduce` for a send's messages: kafkajs 2.2.4 groups them by partition with `messages.reduce` (its
 * producer/groupMessagesPerPartition.js, the only `reduce` it calls on them), whose step copies the partition's group
 * for every message (`[...current, message]`): quadratic in the records of a partition, about 1 M element copies and
 * 8 MB of garbage for a send of 1,400 records. Here each step gets an empty accumulator (it then places the one
 * message: the partitioner is called once per message, in order, as before) and its answer is appended to the
 * group. Any other use (an accumulator that is not an empty plain object) is Array's own `reduce`.
 */
function groupingReduce(this: Array<unknown>, step: GroupStep, ...init: Array<unknown>): unknown {
  const into = init[0]
  if (
    init.length !== 1 ||
    typeof into !== "object" ||
    into === null ||
    Array.isArray(into) ||
    Object.keys(into).length > 0
  )
    return (Array.prototype.reduce as (...a: Array<unknown>) => unknown).apply(this, [step, ...init])
  const groups = into as Groups
  for (let i = 0; i < this.length; i++) {
    const placed = step({}, this[i])
    for (const partition of Object.keys(placed)) {
      const group = groups[partition]
      const added = placed[partition]!
      if (group === undefined) groups[partition] = added
      else for (const m of added) group.push(m)
    }
  }
  return groups
}

/** `messages`, grouped by partition in linear time when kafkajs sends them (see `groupingReduce`). */
export const groupedLinearly = <A>(messages: Array<A>): Array<A> =>
  Object.defineProperty(messages, "reduce", { value: groupingReduce, enumerable: false, writable: true })
