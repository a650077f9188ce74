// Sentinel mode: one subscription to +switch-master on every sentinel, shared by all the
// connections of a node. When a sentinel announces a new master, every connection that is
// connected elsewhere is dropped; ioredis reconnects it, asking the sentinels for the master.
// This catches a master that was replaced while it still answers (partitioned from the
// sentinels, or paused), which a connection to it would otherwise keep using.
//
// ioredis's own `failoverDetector` does this per connection, but its disconnect goes to the
// connector: arriving while a connection is reconnecting and waiting for a sentinel's answer
// (the usual state during a failover), it makes ioredis end that connection for good (status
// 'end', never retried). With 100 connections, about half ended across one failover; a node
// whose main or lease connection ended stayed not ready (the sentinel e2e's "survivors not
// ready"). Here a connection is only dropped while connected, never while it is connecting.
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { Redis, type RedisOptions } from 'ioredis';

/** The announcement a sentinel publishes: "<name> <old-ip> <old-port> <new-ip> <new-port>". */
export function parseSwitchMaster(message: string): { name: string; host: string; port: number } | undefined {
  const parts = message.split(' ');
  if (parts.length !== 5) return undefined;
  const port = Number(parts[4]);
  return Number.isInteger(port) && port > 0 ? { name: parts[0], host: parts[3], port } : undefined;
}

/**
 * The addresses of an announced master: itself when an IP, else what the name resolves to (a
 * sentinel with announce-hostnames, as in docker-compose.sentinel.yml); undefined when it
 * does not resolve (then the port alone decides).
 */
export async function masterAddresses(host: string): Promise<Set<string> | undefined> {
  if (isIP(host) !== 0) return new Set([plain(host)]);
  try {
    return new Set((await lookup(host, { all: true })).map((a) => plain(a.address)));
  } catch {
    return undefined;
  }
}

/** An IPv4 address as a socket may report it mapped into IPv6. */
function plain(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

/** Whether a connection's socket goes somewhere other than the master at `addresses`:port. */
export function elsewhere(socket: { remotePort?: number; remoteAddress?: string }, addresses: Set<string> | undefined, port: number): boolean {
  if (socket.remotePort !== port) return true;
  return addresses !== undefined && socket.remoteAddress !== undefined && !addresses.has(plain(socket.remoteAddress));
}

export class SentinelSwitchWatch {
  private readonly subscribers: Redis[];

  /**
   * `options` carries the sentinels' credentials and TLS; `onSwitch` is called for every
   * announcement about `masterName` (each sentinel sends its own: expect it more than once).
   */
  constructor(sentinels: readonly { host: string; port: number }[], masterName: string, options: RedisOptions, onSwitch: (host: string, port: number) => void) {
    this.subscribers = sentinels.map(({ host, port }) => {
      const c = new Redis({
        ...options,
        host,
        port,
        // a sentinel that is down is retried; the subscription is made again on reconnect
        retryStrategy: (times) => Math.min(100 * times, 1000),
        maxRetriesPerRequest: null,
      });
      c.on('error', () => undefined); // a sentinel down is normal; the others announce too
      c.on('message', (channel: string, message: string) => {
        const m = channel === '+switch-master' ? parseSwitchMaster(message) : undefined;
        if (m && m.name === masterName) onSwitch(m.host, m.port);
      });
      void c.subscribe('+switch-master').catch(() => undefined);
      return c;
    });
  }

  close(): void {
    for (const c of this.subscribers) c.disconnect();
  }
}
