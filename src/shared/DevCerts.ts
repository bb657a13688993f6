/**
 * Development certificates: a CA, a server certificate for the given host names and a
 * client certificate (for mutual TLS), made with the system's `openssl` (OpenSSL 1.1.1 or 3.x).
 * For development and tests only: production certificates come from the operator's own CA.
 */
import { execFile } from "node:child_process"
import { existsSync } from "node:fs"
import { chmod, mkdir, writeFile } from "node:fs/promises"
import { join } from "node:path"
import { promisify } from "node:util"
import { Data, Effect } from "effect"

const run = promisify(execFile)

export class DevCertsError extends Data.TaggedError("DevCertsError")<{ readonly detail: string }> {}

export interface DevCertPaths {
  readonly dir: string
  readonly caCert: string
  readonly caKey: string
  readonly serverCert: string
  readonly serverKey: string
  readonly clientCert: string
  readonly clientKey: string
}

export const devCertPaths = (dir: string): DevCertPaths => ({
  dir,
  caCert: join(dir, "ca.crt"),
  caKey: join(dir, "ca.key"),
  serverCert: join(dir, "server.crt"),
  serverKey: join(dir, "server.key"),
  clientCert: join(dir, "client.crt"),
  clientKey: join(dir, "client.key"),
})

export interface DevCertOptions {
  /** DNS names and IP addresses the server certificate is valid for. */
  readonly hosts?: ReadonlyArray<string>
  readonly days?: number
  /** Re-create even if the files exist. */
  readonly force?: boolean
}

const isIp = (h: string) => /^[0-9.]+$/.test(h) || h.includes(":")

/** Creates (or keeps, if all present) the CA, server and client certificates in `dir`. */
export const makeDevCerts = (dir: string, options: DevCertOptions = {}) =>
  Effect.tryPromise({
    try: async () => {
      const p = devCertPaths(dir)
      const all = [p.caCert, p.caKey, p.serverCert, p.serverKey, p.clientCert, p.clientKey]
      if (!options.force && all.every((f) => existsSync(f))) return p
      const hosts = options.hosts ?? ["localhost", "127.0.0.1", "::1"]
      const days = String(options.days ?? 825)
      await mkdir(dir, { recursive: true, mode: 0o700 })
      const ossl = (...args: Array<string>) => run("openssl", args, { cwd: dir })
      const key = (file: string) =>
        ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", file)
      await key(p.caKey)
      await ossl(
        "req",
        "-x509",
        "-new",
        "-key",
        p.caKey,
        "-sha256",
        "-days",
        days,
        "-subj",
        "/CN=Spillway development CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        p.caCert,
      )
      const san = hosts.map((h) => (isIp(h) ? `IP:${h}` : `DNS:${h}`)).join(",")
      const leaf = async (name: "server" | "client", certFile: string, keyFile: string, ext: string) => {
        await key(keyFile)
        const csr = join(dir, `${name}.csr`)
        const extFile = join(dir, `${name}.ext`)
        await writeFile(extFile, ext)
        await ossl("req", "-new", "-key", keyFile, "-subj", `/CN=spillway-${name}`, "-out", csr)
        await ossl(
          "x509",
          "-req",
          "-in",
          csr,
          "-CA",
          p.caCert,
          "-CAkey",
          p.caKey,
          "-CAcreateserial",
          "-days",
          days,
          "-sha256",
          "-extfile",
          extFile,
          "-out",
          certFile,
        )
      }
      await leaf(
        "server",
        p.serverCert,
        p.serverKey,
        `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=${san}\n`,
      )
      await leaf(
        "client",
        p.clientCert,
        p.clientKey,
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
      )
      for (const f of [p.caKey, p.serverKey, p.clientKey]) await chmod(f, 0o600)
      return p
    },
    catch: (e) =>
      new DevCertsError({
        detail: `could not make development certificates in ${dir} with openssl: ${e instanceof Error ? e.message : String(e)}`,
      }),
  })
