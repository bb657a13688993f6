#!/usr/bin/env node
/**
 * The second half of `npm run build`: each program (src/programs/*.ts) bundled with esbuild into one ESM file,
 * dist/programs/<name>.js, in place of the module tree tsc wrote there. Loading one file instead of several hundred
 * modules (Effect alone has hundreds) cuts a program's start-up CPU by about two thirds (measured with
 * `node dist/programs/ingester.js --help`: 1.1 -> 0.4 CPU-seconds on the project's 2-core machine).
 *
 * Native addons stay outside the bundle and load from node_modules. Files read at run time (proto/) are found
 * relative to dist/<folder>/<module>.js, the depth every bundle and every tsc module has. Source maps point at src/.
 *
 * Code most runs never touch is split off (`splitting`): what a program reaches only through a dynamic `import()`
 * (for example the ingester's OTLP and Forward receivers) is a chunk, dist/programs/chunk-<hash>.js, read only when
 * it is used; code two programs share is a chunk too. Chunks sit beside the programs, so the depth above holds.
 * @effect/cli's parsers for YAML, TOML and INI option files are replaced by a stub: no program has a file option,
 * and those parsers were 240 kB of every bundle to parse at start.
 */
import fs from "node:fs"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { build } from "esbuild"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const programs = fs
  .readdirSync(path.join(root, "src", "programs"))
  .filter((f) => f.endsWith(".ts"))
  .map((f) => path.join(root, "src", "programs", f))

// Old chunks (<name>-<hash of their content>.js) would pile up across builds.
const outdir = path.join(root, "dist", "programs")
if (fs.existsSync(outdir))
  for (const f of fs.readdirSync(outdir)) if (/-[A-Z0-9]{8}\.js(\.map)?$/.test(f)) fs.rmSync(path.join(outdir, f))

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
 * src/shared/HeapAtLoad.ts stays outside the bundle (tsc's dist/shared/HeapAtLoad.js) and is the first import of
 * every output file (the banner below): it then runs before any chunk's code, whichever chunks esbuild makes (the
 * V8 heap flags it sets must act before the rest of the code allocates; esbuild would place the programs' own
 * import of it in a shared chunk, or after the chunks' imports). test/shared/HeapFlags.test.ts checks it on the
 * built programs.
 */
const heapFirst = {
  name: "heap-at-load-first",
  setup(b) {
    b.onResolve({ filter: /\/HeapAtLoad\.js$/ }, (args) =>
      args.importer.includes(`${path.sep}src${path.sep}programs${path.sep}`)
        ? { path: "../shared/HeapAtLoad.js", external: true }
        : undefined,
    )
  },
}

await build({
  entryPoints: programs,
  outdir,
  bundle: true,
  splitting: true,
  plugins: [noFileParsers, heapFirst],
  platform: "node",
  format: "esm",
  target: "node20",
  sourcemap: true,
  sourcesContent: false,
  minifySyntax: true,
  minifyWhitespace: true,
  logLevel: "warning",
  // Native addons (and their prebuilt binaries) load from node_modules.
  external: ["better-sqlite3", "snappy", "lz4-napi", "zstd-napi", "msgpackr-extract"],
  // CommonJS dependencies bundled into an ES module still call require() for Node's built-ins; the heap settings
  // first (heapFirst above).
  banner: {
    js:
      'import "../shared/HeapAtLoad.js"; ' +
      "import { createRequire as __spillwayRequire } from 'node:module'; const require = __spillwayRequire(import.meta.url);",
  },
})
for (const p of programs) fs.chmodSync(path.join(root, "dist", "programs", `${path.basename(p, ".ts")}.js`), 0o755)
