/**
 * The ingester's TLS material, reloadable: a grpc-js CertificateProvider holding the server certificate chain, its
 * key and (for mutual TLS) the client CA. `reload` reads the files again and, only when they are valid (the chain
 * parses and is in date, the key parses and belongs to the first certificate, the CA parses), hands them to grpc-js,
 * which gives new connections the new certificate; connections already open keep theirs, with their streams. An
 * invalid new version is refused with the file named, never its content, and the old one stays.
 */
import { createPrivateKey, X509Certificate } from "node:crypto"
import { readFileSync } from "node:fs"
import * as grpc from "@grpc/grpc-js"
import { Either } from "effect"

export interface TlsFiles {
  readonly certFile: string
  readonly keyFile: string
  readonly clientCaFile?: string | undefined
}

interface Material {
  readonly certificate: Buffer
  readonly privateKey: Buffer
  readonly caCertificate: Buffer | null
  readonly validTo: Date
}

type IdentityListener = grpc.experimental.IdentityCertificateUpdateListener
type CaListener = grpc.experimental.CaCertificateUpdateListener

const read = (file: string, what: string): Either.Either<Buffer, string> => {
  try {
    return Either.right(readFileSync(file))
  } catch (e) {
    const code = e instanceof Error && "code" in e ? String((e as { code: unknown }).code) : "cannot be read"
    return Either.left(`${what} ${file}: ${code}`)
  }
}

/** Pure over the file system: the material of `files`, or why it is unusable (a file named, no content). */
export const loadTls = (files: TlsFiles, now: Date = new Date()): Either.Either<Material, string> =>
  Either.gen(function* () {
    const certificate = yield* read(files.certFile, "--tls-cert")
    const privateKey = yield* read(files.keyFile, "--tls-key")
    const caCertificate = files.clientCaFile === undefined ? null : yield* read(files.clientCaFile, "--tls-client-ca")
    let cert: X509Certificate
    try {
      cert = new X509Certificate(certificate)
    } catch {
      return yield* Either.left(`--tls-cert ${files.certFile}: not a PEM certificate`)
    }
    if (now > new Date(cert.validTo))
      return yield* Either.left(`--tls-cert ${files.certFile}: expired on ${cert.validTo}`)
    let key: ReturnType<typeof createPrivateKey>
    try {
      key = createPrivateKey(privateKey)
    } catch {
      return yield* Either.left(`--tls-key ${files.keyFile}: not a PEM private key`)
    }
    if (!cert.checkPrivateKey(key))
      return yield* Either.left(`--tls-key ${files.keyFile}: does not belong to the certificate ${files.certFile}`)
    if (caCertificate !== null) {
      try {
        new X509Certificate(caCertificate)
      } catch {
        return yield* Either.left(`--tls-client-ca ${files.clientCaFile}: not a PEM certificate`)
      }
    }
    return { certificate, privateKey, caCertificate, validTo: new Date(cert.validTo) }
  })

/** A CertificateProvider whose certificate changes only through a successful `reload`. */
export class ReloadingCertificates implements grpc.experimental.CertificateProvider {
  private readonly identityListeners = new Set<IdentityListener>()
  private readonly caListeners = new Set<CaListener>()

  private constructor(
    private readonly files: TlsFiles,
    private material: Material,
  ) {}

  static load(files: TlsFiles): Either.Either<ReloadingCertificates, string> {
    return Either.map(loadTls(files), (m) => new ReloadingCertificates(files, m))
  }

  /** Reads the files again; on success new connections get them. Returns the new certificate's end of validity. */
  reload(): Either.Either<Date, string> {
    return Either.map(loadTls(this.files), (m) => {
      this.material = m
      for (const l of this.identityListeners) l(this.identity())
      for (const l of this.caListeners) l(this.ca())
      return m.validTo
    })
  }

  /** Server credentials that follow `reload` (mutual TLS when there is a client CA). */
  credentials(): grpc.ServerCredentials {
    const mtls = this.material.caCertificate !== null
    // grpc-js 1.14 passes its arguments on as (identity, ca): the provider serves both, so the order cannot matter.
    return grpc.experimental.createCertificateProviderServerCredentials(this, mtls ? this : null, mtls)
  }

  private identity() {
    return { certificate: this.material.certificate, privateKey: this.material.privateKey }
  }
  private ca() {
    return this.material.caCertificate === null ? null : { caCertificate: this.material.caCertificate }
  }

  // The first update goes out after the call: grpc-js registers its own watcher only once this returns.
  addIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.add(listener)
    queueMicrotask(() => listener(this.identity()))
  }
  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.delete(listener)
  }
  addCaCertificateListener(listener: CaListener): void {
    this.caListeners.add(listener)
    queueMicrotask(() => listener(this.ca()))
  }
  removeCaCertificateListener(listener: CaListener): void {
    this.caListeners.delete(listener)
  }
}
