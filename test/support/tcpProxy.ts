/**
 * A TCP proxy for fault tests: forwards every connection to `target`, and can hold back what the target answers
 * (`setDelay`): each chunk from the target goes on to the client `delay` ms after it arrived, never before an
 * earlier chunk, so a slow broker is a broker whose answers come late but in order.
 */
import net from "node:net"

export interface TcpProxy {
  readonly port: number
  /** Delay for chunks the target sends from now on (0: forward at once, after those already held back). */
  readonly setDelay: (ms: number) => void
  /** Chunks from the target held back now, over every connection. */
  readonly held: () => number
  readonly close: () => Promise<void>
}

export const startTcpProxy = async (target: { host: string; port: number }, port = 0): Promise<TcpProxy> => {
  let delay = 0
  let heldNow = 0
  const sockets = new Set<net.Socket>()
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host)
    sockets.add(client)
    sockets.add(upstream)
    const held: Array<{ due: number; chunk: Buffer }> = []
    let timer: NodeJS.Timeout | undefined
    const pump = () => {
      timer = undefined
      const now = Date.now()
      while (held.length > 0 && held[0]!.due <= now) {
        client.write(held.shift()!.chunk)
        heldNow--
      }
      if (held.length > 0) timer = setTimeout(pump, held[0]!.due - now)
    }
    upstream.on("data", (chunk: Buffer) => {
      const last = held.at(-1)?.due ?? 0
      held.push({ due: Math.max(Date.now() + delay, last), chunk })
      heldNow++
      if (timer === undefined) pump()
    })
    client.pipe(upstream)
    const end = () => {
      if (timer !== undefined) clearTimeout(timer)
      heldNow -= held.length
      held.length = 0
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    client.on("error", end)
    upstream.on("error", end)
    client.on("close", end)
    upstream.on("close", end)
  })
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve))
  return {
    port: (server.address() as net.AddressInfo).port,
    setDelay: (ms) => {
      delay = ms
    },
    held: () => heldNow,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }
}
