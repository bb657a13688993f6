/**
 * The flags of `ingester api` (and `validate`), each with its environment variable, and the tuning settings without
 * a flag, read through the programs' one configuration layer (src/shared/ProgramOptions.ts). The README section
 * "The ingester" lists each with its default and range.
 */
import type { Command } from "@effect/cli"
import { Config } from "effect"
import { compressionNames } from "../shared/Codecs.js"
import {
  BYTES,
  boolFlag,
  intFlag,
  intSetting,
  MILLIS,
  optionalTextFlag,
  PORT,
  textFlag,
} from "../shared/ProgramOptions.js"
import { receiverFlags } from "./receivers/ReceiverFlags.js"

export const apiOptions = {
  printEvents: boolFlag(
    "print-events",
    "SPILLWAY_PRINT_EVENTS",
    "Print each accepted event on stdout (never keys or tokens)",
  ),
  host: textFlag("host", "SPILLWAY_INGESTER_HOST", "Address the gRPC server listens on", "0.0.0.0"),
  port: intFlag("port", "SPILLWAY_INGESTER_PORT", "gRPC port (0 picks a free one)", 7777, PORT),
  tlsCert: optionalTextFlag("tls-cert", "SPILLWAY_TLS_CERT", "Server certificate chain (PEM) for TLS"),
  tlsKey: optionalTextFlag("tls-key", "SPILLWAY_TLS_KEY", "Private key (PEM) of the server certificate"),
  tlsClientCa: optionalTextFlag(
    "tls-client-ca",
    "SPILLWAY_TLS_CLIENT_CA",
    "CA (PEM) that signs client certificates; when given, clients must present one (mutual TLS)",
  ),
  insecure: boolFlag(
    "insecure",
    "SPILLWAY_INSECURE",
    "Serve plaintext gRPC without TLS (development only; logs a warning)",
  ),
  tenants: textFlag(
    "tenants",
    "SPILLWAY_TENANTS_FILE",
    "Tenants file (JSON map of access key to {AccessKey, EncryptionKey, UserID, targets}); reloaded on change",
    "access-tokens-db.json",
  ),
  brokers: textFlag(
    "brokers",
    "SPILLWAY_KAFKA_BROKERS",
    "Kafka bootstrap brokers, comma-separated host:port",
    "127.0.0.1:9092",
  ),
  topic: textFlag("topic", "SPILLWAY_KAFKA_TOPIC", "Kafka topic the events are produced to", "fb-kafka"),
  metricsHost: textFlag(
    "metrics-host",
    "SPILLWAY_INGESTER_METRICS_HOST",
    "Address of the operations port (/healthz, /readyz, /metrics); loopback unless you expose it on purpose",
    "127.0.0.1",
  ),
  metricsPort: intFlag("metrics-port", "SPILLWAY_INGESTER_METRICS_PORT", "Operations port; 0 disables it", 9464, PORT),
  compression: textFlag(
    "compression",
    "SPILLWAY_INGESTER_COMPRESSION",
    `Kafka record-batch compression: ${compressionNames.join(", ")}`,
    "snappy",
  ),
  maxStreams: intFlag(
    "max-streams",
    "SPILLWAY_INGESTER_MAX_STREAMS",
    "Event streams open at once in the process; more get RESOURCE_EXHAUSTED",
    1024,
    { min: 1, max: 100_000 },
  ),
  maxStreamsPerTenant: intFlag(
    "max-streams-per-tenant",
    "SPILLWAY_INGESTER_MAX_STREAMS_PER_TENANT",
    "Event streams open at once per access key; more get RESOURCE_EXHAUSTED",
    64,
    { min: 1, max: 100_000 },
  ),
  ...receiverFlags,
}

export const tuningConfig = Config.all({
  maxMessageBytes: intSetting("SPILLWAY_INGESTER_MAX_MESSAGE_BYTES", 8 * 1024 * 1024, {
    min: 1024,
    max: 64 * 1024 * 1024,
  }),
  maxEventBytes: intSetting("SPILLWAY_INGESTER_MAX_EVENT_BYTES", 1_000_000, { min: 1024, max: 64 * 1024 * 1024 }),
  streamBudgetBytes: intSetting("SPILLWAY_INGESTER_STREAM_BUDGET_BYTES", 16 * 1024 * 1024, BYTES),
  processBudgetBytes: intSetting("SPILLWAY_INGESTER_PROCESS_BUDGET_BYTES", 256 * 1024 * 1024, BYTES),
  budgetWaitMs: intSetting("SPILLWAY_INGESTER_BUDGET_WAIT_MS", 5_000, MILLIS),
  produceTimeoutMs: intSetting("SPILLWAY_KAFKA_PRODUCE_TIMEOUT_MS", 15_000, MILLIS),
  // Kafka's produce timeout: how long the leader waits for the in-sync replicas before the send fails (UNAVAILABLE).
  ackTimeoutMs: intSetting("SPILLWAY_KAFKA_ACK_TIMEOUT_MS", 5_000, { min: 1_000, max: 60_000 }),
  // The ingester's own default for kafkajs's request timeout: shorter than the produce timeout (checkTimeouts).
  requestTimeoutMs: intSetting("SPILLWAY_KAFKA_REQUEST_TIMEOUT_MS", 10_000, MILLIS),
  idleTimeoutMs: intSetting("SPILLWAY_INGESTER_IDLE_TIMEOUT_MS", 120_000, MILLIS),
  shutdownTimeoutMs: intSetting("SPILLWAY_INGESTER_SHUTDOWN_TIMEOUT_MS", 20_000, MILLIS),
})

export type ApiOptions = Command.Command.ParseConfig<typeof apiOptions>
