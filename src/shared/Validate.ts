/**
 * `validate`: what each program's `validate` command checks before anything connects anywhere (the `vector validate`
 * / `otelcol validate` habit): files exist and parse, certificates are certificates and in date, keys match, the
 * tenants file is valid. Each check is a Finding naming the file or flag; `report` prints them and sets the exit
 * code. Pure functions over the file system, no network.
 */
import { createPrivateKey, X509Certificate } from "node:crypto"
import { accessSync, constants, readFileSync, statSync } from "node:fs"
import path from "node:path"
import { Console, Effect, Either } from "effect"
import { type CacheOutcome, cacheOutcome } from "./CodeCache.js"
import { parseTenantsFile } from "./ConfigStore.js"

export interface Finding {
  readonly ok: boolean
  /** What was checked, with the flag or variable that names it, e.g. `--tls-cert (SPILLWAY_TLS_CERT) certs/a.crt`. */
  readonly what: string
  readonly detail: string
}

const ok = (what: string, detail: string): Finding => ({ ok: true, what, detail })
const bad = (what: string, detail: string): Finding => ({ ok: false, what, detail })
/** A finding from a check made elsewhere. */
export const finding = (passed: boolean, what: string, detail: string): Finding => (passed ? ok : bad)(what, detail)
const errno = (e: unknown) =>
  e instanceof Error && "code" in e ? String((e as { code: unknown }).code) : "cannot be read"

const MAX_FILE = 16 * 1024 * 1024

const cacheDetails: Record<CacheOutcome, string> = {
  used: "used",
  refused:
    "refused by V8 (another Node, or other V8 flags: Node's command line, NODE_OPTIONS, SPILLWAY_V8_YOUNG_GROWTH, SPILLWAY_V8_YOUNG_LIMIT_MIB), so " +
    "each start compiles the code; to make it under these settings, see the README (Layout)",
  stale: "made for another build of the bundle, so each start compiles the code; run `npm run build`",
  missing: "missing, so each start compiles the code; run `npm run build`",
  off: "off (SPILLWAY_CODE_CACHE=off)",
  written: "written (SPILLWAY_CODE_CACHE=write)",
}

/**
 * What this start did with the build's code cache (src/shared/CodeCache.ts). Never a failure, only slower: a program
 * not run from its bundle (the tests' tsc modules) says so.
 */
export const checkCodeCache = (): Finding => {
  const outcome = cacheOutcome()
  return ok("code cache (dist/programs/*.bundle.cache)", outcome === undefined ? "not in use" : cacheDetails[outcome])
}

/** Reads a file of at most 16 MiB, or says why not. */
const readSmall = (path: string): Either.Either<Buffer, string> => {
  try {
    const st = statSync(path)
    if (!st.isFile()) return Either.left("is not a regular file")
    if (st.size > MAX_FILE) return Either.left(`is ${st.size} bytes; at most ${MAX_FILE} are read`)
    return Either.right(readFileSync(path))
  } catch (e) {
    return Either.left(errno(e))
  }
}

export const checkReadable = (what: string, path: string): Finding =>
  Either.match(readSmall(path), {
    onLeft: (why) => bad(`${what} ${path}`, why),
    onRight: (b) => ok(`${what} ${path}`, `${b.length} bytes`),
  })

/** A folder the program will write in: it exists and is writable, or the nearest existing parent is (it is made). */
export const checkWritableDir = (what: string, dir: string): Finding => {
  let at = path.resolve(dir)
  for (;;) {
    try {
      if (!statSync(at).isDirectory()) return bad(`${what} ${dir}`, `${at} is not a folder`)
      accessSync(at, constants.W_OK)
      return ok(`${what} ${dir}`, at === path.resolve(dir) ? "writable" : `will be made (${at} is writable)`)
    } catch (e) {
      const code = errno(e)
      if (code !== "ENOENT") return bad(`${what} ${dir}`, `${at}: ${code}`)
      const up = path.dirname(at)
      if (up === at) return bad(`${what} ${dir}`, "no existing parent folder")
      at = up
    }
  }
}

/** A PEM certificate (chain): parses, and is valid now. */
export const checkCertificate = (what: string, path: string, now: Date = new Date()): Finding => {
  const read = readSmall(path)
  if (Either.isLeft(read)) return bad(`${what} ${path}`, read.left)
  let cert: X509Certificate
  try {
    cert = new X509Certificate(read.right)
  } catch {
    return bad(`${what} ${path}`, "is not a PEM certificate")
  }
  const from = new Date(cert.validFrom)
  const to = new Date(cert.validTo)
  if (now < from) return bad(`${what} ${path}`, `is not valid before ${from.toISOString()}`)
  if (now > to) return bad(`${what} ${path}`, `expired on ${to.toISOString()}`)
  return ok(`${what} ${path}`, `valid until ${to.toISOString()}`)
}

/** A PEM private key that parses and, when `certPath` is given, belongs to that certificate. */
export const checkPrivateKey = (what: string, path: string, certPath?: string): Finding => {
  const read = readSmall(path)
  if (Either.isLeft(read)) return bad(`${what} ${path}`, read.left)
  let key: ReturnType<typeof createPrivateKey>
  try {
    key = createPrivateKey(read.right)
  } catch {
    return bad(`${what} ${path}`, "is not a PEM private key")
  }
  if (certPath !== undefined) {
    try {
      if (!new X509Certificate(readFileSync(certPath)).checkPrivateKey(key))
        return bad(`${what} ${path}`, `does not belong to the certificate ${certPath}`)
    } catch {
      return ok(`${what} ${path}`, `a ${key.asymmetricKeyType} key (its certificate could not be read)`)
    }
  }
  return ok(`${what} ${path}`, `a ${key.asymmetricKeyType} key${certPath ? " matching its certificate" : ""}`)
}

/** The tenants file: valid (errors name the access key and field, never a key's value). */
export const checkTenants = (what: string, path: string): Finding => {
  const read = readSmall(path)
  if (Either.isLeft(read)) return bad(`${what} ${path}`, read.left)
  return Either.match(parseTenantsFile(path, read.right.toString("utf8")), {
    onLeft: (e) => bad(`${what} ${path}`, e.message),
    onRight: (t) => ok(`${what} ${path}`, `${Object.keys(t).length} tenants`),
  })
}

const HOSTPORT = /^[^\s:,]+:\d{1,5}$/
export const checkBrokers = (what: string, brokers: string): Finding => {
  const list = brokers
    .split(",")
    .map((b) => b.trim())
    .filter((b) => b.length > 0)
  const badOne = list.find((b) => !HOSTPORT.test(b))
  if (list.length === 0) return bad(what, "lists no broker")
  if (badOne !== undefined) return bad(what, "must list host:port pairs")
  return ok(what, `${list.length} brokers (not contacted)`)
}

/** Prints one line per finding; exit code 1 when any failed. */
export const report = (program: string, findings: ReadonlyArray<Finding>): Effect.Effect<void> =>
  Effect.gen(function* () {
    for (const f of findings) yield* Console.log(`${f.ok ? "ok  " : "FAIL"} ${f.what}: ${f.detail}`)
    const failed = findings.filter((f) => !f.ok).length
    yield* Console.log(
      failed === 0 ? `${program}: configuration is valid` : `${program}: ${failed} of ${findings.length} checks failed`,
    )
    if (failed > 0)
      yield* Effect.sync(() => {
        process.exitCode = 1
      })
  })
