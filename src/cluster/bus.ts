// The cross-node bus: a message is forwarded to one node member, once, through a Redis
// Stream per member read with a consumer group. The receiver acknowledges (XACK + XDEL) only
// after its handler has finished (stored the message in sessions / delivered it), so a
// handler failure leaves the entry pending and it is read again. Sends use NOMKSTREAM: only
// the receiving member creates its stream (at start), and the reaper deletes a dead
// member's stream, after which sends to it report `false` instead of piling up.
// Entries are binary: codec frame {k, f, ...} + encoded StoredMessage.
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { StoredMessage } from '../store/types.js';
import type { ClusterKeys } from './keys.js';
import type { RedisConnection, VigilRedis } from './redis.js';
import { decodeFramed, decodeMessage, encodeFramed, encodeMessage } from './codec.js';

export interface PublishEnvelope {
  readonly kind: 'publish';
  readonly from: string;
  readonly message: StoredMessage;
  /** Deliver to the receiver's matching non-shared subscriptions. */
  readonly normal: boolean;
  /** Shared groups the receiver was picked for: it delivers to one local member of each. */
  readonly shared: readonly { readonly group: string; readonly filter: string }[];
}

export interface KickEnvelope {
  readonly kind: 'kick';
  readonly from: string;
  /** The connection of this client with an epoch below `epoch` must close (taken over). */
  readonly clientId: string;
  readonly epoch: number;
}

export type BusEnvelope = PublishEnvelope | KickEnvelope;
export type BusHandler = (envelope: BusEnvelope) => void | Promise<void>;

interface Header {
  k: 'p' | 'k';
  f: string;
  n?: 1;
  s?: [string, string][];
  c?: string;
  e?: number;
}

export function encodeEnvelope(e: BusEnvelope): Buffer {
  if (e.kind === 'kick') return encodeFramed({ k: 'k', f: e.from, c: e.clientId, e: e.epoch } satisfies Header, Buffer.alloc(0));
  const h: Header = { k: 'p', f: e.from };
  if (e.normal) h.n = 1;
  if (e.shared.length > 0) h.s = e.shared.map((s) => [s.group, s.filter]);
  return encodeFramed(h, encodeMessage(e.message));
}

export function decodeEnvelope(buf: Buffer): BusEnvelope {
  const { header: h, body } = decodeFramed<Header>(buf);
  if (h.k === 'k') return { kind: 'kick', from: h.f, clientId: h.c ?? '', epoch: h.e ?? 0 };
  return { kind: 'publish', from: h.f, message: decodeMessage(body), normal: h.n === 1, shared: (h.s ?? []).map(([group, filter]) => ({ group, filter })) };
}

export interface MessageBusOptions {
  readonly redis: VigilRedis;
  readonly keys: ClusterKeys;
  readonly member: string;
  readonly metrics?: Metrics;
  readonly log?: Logger;
  /** Approximate cap of a member's stream (XADD MAXLEN ~). */
  readonly maxLength?: number;
  readonly blockMs?: number;
  readonly batch?: number;
}

const GROUP = 'vigil';
type StreamReply = [Buffer, [Buffer, Buffer[]][]][] | null;

export class MessageBus {
  private selfMember: string;
  private reader?: RedisConnection;
  private running = false;
  private loop?: Promise<void>;
  private handler?: BusHandler;

  constructor(private readonly o: MessageBusOptions) {
    this.selfMember = o.member;
  }

  get member(): string {
    return this.selfMember;
  }

  async start(handler: BusHandler): Promise<void> {
    this.handler = handler;
    await this.open();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.reader?.disconnect();
    this.reader = undefined;
    await this.loop;
  }

  /** Switches to the stream of a new member id (after a rejoin). */
  async rejoined(newMember: string): Promise<void> {
    await this.stop();
    this.selfMember = newMember;
    await this.open();
  }

  /** Appends to a member's stream; false when the member has no stream (gone, or never started). */
  async send(member: string, envelope: BusEnvelope): Promise<boolean> {
    const id = await this.o.redis.client.xadd(this.o.keys.nodeBus(member), 'NOMKSTREAM', 'MAXLEN', '~', this.o.maxLength ?? 100_000, '*', 'm', encodeEnvelope(envelope));
    if (id === null) return false;
    this.o.metrics?.crossNodeMessagesTotal.inc({ direction: 'out' });
    return true;
  }

  forward(member: string, message: StoredMessage, target: { normal: boolean; shared?: PublishEnvelope['shared'] }): Promise<boolean> {
    return this.send(member, { kind: 'publish', from: this.selfMember, message, normal: target.normal, shared: target.shared ?? [] });
  }

  kick(member: string, clientId: string, epoch: number): Promise<boolean> {
    return this.send(member, { kind: 'kick', from: this.selfMember, clientId, epoch });
  }

  /** The reaper's part: deletes a dead member's stream (entries not yet handled are lost). */
  async purge(member: string): Promise<void> {
    await this.o.redis.client.del(this.o.keys.nodeBus(member));
  }

  private async open(): Promise<void> {
    const key = this.o.keys.nodeBus(this.selfMember);
    try {
      await this.o.redis.client.xgroup('CREATE', key, GROUP, '$', 'MKSTREAM');
    } catch (err) {
      if (!/BUSYGROUP/.test((err as Error).message)) throw err;
    }
    this.reader = this.o.redis.duplicate({ blocking: true });
    this.running = true;
    this.loop = this.readLoop(this.reader, key);
  }

  private async readLoop(reader: RedisConnection, key: string): Promise<void> {
    // first our own pending entries (read before, never acknowledged), then new ones
    let from = '0';
    while (this.running && this.reader === reader) {
      let reply: StreamReply;
      try {
        reply = (await reader.callBuffer('XREADGROUP', 'GROUP', GROUP, 'c', 'COUNT', this.o.batch ?? 100, 'BLOCK', this.o.blockMs ?? 1000, 'STREAMS', key, from)) as StreamReply;
      } catch (err) {
        if (!this.running || this.reader !== reader) return;
        if (/NOGROUP/.test((err as Error).message)) {
          this.o.log?.error({ key }, 'bus stream vanished (reaped?); recreating');
          await this.o.redis.client.xgroup('CREATE', key, GROUP, '$', 'MKSTREAM').catch(() => undefined);
        } else {
          this.o.log?.warn({ err: (err as Error).message }, 'bus read failed');
        }
        await new Promise((r) => setTimeout(r, 200));
        continue;
      }
      const entries = reply?.[0]?.[1] ?? [];
      if (from === '0' && entries.length === 0) {
        from = '>';
        continue;
      }
      let failed = false;
      for (const [idBuf, fields] of entries) {
        const id = idBuf.toString();
        if (!fields || fields.length < 2) {
          // deleted while pending: nothing to deliver
          await this.ack(key, id);
          continue;
        }
        try {
          const envelope = decodeEnvelope(fields[1]);
          this.o.metrics?.crossNodeMessagesTotal.inc({ direction: 'in' });
          await this.handler!(envelope);
          await this.ack(key, id);
        } catch (err) {
          failed = true;
          this.o.log?.error({ id, err: (err as Error).message }, 'bus handler failed; will retry');
          break;
        }
      }
      if (failed) {
        from = '0';
        await new Promise((r) => setTimeout(r, 200));
      } else if (from === '0') {
        // keep draining the pending list until it is empty
      }
    }
  }

  private async ack(key: string, id: string): Promise<void> {
    await Promise.all([this.o.redis.client.xack(key, GROUP, id), this.o.redis.client.xdel(key, id)]);
  }
}
