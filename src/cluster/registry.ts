// Client registry and wills across the cluster. Per client (one Redis Cluster slot): an
// owner record {node member, epoch, online} and an optional will record. The rule that makes
// wills fire exactly once: a will is published only by whoever atomically deletes its
// record — claim-client (older incarnation's will, on reconnect), will-disconnect (delay 0),
// claim-due-will (delay over) or orphan-client (owner died, delay 0). See docs/cluster.md.
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { WillRecord } from '../store/types.js';
import { statusError, UnexpectedScriptReplyError } from '../store/errors.js';
import type { ClusterKeys } from './keys.js';
import type { VigilRedis } from '../redis/connection.js';
import { buf, num, str } from '../redis/connection.js';
import { decodeWill, encodeWill } from '../store/redis/codec.js';

export interface ClaimOptions {
  readonly cleanStart: boolean;
  /** The will of the new connection (its epoch is replaced by the one assigned here). */
  readonly will?: WillRecord;
  readonly sessionExpiryS: number;
  /** The claiming identity (auth/session-owner.ts), recorded as the client id's owner. */
  readonly owner: string;
  /** VIGIL_SESSION_TAKEOVER=any: another identity's connection, session and will may be taken. */
  readonly takeoverAcrossIdentities?: boolean;
}

export interface ClaimResult {
  /** The new incarnation; every later call for this connection passes it. */
  readonly epoch: number;
  /** The member that owned the client before ('' if none): if it differs from ours and
   *  previousOnline, that member must close its connection (session taken over). */
  readonly previousOwner: string;
  readonly previousOnline: boolean;
  /** What happened to the older incarnation's will. */
  readonly previousWill: 'none' | 'fire' | 'cancelled';
  /** The older incarnation's will, to publish now (this caller is the only one holding it). */
  readonly willToFire?: WillRecord;
}

export type DisconnectOutcome =
  | { readonly kind: 'none' }
  | { readonly kind: 'fire'; readonly will: WillRecord }
  | { readonly kind: 'scheduled'; readonly dueAtMs: number };

export interface OrphanReport {
  /** Client ids this reaper took over (offline); their persistent sessions are its to adopt. */
  readonly orphaned: readonly string[];
  /** Client ids of the dead node that had already connected elsewhere. */
  readonly moved: readonly string[];
  readonly clients: number;
  readonly fired: number;
  readonly scheduled: number;
}

export interface RegistryOptions {
  readonly redis: VigilRedis;
  readonly keys: ClusterKeys;
  readonly log?: Logger;
  readonly metrics?: Metrics;
}

type FireWill = (will: WillRecord) => void | Promise<void>;

export class ClientRegistry {
  constructor(private readonly o: RegistryOptions) {}

  private clientKeys(clientId: string): [string, string] {
    return [this.o.keys.clientOwner(clientId), this.o.keys.clientWill(clientId)];
  }

  /**
   * CONNECT: makes `member` the owner with a new epoch, storing the new will if any. Throws
   * ClientIdHeldError, having changed nothing, when another identity's connection, session or
   * pending will holds the client id.
   */
  async claim(clientId: string, member: string, options: ClaimOptions): Promise<ClaimResult> {
    // the reaper's index is written first so it is always a superset of what `member` owns. On
    // one Redis connection both commands leave in the same write and run in order: one round
    // trip per CONNECT, and the CONNECTs of one event-loop turn share it (auto-pipelining). A
    // Redis Cluster may route them to different nodes, so there the index is acknowledged first.
    const indexed = this.o.redis.client.sadd(this.o.keys.nodeClients(member), clientId);
    if (this.o.redis.isCluster) await indexed;
    const will = options.will;
    const claimed = this.o.redis.run('claimClient', [...this.clientKeys(clientId), this.o.keys.session(clientId)], [
      member,
      options.cleanStart ? '1' : '0',
      will ? encodeWill(will) : '',
      will ? Math.max(0, Math.floor(will.delayS)) : 0,
      Math.max(0, Math.floor(options.sessionExpiryS)),
      options.owner,
      options.takeoverAcrossIdentities ? '1' : '0',
    ]);
    const [, reply] = (await Promise.all([indexed, claimed])) as [unknown, unknown[]];
    this.expect('claim-client', reply, ['ok'], { clientId });
    const epoch = num(reply[1]);
    const fireBuf = buf(reply[4]);
    const previousWill = str(reply[5]) as ClaimResult['previousWill'];
    if (previousWill === 'cancelled') this.o.metrics?.willsCancelledTotal.inc({ cause: 'reconnect' });
    if (will) this.o.metrics?.willsRegisteredTotal.inc();
    return {
      epoch,
      previousOwner: str(reply[2]),
      previousOnline: str(reply[3]) === '1',
      previousWill,
      willToFire: fireBuf ? { ...decodeWill(fireBuf), epoch: num(reply[6]) } : undefined,
    };
  }

  /** Abnormal disconnect on the owning node. Throws StaleEpochError if another CONNECT won. */
  async abnormalDisconnect(clientId: string, epoch: number, sessionExpiryS: number): Promise<DisconnectOutcome> {
    const reply = (await this.o.redis.run('willDisconnect', this.clientKeys(clientId), [epoch, Math.max(0, Math.floor(sessionExpiryS))])) as unknown[];
    const status = this.expect('will-disconnect', reply, ['none', 'fire', 'scheduled'], { clientId, epoch });
    return this.outcome(clientId, status, reply);
  }

  /**
   * This node joined again as `member` after losing its lease as `previous`: the client moves
   * to the new member unless a reaper or a newer connection took it. Returns whether the
   * registry still had it online (its disconnect could not be recorded while Redis was away).
   */
  async rehome(clientId: string, previous: string, member: string): Promise<{ online: boolean; epoch: number } | undefined> {
    await this.o.redis.client.sadd(this.o.keys.nodeClients(member), clientId);
    const reply = (await this.o.redis.run('rehomeClient', [this.o.keys.clientOwner(clientId)], [previous, member])) as unknown[];
    const status = this.expect('rehome-client', reply, ['ok', 'moved'], { clientId });
    return status === 'ok' ? { online: str(reply[1]) === '1', epoch: num(reply[2]) } : undefined;
  }

  /** Normal DISCONNECT: the will is dropped unpublished. Throws StaleEpochError if another CONNECT won. */
  async normalDisconnect(clientId: string, epoch: number): Promise<boolean> {
    const reply = (await this.o.redis.run('willNormalDisconnect', this.clientKeys(clientId), [epoch])) as unknown[];
    const status = this.expect('will-normal-disconnect', reply, ['cancelled', 'none'], { clientId, epoch });
    if (status === 'cancelled') this.o.metrics?.willsCancelledTotal.inc({ cause: 'normal' });
    return status === 'cancelled';
  }

  /** Takes a due will; exactly one concurrent caller gets it. */
  async claimDueWill(clientId: string, epoch: number): Promise<{ kind: 'fire'; will: WillRecord } | { kind: 'not_due'; dueAtMs: number } | { kind: 'none' }> {
    const reply = (await this.o.redis.run('claimDueWill', [this.o.keys.clientWill(clientId)], [epoch])) as unknown[];
    const status = this.expect('claim-due-will', reply, ['fire', 'not_due', 'none'], { clientId, epoch });
    if (status === 'fire') return { kind: 'fire', will: this.willFrom(reply[1], epoch) };
    if (status === 'not_due') return { kind: 'not_due', dueAtMs: num(reply[1]) };
    return { kind: 'none' };
  }

  /**
   * Publishes every will in the due index whose time has come (any node may run this; the
   * script decides who fires). Returns how many this caller fired.
   */
  async sweepDueWills(nowMs: number, fire: FireWill, limit = 100): Promise<number> {
    const key = this.o.keys.dueWills;
    const entries = await this.o.redis.client.zrangebyscore(key, '-inf', nowMs, 'LIMIT', 0, limit);
    let fired = 0;
    for (const entry of entries) {
      const { clientId, epoch } = this.o.keys.parseDueWillMember(entry);
      const r = await this.claimDueWill(clientId, epoch);
      if (r.kind === 'not_due') {
        await this.o.redis.client.zadd(key, r.dueAtMs, entry);
        continue;
      }
      await this.o.redis.client.zrem(key, entry);
      if (r.kind === 'fire') {
        fired++;
        await this.fireSafely(fire, r.will);
      }
    }
    return fired;
  }

  /**
   * After winning reap(deadMember): every client it owned goes offline and its will is
   * fired (delay 0) or scheduled. Safe to repeat: a client owned elsewhere is left alone.
   */
  async orphanClients(deadMember: string, fire: FireWill, reaper: string): Promise<OrphanReport> {
    const setKey = this.o.keys.nodeClients(deadMember);
    const orphaned: string[] = [];
    const moved: string[] = [];
    let cursor = '0';
    let clients = 0;
    let fired = 0;
    let scheduled = 0;
    do {
      const [next, ids] = await this.o.redis.client.sscan(setKey, cursor, 'COUNT', 200);
      cursor = next;
      for (const clientId of ids) {
        clients++;
        // the reaper's own index first (superset rule), then the ownership moves to it
        await this.o.redis.client.sadd(this.o.keys.nodeClients(reaper), clientId);
        const reply = (await this.o.redis.run('orphanClient', this.clientKeys(clientId), [deadMember, reaper])) as unknown[];
        const status = this.expect('orphan-client', reply, ['not_owner', 'none', 'fire', 'scheduled'], { clientId });
        if (status === 'not_owner') {
          moved.push(clientId);
          continue;
        }
        orphaned.push(clientId);
        const outcome = await this.outcome(clientId, status, reply);
        if (outcome.kind === 'fire') {
          fired++;
          await this.fireSafely(fire, outcome.will);
        } else if (outcome.kind === 'scheduled') scheduled++;
      }
    } while (cursor !== '0');
    await this.o.redis.client.del(setKey);
    return { clients, fired, scheduled, orphaned, moved };
  }

  async owner(clientId: string): Promise<{ node: string; epoch: number; online: boolean } | undefined> {
    const h = await this.o.redis.client.hgetall(this.o.keys.clientOwner(clientId));
    if (!h.node && !h.epoch) return undefined;
    return { node: h.node ?? '', epoch: Number(h.epoch ?? 0), online: h.online === '1' };
  }

  private async outcome(clientId: string, status: string, reply: unknown[]): Promise<DisconnectOutcome> {
    if (status === 'fire') return { kind: 'fire', will: this.willFrom(reply[1], num(reply[2])) };
    if (status === 'scheduled') {
      const dueAtMs = num(reply[1]);
      await this.o.redis.client.zadd(this.o.keys.dueWills, dueAtMs, this.o.keys.dueWillMember(clientId, num(reply[2])));
      return { kind: 'scheduled', dueAtMs };
    }
    return { kind: 'none' };
  }

  private willFrom(v: unknown, epoch: number): WillRecord {
    const b = buf(v);
    if (!b) throw new UnexpectedScriptReplyError('will', v);
    return { ...decodeWill(b), epoch };
  }

  private async fireSafely(fire: FireWill, will: WillRecord): Promise<void> {
    try {
      await fire(will);
    } catch (err) {
      // the record is gone: log loudly, this will is lost
      this.o.log?.error({ clientId: will.clientId, err: (err as Error).message }, 'publishing a claimed will failed');
    }
  }

  /** Maps a script's status: failing statuses throw (store/errors.ts), unknown ones too. */
  private expect(script: string, reply: unknown[], allowed: readonly string[], ctx: { clientId?: string; epoch?: number }): string {
    const status = str(reply[0]);
    if (allowed.includes(status)) return status;
    throw statusError(script, status, ctx) ?? new UnexpectedScriptReplyError(script, status);
  }
}
