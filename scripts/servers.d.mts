/** Types for scripts/servers.mjs (real destination servers for tests: OpenSearch, S3 via moto). */
export type Server = "opensearch" | "s3"
export declare const OPENSEARCH_VERSION: string
export declare const MOTO_VERSION: string
export interface ServerStatus {
  readonly state: "running" | "starting" | "stopped"
  readonly pid?: number
  readonly url: string
}
export declare function status(which: Server): Promise<ServerStatus>
export declare function start(
  which: Server,
  opts?: { readonly log?: (message: string) => void; readonly timeoutMs?: number },
): Promise<{ readonly started: boolean; readonly pid: number; readonly url: string; readonly seconds: number }>
export declare function stop(
  which: Server,
  opts?: { readonly signal?: NodeJS.Signals; readonly timeoutMs?: number },
): Promise<{ readonly stopped: boolean; readonly pid?: number }>
export declare function tail(which: Server, lines?: number): string
export declare function url(which: Server): string
export declare function fetched(which: Server): boolean
