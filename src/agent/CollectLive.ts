/**
 * CollectLive: the agent as a layer (the CLI in src/programs/agent.ts launches it; tests can build
 * it without the CLI). Order matters for shutdown: the sender starts first and the inputs after,
 * so on SIGTERM the inputs stop first, then the sender gets `shutdownGrace` to send what is
 * buffered, then the connection closes and the rest stays in the buffer for the next start.
 */
import { readFileSync } from "node:fs"
import { Cause, Effect, Fiber, Layer, Ref } from "effect"
import { Crypto } from "../shared/Crypto.js"
import { Health } from "../shared/Health.js"
import * as Metrics from "../shared/Metrics.js"
import { OpsServerLive } from "../shared/Ops.js"
import { backoffWithReset } from "../shared/Retry.js"
import { onSighup } from "../shared/Sighup.js"
import * as M from "./AgentMetrics.js"
import { DiskBuffer } from "./buffer/DiskBuffer.js"
import { runMetrics } from "./inputs/MetricsInput.js"
import { criJoiner, dockerParser, kubernetesParser, MAX_LINE_BYTES, tailParser } from "./inputs/Parsers.js"
import { runStdin } from "./inputs/StdinInput.js"
import { runTail } from "./inputs/Tail.js"
import { type AgentSettings, describeSettings, type InputConfig } from "./Settings.js"
import { readToken } from "./sender/Connection.js"
import { makeSender } from "./sender/Sender.js"

/**
 * Restarts an input that failed unexpectedly (a defect or an error), after a pause on the shared backoff,
 * logging why and counting it; an input that ends (stdin closed) stays ended. A full disk does not get here:
 * the buffer retries its own appends (DiskBuffer) and the input waits with its lines.
 */
export const supervised = <E, R>(name: string, input: Effect.Effect<unknown, E, R>) =>
  input.pipe(
    Effect.sandbox,
    Effect.tapError((cause) =>
      Cause.isInterruptedOnly(cause)
        ? Effect.void
        : Effect.gen(function* () {
            yield* Metrics.inc(M.inputRestarts, 1, { input: name })
            yield* Effect.logError("input failed; restarting it").pipe(
              Effect.annotateLogs({ input: name, cause: Cause.pretty(cause) }),
            )
          }),
    ),
    Effect.retry({
      schedule: backoffWithReset({ base: "1 second", cap: "30 seconds", reset: "5 minutes" }),
      while: (cause) => !Cause.isInterruptedOnly(cause),
    }),
    Effect.unsandbox,
    Effect.asVoid,
  )

/** `/readyz` checks of the disk buffer: not full, and writable (appends do not fail). */
export const registerBufferChecks = Effect.gen(function* () {
  const buffer = yield* DiskBuffer
  const health = yield* Health
  yield* health.register(
    "buffer-not-full",
    Effect.sync(() => buffer.usedBytes() < buffer.maxBytes),
  )
  yield* health.register(
    "buffer-writable",
    Effect.sync(() => buffer.writable()),
  )
})

const runInput = (s: AgentSettings, i: InputConfig, index: number) => {
  const id = `${i.type}#${index}`
  switch (i.type) {
    case "tail":
      return supervised(
        "tail",
        runTail({ id, input: "tail", globs: i.paths, parse: tailParser(i.tag ?? "tail"), pollMs: s.pollMs }),
      )
    case "docker": {
      const root = i.path ?? "/var/lib/docker/containers"
      return supervised(
        "docker",
        runTail({ id, input: "docker", globs: [`${root}/*/*-json.log`], parse: dockerParser, pollMs: s.pollMs }),
      )
    }
    case "kubernetes": {
      const root = i.path ?? "/var/log/containers"
      return supervised(
        "kubernetes",
        runTail({
          id,
          input: "kubernetes",
          globs: [`${root}/*.log`],
          parse: kubernetesParser,
          join: criJoiner(MAX_LINE_BYTES),
          pollMs: s.pollMs,
        }),
      )
    }
    case "metrics":
      return supervised(
        "metrics",
        runMetrics({ intervalMs: Math.round((i.interval ?? 10) * 1000), interfaces: i.interfaces }),
      )
    case "stdin":
      return supervised("stdin", runStdin({ tag: i.tag ?? "stdin" }))
  }
}

export const CollectLive = (s: AgentSettings) => {
  const core = Layer.scopedDiscard(
    Effect.gen(function* () {
      if (s.insecure)
        yield* Effect.logWarning("--insecure: talking to the ingester WITHOUT TLS; the token travels in clear text")
      const caCert = s.caCertPath === undefined ? undefined : readFileSync(s.caCertPath)
      const sender = yield* makeSender({
        address: s.address,
        caCert,
        insecure: s.insecure,
        serverName: s.serverName,
        accessKey: s.accessKey,
        token: s.token,
        agentId: s.agentId,
        batch: s.batch,
        window: s.inflight,
        configRefresh: s.configRefresh,
        ackTimeout: s.ackTimeout,
        retryBase: s.retryBase,
        retryCap: s.retryCap,
        authRetry: s.authRetry,
        shutdownGrace: s.shutdownGrace,
        maxMessageBytes: s.maxMessageBytes,
      })
      yield* registerBufferChecks
      yield* Effect.forkScoped(sender.run)
      // Finalizers run uninterruptibly on the interrupted fiber, where the drain's timeout could not
      // interrupt its wait: run it in a fiber of its own (interruptible, no pending interruption).
      yield* Effect.addFinalizer(() =>
        Effect.forkDaemon(Effect.interruptible(sender.drain)).pipe(Effect.flatMap(Fiber.join)),
      )
      for (const [index, i] of s.inputs.entries()) yield* Effect.forkScoped(runInput(s, i, index))
      // SIGHUP: the token file is read again now (and at every connection); a bad one is logged, the old stays.
      const token = s.token
      if (token._tag === "file")
        yield* onSighup(
          "token file",
          readToken(token, yield* Ref.make("")).pipe(
            Effect.zipRight(Effect.logInfo("token file read; new connections use it")),
            Effect.catchAll((e) =>
              Effect.logError("token file refused; the connection in use keeps its token", e.detail),
            ),
            Effect.annotateLogs({ file: token.path }),
          ),
        )
      else yield* onSighup("nothing", Effect.logInfo("no token file to reload (the token came from ACCESS_TOKEN)"))
      yield* Effect.logInfo("agent started").pipe(Effect.annotateLogs(describeSettings(s)))
    }),
  )
  return Layer.mergeAll(core, OpsServerLive({ host: s.metricsHost, port: s.metricsPort })).pipe(
    Layer.provide(
      Layer.mergeAll(
        DiskBuffer.layer({ dir: s.bufferDir, maxBytes: s.bufferMaxBytes }),
        Crypto.Default,
        Health.Default,
      ),
    ),
  )
}
