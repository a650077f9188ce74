// mqtt.js v5 clients for integration tests: connect with a deadline, collect messages and
// wait for N of them, and close everything a test opened. Only 127.0.0.1 is used.
import mqtt, { type IClientOptions, type IConnackPacket, type IPublishPacket, type MqttClient } from 'mqtt';

export type Version = 4 | 5;
export const VERSIONS: readonly Version[] = [4, 5];
export const versionName = (v: Version): string => (v === 5 ? 'MQTT 5.0' : 'MQTT 3.1.1');

export interface Received {
  readonly topic: string;
  readonly payload: string;
  readonly packet: IPublishPacket;
}

/** A connected mqtt.js client and everything it has received. */
export interface TestClient {
  readonly mqtt: MqttClient;
  readonly connack: IConnackPacket;
  readonly messages: Received[];
  /** Resolves with the first `n` messages (optionally only those on `topic`), or rejects after `timeoutMs`. */
  waitForMessages(n: number, timeoutMs?: number, topic?: string): Promise<Received[]>;
  /** Resolves when the server sends DISCONNECT (MQTT 5), with that packet. */
  waitForDisconnect(timeoutMs?: number): Promise<{ reasonCode?: number }>;
  /** Resolves when the socket is closed. */
  waitForClose(timeoutMs?: number): Promise<void>;
}

/** Opens and closes clients; call closeAll() in afterEach so the process can exit. */
export class ClientPool {
  private readonly clients = new Set<MqttClient>();

  /** Connects and resolves on CONNACK; rejects on a refused CONNECT or after `timeoutMs`. */
  async connect(url: string, options: IClientOptions = {}, timeoutMs = 3000): Promise<TestClient> {
    const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: timeoutMs, ...options });
    this.clients.add(client);
    client.on('error', () => undefined); // errors are asserted through events and CONNACK, never thrown
    const messages: Received[] = [];
    const waiters = new Set<() => void>();
    client.on('message', (topic, payload, packet) => {
      messages.push({ topic, payload: payload.toString(), packet });
      for (const w of waiters) w();
    });
    const connack = await new Promise<IConnackPacket>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no CONNACK within ${timeoutMs} ms`)), timeoutMs);
      client.once('connect', (p) => {
        clearTimeout(timer);
        resolve(p);
      });
      client.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
    let disconnectPacket: { reasonCode?: number } | undefined;
    let closed = false;
    client.on('disconnect', (p) => (disconnectPacket = p));
    client.on('close', () => (closed = true));
    return {
      mqtt: client,
      connack,
      messages,
      waitForMessages: (n, wait = 2000, topic) =>
        new Promise((resolve, reject) => {
          const pick = () => (topic === undefined ? messages : messages.filter((m) => m.topic === topic));
          const check = () => {
            const got = pick();
            if (got.length < n) return;
            cleanup();
            resolve(got.slice(0, n));
          };
          const timer = setTimeout(() => {
            cleanup();
            reject(new Error(`expected ${n} message(s)${topic ? ` on ${topic}` : ''}, got ${pick().length} within ${wait} ms: ${JSON.stringify(pick().map((m) => [m.topic, m.payload]))}`));
          }, wait);
          const cleanup = () => {
            clearTimeout(timer);
            waiters.delete(check);
          };
          waiters.add(check);
          check();
        }),
      waitForDisconnect: (wait = 3000) =>
        disconnectPacket
          ? Promise.resolve(disconnectPacket)
          : withTimeout(new Promise((resolve) => client.once('disconnect', resolve)), wait, 'server DISCONNECT'),
      waitForClose: (wait = 3000) =>
        closed ? Promise.resolve() : withTimeout(new Promise<void>((resolve) => client.once('close', () => resolve())), wait, 'connection close'),
    };
  }

  /** Connect that is expected to be refused: resolves with the error mqtt.js reports. */
  async connectRefused(url: string, options: IClientOptions = {}, timeoutMs = 3000): Promise<Error & { code?: number }> {
    try {
      await this.connect(url, options, timeoutMs);
    } catch (err) {
      return err as Error & { code?: number };
    }
    throw new Error('CONNECT was accepted but should have been refused');
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.clients].map((c) => c.endAsync(true).catch(() => undefined)));
    this.clients.clear();
  }
}

export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls a condition (a metric, a session's state) until it holds, or throws after `timeoutMs`. */
export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

let idCounter = 0;
/** A client id unique within the test process. */
export function uniqueId(prefix = 'c'): string {
  return `${prefix}-${process.pid}-${++idCounter}`;
}

/**
 * SUBSCRIBE and the SUBACK reason codes as sent: mqtt.js rejects a subscribe when any code is a
 * failure, which hides the per-filter answers a test wants to check.
 */
export function subackCodes(client: MqttClient, filters: Record<string, { qos: 0 | 1 | 2 }>, timeoutMs = 3000): Promise<number[]> {
  return withTimeout(
    new Promise<number[]>((resolve) => {
      const onPacket = (packet: { cmd: string; granted?: unknown[] }) => {
        if (packet.cmd !== 'suback') return;
        client.removeListener('packetreceive', onPacket);
        resolve((packet.granted ?? []).map((g) => (typeof g === 'number' ? g : (g as { qos: number }).qos)));
      };
      client.on('packetreceive', onPacket);
      client.subscribe(filters, () => undefined);
    }),
    timeoutMs,
    'SUBACK',
  );
}
