/**
 * `ingester validate`: what `api` would load, checked without listening or connecting: the JWT secret, the TLS
 * files (PEM, in date, the key belonging to the certificate, the client CA), the tenants file, the broker list,
 * the compression and the Kafka timeouts. Each finding names the flag or variable.
 */
import type { FileSystem } from "@effect/platform"
import { Effect, Either, Option } from "effect"
import { compressionNames } from "../shared/Codecs.js"
import {
  checkBrokers,
  checkCertificate,
  checkPrivateKey,
  checkTenants,
  type Finding,
  finding,
} from "../shared/Validate.js"
import { keyringConfig } from "./Auth.js"
import { loadTls } from "./TlsReload.js"

export interface IngesterFiles {
  readonly insecure: boolean
  readonly tlsCert: Option.Option<string>
  readonly tlsKey: Option.Option<string>
  readonly tlsClientCa: Option.Option<string>
  readonly tenants: string
  readonly brokers: string
  readonly compression: string
  /** undefined, or why the produce and request timeouts do not fit together. */
  readonly timeouts: string | undefined
}

export const validateIngester = (
  o: IngesterFiles,
): Effect.Effect<ReadonlyArray<Finding>, never, FileSystem.FileSystem> =>
  Effect.gen(function* () {
    const keyring = yield* Effect.either(keyringConfig)
    const findings: Array<Finding> = [
      Either.match(keyring, {
        onLeft: (e) => finding(false, "JWT secret (SPILLWAY_JWT_SECRET or SPILLWAY_JWT_SECRET_FILE)", String(e)),
        onRight: () => finding(true, "JWT secret (SPILLWAY_JWT_SECRET or SPILLWAY_JWT_SECRET_FILE)", "usable"),
      }),
    ]
    if (o.insecure) findings.push(finding(true, "--insecure", "plaintext gRPC (development only)"))
    else if (Option.isNone(o.tlsCert) || Option.isNone(o.tlsKey))
      findings.push(
        finding(false, "--tls-cert, --tls-key (SPILLWAY_TLS_CERT, SPILLWAY_TLS_KEY)", "required unless --insecure"),
      )
    else {
      const [cert, key] = [o.tlsCert.value, o.tlsKey.value]
      const tls = [
        checkCertificate("--tls-cert (SPILLWAY_TLS_CERT)", cert),
        checkPrivateKey("--tls-key (SPILLWAY_TLS_KEY)", key, cert),
        ...(Option.isSome(o.tlsClientCa)
          ? [checkCertificate("--tls-client-ca (SPILLWAY_TLS_CLIENT_CA)", o.tlsClientCa.value)]
          : []),
      ]
      findings.push(...tls)
      // What the server itself would refuse (the same loader), when each file looked fine on its own.
      const all = loadTls({ certFile: cert, keyFile: key, clientCaFile: Option.getOrUndefined(o.tlsClientCa) })
      if (tls.every((f) => f.ok) && Either.isLeft(all)) findings.push(finding(false, "TLS", all.left))
    }
    findings.push(checkTenants("--tenants (SPILLWAY_TENANTS_FILE)", o.tenants))
    findings.push(checkBrokers("--brokers (SPILLWAY_KAFKA_BROKERS)", o.brokers))
    const codec = compressionNames.some((n) => n === o.compression)
    findings.push(
      finding(
        codec,
        "--compression (SPILLWAY_INGESTER_COMPRESSION)",
        codec ? o.compression : `one of ${compressionNames.join(", ")}`,
      ),
    )
    findings.push(
      finding(o.timeouts === undefined, "Kafka timeouts", o.timeouts ?? "produce timeout above request timeout"),
    )
    return findings
  })
