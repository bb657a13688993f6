/** Real TLS material for tests: made once per test run under .cache/test-certs with openssl. */
import { join } from "node:path"
import { Effect } from "effect"
import { type DevCertPaths, makeDevCerts } from "../../src/shared/DevCerts.js"

const dir = join(import.meta.dirname, "..", "..", ".cache", "test-certs")

let made: Promise<DevCertPaths> | undefined

/** CA, server (localhost, 127.0.0.1, ::1) and client certificates, shared by all tests of a run. */
export const testCerts = (): Promise<DevCertPaths> => {
  made ??= Effect.runPromise(makeDevCerts(dir))
  return made
}
