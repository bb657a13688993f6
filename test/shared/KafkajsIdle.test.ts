import { describe, expect, it } from "@effect/vitest"
import RequestQueue from "kafkajs/src/network/requestQueue/index.js"
import { installIdleRequestQueueFix } from "../../src/shared/KafkajsIdle.js"
import { waitFor } from "../support/router.js"

/** kafkajs' method as shipped, kept before the fix replaces it. */
const shipped = RequestQueue.prototype.scheduleCheckPendingRequests

const silent = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined }
type Queue = RequestQueue & { push(r: unknown): void; inflight: Map<number, unknown>; destroy(): void }
const makeQueue = (): Queue => {
  const Ctor = RequestQueue as unknown as new (o: object) => Queue
  return new Ctor({
    maxInFlightRequests: null,
    requestTimeout: 30_000,
    clientId: "test",
    broker: "b:1",
    logger: silent,
  })
}
const request = (correlationId: number, sent: Array<number>) => ({
  entry: { correlationId, apiKey: 1, apiName: "Fetch", apiVersion: 11 },
  expectResponse: true,
  sendRequest: () => sent.push(correlationId),
})

describe("installIdleRequestQueueFix", () => {
  it("kafkajs 2.2.4 as shipped sets a timer for nothing (the 1 ms spin the fix removes)", () => {
    const q = makeQueue()
    shipped.call(q)
    // Nothing pending and no throttle, yet a timer: its delay is -1 - Date.now(), which Node runs after 1 ms.
    expect(q.throttleCheckTimeoutId).not.toBeNull()
    q.destroy()
  })

  it("an idle queue sets no timer; a throttled one still checks when the throttle ends", async () => {
    installIdleRequestQueueFix()
    installIdleRequestQueueFix()
    expect(RequestQueue.prototype.scheduleCheckPendingRequests).not.toBe(shipped)
    const q = makeQueue()
    q.checkPendingRequests()
    expect(q.throttleCheckTimeoutId).toBeNull()

    // Throttled by the broker with nothing pending: a check at the end of the throttle, as before.
    q.throttledUntil = Date.now() + 30
    q.scheduleCheckPendingRequests()
    expect(q.throttleCheckTimeoutId).not.toBeNull()
    await waitFor(() => q.throttleCheckTimeoutId === null, 2_000, "the check at the throttle's end", 5)
    expect(q.throttleCheckTimeoutId).toBeNull()
    q.destroy()
  })

  it("a request held by a throttle goes out when it ends; one sent at once leaves no timer behind", async () => {
    installIdleRequestQueueFix()
    const q = makeQueue()
    const sent: Array<number> = []
    q.push(request(1, sent))
    expect(sent).toEqual([1])
    q.inflight.delete(1)
    q.checkPendingRequests()
    expect(q.throttleCheckTimeoutId).toBeNull()

    q.throttledUntil = Date.now() + 40
    q.push(request(2, sent))
    expect(sent).toEqual([1])
    await waitFor(() => sent.length === 2, 2_000, "the held request to go out", 5)
    expect(sent).toEqual([1, 2])
    expect(q.pending).toHaveLength(0)
    // Sent, nothing pending, the throttle over: the queue goes quiet.
    expect(q.throttleCheckTimeoutId).toBeNull()
    q.destroy()
  })
})
