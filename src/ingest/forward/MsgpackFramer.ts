/**
 * Cuts a TCP byte stream into msgpack values without decoding them: the headers are scanned (iteratively, one
 * counter of values still to read, so nesting costs nothing), which says exactly where a value ends. Each byte is
 * scanned once, the buffer grows by doubling, and a value over `maxBytes` is refused as soon as that is known.
 */

export type Next = Uint8Array | "more" | "malformed" | "too_large"

/** Bytes of the header at `p` and how many values follow inside it; undefined: header incomplete; -1: invalid. */
const header = (b: Uint8Array, p: number, end: number): { size: number; children: number } | undefined | -1 => {
  const t = b[p]!
  const need = (n: number) => (p + n <= end ? true : undefined)
  const u8 = () => b[p + 1]!
  const u16 = () => (b[p + 1]! << 8) | b[p + 2]!
  const u32 = () => b[p + 1]! * 0x1000000 + ((b[p + 2]! << 16) | (b[p + 3]! << 8) | b[p + 4]!)
  if (t <= 0x7f || t >= 0xe0) return { size: 1, children: 0 }
  if (t <= 0x8f) return { size: 1, children: 2 * (t & 0x0f) }
  if (t <= 0x9f) return { size: 1, children: t & 0x0f }
  if (t <= 0xbf) return { size: 1 + (t & 0x1f), children: 0 }
  switch (t) {
    case 0xc0:
    case 0xc2:
    case 0xc3:
      return { size: 1, children: 0 }
    case 0xc4:
    case 0xd9:
      return need(2) && { size: 2 + u8(), children: 0 }
    case 0xc5:
    case 0xda:
      return need(3) && { size: 3 + u16(), children: 0 }
    case 0xc6:
    case 0xdb:
      return need(5) && { size: 5 + u32(), children: 0 }
    case 0xc7:
      return need(2) && { size: 3 + u8(), children: 0 }
    case 0xc8:
      return need(3) && { size: 4 + u16(), children: 0 }
    case 0xc9:
      return need(5) && { size: 6 + u32(), children: 0 }
    case 0xca:
    case 0xce:
    case 0xd2:
      return { size: 5, children: 0 }
    case 0xcb:
    case 0xcf:
    case 0xd3:
      return { size: 9, children: 0 }
    case 0xcc:
    case 0xd0:
      return { size: 2, children: 0 }
    case 0xcd:
    case 0xd1:
      return { size: 3, children: 0 }
    case 0xd4:
      return { size: 3, children: 0 }
    case 0xd5:
      return { size: 4, children: 0 }
    case 0xd6:
      return { size: 6, children: 0 }
    case 0xd7:
      return { size: 10, children: 0 }
    case 0xd8:
      return { size: 18, children: 0 }
    case 0xdc:
      return need(3) && { size: 3, children: u16() }
    case 0xdd:
      return need(5) && { size: 5, children: u32() }
    case 0xde:
      return need(3) && { size: 3, children: 2 * u16() }
    case 0xdf:
      return need(5) && { size: 5, children: 2 * u32() }
    default:
      return -1 // 0xc1 is never used
  }
}

export class MsgpackFramer {
  private buf: Buffer
  private len = 0
  /** Start of the value being scanned, the scan position, and the values still to scan in it. */
  private start = 0
  private pos = 0
  private remaining = 1

  constructor(private readonly maxBytes: number) {
    this.buf = Buffer.allocUnsafe(Math.min(64 * 1024, maxBytes + 1))
  }

  /** Bytes held (of the value being received). */
  get buffered(): number {
    return this.len - this.start
  }

  push(chunk: Uint8Array): void {
    if (this.start > 0) {
      // The values before `start` were handed out and are done with: keep only the partial one.
      this.buf.copyWithin(0, this.start, this.len)
      this.len -= this.start
      this.pos -= this.start
      this.start = 0
    }
    if (this.len + chunk.length > this.buf.length) {
      let cap = this.buf.length
      while (cap < this.len + chunk.length) cap *= 2
      const next = Buffer.allocUnsafe(cap)
      this.buf.copy(next, 0, 0, this.len)
      this.buf = next
    }
    this.buf.set(chunk, this.len)
    this.len += chunk.length
  }

  /**
   * The next complete value (a view valid until the next `push`), "more" when it is not complete yet, "malformed",
   * or "too_large" once it is known to exceed `maxBytes`.
   */
  next(): Next {
    while (this.remaining > 0) {
      if (this.pos - this.start > this.maxBytes) return "too_large"
      if (this.pos >= this.len) return this.len - this.start > this.maxBytes ? "too_large" : "more"
      const h = header(this.buf, this.pos, this.len)
      if (h === -1) return "malformed"
      if (h === undefined) return "more"
      this.pos += h.size
      this.remaining += h.children - 1
    }
    if (this.pos > this.len) return this.pos - this.start > this.maxBytes ? "too_large" : "more"
    const value = this.buf.subarray(this.start, this.pos)
    this.start = this.pos
    this.remaining = 1
    return value
  }
}
