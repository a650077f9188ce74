// Persistent sessions in memory: the single-node twin of store/redis/sessions.ts, with the
// same epoch rules (both pass test/contract/sessions.contract.ts).
import type { Clock } from '../../clock.js';
import { systemClock } from '../../clock.js';
import type { PendingMessage, SessionSnapshot, SessionStore, Subscription } from '../types.js';
import { StaleEpochError } from '../errors.js';
import { RecentIds } from '../../broker/recent-ids.js';

interface Stored {
  epoch: number;
  expiryIntervalS: number;
  seq: number;
  subscriptions: Map<string, Subscription>;
  pending: Map<number, PendingMessage>;
  /** packet id → id of a message not routed yet ('' once routed) */
  incomingQos2: Map<number, string>;
  endsAtMs?: number;
}

const subKey = (filter: string, group?: string) => (group === undefined ? filter : `$share/${group}/${filter}`);

function unrouted(s: Stored): [number, string][] {
  return [...s.incomingQos2].filter(([, id]) => id !== '').sort((a, b) => a[0] - b[0]);
}

function copyPending(p: PendingMessage): PendingMessage {
  return { ...p, message: { ...p.message, payload: Buffer.from(p.message.payload) } };
}

export class MemorySessionStore implements SessionStore {
  private readonly sessions = new Map<string, Stored>();
  /** Sequence counters survive delete(), as in Redis they survive via epochs. */
  private readonly seqs = new Map<string, number>();
  /** Message ids that reached each session lately; kept across save(), dropped by delete(). */
  private readonly seen = new Map<string, RecentIds>();

  constructor(private readonly clock: Clock = systemClock) {}

  private live(clientId: string): Stored | undefined {
    const s = this.sessions.get(clientId);
    if (s?.endsAtMs !== undefined && s.endsAtMs <= this.clock.now()) {
      this.sessions.delete(clientId);
      return undefined;
    }
    return s;
  }

  private owned(clientId: string, epoch: number): Stored {
    const s = this.live(clientId);
    if (!s || s.epoch !== epoch) throw new StaleEpochError(clientId, epoch);
    return s;
  }

  async load(clientId: string): Promise<SessionSnapshot | undefined> {
    const s = this.live(clientId);
    if (!s) return undefined;
    const unroutedQos2 = unrouted(s);
    return {
      clientId,
      epoch: s.epoch,
      expiryIntervalS: s.expiryIntervalS,
      subscriptions: [...s.subscriptions.values()].map((x) => ({ ...x })),
      pending: [...s.pending.entries()].sort((a, b) => a[0] - b[0]).map(([seq, p]) => ({ ...copyPending(p), storeSeq: seq })),
      incomingQos2: [...s.incomingQos2.keys()].sort((a, b) => a - b),
      ...(unroutedQos2.length > 0 ? { unroutedQos2 } : {}),
      seen: this.seen.get(clientId)?.ids() ?? [],
    };
  }

  async save(snapshot: SessionSnapshot): Promise<number[]> {
    const prev = this.live(snapshot.clientId);
    if (prev && prev.epoch > snapshot.epoch) throw new StaleEpochError(snapshot.clientId, snapshot.epoch);
    let seq = prev?.seq ?? this.seqs.get(snapshot.clientId) ?? 0;
    const pending = new Map<number, PendingMessage>();
    const seqs: number[] = [];
    let seen = this.seen.get(snapshot.clientId);
    for (const p of snapshot.pending) {
      if (p.message.id !== undefined) {
        if (!seen) this.seen.set(snapshot.clientId, (seen = new RecentIds()));
        seen.first(p.message.id, this.clock.now());
      }
      seq++;
      const { storeSeq: _ignored, ...rest } = p;
      pending.set(seq, copyPending(rest));
      seqs.push(seq);
    }
    this.seqs.set(snapshot.clientId, seq);
    const unroutedIds = new Map(snapshot.unroutedQos2 ?? []);
    this.sessions.set(snapshot.clientId, {
      epoch: snapshot.epoch,
      expiryIntervalS: snapshot.expiryIntervalS,
      seq,
      subscriptions: new Map(snapshot.subscriptions.map((x) => [subKey(x.filter, x.group), { ...x }])),
      pending,
      incomingQos2: new Map(snapshot.incomingQos2.map((id) => [id, unroutedIds.get(id) ?? ''])),
    });
    return seqs;
  }

  async fence(clientId: string, epoch: number): Promise<void> {
    const s = this.sessions.get(clientId);
    if (!s) return;
    if (s.epoch > epoch) throw new StaleEpochError(clientId, epoch);
    s.epoch = epoch;
  }

  async delete(clientId: string, epoch: number): Promise<boolean> {
    const s = this.live(clientId);
    if (!s) return false;
    if (s.epoch > epoch) throw new StaleEpochError(clientId, epoch);
    this.sessions.delete(clientId);
    this.seen.delete(clientId);
    return true;
  }

  async appendPending(clientId: string, epoch: number, pending: PendingMessage): Promise<number | undefined> {
    const s = this.owned(clientId, epoch);
    const id = pending.message.id;
    if (id !== undefined) {
      let seen = this.seen.get(clientId);
      if (!seen) this.seen.set(clientId, (seen = new RecentIds()));
      if (!seen.first(id, this.clock.now())) return undefined;
    }
    const seq = ++s.seq;
    this.seqs.set(clientId, seq);
    const { storeSeq: _ignored, packetId: _p, released: _r, ...rest } = pending;
    s.pending.set(seq, copyPending(rest));
    return seq;
  }

  async markPending(clientId: string, epoch: number, storeSeq: number, packetId: number, released: boolean): Promise<boolean> {
    const p = this.owned(clientId, epoch).pending.get(storeSeq);
    if (!p) return false;
    p.packetId = packetId;
    p.released = released;
    return true;
  }

  async removePending(clientId: string, epoch: number, storeSeq: number): Promise<boolean> {
    return this.owned(clientId, epoch).pending.delete(storeSeq);
  }

  async putSubscription(clientId: string, epoch: number, sub: Subscription): Promise<void> {
    this.owned(clientId, epoch).subscriptions.set(subKey(sub.filter, sub.group), { ...sub });
  }

  async removeSubscription(clientId: string, epoch: number, filter: string, group?: string): Promise<boolean> {
    return this.owned(clientId, epoch).subscriptions.delete(subKey(filter, group));
  }

  async addIncomingQos2(clientId: string, epoch: number, packetId: number, unroutedId?: string): Promise<boolean> {
    const s = this.owned(clientId, epoch);
    const added = !s.incomingQos2.has(packetId);
    s.incomingQos2.set(packetId, unroutedId ?? '');
    return added;
  }

  async removeIncomingQos2(clientId: string, epoch: number, packetId: number): Promise<boolean> {
    return this.owned(clientId, epoch).incomingQos2.delete(packetId);
  }

  async setExpiry(clientId: string, epoch: number, ms: number | undefined): Promise<void> {
    this.owned(clientId, epoch).endsAtMs = ms === undefined ? undefined : this.clock.now() + ms;
  }
}
