/**
 * Produces records with the Apache Kafka Java client (Producer.java next to this file), the producer most Kafka
 * deployments run: a producer other than kafkajs, with its own record-batch encoder and codecs. Needs Java 11+ and
 * the broker's jars (`.cache/kafka/libs`, fetched by `npm run kafka`); no install.
 */
import { execFile } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import * as broker from "../../../scripts/kafka.mjs"
import { brokers as sharedBrokers } from "../../support/kafka.js"

const program = fileURLToPath(new URL("./Producer.java", import.meta.url))

export type JavaCodec = "none" | "gzip" | "snappy" | "lz4" | "zstd"

export interface JavaRecord {
  readonly partition: number
  readonly key: Buffer | null
  readonly value: Buffer
}

/** Sends `records` with compression `codec` (acks=all); resolves once the Java client flushed them all. */
export const produceWithJava = (
  topic: string,
  codec: JavaCodec,
  records: ReadonlyArray<JavaRecord>,
  brokers: ReadonlyArray<string> = sharedBrokers,
): Promise<void> => {
  const dir = mkdtempSync(join(tmpdir(), "spillway-java-"))
  const file = join(dir, "records.tsv")
  writeFileSync(
    file,
    records
      .map((r) => `${r.partition}\t${r.key === null ? "-" : r.key.toString("hex")}\t${r.value.toString("hex")}`)
      .join("\n"),
  )
  return new Promise<void>((resolve, reject) => {
    execFile(
      "java",
      ["-cp", `${broker.LIBS_DIR}/*`, program, brokers.join(","), topic, codec, file],
      { timeout: 60_000, maxBuffer: 4 * 1024 * 1024 },
      (error, stdout, stderr) => {
        rmSync(dir, { recursive: true, force: true })
        if (error !== null) reject(new Error(`java producer failed: ${error.message}\n${stderr.slice(-2000)}`))
        else if (!stdout.includes(`sent ${records.length}`)) reject(new Error(`java producer: ${stdout}\n${stderr}`))
        else resolve()
      },
    )
  })
}
