/**
 * Global setup of the `integration` project: makes sure the local Kafka broker (scripts/kafka.mjs) runs.
 *
 * - Already running (e.g. `npm run kafka -- start`): used and left running.
 * - Started here: stopped at teardown by the last vitest run still using it (runs hold leases in .cache/kafka/leases),
 *   unless SPILLWAY_KEEP_KAFKA=1, which keeps it and marks it as if started by hand.
 */
import {
  acquireLease,
  BROKERS,
  KAFKA_VERSION,
  readOwner,
  releaseLease,
  setOwner,
  start,
  stop,
} from "../../scripts/kafka.mjs"

const log = (message: string) => process.stderr.write(`[kafka] ${message}\n`)

export default async function setup(): Promise<() => Promise<void>> {
  const lease = acquireLease()
  try {
    const r = await start({ owner: "auto", log })
    log(
      r.started
        ? `Kafka ${KAFKA_VERSION} started on ${BROKERS.join(",")} (pid ${r.pid}) in ${r.seconds.toFixed(1)} s`
        : `using the running Kafka on ${BROKERS.join(",")} (pid ${r.pid})`,
    )
  } catch (e) {
    releaseLease(lease)
    throw e
  }
  return async () => {
    const others = releaseLease(lease)
    if (process.env.SPILLWAY_KEEP_KAFKA === "1") {
      if (readOwner() === "auto") setOwner("manual")
      log("SPILLWAY_KEEP_KAFKA=1: leaving Kafka running (stop it with `npm run kafka -- stop`)")
      return
    }
    if (others > 0 || readOwner() !== "auto") return
    const r = await stop({ forget: true, log })
    if (r.stopped) log(`stopped Kafka (pid ${r.pid}) in ${r.seconds.toFixed(1)} s`)
  }
}
