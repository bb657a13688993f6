/**
 * The agent's metrics (prom-client, src/shared/Metrics.ts), served on `/metrics` by the operations port.
 * Each is listed in the README's agent section.
 */
import { counter, gauge, registerProcessMetrics } from "../shared/Metrics.js"

export const eventsRead = counter("spillway_agent_events_read_total", "Events read by an input and buffered", ["input"])
export const eventsSent = counter(
  "spillway_agent_events_sent_total",
  "Events sent to the ingester for the first time by this process",
)
export const eventsResent = counter(
  "spillway_agent_events_resent_total",
  "Events sent again (after a reconnect, an ack timeout or a refused batch)",
)
export const eventsAcked = counter(
  "spillway_agent_events_acked_total",
  "Events the ingester acknowledged (deleted from the buffer)",
)
export const eventsRejected = counter(
  "spillway_agent_events_rejected_total",
  "Events moved to the rejected folder: refused for good by the ingester, or too large for any message",
  ["reason"],
)
export const batchesRejected = counter(
  "spillway_agent_batches_rejected_total",
  "Batches the ingester rejected for good",
)
export const retries = counter("spillway_agent_retries_total", "Reconnects after a failed connection or stream")
export const authFailures = counter(
  "spillway_agent_auth_failures_total",
  "Times the ingester refused the token (UNAUTHENTICATED)",
)
export const bufferBytes = gauge("spillway_agent_buffer_bytes", "Bytes held in the disk buffer")
export const bufferEvents = gauge("spillway_agent_buffer_events", "Events held in the disk buffer")
export const bufferFullWaits = counter(
  "spillway_agent_buffer_full_waits_total",
  "Times an input paused because the disk buffer was full",
)
export const bufferWritable = gauge(
  "spillway_agent_buffer_writable",
  "1 while the disk buffer takes writes, 0 while appends fail (disk full, I/O error)",
)
export const bufferWriteFailures = counter(
  "spillway_agent_buffer_write_failures_total",
  "Failed disk buffer appends (each retried; the lines are kept)",
)
export const inputRestarts = counter(
  "spillway_agent_input_restarts_total",
  "Inputs restarted after an unexpected failure",
  ["input"],
)
export const inflightBatches = gauge("spillway_agent_inflight_batches", "Batches sent and not yet acknowledged")
export const connected = gauge("spillway_agent_connected", "1 while a stream to the ingester is open")
export const legacyRpc = gauge(
  "spillway_agent_legacy_rpc",
  "1 while sending over SendEvent because the ingester lacks SendEventBatches",
)

/** RSS now and at its peak, the V8 heap, external memory and CPU seconds (src/shared/Metrics.ts). */
registerProcessMetrics("agent")
