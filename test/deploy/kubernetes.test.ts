/**
 * The Kubernetes manifests (deploy/kubernetes): rendered with kustomize (`kubectl kustomize`), validated offline
 * against the Kubernetes 1.32 schemas (PyPI kubernetes-validate, installed into .cache/py by .ci/run), and checked
 * against the programs: every environment variable they set is one the programs read, every container is locked
 * down (no privilege escalation, read-only root, capabilities dropped).
 */
import { execFileSync } from "node:child_process"
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"

const root = join(import.meta.dirname, "..", "..")
const py = join(root, ".cache", "py")
const pyEnv = { ...process.env, PYTHONPATH: py }

const render = (dir: string): string => execFileSync("kubectl", ["kustomize", join(root, dir)], { encoding: "utf8" })

interface Container {
  readonly name: string
  readonly env?: ReadonlyArray<{ readonly name: string }>
  readonly securityContext?: {
    readonly allowPrivilegeEscalation?: boolean
    readonly readOnlyRootFilesystem?: boolean
    readonly runAsNonRoot?: boolean
    readonly capabilities?: { readonly drop?: ReadonlyArray<string>; readonly add?: ReadonlyArray<string> }
  }
}
interface Resource {
  readonly kind: string
  readonly metadata: { readonly name: string }
  readonly spec?: {
    readonly template?: {
      readonly spec: {
        readonly containers: ReadonlyArray<Container>
        readonly securityContext?: { readonly runAsNonRoot?: boolean }
      }
    }
  }
}

const parse = (yaml: string): ReadonlyArray<Resource> =>
  JSON.parse(
    execFileSync(
      "python3",
      ["-c", "import yaml,json,sys; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))"],
      {
        input: yaml,
        encoding: "utf8",
        env: pyEnv,
      },
    ),
  ) as ReadonlyArray<Resource>

/** Every SPILLWAY_* (and the agent's ACCESS_*) name the programs' sources mention. */
const knownEnv = (): ReadonlySet<string> => {
  const names = new Set<string>()
  const walk = (dir: string) => {
    for (const f of readdirSync(dir)) {
      const p = join(dir, f)
      if (statSync(p).isDirectory()) walk(p)
      else if (p.endsWith(".ts"))
        for (const m of readFileSync(p, "utf8").matchAll(/"((?:SPILLWAY|ACCESS)_[A-Z0-9_]+)"/g)) names.add(m[1]!)
    }
  }
  walk(join(root, "src"))
  return names
}

describe("Kubernetes manifests", () => {
  const overlays = ["deploy/kubernetes/base", "deploy/kubernetes/overlays/production"]

  it("kubernetes-validate is installed (.ci/run: pip install --target .cache/py kubernetes-validate)", () => {
    expect(existsSync(join(py, "kubernetes_validate")), `missing ${py}/kubernetes_validate`).toBe(true)
  })

  for (const dir of overlays) {
    it(`${dir} renders and validates against the Kubernetes 1.32 schemas (strict)`, () => {
      const yaml = render(dir)
      const out = execFileSync("python3", ["-m", "kubernetes_validate", "--strict", "-k", "1.32.0", "-"], {
        input: yaml,
        encoding: "utf8",
        env: pyEnv,
      })
      expect(out).toContain("passed")
      const kinds = new Set(parse(yaml).map((r) => r.kind))
      for (const k of [
        "Deployment",
        "DaemonSet",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
      ])
        expect(kinds).toContain(k)
    })

    it(`${dir}: every environment variable is one the programs read; every container is locked down`, () => {
      const known = knownEnv()
      const workloads = parse(render(dir)).filter((r) => r.spec?.template !== undefined)
      expect(workloads.map((w) => w.metadata.name).sort()).toEqual(["agent", "ingester", "router"])
      for (const w of workloads) {
        const pod = w.spec!.template!.spec
        for (const c of pod.containers) {
          const unknown = (c.env ?? []).map((e) => e.name).filter((n) => !known.has(n))
          expect(unknown, `${w.metadata.name}/${c.name}`).toEqual([])
          expect(c.securityContext?.allowPrivilegeEscalation).toBe(false)
          expect(c.securityContext?.readOnlyRootFilesystem).toBe(true)
          expect(c.securityContext?.capabilities?.drop).toEqual(["ALL"])
          if (w.metadata.name === "agent") expect(c.securityContext?.capabilities?.add).toEqual(["DAC_READ_SEARCH"])
          else expect(pod.securityContext?.runAsNonRoot).toBe(true)
        }
      }
    })
  }
})
