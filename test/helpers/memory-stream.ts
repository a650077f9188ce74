// An in-memory byte stream that looks like a socket to the transport: the test pushes bytes
// in, and reads what the broker wrote.
import { Duplex } from 'node:stream';
import mqttPacket from 'mqtt-packet';
import type { Packet } from 'mqtt-packet';

export class MemoryStream extends Duplex {
  readonly written: Buffer[] = [];
  remoteAddress = '127.0.0.1';
  ended = false;

  constructor() {
    super({ allowHalfOpen: false });
    this.on('finish', () => {
      this.ended = true;
      this.destroy();
    });
  }

  override _read(): void {}

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.written.push(chunk);
    cb();
  }

  /** Bytes from the "client". */
  feed(bytes: Buffer): void {
    if (!this.destroyed) this.push(bytes);
  }

  /** Packets the broker wrote, decoded for the given protocol version. */
  packets(protocolVersion = 4): Packet[] {
    const out: Packet[] = [];
    const parser = mqttPacket.parser({ protocolVersion });
    parser.on('packet', (p: Packet) => out.push(p));
    parser.on('error', () => undefined);
    parser.parse(Buffer.concat(this.written));
    return out;
  }
}
