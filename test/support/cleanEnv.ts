/**
 * Setup file of both vitest projects: tests never depend on the caller's environment. Every variable the
 * programs read (SPILLWAY_*, the agent's ACCESS_*) is removed from this worker's environment before a test file
 * loads, so the child programs the tests start (which inherit it) see only what each test sets explicitly. An
 * operator with SPILLWAY_JWT_SECRET exported in the shell gets the same results as CI.
 *
 * Kept: the variables of the test harness itself (where the local Kafka broker and test servers listen).
 */
const harness = new Set([
  "SPILLWAY_KAFKA_PORT",
  "SPILLWAY_KAFKA_CONTROLLER_PORT",
  "SPILLWAY_KAFKA_DIR",
  "SPILLWAY_KAFKA_PARTITIONS",
  "SPILLWAY_KAFKA_HEAP",
  "SPILLWAY_KAFKA_START_TIMEOUT_MS",
  "SPILLWAY_KAFKA_VERSION",
  "SPILLWAY_KAFKA_LOG_LEVEL",
  "SPILLWAY_KAFKA_CLUSTER_PORT",
  "SPILLWAY_KEEP_KAFKA",
  "SPILLWAY_SKIP_GO",
  "SPILLWAY_OPENSEARCH_PORT",
  "SPILLWAY_OPENSEARCH_HEAP",
  "SPILLWAY_S3_PORT",
])

export const programVariable = (name: string): boolean =>
  (name.startsWith("SPILLWAY_") && !harness.has(name)) || /^ACCESS_(KEY|TOKEN|TOKEN_FILE)$/.test(name)

for (const name of Object.keys(process.env)) if (programVariable(name)) delete process.env[name]
