/** The few kafkajs 2.2.4 internals ProduceRequest.ts uses (kafkajs/src, not exported by its index, untyped). */
declare module "kafkajs/src/protocol/encoder.js" {
  export default class Encoder {
    buf: Buffer
    offset: number
    get buffer(): Buffer
    size(): number
  }
}
declare module "kafkajs/src/protocol/message/compression/index.js" {
  const compression: {
    readonly lookupCodec: (type: number) => { compress(encoder: unknown): Promise<Buffer> } | null
  }
  export default compression
}
declare module "kafkajs/src/protocol/requests/produce/index.js" {
  const Produce: {
    readonly versions: ReadonlyArray<string>
    protocol: (args: { version: number }) => unknown
  }
  export default Produce
}
declare module "kafkajs/src/utils/long.js" {
  export default class Long {
    static fromValue(v: unknown): Long
    getHighBits(): number
    getLowBits(): number
  }
}
