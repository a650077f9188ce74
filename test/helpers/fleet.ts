// Fleet-sized traffic without thousands of mqtt.js objects: a bulk publisher that writes many
// retained messages in a few large socket writes, and a subscriber that counts what it gets
// per topic and decides when (or whether) to acknowledge. Both are raw mqtt-packet over net.
import net from 'node:net';
import mqttPacket from 'mqtt-packet';
import type { IConnectPacket, IPublishPacket, ISubscription, Packet } from 'mqtt-packet';
import { withTimeout, type Version } from './mqtt.js';

/**
 * Publishes `count` retained messages (topic and payload from `i`, QoS 1 unless told) in
 * batched writes, then one QoS 1 message on `doneTopic`: the broker handles a connection's
 * packets in order, so its PUBACK means every message before it was handled. Closes the
 * connection after.
 */
export async function publishRetained(port: number, count: number, topicOf: (i: number) => string, payloadOf: (i: number) => string | Buffer, qos: 0 | 1 = 1, doneTopic = `done/${process.pid}`): Promise<void> {
  const client = await FleetClient.connect(port, 4, { clientId: `retained-loader-${process.pid}-${Date.now()}` });
  // at most WINDOW QoS 1 messages unacknowledged: a cluster node acknowledges once stored,
  // and a connection that floods it past its backlog limit is closed
  const WINDOW = 200;
  let acked = 0;
  client.onAck = () => acked++;
  try {
    const batch: Buffer[] = [];
    for (let i = 0; i < count; i++) {
      const payload = payloadOf(i);
      const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
      batch.push(mqttPacket.generate({ cmd: 'publish', topic: topicOf(i), payload: body, qos, messageId: qos ? (i % 65000) + 2 : undefined, retain: true, dup: false }));
      if (batch.length === 100 || i === count - 1) {
        await client.writeAll(Buffer.concat(batch.splice(0)));
        if (qos > 0) await client.until(() => i + 1 - acked <= WINDOW || undefined, 30000, 'PUBACKs');
      }
    }
    client.send({ cmd: 'publish', topic: doneTopic, payload: Buffer.from('done'), qos: 1, messageId: 1, retain: false, dup: false });
    await client.until(() => acked === (qos > 0 ? count : 0) + 1 || undefined, 60000, 'the last PUBACK');
  } finally {
    client.close();
  }
}

/** One PUBLISH as the subscriber saw it. */
export interface Got {
  readonly topic: string;
  readonly payload: string;
  readonly qos: number;
  readonly retain: boolean;
  readonly dup: boolean;
  /** Date.now() when it was parsed. */
  readonly at: number;
}

/**
 * A raw client that keeps every PUBLISH it receives by topic. With `autoAck` (default) it
 * acknowledges QoS 1 at once; otherwise the packet ids wait in `unacked` until ackAll().
 */
export class FleetClient {
  readonly byTopic = new Map<string, Got[]>();
  publishes = 0;
  /** QoS 1 packet ids received and not yet acknowledged. */
  readonly unacked: number[] = [];
  /** Most QoS 1 messages that were unacknowledged at once. */
  maxUnacked = 0;
  autoAck = true;
  /** Takes PUBACKs instead of keeping them for next(). */
  onAck?: (packetId: number) => void;
  closed = false;
  private readonly others: Packet[] = [];
  private readonly waiters = new Set<() => void>();

  private constructor(readonly socket: net.Socket, readonly version: Version, readonly clientId: string) {
    const parser = mqttPacket.parser({ protocolVersion: version });
    parser.on('packet', (p: Packet) => this.onPacket(p));
    parser.on('error', () => socket.destroy());
    socket.on('data', (chunk) => parser.parse(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  static async connect(port: number, version: Version, connect: Partial<IConnectPacket> = {}): Promise<FleetClient> {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
    const client = new FleetClient(socket, version, connect.clientId ?? '');
    client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clean: true, clientId: '', keepalive: 0, ...connect } as IConnectPacket);
    const connack = await client.next('connack', 10000);
    const code = version === 5 ? (connack as { reasonCode?: number }).reasonCode : (connack as { returnCode?: number }).returnCode;
    if (code) throw new Error(`CONNECT refused with ${code}`);
    return client;
  }

  private onPacket(p: Packet): void {
    if (p.cmd === 'publish') {
      const pub = p as IPublishPacket;
      this.publishes++;
      const got: Got = { topic: pub.topic, payload: pub.payload.toString(), qos: pub.qos, retain: pub.retain, dup: pub.dup, at: Date.now() };
      const list = this.byTopic.get(pub.topic);
      if (list) list.push(got);
      else this.byTopic.set(pub.topic, [got]);
      if (pub.qos === 1) {
        if (this.autoAck) this.send({ cmd: 'puback', messageId: pub.messageId! });
        else {
          this.unacked.push(pub.messageId!);
          if (this.unacked.length > this.maxUnacked) this.maxUnacked = this.unacked.length;
        }
      }
    } else if (p.cmd === 'puback' && this.onAck) {
      this.onAck(p.messageId!);
    } else {
      this.others.push(p);
    }
    this.wake();
  }

  private wake(): void {
    for (const w of this.waiters) w();
  }

  send(packet: Packet): void {
    if (!this.socket.destroyed) this.socket.write(mqttPacket.generate(packet, { protocolVersion: this.version }));
  }

  /** Writes and waits until the socket took it (the publisher's own back-pressure). */
  writeAll(bytes: Buffer): Promise<void> {
    return new Promise((resolve, reject) => this.socket.write(bytes, (err) => (err ? reject(err) : resolve())));
  }

  subscribe(subscriptions: ISubscription[], messageId = 1, properties?: Record<string, unknown>): Promise<Packet> {
    this.send({ cmd: 'subscribe', messageId, subscriptions, ...(properties ? { properties } : {}) } as Packet);
    return this.next('suback', 10000);
  }

  /** Acknowledges every QoS 1 message held back so far. */
  ackAll(): void {
    for (const id of this.unacked.splice(0)) this.send({ cmd: 'puback', messageId: id });
  }

  /** The next non-PUBLISH packet of a command. */
  next(cmd: Packet['cmd'], timeoutMs = 5000): Promise<Packet> {
    return this.until(() => {
      const i = this.others.findIndex((p) => p.cmd === cmd);
      return i >= 0 ? this.others.splice(i, 1)[0] : undefined;
    }, timeoutMs, `${cmd} from the server`);
  }

  /** Resolves once `cond` returns something other than undefined/false; checked on every packet. */
  until<T>(cond: () => T | undefined | false, timeoutMs: number, what: string): Promise<T> {
    return withTimeout(
      new Promise<T>((resolve, reject) => {
        const check = () => {
          const v = cond();
          if (v !== undefined && v !== false) {
            this.waiters.delete(check);
            resolve(v);
          } else if (this.closed) {
            this.waiters.delete(check);
            reject(new Error(`connection closed while waiting for ${what}`));
          }
        };
        this.waiters.add(check);
        check();
      }),
      timeoutMs,
      what,
    );
  }

  /** Resolves when `n` distinct topics have arrived. */
  topics(n: number, timeoutMs: number): Promise<true> {
    return this.until(() => this.byTopic.size >= n || undefined, timeoutMs, `${n} topics (have ${this.byTopic.size})`);
  }

  close(): void {
    this.socket.destroy();
  }
}
