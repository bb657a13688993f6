/** The agent's metrics, served on `/metrics` by the operations port (Ops.ts). */
import { Metric } from "effect"

export const eventsRead = (input: string) =>
  Metric.counter("agent_events_read_total", {
    description: "Events read by an input and buffered",
    incremental: true,
  }).pipe(Metric.tagged("input", input))
export const eventsSent = Metric.counter("agent_events_sent_total", {
  description: "Events sent to the ingester (resends count again)",
  incremental: true,
})
export const eventsAcked = Metric.counter("agent_events_acked_total", {
  description: "Events the ingester acknowledged (deleted from the buffer)",
  incremental: true,
})
export const eventsRejected = Metric.counter("agent_events_rejected_total", {
  description: "Events in batches the ingester rejected for good (moved to the rejected folder)",
  incremental: true,
})
export const batchesRejected = Metric.counter("agent_batches_rejected_total", {
  description: "Batches the ingester rejected for good",
  incremental: true,
})
export const retries = Metric.counter("agent_retries_total", {
  description: "Reconnects after a failed connection or stream",
  incremental: true,
})
export const authFailures = Metric.counter("agent_auth_failures_total", {
  description: "Times the ingester refused the token (UNAUTHENTICATED)",
  incremental: true,
})
export const bufferBytes = Metric.gauge("agent_buffer_bytes", { description: "Bytes held in the disk buffer" })
export const bufferEvents = Metric.gauge("agent_buffer_events", { description: "Events held in the disk buffer" })
export const bufferFullWaits = Metric.counter("agent_buffer_full_waits_total", {
  description: "Times an input paused because the disk buffer was full",
  incremental: true,
})
export const inflightBatches = Metric.gauge("agent_inflight_batches", {
  description: "Batches sent and not yet acknowledged",
})
export const connected = Metric.gauge("agent_connected", {
  description: "1 while a batch stream to the ingester is open",
})
