#!/usr/bin/env node
/**
 * `node dist/programs/agent.js api [...]`: consumes the Kafka topic and delivers each
 * tenant's events to its destinations. STUB (issue 4): only the command line exists.
 */
import { Command, Options } from "@effect/cli"
import { NodeRuntime } from "@effect/platform-node"
import { Config, Effect } from "effect"
import { runnable } from "../services/ProgramRuntime.js"

const printEvents = Options.boolean("print-events").pipe(
  Options.withDescription("Print events as received from Kafka (env SPILLWAY_PRINT_EVENTS)"),
  Options.withFallbackConfig(Config.boolean("SPILLWAY_PRINT_EVENTS").pipe(Config.withDefault(false))),
)

const api = Command.make("api", { printEvents }, (opts) =>
  Effect.logInfo("agent api is not built yet").pipe(Effect.annotateLogs({ printEvents: opts.printEvents })),
).pipe(Command.withDescription("Consume the topic and route each tenant's events to its targets"))

const agent = Command.make("agent").pipe(
  Command.withDescription("Spillway agent: Kafka -> each tenant's destinations"),
  Command.withSubcommands([api]),
)

const cli = Command.run(agent, { name: "spillway-agent", version: "0.1.0" })

runnable(cli(process.argv)).pipe(NodeRuntime.runMain({ disablePrettyLogger: true }))
