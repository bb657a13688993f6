import { describe, expect, it } from "@effect/vitest"
import { logLevel } from "kafkajs"
import { kafkaLogLevel } from "../../src/shared/Kafka.js"

describe("kafkaLogLevel", () => {
  it("demotes broker answers that kafkajs retries while the broker warms up", () => {
    for (const error of [
      "The coordinator is loading and hence can't process requests for this group",
      "This server does not host this topic-partition",
      "The group coordinator is not available",
      "This is not the correct coordinator for this group",
    ]) {
      expect(kafkaLogLevel(logLevel.ERROR, { message: "Response Metadata(key: 3, version: 6)", error })).toBe(
        logLevel.DEBUG,
      )
    }
    expect(
      kafkaLogLevel(logLevel.ERROR, {
        message: "This server does not host this topic-partition",
        retryCount: 0,
        retryTime: 300,
      }),
    ).toBe(logLevel.DEBUG)
  })

  it("keeps failures as errors and leaves other levels alone", () => {
    expect(kafkaLogLevel(logLevel.ERROR, { message: "Crash: KafkaJSNumberOfRetriesExceeded: boom" })).toBe(
      logLevel.ERROR,
    )
    expect(
      kafkaLogLevel(logLevel.ERROR, { message: "Response Produce(key: 0, version: 7)", error: "Not authorized" }),
    ).toBe(logLevel.ERROR)
    expect(kafkaLogLevel(logLevel.WARN, { message: "x" })).toBe(logLevel.WARN)
  })

  it("demotes the warning every idempotent producer with bounded retries logs at start (bounded on purpose)", () => {
    const message = "Limiting retries for the idempotent producer may invalidate EoS guarantees"
    expect(kafkaLogLevel(logLevel.WARN, { message })).toBe(logLevel.DEBUG)
    expect(kafkaLogLevel(logLevel.WARN, { message: `${message} (and more)` })).toBe(logLevel.WARN)
  })
})
