// Client registry and wills across the cluster. Per client (one Redis Cluster slot): an
// owner record {node member, epoch, online} and an optional will record. The rule that makes
// wills fire exactly once: a will is published only by whoever atomically deletes its
// record — claim-client (older incarnation's will, on reconnect), will-disconnect (delay 0),
// claim-due-will (delay over) or orphan-client (owner died, delay 0). See docs/cluster.md.
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { WillRecord } from '../store/types.js';
import { scriptStatus, UnexpectedScriptReplyError, type ScriptOutcome } from '../store/errors.js';
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

/**
 * Clients (reaping) or due wills (sweeping) handled per pipelined batch. Between batches the
 * event loop gets a turn: a reaper publishing 10,000 wills still renews its own lease.
 */
const WILL_BATCH = 250;

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

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
    scriptStatus('claim-client', reply, { clientId });
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
    const status = scriptStatus('will-disconnect', reply, { clientId, epoch });
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
    const status = scriptStatus('rehome-client', reply, { clientId });
    return status === 'ok' ? { online: str(reply[1]) === '1', epoch: num(reply[2]) } : undefined;
  }

  /** Normal DISCONNECT: the will is dropped unpublished. Throws StaleEpochError if another CONNECT won. */
  async normalDisconnect(clientId: string, epoch: number): Promise<boolean> {
    const reply = (await this.o.redis.run('willNormalDisconnect', this.clientKeys(clientId), [epoch])) as unknown[];
    const status = scriptStatus('will-normal-disconnect', reply, { clientId, epoch });
    if (status === 'cancelled') this.o.metrics?.willsCancelledTotal.inc({ cause: 'normal' });
    return status === 'cancelled';
  }

  /** Takes a due will; exactly one concurrent caller gets it. */
  async claimDueWill(clientId: string, epoch: number): Promise<{ kind: 'fire'; will: WillRecord } | { kind: 'not_due'; dueAtMs: number } | { kind: 'none' }> {
    const reply = (await this.o.redis.run('claimDueWill', [this.o.keys.clientWill(clientId)], [epoch])) as unknown[];
    const status = scriptStatus('claim-due-will', reply, { clientId, epoch });
    if (status === 'fire') return { kind: 'fire', will: this.willFrom(reply[1], epoch) };
    if (status === 'not_due') return { kind: 'not_due', dueAtMs: num(reply[1]) };
    return { kind: 'none' };
  }

  /**
   * Publishes every will in the due index whose time has come (any node may run this; the
   * script decides who fires). Returns how many this caller fired. Batches of `batch`
   * entries, at most `maxBatches` of them per sweep (the next sweep takes the rest).
   */
  async sweepDueWills(nowMs: number, fire: FireWill, batch = WILL_BATCH, maxBatches = 20): Promise<number> {
    let fired = 0;
    for (let i = 0; i < maxBatches; i++) {
      const r = await this.sweepDueBatch(nowMs, fire, batch);
      fired += r.fired;
      if (r.seen < batch) break;
      await nextTurn();
    }
    return fired;
  }

  /**
   * One batch of due wills: the claims go out together (one pipeline), the index is updated
   * with one ZADD and one ZREM. How many fired, and how many entries were looked at.
   */
  private async sweepDueBatch(nowMs: number, fire: FireWill, limit: number): Promise<{ fired: number; seen: number }> {
    const key = this.o.keys.dueWills;
    const entries = await this.o.redis.client.zrangebyscore(key, '-inf', nowMs, 'LIMIT', 0, limit);
    if (entries.length === 0) return { fired: 0, seen: 0 };
    const claims = await Promise.allSettled(
      entries.map((entry) => {
        const { clientId, epoch } = this.o.keys.parseDueWillMember(entry);
        return this.claimDueWill(clientId, epoch);
      }),
    );
    const notDue: (string | number)[] = [];
    const settled: string[] = [];
    const firing: Promise<void>[] = [];
    let failure: unknown;
    claims.forEach((c, i) => {
      if (c.status === 'rejected') {
        failure ??= c.reason; // the entry stays: the next sweep tries it again
        return;
      }
      const r = c.value;
      if (r.kind === 'not_due') {
        notDue.push(r.dueAtMs, entries[i]);
        return;
      }
      settled.push(entries[i]);
      if (r.kind === 'fire') firing.push(this.fireSafely(fire, r.will));
    });
    const index: Promise<unknown>[] = [];
    if (notDue.length > 0) index.push(this.o.redis.client.zadd(key, ...notDue));
    if (settled.length > 0) index.push(this.o.redis.client.zrem(key, ...settled));
    await Promise.all([...firing, ...index]);
    if (failure !== undefined) throw failure;
    return { fired: firing.length, seen: entries.length };
  }

  /**
   * After winning reap(deadMember): every client it owned goes offline and its will is
   * fired (delay 0) or scheduled. Safe to repeat: a client owned elsewhere is left alone.
   * Clients go in batches of WILL_BATCH: one SADD, the batch's orphan-client scripts in one
   * pipeline, one ZADD for the wills it scheduled; the wills it fires are published as the
   * replies arrive, not one round trip after another (10,000 wills on a crashed node). One
   * round trip per batch: the next SSCAN, the SADD and the ZADD travel with the scripts.
   */
  async orphanClients(deadMember: string, fire: FireWill, reaper: string): Promise<OrphanReport> {
    const setKey = this.o.keys.nodeClients(deadMember);
    const orphaned: string[] = [];
    const moved: string[] = [];
    const firing: Promise<void>[] = [];
    let cursor = '0';
    let clients = 0;
    let scheduled = 0;
    let failure: unknown;
    const indexing: Promise<unknown>[] = [];
    // the next batch's ids are read while this batch's scripts run: one round trip per batch
    // (each promise also gets a no-op handler: one left behind when a batch fails must not be an unhandled rejection)
    const read = (from: string) => {
      const p = this.o.redis.client.sscan(setKey, from, 'COUNT', WILL_BATCH);
      p.catch(() => undefined);
      return p;
    };
    let scan = read(cursor);
    do {
      const [next, ids] = await scan;
      cursor = next;
      if (cursor !== '0') scan = read(cursor);
      if (ids.length === 0) continue;
      clients += ids.length;
      // the reaper's own index first (superset rule), then the ownership moves to it. On one
      // connection the SADD leaves before the scripts and runs first; a Redis Cluster may route
      // them to different nodes, so there it is acknowledged first.
      const indexed = this.o.redis.client.sadd(this.o.keys.nodeClients(reaper), ...ids);
      if (this.o.redis.isCluster) await indexed;
      const replies = await Promise.allSettled(ids.map((clientId) => this.o.redis.run('orphanClient', this.clientKeys(clientId), [deadMember, reaper])));
      await indexed;
      const due: (string | number)[] = [];
      replies.forEach((r, i) => {
        const clientId = ids[i];
        try {
          if (r.status === 'rejected') throw r.reason;
          const reply = r.value as unknown[];
          const status = scriptStatus('orphan-client', reply, { clientId });
          if (status === 'not_owner') {
            moved.push(clientId);
            return;
          }
          orphaned.push(clientId);
          if (status === 'fire') firing.push(this.fireSafely(fire, this.willFrom(reply[1], num(reply[2]))));
          else if (status === 'scheduled') {
            scheduled++;
            due.push(num(reply[1]), this.o.keys.dueWillMember(clientId, num(reply[2])));
          }
        } catch (err) {
          // the others of the batch still fire; the reaping reports the failure at the end
          failure ??= err;
        }
      });
      // awaited at the end: the next batch need not wait for it
      if (due.length > 0) {
        const added = this.o.redis.client.zadd(this.o.keys.dueWills, ...due);
        added.catch(() => undefined);
        indexing.push(added);
      }
      await nextTurn();
    } while (cursor !== '0');
    await Promise.all(indexing);
    await Promise.all(firing);
    if (failure !== undefined) throw failure;
    await this.o.redis.client.del(setKey);
    return { clients, fired: firing.length, scheduled, orphaned, moved };
  }

  async owner(clientId: string): Promise<{ node: string; epoch: number; online: boolean } | undefined> {
    const h = await this.o.redis.client.hgetall(this.o.keys.clientOwner(clientId));
    if (!h.node && !h.epoch) return undefined;
    return { node: h.node ?? '', epoch: Number(h.epoch ?? 0), online: h.online === '1' };
  }

  private async outcome(clientId: string, status: ScriptOutcome<'will-disconnect'>, reply: unknown[]): Promise<DisconnectOutcome> {
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
}
