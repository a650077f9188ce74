// Hand-built MQTT bytes, for tests that send what no encoder would (bad flags, overruns).

/** A 16-bit big-endian number. */
export const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff]);

/** A length-prefixed string or binary field. */
export const str = (s: string | Buffer): Buffer => {
  const b = Buffer.isBuffer(s) ? s : Buffer.from(s);
  return Buffer.concat([u16(b.length), b]);
};

/** A variable byte integer (remaining length). */
export function varint(n: number): Buffer {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}
