/**
 * The router's metrics (prom-client, src/shared/Metrics.ts; `/metrics` renders them). Labels are bounded and
 * secret-free: a destination is its kind (`file`, `http`) and its position in the tenant's `targets`, never a file
 * name (usually the access key), a url or a header; reasons come from closed lists; partitions from the topic.
 */
import { counter, gauge, registerProcessMetrics } from "../shared/Metrics.js"

export const recordsIn = counter("spillway_router_records_in_total", "Records taken from Kafka (re-reads included)")
export const eventsOut = counter(
  "spillway_router_events_out_total",
  "Events delivered, by destination kind and position in the tenant's targets",
  ["destination", "position"],
)
export const destinationErrors = counter(
  "spillway_router_destination_errors_total",
  "Failed delivery attempts, by destination kind and position",
  ["destination", "position"],
)
export const destinationRetries = counter(
  "spillway_router_destination_retries_total",
  "Delivery attempts that were retries, by destination kind and position",
  ["destination", "position"],
)
export const withoutTargets = counter(
  "spillway_router_events_without_targets_total",
  "Events of tenants that have no targets (dropped by configuration)",
)
export const deadLetters = counter(
  "spillway_router_dead_letters_total",
  "Records sent to the dead-letter topic, by reason",
  ["reason"],
)
export const deadLettersTruncated = counter(
  "spillway_router_dead_letters_truncated_total",
  "Dead letters whose value was cut because Kafka refused it as too large (headers kept)",
)
export const consumerLag = gauge(
  "spillway_router_consumer_lag",
  "Records between the committed offset and the high watermark, per partition",
  ["topic", "partition"],
)
export const partitionPauses = counter(
  "spillway_router_partition_pauses_total",
  "Times a partition was paused (a destination out of budget, or a batch that cannot be decoded)",
)
export const undecodableBatches = counter(
  "spillway_router_undecodable_batches_total",
  "Record batches that could not be decoded (a codec missing, a corrupt batch), by partition; each is retried",
  ["topic", "partition"],
)
export const divertedRecords = counter(
  "spillway_router_diverted_records_total",
  "Records of the source topic written to the retry topic instead of being delivered directly (a tenant set aside)",
)
export const divertedTenants = gauge(
  "spillway_router_diverted_tenants",
  "Tenants whose events this router currently sends to the retry topic",
)
export const retryEventsOut = counter(
  "spillway_router_retry_events_out_total",
  "Events delivered from the retry topic (also counted in spillway_router_events_out_total)",
)
export const drainPauses = counter(
  "spillway_router_drain_pauses_total",
  "Source batches cut short so that a tenant going back to direct delivery waits for the retry path to catch up",
)

/** RSS now and at its peak, the V8 heap, external memory and CPU seconds (src/shared/Metrics.ts). */
registerProcessMetrics("router")
