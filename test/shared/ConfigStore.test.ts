import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { assert, describe, it } from "@effect/vitest"
import { Chunk, Context, Effect, Either, HashMap, Layer, Logger, LogLevel, Redacted, Schedule, Stream } from "effect"
import { AccessKey } from "../../src/domain/Event.js"
import { Tenant, type TenantsFile } from "../../src/domain/Tenant.js"
import { ConfigStore, parseTenantsFile } from "../../src/shared/ConfigStore.js"

/** A copy of the proof of concept's `shared/seed/access-tokens-db.json`. */
const POC_FILE = fileURLToPath(new URL("../fixtures/access-tokens-db.json", import.meta.url))
const K1 = "9c60f26f-5b6c-4c80-b5f5-625bf965b6a6"
const K2 = "9c60f26f-5b6c-4c80-b5f5-611bf965c6a8"
const POC_KEY = "883EC28EBA9A36A386FA351FBC482B34"

const tenant = (key: string, extra: Record<string, unknown> = {}) => ({
  AccessKey: key,
  EncryptionKey: POC_KEY,
  UserID: "2134558",
  targets: [{ file: `${key}.log` }],
  ...extra,
})
const json = (value: unknown) => JSON.stringify(value, null, 2)

/** A scratch folder, removed after the test. */
const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "spillway-tenants-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })),
)
const write = (file: string, content: string) => Effect.sync(() => fs.writeFileSync(file, content))

/** The layer's build error message for a file holding `content`. */
const loadError = (content: string) =>
  Effect.gen(function* () {
    const file = path.join(yield* tempDir, "tenants.json")
    yield* write(file, content)
    const error = yield* Effect.flip(Layer.build(ConfigStore.layerFile(file)))
    assert.strictEqual(error._tag, "ConfigFileError")
    assert.strictEqual(error.path, file)
    return { file, message: error.message }
  })

interface Logged {
  readonly level: string
  readonly message: string
  readonly annotations: Record<string, unknown>
}
/** A logger that records instead of printing. */
const captureLogs = Effect.sync(() => {
  const logs: Array<Logged> = []
  const logger = Logger.make(({ logLevel, message, annotations }) => {
    logs.push({
      level: logLevel.label,
      message: (Array.isArray(message) ? message : [message]).map(String).join(" "),
      annotations: Object.fromEntries(HashMap.toEntries(annotations)),
    })
  })
  return {
    logs,
    layer: Layer.merge(Logger.replace(Logger.defaultLogger, logger), Logger.minimumLogLevel(LogLevel.All)),
  }
})

/** The first record matching `predicate`, failing (to be retried) while there is none. */
const firstLog = (logs: ReadonlyArray<Logged>, predicate: (l: Logged) => boolean) =>
  Effect.suspend(() => Effect.fromNullable(logs.find(predicate)))

/** Retries `check` every 20 ms for up to 5 s. */
const eventually = <A, E>(check: Effect.Effect<A, E>) =>
  check.pipe(Effect.retry({ schedule: Schedule.spaced("20 millis"), times: 250 }))

const count = (tenants: TenantsFile) => Object.keys(tenants).length

describe("ConfigStore.layerFile", () => {
  it.scoped("loads the proof of concept's tenants file", () =>
    Effect.gen(function* () {
      const store = Context.get(yield* Layer.build(ConfigStore.layerFile(POC_FILE)), ConfigStore)
      const all = yield* store.current
      assert.deepStrictEqual(Object.keys(all).sort(), [K2, K1])
      const t = yield* store.get(K1)
      assert.instanceOf(t, Tenant)
      assert.strictEqual(t.AccessKey, K1)
      assert.strictEqual(t.UserID, "2134558")
      assert.strictEqual(Redacted.value(t.EncryptionKey), POC_KEY)
      assert.notInclude(String(t.EncryptionKey), POC_KEY)
      assert.deepStrictEqual(t.targets, [{ file: `${K1}.log` } as (typeof t.targets)[number]])
      assert.strictEqual((yield* store.get(K2)).UserID, "1134412")
    }),
  )

  it.scoped("an unknown access key fails with TenantNotFound", () =>
    Effect.gen(function* () {
      const store = Context.get(yield* Layer.build(ConfigStore.layerFile(POC_FILE)), ConfigStore)
      for (const key of ["nope", "", "__proto__", "constructor", "toString"]) {
        const error = yield* Effect.flip(store.get(key))
        assert.strictEqual(error._tag, "TenantNotFound")
        assert.strictEqual(error.accessKey, key)
      }
    }),
  )

  describe("bad files give errors naming the file, the access key and the field", () => {
    const cases: ReadonlyArray<{ readonly name: string; readonly content: unknown; readonly expect: string }> = [
      {
        name: "access key that is not an AccessKey",
        content: { "bad key!": tenant("bad key!") },
        expect: '["bad key!"]: is not a valid access key: an access key is letters',
      },
      {
        name: "entry whose AccessKey differs from its key",
        content: { k1: tenant("k2") },
        expect: '["k1"].AccessKey: AccessKey must equal the entry\'s key "k1"',
      },
      {
        name: "missing EncryptionKey",
        content: { k1: { AccessKey: "k1", UserID: "1", targets: [] } },
        expect: '["k1"].EncryptionKey: is missing',
      },
      {
        name: "bad key length",
        content: { k1: tenant("k1", { EncryptionKey: "0123456789" }) },
        expect: '["k1"].EncryptionKey: must be 16, 24 or 32 bytes, not 10',
      },
      {
        name: "malformed hex key",
        content: { k1: tenant("k1", { EncryptionKey: "hex:xyz" }) },
        expect: '["k1"].EncryptionKey: the hex: or base64: encoding is malformed',
      },
      {
        name: "target escaping the output folder",
        content: { k1: tenant("k1", { targets: [{ file: "ok.log" }, { file: "../../etc/x" }] }) },
        expect: '["k1"].targets[1].file: target file "../../etc/x" would escape the output folder',
      },
      {
        name: "absolute target",
        content: { k1: tenant("k1", { targets: [{ file: "/etc/passwd" }] }) },
        expect: '["k1"].targets[0].file: target file "/etc/passwd" is an absolute path',
      },
      {
        name: "unknown target kind",
        content: { k1: tenant("k1", { targets: [{ kafka: { topic: "b" } }] }) },
        expect:
          '["k1"].targets[0]: unknown target kind: a target is an object with exactly one of "file", "http", "s3", "opensearch" (it has "kafka")',
      },
      {
        name: "http target with a non-http url",
        content: { k1: tenant("k1", { targets: [{ http: { url: "ftp://example.com/in" } }] }) },
        expect: '["k1"].targets[0].http.url: an http target\'s url must be http:// or https://',
      },
      {
        name: "http target with no absolute url",
        content: { k1: tenant("k1", { targets: [{ http: { url: "/in" } }] }) },
        expect: '["k1"].targets[0].http.url: an http target\'s url must be an absolute URL',
      },
      {
        name: "typo in a tenant field (would silently drop the targets)",
        content: { k1: tenant("k1", { targest: [] }) },
        expect: '["k1"].targest: is unexpected, expected: "AccessKey" | "EncryptionKey" | "UserID" | "targets"',
      },
      {
        name: "typo in a target field",
        content: { k1: tenant("k1", { targets: [{ file: "a.log", fiel: "b.log" }] }) },
        expect: '["k1"].targets[0].fiel: is unexpected, expected: "file"',
      },
      {
        name: "maxAgeMs of an s3 target (removed: objects are cut per fetched batch)",
        content: {
          k1: tenant("k1", { targets: [{ s3: { bucket: "logs", batch: { maxEvents: 10, maxAgeMs: 5000 } } }] }),
        },
        expect:
          '["k1"].targets[0].s3.batch.maxAgeMs: is not supported: an object is written per batch taken from Kafka, never held for an age; remove it (docs/destinations.md',
      },
      {
        name: "maxAgeMs of an opensearch target",
        content: {
          k1: tenant("k1", { targets: [{ opensearch: { urls: ["http://os:9200"], batch: { maxAgeMs: 5000 } } }] }),
        },
        expect: '["k1"].targets[0].opensearch.batch.maxAgeMs: is not supported: a bulk request is written per batch',
      },
      {
        name: "not an object",
        content: [tenant("k1")],
        expect: "must be a JSON object of access key → tenant",
      },
    ]
    for (const c of cases) {
      it.scoped(c.name, () =>
        Effect.gen(function* () {
          const { file, message } = yield* loadError(json(c.content))
          assert.include(message, `${file}: ${c.expect}`)
        }),
      )
    }

    it.scoped("every problem is listed, one line each, each naming the file", () =>
      Effect.gen(function* () {
        const { file, message } = yield* loadError(
          json({
            k1: tenant("k1", { EncryptionKey: "short" }),
            k2: tenant("k2", { targets: [{ file: "../x" }] }),
          }),
        )
        const lines = message.split("\n")
        assert.strictEqual(lines.length, 2)
        for (const line of lines) assert.isTrue(line.startsWith(`${file}: `), line)
        assert.include(message, '["k1"].EncryptionKey')
        assert.include(message, '["k2"].targets[0].file')
      }),
    )

    it.scoped("not JSON: says so with the place, without quoting the file", () =>
      Effect.gen(function* () {
        const { file, message } = yield* loadError(`{\n  "k1": { "EncryptionKey": "${POC_KEY}" ,, }\n}`)
        assert.include(message, `${file}: is not valid JSON`)
        assert.notInclude(message, POC_KEY)
      }),
    )

    it.scoped("error messages do not reveal encryption keys", () =>
      Effect.gen(function* () {
        const { message } = yield* loadError(json({ k1: tenant("k1", { EncryptionKey: `${POC_KEY}x` }) }))
        assert.include(message, "not 33")
        assert.notInclude(message, POC_KEY)
      }),
    )
  })

  it.scoped("a missing file fails the layer, saying so", () =>
    Effect.gen(function* () {
      const file = path.join(yield* tempDir, "absent.json")
      const error = yield* Effect.flip(Layer.build(ConfigStore.layerFile(file)))
      assert.strictEqual(error.message, `${file}: the tenants file does not exist`)
    }),
  )

  it.scoped("a folder or an oversized file is refused", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      assert.include((yield* Effect.flip(Layer.build(ConfigStore.layerFile(dir)))).message, "is not a regular file")
      const file = path.join(dir, "tenants.json")
      yield* write(file, json({ k1: tenant("k1") }))
      const error = yield* Effect.flip(Layer.build(ConfigStore.layerFile(file, { maxBytes: 64 })))
      assert.include(error.message, "a tenants file may hold at most 64 bytes")
    }),
  )

  describe("watching", () => {
    it.scopedLive("a valid change applies; an invalid one is logged and the last good version stays", () =>
      Effect.gen(function* () {
        const { logs, layer: logLayer } = yield* captureLogs
        const file = path.join(yield* tempDir, "tenants.json")
        yield* write(file, json({ k1: tenant("k1") }))
        const store = yield* Layer.build(ConfigStore.layerFile(file, { pollInterval: "50 millis" })).pipe(
          Effect.map(Context.get(ConfigStore)),
          Effect.provide(logLayer),
        )
        assert.strictEqual(count(yield* store.current), 1)

        // A valid change: a second tenant appears.
        yield* write(file, json({ k1: tenant("k1"), k2: tenant("k2") }))
        const reloaded = yield* eventually(firstLog(logs, (l) => l.message === "tenants reloaded"))
        assert.strictEqual(reloaded.level, "INFO")
        assert.strictEqual(reloaded.annotations.tenants, 2)
        assert.strictEqual(reloaded.annotations.file, file)
        assert.strictEqual(count(yield* store.current), 2)
        assert.strictEqual((yield* store.get("k2")).AccessKey, "k2")

        // An invalid change: logged with file, key and field; the two tenants stay.
        yield* write(
          file,
          json({ k1: tenant("k1"), k2: tenant("k2"), k3: tenant("k3", { targets: [{ file: "../x" }] }) }),
        )
        const rejected = yield* eventually(firstLog(logs, (l) => l.message.startsWith("tenants file rejected")))
        assert.strictEqual(rejected.level, "ERROR")
        assert.include(rejected.message, `${file}: ["k3"].targets[0].file: target file "../x" would escape`)
        assert.strictEqual(count(yield* store.current), 2)
        assert.strictEqual((yield* Effect.flip(store.get("k3")))._tag, "TenantNotFound")

        // Not JSON at all (a half-written file): same.
        yield* write(file, '{"k1": ')
        yield* eventually(firstLog(logs, (l) => l.message.includes("is not valid JSON")))
        assert.strictEqual(count(yield* store.current), 2)

        // Fixed again: applies.
        yield* write(file, json({ k3: tenant("k3") }))
        yield* eventually(store.get("k3"))
        assert.deepStrictEqual(Object.keys(yield* store.current), ["k3"])
      }),
    )

    it.scopedLive("SIGHUP re-reads the file at once; an invalid version is refused and the old one stays", () =>
      Effect.gen(function* () {
        const { logs, layer: logLayer } = yield* captureLogs
        const file = path.join(yield* tempDir, "tenants.json")
        yield* write(file, json({ k1: tenant("k1") }))
        // The poll would not see anything for an hour: only the signal can.
        const store = yield* Layer.build(ConfigStore.layerFile(file, { pollInterval: "1 hour" })).pipe(
          Effect.map(Context.get(ConfigStore)),
          Effect.provide(logLayer),
        )
        yield* write(file, json({ k1: tenant("k1"), k2: tenant("k2") }))
        yield* Effect.sync(() => process.kill(process.pid, "SIGHUP"))
        yield* eventually(store.get("k2"))
        assert.strictEqual(count(yield* store.current), 2)

        yield* write(file, '{"k1": ')
        yield* Effect.sync(() => process.kill(process.pid, "SIGHUP"))
        yield* eventually(firstLog(logs, (l) => l.message.includes("is not valid JSON")))
        assert.strictEqual(count(yield* store.current), 2)
      }),
    )

    it.scopedLive("survives rename-on-save and a file that disappears for a while", () =>
      Effect.gen(function* () {
        const { logs, layer: logLayer } = yield* captureLogs
        const dir = yield* tempDir
        const file = path.join(dir, "tenants.json")
        yield* write(file, json({ k1: tenant("k1") }))
        const store = yield* Layer.build(ConfigStore.layerFile(file, { pollInterval: "50 millis" })).pipe(
          Effect.map(Context.get(ConfigStore)),
          Effect.provide(logLayer),
        )

        // Editors write a new file and rename it over the old one (a new inode).
        const tmp = path.join(dir, ".tenants.json.swp")
        yield* write(tmp, json({ k1: tenant("k1"), k2: tenant("k2") }))
        yield* Effect.sync(() => fs.renameSync(tmp, file))
        yield* eventually(store.get("k2"))

        // Deleted: a warning, and the version in force stays.
        yield* Effect.sync(() => fs.rmSync(file))
        const warning = yield* eventually(firstLog(logs, (l) => l.message.startsWith("tenants file unavailable")))
        assert.include(warning.message, "does not exist")
        assert.strictEqual(count(yield* store.current), 2)

        // Back: applies.
        yield* write(file, json({ k9: tenant("k9") }))
        yield* eventually(store.get("k9"))
        assert.strictEqual(logs.filter((l) => l.message.startsWith("tenants file unavailable")).length, 1)
      }),
    )

    it.scopedLive("changes emits the version in force, then each new one", () =>
      Effect.gen(function* () {
        const { layer: logLayer } = yield* captureLogs
        const file = path.join(yield* tempDir, "tenants.json")
        yield* write(file, json({ k1: tenant("k1") }))
        const store = yield* Layer.build(ConfigStore.layerFile(file, { pollInterval: "50 millis" })).pipe(
          Effect.map(Context.get(ConfigStore)),
          Effect.provide(logLayer),
        )
        const fiber = yield* store.changes.pipe(Stream.take(2), Stream.runCollect, Effect.fork)
        yield* Effect.sleep("20 millis")
        yield* write(file, json({ k1: tenant("k1"), k2: tenant("k2") }))
        const versions = Chunk.toReadonlyArray(yield* fiber.await.pipe(Effect.flatten, Effect.timeout("5 seconds")))
        assert.deepStrictEqual(versions.map(count), [1, 2])
      }),
    )

    it.scopedLive("the watcher stops with the layer's scope", () =>
      Effect.gen(function* () {
        const { logs, layer: logLayer } = yield* captureLogs
        const file = path.join(yield* tempDir, "tenants.json")
        yield* write(file, json({ k1: tenant("k1") }))
        yield* Effect.scoped(
          Layer.build(ConfigStore.layerFile(file, { pollInterval: "20 millis" })).pipe(Effect.provide(logLayer)),
        )
        yield* write(file, json({ k1: tenant("k1"), k2: tenant("k2") }))
        yield* Effect.sleep("150 millis")
        assert.isUndefined(logs.find((l) => l.message === "tenants reloaded"))
      }),
    )
  })
})

describe("ConfigStore.layerMemory", () => {
  it.effect("serves the given tenants", () =>
    Effect.gen(function* () {
      const tenants = yield* Either.match(parseTenantsFile("memory", json({ k1: tenant("k1") })), {
        onLeft: (e) => Effect.die(e),
        onRight: (t) => Effect.succeed(t),
      })
      const store = yield* Effect.provide(ConfigStore, ConfigStore.layerMemory(tenants))
      assert.strictEqual((yield* store.get("k1")).AccessKey, AccessKey.make("k1"))
      assert.strictEqual((yield* Effect.flip(store.get("k2")))._tag, "TenantNotFound")
      assert.strictEqual(count(yield* store.current), 1)
    }),
  )
})
