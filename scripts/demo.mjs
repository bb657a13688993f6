/**
 * The optional parts of `npm start` (scripts/start.mjs), off unless asked:
 *  - SPILLWAY_DEMO_TARGETS=s3,opensearch: starts moto and/or OpenSearch through scripts/servers.mjs (never fetches
 *    them: says what to run when they are not there yet) and gives the demo tenants those targets next to their
 *    file target;
 *  - SPILLWAY_DEMO_RECEIVERS=otlp,forward: the ingester's OTLP (gRPC + HTTP) and Fluent Forward receivers, and how
 *    to send to them.
 */
import { randomBytes } from "node:crypto"
import fs from "node:fs"
import path from "node:path"
import * as servers from "./servers.mjs"

export const DEMO_BUCKET = "spillway-demo"
export const DEMO_INDEX = "spillway-demo-{user_id}-{yyyy.MM.dd}"
/** moto checks no signature; the router reads these two variables (by name, from the tenants file). */
const S3_ENV = { SPILLWAY_DEMO_S3_KEY_ID: "demo", SPILLWAY_DEMO_S3_SECRET: "demo-secret" }

/** The comma-separated list in `name`, each item one of `allowed`; an unknown item is an error that names it. */
export const demoList = (name, allowed) => {
  const raw = (process.env[name] ?? "").trim()
  const items = raw === "" ? [] : raw.split(",").map((s) => s.trim().toLowerCase())
  for (const item of items)
    if (!allowed.includes(item))
      throw new Error(`${name}: unknown item "${item}" (expected a list of ${allowed.join(",")})`)
  return [...new Set(items)]
}

const fetchHelp = {
  s3: `moto (the S3-compatible test server) is not installed yet: run \`npm run s3 -- fetch\` once (pip installs moto[server]==${servers.MOTO_VERSION} into .cache/py), then \`npm start\` again`,
  opensearch: `OpenSearch ${servers.OPENSEARCH_VERSION} is not fetched yet: run \`npm run opensearch -- fetch\` once (Maven downloads its jars into .cache/opensearch; needs mvn and Java 17), then \`npm start\` again`,
}

/** Fails, saying what to run, when a server the list names neither runs nor was fetched (checked before anything starts). */
export async function checkFetched(kinds) {
  for (const kind of kinds)
    if ((await servers.status(kind)).state === "stopped" && !servers.fetched(kind)) throw new Error(fetchHelp[kind])
}

/**
 * Starts the servers the list names (those already running are used as they are), pushing those this run started
 * onto `started` at once (so that only those, and even after a later failure, are stopped). Returns the router's
 * extra environment and the targets to add to each tenant.
 */
export async function startDemoTargets(kinds, say, started) {
  const targets = []
  const env = {}
  for (const kind of kinds) {
    const st = await servers.status(kind)
    say(`${st.state === "stopped" ? "starting" : "using the running"} ${kind} test server (scripts/servers.mjs)...`)
    const r = await servers.start(kind, { log: say })
    if (r.started) started.push(kind)
    say(`${kind} on ${r.url}${r.started ? ` (started, pid ${r.pid}, ${r.seconds.toFixed(0)} s)` : ""}`)
    if (kind === "s3") {
      await createBucket(r.url)
      Object.assign(env, S3_ENV)
      targets.push({
        s3: {
          bucket: DEMO_BUCKET,
          prefix: "demo",
          endpoint: r.url,
          forcePathStyle: true,
          credentials: {
            from: "env",
            accessKeyIdEnv: "SPILLWAY_DEMO_S3_KEY_ID",
            secretAccessKeyEnv: "SPILLWAY_DEMO_S3_SECRET",
          },
        },
      })
    } else targets.push({ opensearch: { urls: [r.url], index: DEMO_INDEX } })
  }
  return { targets, env }
}

async function createBucket(url) {
  // The SDK's one-time Node 22 notice (README, "s3 and opensearch targets") is noise in a demo; the router inherits it.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true"
  const { S3Client, CreateBucketCommand } = await import("@aws-sdk/client-s3")
  const client = new S3Client({
    endpoint: url,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: S3_ENV.SPILLWAY_DEMO_S3_KEY_ID, secretAccessKey: S3_ENV.SPILLWAY_DEMO_S3_SECRET },
  })
  try {
    await client.send(new CreateBucketCommand({ Bucket: DEMO_BUCKET }))
  } catch (e) {
    if (e?.name !== "BucketAlreadyOwnedByYou" && e?.name !== "BucketAlreadyExists") throw e
  } finally {
    client.destroy()
  }
}

/** Stops the servers this run started, newest first. */
export async function stopDemoTargets(started, say) {
  for (const kind of [...started].reverse()) {
    say(`stopping the ${kind} test server started for this run`)
    await servers.stop(kind)
  }
}

/** Where the demo's store targets can be looked at. */
export function describeTargets(kinds, say) {
  if (kinds.includes("s3"))
    say(
      `  s3 objects (moto, NDJSON gzip):  curl -s '${servers.url("s3")}/${DEMO_BUCKET}?list-type=2&prefix=demo/' (one object per partition per fetch)`,
    )
  if (kinds.includes("opensearch"))
    say(`  opensearch documents:           curl -s '${servers.url("opensearch")}/spillway-demo-*/_count'`)
}

const envPort = (name, fallback) => Number(process.env[name] || fallback)

/** The ingester arguments of the receivers the list names, and what to print about them. */
export function demoReceivers(kinds, { runDir, certs, mintToken, forwardPassword, accessKey }) {
  const args = []
  const help = []
  if (kinds.includes("otlp")) {
    const grpcPort = envPort("SPILLWAY_OTLP_GRPC_PORT", 4317)
    const httpPort = envPort("SPILLWAY_OTLP_HTTP_PORT", 4318)
    args.push("--otlp-grpc-port", String(grpcPort), "--otlp-http-port", String(httpPort))
    const tokenFile = path.join(runDir, "otlp.token")
    fs.writeFileSync(tokenFile, mintToken(accessKey, 86_400), { mode: 0o600 })
    const body = JSON.stringify({
      resourceLogs: [
        {
          resource: { attributes: [{ key: "service.name", value: { stringValue: "curl-demo" } }] },
          scopeLogs: [{ logRecords: [{ severityText: "INFO", body: { stringValue: "hello over OTLP/HTTP" } }] }],
        },
      ],
    })
    help.push(
      `  OTLP/gRPC on :${grpcPort}, OTLP/HTTP on :${httpPort} (TLS, CA ${certs.caCert}); a 24 h token of tenant ${accessKey} is in ${tokenFile}:`,
      `    curl --cacert ${certs.caCert} -H "Authorization: Bearer $(cat ${tokenFile})" -H 'Content-Type: application/json' \\`,
      `      https://localhost:${httpPort}/v1/logs -d '${body}'`,
      `    an SDK: OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=https://localhost:${httpPort}/v1/logs OTEL_EXPORTER_OTLP_CERTIFICATE=${certs.caCert} \\`,
      `      OTEL_EXPORTER_OTLP_LOGS_HEADERS="authorization=Bearer%20$(cat ${tokenFile})"`,
    )
  }
  if (kinds.includes("forward")) {
    const port = envPort("SPILLWAY_FORWARD_PORT", 24224)
    const keyFile = path.join(runDir, "forward.shared-key")
    if (!fs.existsSync(keyFile)) fs.writeFileSync(keyFile, randomBytes(24).toString("base64url"), { mode: 0o600 })
    args.push("--forward-port", String(port), "--forward-shared-key-file", keyFile)
    const sharedKey = fs.readFileSync(keyFile, "utf8").trim()
    help.push(
      `  Fluent Forward on :${port} (plain TCP, handshake on). A Fluent Bit output:`,
      "    [OUTPUT]",
      "        Name                 forward",
      "        Match                *",
      "        Host                 127.0.0.1",
      `        Port                 ${port}`,
      `        Shared_Key           ${sharedKey}`,
      "        Self_Hostname        demo-host",
      `        Username             ${accessKey}`,
      `        Password             ${forwardPassword(accessKey)}`,
      "        Require_ack_response on",
    )
  }
  return { args, help }
}
