/**
 * Throughput of the receivers with clients written by others, against the shared broker (in-process harness):
 *   npx vite-node test/support/receiversBench.ts [records]
 * Rows: OTLP/gRPC (JS SDK exporter), OTLP/HTTP protobuf (JS SDK exporter), Forward PackedForward with acks
 * (@fluent-org/logger), and the bare KafkaSink with the same records (the ceiling). Each row: records acknowledged
 * by Kafka per second, from the first emit to the last acknowledgement.
 */

import { FluentClient } from "@fluent-org/logger"
import * as grpc from "@grpc/grpc-js"
import { OTLPLogExporter as GrpcLogExporter } from "@opentelemetry/exporter-logs-otlp-grpc"
import { OTLPLogExporter as ProtoLogExporter } from "@opentelemetry/exporter-logs-otlp-proto"
import { resourceFromAttributes } from "@opentelemetry/resources"
import { BatchLogRecordProcessor, LoggerProvider, type LogRecordExporter } from "@opentelemetry/sdk-logs"
import { Effect, Layer, ManagedRuntime } from "effect"
import { KafkaSink } from "../../src/ingest/KafkaSink.js"
import { makeRecord, tenantKey } from "../../src/ingest/receivers/TenantRecords.js"
import { ConfigStore } from "../../src/shared/ConfigStore.js"
import { KafkaClient } from "../../src/shared/Kafka.js"
import { brokers, createTopic, uniqueTopic } from "./kafka.js"
import { startHarness, tenants, waitFor, writeTenantsFile } from "./receivers.js"

const N = Number(process.argv[2] ?? 20_000)
const WAVE = 2000

const otlpRow = async (exporter: LogRecordExporter): Promise<number> => {
  const provider = new LoggerProvider({
    resource: resourceFromAttributes({ "service.name": "bench", "host.name": "bench-host" }),
    processors: [
      new BatchLogRecordProcessor({ exporter, maxExportBatchSize: 512, maxQueueSize: WAVE, scheduledDelayMillis: 20 }),
    ],
  })
  const logger = provider.getLogger("bench")
  const t0 = performance.now()
  for (let sent = 0; sent < N; sent += WAVE) {
    for (let i = 0; i < WAVE; i++)
      logger.emit({
        body: `bench line ${sent + i} with some typical payload text`,
        attributes: { i: sent + i, path: "/api/v1/items" },
      })
    await provider.forceFlush()
  }
  const s = (performance.now() - t0) / 1000
  await provider.shutdown()
  return N / s
}

const main = async () => {
  const topic = uniqueTopic("recv-bench")
  await createTopic(topic, 3)
  const h = await startHarness({
    topic,
    brokers,
    otlp: { host: "127.0.0.1", grpcPort: 0, httpPort: 0 },
    forward: { host: "127.0.0.1", port: 0, sharedKey: "bench-shared-key" },
  })
  const token = await h.token("A")
  const rows: Array<[string, number]> = []

  const metadata = new grpc.Metadata()
  metadata.set("authorization", `Bearer ${token}`)
  rows.push([
    "OTLP/gRPC, JS SDK exporter",
    await otlpRow(
      new GrpcLogExporter({
        url: `http://127.0.0.1:${h.grpcPort}`,
        credentials: grpc.credentials.createInsecure(),
        metadata,
      }),
    ),
  ])
  rows.push([
    "OTLP/HTTP protobuf, JS SDK exporter",
    await otlpRow(
      new ProtoLogExporter({
        url: `http://127.0.0.1:${h.httpPort}/v1/logs`,
        headers: { authorization: `Bearer ${token}` },
      }),
    ),
  ])

  const fc = new FluentClient("bench", {
    eventMode: "PackedForward",
    socket: { host: "127.0.0.1", port: h.forwardPort! },
    security: {
      clientHostname: "bench",
      sharedKey: "bench-shared-key",
      username: tenants.A.AccessKey,
      password: await h.forwardPassword("A"),
    },
    ack: { ackTimeout: 60_000 },
    flushInterval: 20,
    sendQueueIntervalFlushLimit: { length: 1000 },
  })
  let t0 = performance.now()
  for (let sent = 0; sent < N; sent += WAVE)
    await Promise.all(
      Array.from({ length: WAVE }, (_, i) =>
        fc.emit("x", { msg: `bench line ${sent + i} with some typical payload text`, i: sent + i }),
      ),
    )
  rows.push(["Forward PackedForward + acks, @fluent-org/logger", N / ((performance.now() - t0) / 1000)])
  await fc.disconnect()
  await h.close()

  // The bare producer with records of the same kind (encrypted, ~300 bytes), 512 per publish, 8 in flight.
  const rt = ManagedRuntime.make(
    Layer.mergeAll(
      KafkaSink.layerKafka({ topic }).pipe(
        Layer.provide(
          KafkaClient.layer({
            brokers: [...brokers],
            clientId: "bench",
            connectionTimeoutMs: 3000,
            requestTimeoutMs: 30000,
          }),
        ),
      ),
      ConfigStore.layerFile(writeTenantsFile()),
    ),
  )
  const tk = tenantKey(await rt.runPromise(Effect.flatMap(ConfigStore, (s) => s.get(tenants.A.AccessKey))))
  const batch = Array.from(
    { length: 512 },
    (_, i) =>
      makeRecord(
        tk,
        "bench",
        {
          timestamp: 1n,
          agentId: "h",
          tag: "t",
          json: JSON.stringify({ body: `bench line ${i} with some typical payload text`, i }),
        },
        1e6,
      )!,
  )
  await waitFor("the producer", () => rt.runPromise(Effect.flatMap(KafkaSink, (s) => s.ready)), 60_000)
  await rt.runPromise(Effect.flatMap(KafkaSink, (s) => s.publishRecords(batch)))
  t0 = performance.now()
  const rounds = Math.ceil(N / 512)
  await rt.runPromise(
    Effect.flatMap(KafkaSink, (s) =>
      Effect.forEach(Array.from({ length: rounds }), () => s.publishRecords(batch), { concurrency: 8, discard: true }),
    ),
  )
  rows.push(["bare KafkaSink.publishRecords (ceiling)", (rounds * 512) / ((performance.now() - t0) / 1000)])
  await rt.dispose()
  for (const [name, rate] of rows)
    console.log(`${name.padEnd(52)} ${Math.round(rate).toString().padStart(8)} records/s`)
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e)
    process.exit(1)
  },
)
