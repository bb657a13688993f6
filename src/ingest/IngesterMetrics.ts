/**
 * The ingester's metrics (prom-client through src/shared/Metrics.ts; `/metrics` renders them). Labels are bounded:
 * user ids come from the tenants file (an unknown key is refused before it is counted), reasons, rpcs and statuses
 * from closed lists.
 */
import { counter, exponentialBuckets, gauge, histogram, registerProcessMetrics } from "../shared/Metrics.js"

export const eventsIn = counter(
  "spillway_ingester_events_in_total",
  "Events accepted from clients (validated, before Kafka), by tenant",
  ["user_id"],
)
export const bytesIn = counter(
  "spillway_ingester_bytes_in_total",
  "Bytes of gRPC messages accepted from clients, by tenant",
  ["user_id"],
)
export const acks = counter(
  "spillway_ingester_acks_total",
  "Answers given to clients (SendEvent responses and batch acks), by rpc and status",
  ["rpc", "status"],
)
export const authFailures = counter(
  "spillway_ingester_auth_failures_total",
  "Refused tokens and cross-tenant attempts, by reason",
  ["reason"],
)
export const rejected = counter(
  "spillway_ingester_rejected_total",
  "Messages or streams refused, by reason (invalid, overloaded, unavailable, permission_denied, unknown_tenant, unauthenticated, too_many_streams)",
  ["reason"],
)
export const deadLetters = counter(
  "spillway_ingester_dead_letters_total",
  "Events that can never be accepted (invalid_event, event_too_large), written to <topic>-dlq, by reason",
  ["reason"],
)
export const produceLatency = histogram(
  "spillway_ingester_kafka_produce_seconds",
  "Time from handing records to the Kafka producer until Kafka acknowledged them (acks=all)",
  exponentialBuckets(0.001, 2, 16),
)
export const produceErrors = counter(
  "spillway_ingester_kafka_produce_errors_total",
  "Kafka produce requests that failed or timed out",
)
export const inFlightBytes = gauge(
  "spillway_ingester_inflight_bytes",
  "Bytes received from clients and not yet acknowledged by Kafka",
)
export const kafkaConnected = gauge(
  "spillway_ingester_kafka_connected",
  "1 while the Kafka producer is connected and the broker answers, else 0",
)
export const openStreams = gauge(
  "spillway_ingester_open_streams",
  "Event streams open (SendEvent and SendEventBatches)",
)

/** RSS now and at its peak, the V8 heap, external memory and CPU seconds (src/shared/Metrics.ts). */
registerProcessMetrics("ingester")
