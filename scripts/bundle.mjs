#!/usr/bin/env node
/**
 * The second half of `npm run build`: each program (src/programs/*.ts) bundled with esbuild into one file,
 * dist/programs/<name>.bundle.cjs, and dist/programs/<name>.js, the file users start, in place of the module tree tsc
 * wrote there. Loading one file instead of several hundred modules (Effect alone has hundreds) cut a program's
 * start-up CPU by about two thirds (measured with `node dist/programs/ingester.js --help`: 1.1 -> 0.4 CPU-seconds on
 * the project's 2-core machine).
 *
 * The bundle is a CommonJS script, so that it can run from V8's code cache (src/shared/CodeCache.ts; Node 20 keeps
 * none for ES modules): `<name>.js` is a three-line ES module that sets the heap flags (src/shared/HeapAtLoad.ts,
 * before any other code allocates) and runs the bundle through the cache. The cache, `<name>.bundle.cache`, is made
 * here, by running each program once (`--version`, with `SPILLWAY_CODE_CACHE=write`). Measured in
 * docs/benchmarks.md, "Round 2 session 7".
 *
 * Code a run does not reach (the router's S3 and OpenSearch destinations, the ingester's OTLP and Forward receivers)
 * stays in the bundle but is not evaluated until it is imported, and, with the cache, not compiled either; the AWS
 * SDK is not bundled (see `external`). Native addons stay outside the bundle and load
 * from node_modules. Files read at run time (proto/) are found relative to dist/<folder>/<file>, the depth every
 * bundle and every tsc module has. Source maps point at src/.
 * @effect/cli's parsers for YAML, TOML and INI option files are replaced by a stub: no program has a file option,
 * and those parsers were 240 kB of every bundle to parse at start.
 */
import { spawnSync } from "node:child_process"
import fs from "node:fs"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { build } from "esbuild"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const names = fs
  .readdirSync(path.join(root, "src", "programs"))
  .filter((f) => f.endsWith(".ts"))
  .map((f) => path.basename(f, ".ts"))

// Files of older builds: ES module chunks (<name>-<hash of their content>.js), bundles and caches of removed programs.
const outdir = path.join(root, "dist", "programs")
if (fs.existsSync(outdir))
  for (const f of fs.readdirSync(outdir))
    if (/-[A-Z0-9]{8}\.js(\.map)?$/.test(f) || /\.bundle\.(cjs|cjs\.map|cache)$/.test(f))
      fs.rmSync(path.join(outdir, f))

/** `yaml`, `toml` and `ini` as imported by @effect/cli (its file options): a parser that refuses. */
const noFileParsers = {
  name: "no-cli-file-parsers",
  setup(b) {
    b.onResolve({ filter: /^(yaml|toml|ini)$/ }, (args) =>
      args.importer.includes(`${path.sep}@effect${path.sep}cli${path.sep}`)
        ? { path: args.path, namespace: "no-cli-file-parsers" }
        : undefined,
    )
    b.onLoad({ filter: /.*/, namespace: "no-cli-file-parsers" }, (args) => ({
      contents: `export const parse = () => { throw new Error("${args.path} option files are not supported") }`,
      loader: "js",
    }))
  },
}

/**
 * The programs' own import of src/shared/HeapAtLoad.ts is left out of the bundle: `<name>.js` imports tsc's
 * dist/shared/HeapAtLoad.js before it runs the bundle, so the V8 heap flags it sets act before the bundle's code
 * allocates, and before its code cache is read (V8 keeps a cache only for the flags it was made under).
 * test/shared/HeapFlags.test.ts checks it on the built programs.
 */
const heapAtLoadOutside = {
  name: "heap-at-load-outside",
  setup(b) {
    b.onResolve({ filter: /\/HeapAtLoad\.js$/ }, (args) =>
      args.importer.includes(`${path.sep}src${path.sep}programs${path.sep}`)
        ? { path: args.path, namespace: "heap-at-load-outside" }
        : undefined,
    )
    b.onLoad({ filter: /.*/, namespace: "heap-at-load-outside" }, () => ({ contents: "", loader: "js" }))
  },
}

for (const name of names) {
  await build({
    entryPoints: [path.join(root, "src", "programs", `${name}.ts`)],
    outfile: path.join(outdir, `${name}.bundle.cjs`),
    bundle: true,
    plugins: [noFileParsers, heapAtLoadOutside],
    platform: "node",
    format: "cjs",
    target: "node20",
    sourcemap: true,
    sourcesContent: false,
    minifySyntax: true,
    minifyWhitespace: true,
    logLevel: "warning",
    // Native addons (and their prebuilt binaries) load from node_modules, and so does the AWS SDK, only when a route
    // has an S3 target (required by destinations/S3.ts, which is evaluated then): bundled, its 0.8 MB of source would
    // stay in every router's heap.
    external: ["better-sqlite3", "snappy", "lz4-napi", "zstd-napi", "msgpackr-extract", "@aws-sdk/*"],
    // The sources are ES modules: `import.meta.url` is the bundle's own URL (CodeCache.ts passes __filename).
    define: { "import.meta.url": "__spillwayModuleUrl" },
    // The bundle is one function expression, of the parameters Node's CommonJS loader gives a module, which
    // CodeCache.ts compiles and calls as it is (no copy of the 2–4 MB of source to wrap it at each start). Strict,
    // as the ES modules it is made of were.
    banner: {
      js:
        '(function (exports, require, module, __filename, __dirname) {"use strict";\n' +
        'var __spillwayModuleUrl = require("node:url").pathToFileURL(__filename).href;',
    },
    footer: { js: "})" },
  })
  // The sources' `#!` line, which esbuild keeps first, would be no JavaScript there: a comment of the same length
  // keeps the source map's positions.
  const bundle = path.join(outdir, `${name}.bundle.cjs`)
  const code = fs.readFileSync(bundle, "utf8")
  if (code.startsWith("#!")) fs.writeFileSync(bundle, `//${code.slice(2)}`)
  fs.chmodSync(bundle, 0o644)
  const entry = path.join(outdir, `${name}.js`)
  fs.writeFileSync(
    entry,
    [
      "#!/usr/bin/env node",
      "// Made by scripts/bundle.mjs: the heap flags first, then the bundle, from V8's code cache (src/shared/CodeCache.ts).",
      'import "../shared/HeapAtLoad.js"',
      'import { runBundle } from "../shared/CodeCache.js"',
      `runBundle(new URL("./${name}.bundle.cjs", import.meta.url))`,
      "",
    ].join("\n"),
  )
  fs.rmSync(`${entry}.map`, { force: true })
  fs.chmodSync(entry, 0o755)
  // The code cache: the program loaded once, as users start it (its own heap flags), in a clean environment.
  const made = spawnSync(process.execPath, [entry, "--version"], {
    env: { PATH: process.env.PATH ?? "", SPILLWAY_CODE_CACHE: "write" },
    encoding: "utf8",
  })
  const cache = path.join(outdir, `${name}.bundle.cache`)
  if (made.status !== 0 || !fs.existsSync(cache))
    throw new Error(`making the code cache of ${name} failed (${made.status}): ${made.stderr}`)
}
