/**
 * Metrics of the `s3` and `opensearch` destinations (the router's per-destination counters of delivered
 * events and errors stay the router's). Label `destination` is `targetName`: from the tenants file, no secret.
 */
import { counter } from "../../shared/Metrics.js"

export const s3Objects = counter("spillway_router_s3_objects_total", "Objects written to s3 targets", ["destination"])
export const s3ObjectBytes = counter(
  "spillway_router_s3_object_bytes_total",
  "Bytes of the objects written to s3 targets (after gzip)",
  ["destination"],
)
export const s3LinesAlreadyStored = counter(
  "spillway_router_s3_lines_already_stored_total",
  "Lines of replayed batches that objects of an earlier run already held, so not written again",
  ["destination"],
)
export const openSearchItems = counter(
  "spillway_router_opensearch_items_total",
  "Bulk items sent to opensearch targets, by result (written, retryable, permanent)",
  ["destination", "result"],
)
