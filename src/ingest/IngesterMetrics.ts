/**
 * The ingester's metrics (effect Metric; `/metrics` renders them, see Ops.ts). Labels are bounded:
 * tenants come from the tenants file (an unknown key is refused before it is counted), reasons and
 * statuses from closed lists.
 */
import { Metric, MetricBoundaries } from "effect"

export const eventsIn = Metric.counter("spillway_ingester_events_in_total", {
  description: "Events accepted from clients (validated, before Kafka), by tenant",
  incremental: true,
})
export const bytesIn = Metric.counter("spillway_ingester_bytes_in_total", {
  description: "Bytes of gRPC messages accepted from clients, by tenant",
  incremental: true,
})
export const acks = Metric.counter("spillway_ingester_acks_total", {
  description: "Answers given to clients (SendEvent responses and batch acks), by rpc and status",
  incremental: true,
})
export const authFailures = Metric.counter("spillway_ingester_auth_failures_total", {
  description: "Refused tokens and cross-tenant attempts, by reason",
  incremental: true,
})
export const rejected = Metric.counter("spillway_ingester_rejected_total", {
  description: "Messages or streams refused, by reason (invalid, oversized, overloaded, unavailable)",
  incremental: true,
})
export const produceLatency = Metric.histogram(
  "spillway_ingester_kafka_produce_seconds",
  MetricBoundaries.exponential({ start: 0.001, factor: 2, count: 16 }),
  "Time from handing records to the Kafka producer until Kafka acknowledged them (acks=all)",
)
export const produceErrors = Metric.counter("spillway_ingester_kafka_produce_errors_total", {
  description: "Kafka produce requests that failed or timed out",
  incremental: true,
})
export const inFlightBytes = Metric.gauge("spillway_ingester_inflight_bytes", {
  description: "Bytes received from clients and not yet acknowledged by Kafka",
})
export const kafkaConnected = Metric.gauge("spillway_ingester_kafka_connected", {
  description: "1 while the Kafka producer is connected and the broker answers, else 0",
})
