/**
 * kafkajs 2.2.4 spins while a connection is idle: after every response, its request queue's
 * `scheduleCheckPendingRequests` sets a timer for `throttledUntil - Date.now()` even when nothing is pending.
 * `throttledUntil` is -1 unless the broker throttles, so the delay is negative, Node fires the timer after 1 ms,
 * and the check schedules itself again: about a thousand wake-ups a second per connection, for as long as the
 * process lives (kafkajs issues 1556, 1604 and 1704; the fix proposed there, unreleased). Measured here: an idle
 * router spent 0.07 of a core on it.
 *
 * `installIdleRequestQueueFix` replaces that method on kafkajs' own class (imported statically, so that the
 * bundle, tsc and vitest all patch the instance kafkajs uses) with the same method less the spin: with nothing
 * pending and no throttle in force there is nothing to check, so no timer is set. Nothing else changes. A request
 * that cannot go out at once is queued by `push`, which schedules the check itself (then with something pending:
 * after the throttle, or after 10 ms as before); a response calls `checkPendingRequests` directly; a throttle in
 * force with nothing pending still gets its check when it ends, as before.
 */
import RequestQueue from "kafkajs/src/network/requestQueue/index.js"

/** kafkajs' own interval for a pending request while nothing else is due (its CHECK_PENDING_REQUESTS_INTERVAL). */
const CHECK_PENDING_REQUESTS_INTERVAL = 10

let installed = false

/** The fixed `scheduleCheckPendingRequests`: kafkajs 2.2.4's, returning where it would set a timer for nothing. */
function scheduleCheckPendingRequests(this: RequestQueue): void {
  if (this.throttleCheckTimeoutId) return
  let scheduleAt = this.throttledUntil - Date.now()
  if (this.pending.length > 0) scheduleAt = scheduleAt > 0 ? scheduleAt : CHECK_PENDING_REQUESTS_INTERVAL
  else if (scheduleAt <= 0) return
  this.throttleCheckTimeoutId = setTimeout(() => {
    this.throttleCheckTimeoutId = null
    this.checkPendingRequests()
  }, scheduleAt)
}

/** Process-wide and idempotent: every kafkajs client of the process gets the fix. */
export const installIdleRequestQueueFix = (): void => {
  if (installed) return
  installed = true
  RequestQueue.prototype.scheduleCheckPendingRequests = scheduleCheckPendingRequests
}
