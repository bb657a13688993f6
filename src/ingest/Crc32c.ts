/**
 * CRC-32C (Castagnoli), the checksum of Kafka's record batches, eight bytes a step ("slicing by 8"): the same value
 * as kafkajs' byte-at-a-time table (`kafkajs/src/protocol/recordBatch/crc32C`, the unit test compares them) in about
 * a third of the time (0.75 against 2.4 ms for 900 KiB on the benchmark machine).
 */

const tables = (() => {
  const t = Array.from({ length: 8 }, () => new Int32Array(256))
  const t0 = t[0]!
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1
    t0[n] = c
  }
  for (let n = 0; n < 256; n++)
    for (let k = 1; k < 8; k++) {
      const prev = t[k - 1]![n]!
      t[k]![n] = (prev >>> 8) ^ t0[prev & 0xff]!
    }
  return t
})()
const [T0, T1, T2, T3, T4, T5, T6, T7] = tables as [
  Int32Array,
  Int32Array,
  Int32Array,
  Int32Array,
  Int32Array,
  Int32Array,
  Int32Array,
  Int32Array,
]

/** Pure: the CRC-32C of `b`, unsigned. */
export const crc32c = (b: Uint8Array): number => {
  let c = -1
  let i = 0
  const n = b.length
  const end = n - (n % 8)
  for (; i < end; i += 8) {
    const lo = c ^ (b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24))
    const hi = b[i + 4]! | (b[i + 5]! << 8) | (b[i + 6]! << 16) | (b[i + 7]! << 24)
    c =
      T7[lo & 0xff]! ^
      T6[(lo >>> 8) & 0xff]! ^
      T5[(lo >>> 16) & 0xff]! ^
      T4[lo >>> 24]! ^
      T3[hi & 0xff]! ^
      T2[(hi >>> 8) & 0xff]! ^
      T1[(hi >>> 16) & 0xff]! ^
      T0[hi >>> 24]!
  }
  for (; i < n; i++) c = T0[(c ^ b[i]!) & 0xff]! ^ (c >>> 8)
  return (c ^ -1) >>> 0
}
