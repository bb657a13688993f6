import { defineConfig } from "vitest/config"

/**
 * Two projects:
 * - unit: `test/**\/*.test.ts` except `*.it.test.ts`; no services.
 * - integration: `test/**\/*.it.test.ts`; needs the local Kafka broker, which test/support/globalSetup.ts starts
 *   (only when an integration file is part of the run). Its files run one at a time in one fork, since a test may
 *   stop/restart the broker; the project runs after the unit one (groupOrder) so the two don't fight for 2 cores.
 */
export default defineConfig({
  test: {
    pool: "forks",
    poolOptions: { forks: { minForks: 1, maxForks: 2 } },
    env: { KAFKAJS_NO_PARTITIONER_WARNING: "1" },
    // Tests never see the caller's SPILLWAY_* variables (test/support/cleanEnv.ts); each file's temporary folders are
    // removed after it (test/support/tempRoot.ts).
    setupFiles: ["test/support/cleanEnv.ts", "test/support/tempRoot.ts"],
    projects: [
      {
        extends: true,
        test: {
          name: "unit",
          include: ["test/**/*.test.ts"],
          exclude: ["test/**/*.it.test.ts", "**/node_modules/**"],
          testTimeout: 10_000,
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: "integration",
          include: ["test/**/*.it.test.ts"],
          globalSetup: ["test/support/globalSetup.ts"],
          testTimeout: 120_000,
          hookTimeout: 180_000,
          poolOptions: { forks: { singleFork: true } },
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
})
