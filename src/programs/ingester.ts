#!/usr/bin/env node
/**
 * `node dist/programs/ingester.js`: the Spillway ingester.
 *
 *   api            authenticated gRPC (TLS, JWT) in, Kafka out; acknowledges only what Kafka acknowledged
 *   access-token   prints a signed access token for an access key (same secret as the server)
 *   certs          makes a development CA, server and client certificate into a folder (openssl)
 *
 * Every option of `api` can also come from the environment (named in --help) or from the JSON file
 * named by SPILLWAY_CONFIG (keys are the environment names). Tuning without flags: `tuningConfig` in src/ingest/IngesterFlags.ts
 * (each variable with its default is listed in the README section "The ingester").
 */
// First: the heap settings reach V8 before the rest of the bundle is evaluated (src/shared/HeapFlags.ts).
import "../shared/HeapAtLoad.js"
import { Command, Options } from "@effect/cli"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { ConfigError, Console, Effect, Either, Layer, Schema } from "effect"
import { AccessKey } from "../domain/Event.js"
import { Auth } from "../ingest/Auth.js"
import { forwardPassword } from "../ingest/forward/ForwardPassword.js"
import { apiOptions, tuningConfig } from "../ingest/IngesterFlags.js"
import { ingesterLayer } from "../ingest/IngesterLive.js"
import { IngesterStartError } from "../ingest/IngesterServer.js"
import { checkTimeouts } from "../ingest/KafkaSink.js"
import { validateIngester } from "../ingest/ValidateIngester.js"
import { makeDevCerts } from "../shared/DevCerts.js"
import { heapSettingsOf } from "../shared/HeapFlags.js"
import { runnable } from "../shared/ProgramRuntime.js"
import { checkCodeCache, finding, report } from "../shared/Validate.js"

/** Startup problems are printed as one line on stderr with exit code 1, never as a stack trace. */
const failCleanly = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  self.pipe(
    Effect.catchAll((e) =>
      Effect.sync(() => {
        const message = ConfigError.isConfigError(e)
          ? String(e)
          : e instanceof Error
            ? e.message
            : typeof e === "object" && e !== null && "detail" in e
              ? String(e.detail)
              : String(e)
        process.stderr.write(`spillway-ingester: ${message}\n`)
        process.exitCode = 1
      }),
    ),
  )

const api = Command.make("api", apiOptions, (opts) =>
  Effect.gen(function* () {
    const heap = heapSettingsOf(process.env)
    if ("error" in heap) return yield* new IngesterStartError({ detail: heap.error })
    const layer = yield* ingesterLayer(opts)
    yield* Effect.logInfo("ingester starting").pipe(
      Effect.annotateLogs({ topic: opts.topic, brokers: opts.brokers, tenants: opts.tenants }),
    )
    yield* Layer.launch(layer)
  }).pipe(failCleanly),
).pipe(
  Command.withDescription(
    "Serve api.EventService over gRPC/TLS with JWT auth and produce the events to Kafka, acknowledging only what Kafka acknowledged. Needs SPILLWAY_JWT_SECRET or SPILLWAY_JWT_SECRET_FILE. " +
      "Heap (environment only, README): SPILLWAY_V8_OLD_GROWTH_PERCENT, SPILLWAY_V8_YOUNG_GROWTH, SPILLWAY_V8_YOUNG_LIMIT_MIB.",
  ),
)

// ---------------------------------------------------------------------------------------------
// access-token

const accessToken = Command.make(
  "access-token",
  {
    accessKey: Options.text("access-key").pipe(Options.withDescription("The access key the token is bound to (sub)")),
    expiry: Options.integer("expiry").pipe(
      Options.withDescription("Seconds until the token expires (default 600)"),
      Options.withDefault(600),
    ),
    role: Options.text("role").pipe(Options.withDescription("Role claim (default empty)"), Options.withDefault("")),
  },
  (opts) =>
    Effect.gen(function* () {
      const key = Schema.decodeUnknownEither(AccessKey)(opts.accessKey)
      if (Either.isLeft(key))
        return yield* new IngesterStartError({
          detail: "--access-key is not a valid access key (letters, digits, '.', '_', ':' or '-')",
        })
      if (opts.expiry <= 0)
        return yield* new IngesterStartError({ detail: "--expiry must be a positive number of seconds" })
      if (opts.role.length > 64)
        return yield* new IngesterStartError({ detail: "--role must be at most 64 characters" })
      const auth = yield* Auth
      if (opts.expiry > auth.maxLifetimeSeconds)
        return yield* new IngesterStartError({
          detail: `--expiry is longer than the maximum token lifetime (${auth.maxLifetimeSeconds} s, SPILLWAY_JWT_MAX_LIFETIME_SECONDS)`,
        })
      const token = yield* auth.sign(key.right, { expirySeconds: opts.expiry, role: opts.role })
      yield* Console.log(token)
    }).pipe(Effect.provide(Auth.Default), failCleanly),
).pipe(
  Command.withDescription(
    "Print a signed access token for an access key, with the server's secret (SPILLWAY_JWT_SECRET or SPILLWAY_JWT_SECRET_FILE)",
  ),
)

// ---------------------------------------------------------------------------------------------
// certs

const certs = Command.make(
  "certs",
  {
    dir: Options.text("dir").pipe(
      Options.withDescription("Folder to write ca.crt/key, server.crt/key, client.crt/key into"),
    ),
    hosts: Options.text("host").pipe(
      Options.withDescription(
        "DNS name or IP the server certificate is valid for; repeat it (default localhost, 127.0.0.1, ::1)",
      ),
      Options.repeated,
    ),
    force: Options.boolean("force").pipe(Options.withDescription("Re-create the files even if they exist")),
  },
  (opts) =>
    Effect.gen(function* () {
      const paths = yield* makeDevCerts(opts.dir, {
        ...(opts.hosts.length > 0 ? { hosts: opts.hosts } : {}),
        force: opts.force,
      })
      yield* Console.log(JSON.stringify(paths, null, 2))
    }).pipe(failCleanly),
).pipe(
  Command.withDescription(
    "Make a development CA, a server certificate and a client certificate with openssl (development and tests only)",
  ),
)

const validate = Command.make("validate", apiOptions, (opts) =>
  Effect.gen(function* () {
    const tuning = yield* Effect.either(tuningConfig)
    const timeouts = Either.match(tuning, {
      onLeft: (e) => String(e),
      onRight: (t) => checkTimeouts(t.produceTimeoutMs, t.requestTimeoutMs),
    })
    const heap = heapSettingsOf(process.env)
    const heapFinding = finding(!("error" in heap), "heap (SPILLWAY_V8_*)", "error" in heap ? heap.error : "valid")
    yield* report("spillway-ingester", [
      ...(yield* validateIngester({ ...opts, timeouts })),
      heapFinding,
      checkCodeCache(),
    ])
  }),
).pipe(
  Command.withDescription(
    "Check the settings, files and certificates `api` would use, without listening or connecting",
  ),
)

const forwardPasswordCommand = Command.make(
  "forward-password",
  {
    accessKey: Options.text("access-key").pipe(
      Options.withDescription("The tenant's access key (the Forward username)"),
    ),
  },
  (opts) =>
    Effect.gen(function* () {
      const key = Schema.decodeUnknownEither(AccessKey)(opts.accessKey)
      if (Either.isLeft(key)) return yield* new IngesterStartError({ detail: "--access-key is not a valid access key" })
      yield* Console.log(yield* forwardPassword(yield* Auth, key.right))
    }).pipe(Effect.provide(Auth.Default), failCleanly),
).pipe(
  Command.withDescription(
    "Print the Fluent Forward password of an access key (derived from the server's secret; not a bearer token)",
  ),
)

const ingester = Command.make("ingester").pipe(
  Command.withDescription(
    "Spillway ingester: authenticated gRPC over TLS -> Kafka, acknowledged once Kafka has the events",
  ),
  Command.withSubcommands([api, validate, accessToken, forwardPasswordCommand, certs]),
)

const cli = Command.run(ingester, { name: "spillway-ingester", version: "0.1.0" })

runnable(cli(process.argv)).pipe(NodeRuntime.runMain({ disablePrettyLogger: true }))
