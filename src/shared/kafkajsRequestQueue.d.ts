/** kafkajs 2.2.4's per-connection request queue (kafkajs/src/network/requestQueue, not exported by its index). */
declare module "kafkajs/src/network/requestQueue/index.js" {
  export default class RequestQueue {
    pending: Array<unknown>
    throttledUntil: number
    throttleCheckTimeoutId: ReturnType<typeof setTimeout> | null
    checkPendingRequests(): void
    scheduleCheckPendingRequests(): void
  }
}
