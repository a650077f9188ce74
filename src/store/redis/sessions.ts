// Persistent sessions in Redis, all keys of one client in its slot ({clientId} hash tag),
// every change one Lua script fenced by the session's epoch (docs/cluster.md, "Sessions").
// An acknowledged QoS 1/2 message is in Redis before the ack to its publisher is sent (the
// caller awaits appendPending), so it survives the subscriber's node crashing.
import type { PendingMessage, SessionSnapshot, SessionStore, Subscription } from '../types.js';
import type { StoreKeys } from './keys.js';
import type { RedisArg, VigilRedis } from '../../redis/connection.js';
import { buf, num, str } from '../../redis/connection.js';
import { decodePending, encodePending } from './codec.js';
import { scriptStatus, type ScriptName, type ScriptOutcome } from '../errors.js';
import { SEEN_MAX, SEEN_WINDOW_MS } from '../../broker/recent-ids.js';
import { sharedName } from '../../protocol/topics.js';

export interface RedisSessionStoreOptions {
  readonly redis: VigilRedis;
  readonly keys: StoreKeys;
  /** How long, and how many, message ids a session remembers (defaults: recent-ids.ts). */
  readonly seenWindowMs?: number;
  readonly seenMax?: number;
}

function incomingFrom(flat: unknown[]): Pick<SessionSnapshot, 'incomingQos2' | 'unroutedQos2'> {
  const incomingQos2: number[] = [];
  const unroutedQos2: [number, string][] = [];
  for (let i = 0; i < flat.length; i += 2) {
    const packetId = num(flat[i]);
    const id = str(flat[i + 1]);
    incomingQos2.push(packetId);
    if (id !== '') unroutedQos2.push([packetId, id]);
  }
  incomingQos2.sort((a, b) => a - b);
  return unroutedQos2.length > 0 ? { incomingQos2, unroutedQos2 } : { incomingQos2 };
}

/**
 * A stored session as session-load.lua returns it after its 'ok' (claim-client.lua's resume
 * answers the same), from reply[at]: epoch, expiryS, subscriptions, pending, pending state,
 * incoming QoS 2, seen ids.
 */
export function storedSession(clientId: string, reply: readonly unknown[], at: number): SessionSnapshot {
  const subsFlat = reply[at + 2] as unknown[];
  const pendingFlat = reply[at + 3] as unknown[];
  const stateFlat = reply[at + 4] as unknown[];
  const states = new Map<number, string>();
  for (let i = 0; i < stateFlat.length; i += 2) states.set(num(stateFlat[i]), str(stateFlat[i + 1]));
  const pending: PendingMessage[] = [];
  for (let i = 0; i < pendingFlat.length; i += 2) {
    const seq = num(pendingFlat[i]);
    const p = decodePending(buf(pendingFlat[i + 1])!);
    p.storeSeq = seq;
    const state = states.get(seq);
    if (state) {
      const [packetId, released] = state.split(':');
      p.packetId = Number(packetId);
      p.released = released === '1';
    }
    pending.push(p);
  }
  pending.sort((a, b) => a.storeSeq! - b.storeSeq!);
  const subscriptions: Subscription[] = [];
  for (let i = 1; i < subsFlat.length; i += 2) subscriptions.push(JSON.parse(str(subsFlat[i])) as Subscription);
  return {
    clientId,
    epoch: num(reply[at]),
    expiryIntervalS: num(reply[at + 1]),
    subscriptions,
    pending,
    ...incomingFrom(reply[at + 5] as unknown[]),
    seen: ((reply[at + 6] as unknown[] | undefined) ?? []).map(str),
  };
}


export class RedisSessionStore implements SessionStore {
  constructor(private readonly o: RedisSessionStoreOptions) {}

  /** Runs a session script: its typed outcome with the reply, or the failure thrown (store/errors.ts). */
  private async run<S extends ScriptName, O extends ScriptOutcome<S> = ScriptOutcome<S>>(
    script: S,
    command: string,
    keys: readonly string[],
    args: readonly RedisArg[],
    ctx: { clientId: string; epoch?: number },
    only?: readonly O[],
  ): Promise<{ status: O; reply: unknown[] }> {
    const reply = (await this.o.redis.run(command, keys, args)) as unknown[];
    return { status: scriptStatus(script, reply, ctx, only), reply };
  }

  async load(clientId: string): Promise<SessionSnapshot | undefined> {
    const { status, reply } = await this.run('session-load', 'sessionLoad', this.o.keys.sessionKeys(clientId), [], { clientId });
    if (status === 'none') return undefined;
    return storedSession(clientId, reply, 1);
  }

  /**
   * Replaces the stored session whole. `held`: the claim of this epoch marked the stored
   * session (a resume, or a reconnect to the node holding its copy): refused as stale unless
   * it still carries that mark.
   */
  async save(s: SessionSnapshot, held = false): Promise<number[]> {
    const args: RedisArg[] = [s.epoch, s.expiryIntervalS, s.subscriptions.length];
    for (const sub of s.subscriptions) args.push(sharedName(sub), JSON.stringify(sub));
    args.push(s.pending.length);
    for (const p of s.pending) args.push(encodePending(p), p.packetId === undefined ? '' : `${p.packetId}:${p.released ? 1 : 0}`, p.message.id ?? '');
    const unrouted = new Map(s.unroutedQos2 ?? []);
    args.push(s.incomingQos2.length);
    for (const packetId of s.incomingQos2) args.push(packetId, unrouted.get(packetId) ?? '');
    args.push(Date.now(), held ? '1' : '');
    const { reply } = await this.run('session-save', 'sessionSave', this.o.keys.sessionKeys(s.clientId), args, { clientId: s.clientId, epoch: s.epoch });
    const first = num(reply[1]);
    return s.pending.map((_, i) => first + i);
  }

  async fence(clientId: string, epoch: number): Promise<void> {
    await this.run('session-fence', 'sessionFence', [this.o.keys.session(clientId)], [epoch], { clientId, epoch });
  }

  async delete(clientId: string, epoch: number): Promise<boolean> {
    const { reply } = await this.run('session-delete', 'sessionDelete', this.o.keys.sessionKeys(clientId), [epoch], { clientId, epoch });
    return num(reply[1]) === 1;
  }

  private pendingKeys(clientId: string): string[] {
    const k = this.o.keys;
    return [k.session(clientId), k.sessionPending(clientId), k.sessionPendingState(clientId), k.sessionSeen(clientId)];
  }

  /** The message's store seq, or undefined when the session already had a message with its id. */
  async appendPending(clientId: string, epoch: number, pending: PendingMessage): Promise<number | undefined> {
    const args: RedisArg[] = [epoch, 'append', encodePending(pending), pending.message.id ?? '', Date.now(), this.o.seenWindowMs ?? SEEN_WINDOW_MS, this.o.seenMax ?? SEEN_MAX];
    const { status, reply } = await this.run('session-pending', 'sessionPending', this.pendingKeys(clientId), args, { clientId, epoch }, ['ok', 'dup']);
    return status === 'dup' ? undefined : num(reply[1]);
  }

  async markPending(clientId: string, epoch: number, storeSeq: number, packetId: number, released: boolean): Promise<boolean> {
    const { status } = await this.run('session-pending', 'sessionPending', this.pendingKeys(clientId), [epoch, 'state', storeSeq, `${packetId}:${released ? 1 : 0}`], { clientId, epoch }, ['ok', 'none']);
    return status === 'ok';
  }

  async removePending(clientId: string, epoch: number, storeSeq: number): Promise<boolean> {
    const { status } = await this.run('session-pending', 'sessionPending', this.pendingKeys(clientId), [epoch, 'remove', storeSeq], { clientId, epoch }, ['ok', 'none']);
    return status === 'ok';
  }

  private async change(clientId: string, epoch: number, args: RedisArg[]): Promise<boolean> {
    const { reply } = await this.run('session-change', 'sessionChange', this.o.keys.sessionKeys(clientId), [epoch, ...args], { clientId, epoch });
    return num(reply[1]) === 1;
  }

  async putSubscription(clientId: string, epoch: number, sub: Subscription): Promise<void> {
    await this.change(clientId, epoch, ['sub', sharedName(sub), JSON.stringify(sub)]);
  }

  removeSubscription(clientId: string, epoch: number, filter: string, group?: string): Promise<boolean> {
    return this.change(clientId, epoch, ['unsub', sharedName({ filter, group })]);
  }

  addIncomingQos2(clientId: string, epoch: number, packetId: number, unroutedId?: string): Promise<boolean> {
    return this.change(clientId, epoch, ['qos2-add', packetId, unroutedId ?? '']);
  }

  removeIncomingQos2(clientId: string, epoch: number, packetId: number): Promise<boolean> {
    return this.change(clientId, epoch, ['qos2-remove', packetId]);
  }

  async setExpiry(clientId: string, epoch: number, ms: number | undefined): Promise<void> {
    await this.change(clientId, epoch, ['expire', ms === undefined ? '' : Math.max(1, Math.ceil(ms))]);
  }
}
