// A raw MQTT client over net + mqtt-packet, for what mqtt.js will not do: withhold
// acknowledgements, retransmit with the same packet id, send malformed bytes, a second
// CONNECT or a packet before CONNECT. It records every packet the server sends.
import net from 'node:net';
import mqttPacket from 'mqtt-packet';
import type { IConnackPacket, IConnectPacket, Packet } from 'mqtt-packet';
import { withTimeout, type Version } from './mqtt.js';

export class RawClient {
  readonly received: Packet[] = [];
  closed = false;
  private readonly waiters = new Set<() => void>();
  private readonly closeWaiters = new Set<() => void>();

  private constructor(readonly socket: net.Socket, readonly version: Version) {
    const parser = mqttPacket.parser({ protocolVersion: version });
    parser.on('packet', (p: Packet) => {
      this.received.push(p);
      for (const w of this.waiters) w();
    });
    parser.on('error', () => undefined);
    socket.on('data', (chunk) => {
      try {
        parser.parse(chunk);
      } catch {
        socket.destroy(); // what the server sent could not be parsed: the test sees a close
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      for (const w of this.waiters) w();
      for (const w of this.closeWaiters) w();
    });
  }

  /** Opens a TCP connection to the broker without sending anything. */
  static open(port: number, version: Version = 4): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port });
      socket.once('connect', () => resolve(new RawClient(socket, version)));
      socket.once('error', reject);
    });
  }

  /** Opens a connection and completes CONNECT; rejects unless the CONNACK is a success. */
  static async connect(port: number, version: Version, connect: Partial<IConnectPacket> = {}): Promise<{ client: RawClient; connack: IConnackPacket }> {
    const client = await RawClient.open(port, version);
    client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clean: true, clientId: '', keepalive: 0, ...connect } as IConnectPacket);
    const connack = (await client.next('connack')) as IConnackPacket;
    const code = version === 5 ? connack.reasonCode : connack.returnCode;
    if (code !== 0) throw new Error(`CONNECT refused with ${code}`);
    return { client, connack };
  }

  send(packet: Packet): void {
    this.socket.write(mqttPacket.generate(packet, { protocolVersion: this.version }));
  }

  write(bytes: Buffer | number[]): void {
    this.socket.write(Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes));
  }

  /** The next unread packet of a command (packets are consumed in order of arrival). */
  next(cmd: Packet['cmd'], timeoutMs = 2000): Promise<Packet> {
    return withTimeout(
      new Promise<Packet>((resolve, reject) => {
        const check = () => {
          const i = this.received.findIndex((p) => p.cmd === cmd);
          if (i >= 0) {
            this.waiters.delete(check);
            resolve(this.received.splice(i, 1)[0]);
          } else if (this.closed) {
            this.waiters.delete(check);
            reject(new Error(`connection closed before ${cmd} (got ${this.received.map((p) => p.cmd).join(',') || 'nothing'})`));
          }
        };
        this.waiters.add(check);
        check();
      }),
      timeoutMs,
      `${cmd} from the server`,
    );
  }

  /** Resolves when the server has closed the connection; rejects after `timeoutMs`. */
  waitForClose(timeoutMs = 3000): Promise<void> {
    if (this.closed) return Promise.resolve();
    return withTimeout(new Promise<void>((resolve) => this.closeWaiters.add(resolve)), timeoutMs, 'the server to close the connection');
  }

  /** Unread packets of a command, without waiting. */
  pending(cmd: Packet['cmd']): Packet[] {
    return this.received.filter((p) => p.cmd === cmd);
  }

  close(): void {
    this.socket.destroy();
  }
}
