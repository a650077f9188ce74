// Client registry and wills across the cluster. Per client (one Redis Cluster slot): an
// owner record {node member, epoch, online} and an optional will record. The rule that makes
// wills fire exactly once: a will is published only by whoever atomically deletes its
// record — claim-client (older incarnation's will, on reconnect), will-disconnect (delay 0),
// claim-due-will (delay over) or orphan-client (owner died, delay 0). See docs/cluster.md.
import { randomBytes } from 'node:crypto';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { SessionSnapshot, WillRecord } from '../store/types.js';
import { scriptStatus, UnexpectedScriptReplyError, type ScriptOutcome } from '../store/errors.js';
import type { ClusterKeys } from './keys.js';
import type { RedisArg, VigilRedis } from '../redis/connection.js';
import { buf, num, str } from '../redis/connection.js';
import { decodeWill, encodeWill } from '../store/redis/codec.js';
import { storedSession } from '../store/redis/sessions.js';
import { BatchItemError, Batcher } from './batcher.js';

export interface ClaimOptions {
  readonly cleanStart: boolean;
  /** The will of the new connection (its epoch is replaced by the one assigned here). */
  readonly will?: WillRecord;
  readonly sessionExpiryS: number;
  /** The claiming identity (auth/session-owner.ts), recorded as the client id's owner. */
  readonly owner: string;
  /** VIGIL_SESSION_TAKEOVER=any: another identity's connection, session and will may be taken. */
  readonly takeoverAcrossIdentities?: boolean;
  /**
   * A persistent session (not Clean Start, expiry above 0). 'load': the claiming node holds no
   * copy of it, the claim also fences, loads and keeps the stored session; 'mark': the node
   * holds the copy and saves it whole after the claim, the claim only marks the stored session
   * as this epoch's (the save, `held`, writes only while the mark is there). ClaimResult.stored.
   */
  readonly resume?: 'load' | 'mark';
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
  /**
   * With `resume` 'load': the stored session, fenced at the new epoch, as it was loaded, now
   * stored with the new expiry and no time to live; 'none' when none was stored (an empty one
   * is now). With 'mark': 'marked' (an empty one stored when there was none). Either: 'stale'
   * when a newer incarnation's is stored (untouched). Undefined without `resume`.
   */
  readonly stored?: SessionSnapshot | 'none' | 'stale' | 'marked';
}

export type DisconnectOutcome =
  | { readonly kind: 'none' }
  | { readonly kind: 'fire'; readonly will: WillRecord }
  | { readonly kind: 'scheduled'; readonly dueAtMs: number };

export interface OrphanReport {
  /** Client ids this reaper took over (offline). */
  readonly orphaned: readonly string[];
  /** Those of them with a stored persistent session: the reaper's to adopt. */
  readonly withSession: readonly string[];
  /** Client ids of the dead node that had already connected elsewhere. */
  readonly moved: readonly string[];
  readonly clients: number;
  readonly fired: number;
  readonly scheduled: number;
  /** Fired wills whose record was decoded ahead of the reaping (prefetchWills), not in it. */
  readonly prefetched: number;
}

/**
 * Will records of a member read and decoded while it was overdue but not yet dead
 * (ClientRegistry.prefetchWills), for its reaping: a claimed record that is byte for byte the
 * one read ahead is not decoded again. Nothing is claimed or fired by reading ahead; the
 * orphan-client call still decides, on the record it returns, what fires.
 */
export class WillPrefetch {
  private readonly records = new Map<string, { readonly bytes: Buffer; readonly will: WillRecord }>();
  private stopped = false;
  /** Taken records that matched / that had changed since they were read. */
  used = 0;
  changed = 0;
  /** Settles once the reading stopped (read all, the limit, stop(), or a failure: it never rejects). */
  done: Promise<void> = Promise.resolve();

  /** Records read so far. */
  get size(): number {
    return this.records.size;
  }

  get reading(): boolean {
    return !this.stopped;
  }

  /** No more reads: the reaping has begun (it must not queue behind them) or the member renewed. */
  stop(): void {
    this.stopped = true;
  }

  add(clientId: string, bytes: Buffer, will: WillRecord): void {
    this.records.set(clientId, { bytes, will });
  }

  /** The will decoded ahead for this client if its record is still `bytes`, at most once (the decoded object becomes the fired will). */
  take(clientId: string, bytes: Buffer): WillRecord | undefined {
    const known = this.records.get(clientId);
    if (known === undefined) return undefined;
    this.records.delete(clientId);
    if (!known.bytes.equals(bytes)) {
      this.changed++;
      return undefined;
    }
    this.used++;
    return known.will;
  }
}

export interface RegistryOptions {
  readonly redis: VigilRedis;
  readonly keys: ClusterKeys;
  readonly log?: Logger;
  readonly metrics?: Metrics;
}

type FireWill = (will: WillRecord) => void | Promise<void>;

interface QueuedClaim {
  readonly clientId: string;
  readonly member: string;
  readonly options: ClaimOptions;
}

/**
 * Most claims in one script call: a reconnect storm's round trip (VIGIL_CLUSTER_CONNECTS_IN_FLIGHT
 * at most) goes in a few calls, none holding Redis for long.
 */
const CLAIM_BATCH = 128;

/** Most normal disconnects in one script call. */
const DISCONNECT_BATCH = 256;

/** Claims that can share one claim-client.lua call. */
const sameCall = (a: QueuedClaim, b: QueuedClaim): boolean => a.member === b.member && !!a.options.takeoverAcrossIdentities === !!b.options.takeoverAcrossIdentities;

/**
 * A batch script run once per client, as a Redis Cluster needs (each client's keys in its own
 * slot): each client's reply (the first of the script's replies), or its failure as its own
 * BatchItemError.
 */
async function oneByOne<T>(group: readonly T[], run: (item: T) => Promise<unknown>): Promise<unknown[]> {
  const each = await Promise.allSettled(group.map(run));
  return each.map((r) => (r.status === 'fulfilled' ? (r.value as unknown[])[0] : new BatchItemError(r.reason)));
}

/** One client's arguments to claim-client.lua. */
function claimArgs(c: QueuedClaim): RedisArg[] {
  const { will, cleanStart, sessionExpiryS, owner, resume } = c.options;
  return [c.clientId, cleanStart ? '1' : '0', will ? encodeWill(will) : '', will ? Math.max(0, Math.floor(will.delayS)) : 0, Math.max(0, Math.floor(sessionExpiryS)), owner, resume === 'load' ? '1' : resume === 'mark' ? '2' : '0'];
}

/**
 * Clients (reaping) or due wills (sweeping) handled per pipelined batch. Between batches the
 * event loop gets a turn: a reaper publishing 10,000 wills still renews its own lease.
 */
const WILL_BATCH = 250;

/** A reaper's first orphan-client call: the first wills go out after a short call, not a 250-client one. */
const FIRST_ORPHAN_BATCH = 50;
/** orphan-client calls a reaper has issued and not yet settled (the one it publishes and the ones Redis runs meanwhile). */
const ORPHAN_CALLS_IN_FLIGHT = 3;
/** Wills of a reply a reaper publishes in one turn of the event loop. */
const SETTLE_SLICE = 50;
/** SSCAN COUNT of a reaper's reads of the dead member's index (a hint: about as many ids). */
const ORPHAN_SCAN_COUNT = 4 * WILL_BATCH;

/**
 * Most will records one survivor reads ahead for an overdue member (prefetchWills): the memory
 * a false alarm can hold for a while (a decoded will is ~1 KB), while a fleet-sized node's
 * wills are all read ahead.
 */
const PREFETCH_MAX_WILLS = 20000;

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class ClientRegistry {
  constructor(private readonly o: RegistryOptions) {}

  private clientKeys(clientId: string): [string, string] {
    return [this.o.keys.clientOwner(clientId), this.o.keys.clientWill(clientId)];
  }

  /**
   * CONNECT: makes `member` the owner with a new epoch, storing the new will if any; with Clean
   * Start the stored session ends in the same step. Throws ClientIdHeldError, having changed
   * nothing, when another identity's connection, session or pending will holds the client id.
   * The claims of one event-loop turn go to Redis together (claimBatch).
   */
  claim(clientId: string, member: string, options: ClaimOptions): Promise<ClaimResult> {
    return this.claims.add({ clientId, member, options });
  }

  private readonly claims = new Batcher<QueuedClaim, ClaimResult>((group) => this.claimBatch(group), CLAIM_BATCH, sameCall);

  /**
   * One call of claim-client.lua for a batch of one member's claims. The reaper's index is
   * written first so it is always a superset of what `member` owns: in the same script on one
   * Redis; a Redis Cluster keeps it in another slot than the clients', so there one SADD for the
   * batch is acknowledged first and each client is claimed on its own (its keys in its slot).
   */
  private async claimBatch(group: readonly QueuedClaim[]): Promise<(ClaimResult | BatchItemError)[]> {
    const { redis, keys } = this.o;
    const { member, options } = group[0];
    const takeover = options.takeoverAcrossIdentities ? '1' : '0';
    if (!redis.isCluster) {
      // the clients' keys built by the script from their ids: ioredis encodes 7 arguments per
      // client, not 15 (the eight keys were about 18 µs of this node's CPU per CONNECT)
      const { head, ends } = keys.claimClientKeyParts;
      const a: RedisArg[] = [member, takeover, 1, head, ends];
      for (const c of group) a.push(...claimArgs(c));
      const replies = (await redis.run('claimClient', [keys.nodeClients(member)], a)) as unknown[];
      return group.map((c, i) => this.claimResult(c, replies[i]));
    }
    await redis.client.sadd(keys.nodeClients(member), ...group.map((c) => c.clientId));
    // a Redis Cluster routes a call by its declared keys: each client's are in KEYS
    const replies = await oneByOne(group, (c) => redis.run('claimClient', keys.claimClientKeys(c.clientId), [member, takeover, 0, '', '', ...claimArgs(c)]));
    return group.map((c, i) => (replies[i] instanceof BatchItemError ? (replies[i] as BatchItemError) : this.claimResult(c, replies[i])));
  }

  /** One client's reply; its refusal (another identity holds the client id) is its own BatchItemError. */
  private claimResult(c: QueuedClaim, reply: unknown): ClaimResult | BatchItemError {
    const r = reply as unknown[];
    try {
      scriptStatus('claim-client', r, { clientId: c.clientId });
    } catch (err) {
      return new BatchItemError(err);
    }
    const fireBuf = buf(r[4]);
    const previousWill = str(r[5]) as ClaimResult['previousWill'];
    if (previousWill === 'cancelled') this.o.metrics?.willsCancelledTotal.inc({ cause: 'reconnect' });
    if (c.options.will) this.o.metrics?.willsRegisteredTotal.inc();
    const stored = str(r[7]);
    if (stored !== '' && stored !== 'ok' && stored !== 'none' && stored !== 'stale' && stored !== 'marked') return new BatchItemError(new UnexpectedScriptReplyError('claim-client', r));
    return {
      epoch: num(r[1]),
      previousOwner: str(r[2]),
      previousOnline: str(r[3]) === '1',
      previousWill,
      willToFire: fireBuf ? { ...decodeWill(fireBuf), epoch: num(r[6]) } : undefined,
      stored: stored === '' ? undefined : stored === 'ok' ? storedSession(c.clientId, r, 8) : stored,
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

  /**
   * Normal DISCONNECT: the will is dropped unpublished. Throws StaleEpochError if another
   * CONNECT won. The disconnects of one round trip share one script call (normalBatch).
   */
  normalDisconnect(clientId: string, epoch: number): Promise<boolean> {
    return this.normals.add({ clientId, epoch });
  }

  private readonly normals = new Batcher<{ clientId: string; epoch: number }, boolean>((group) => this.normalBatch(group), DISCONNECT_BATCH);

  /** One will-normal-disconnect.lua call for the batch; in a Redis Cluster one per client (its keys in its slot). */
  private async normalBatch(group: readonly { clientId: string; epoch: number }[]): Promise<(boolean | BatchItemError)[]> {
    const { redis } = this.o;
    let replies: unknown[];
    if (!redis.isCluster) {
      replies = (await redis.run('willNormalDisconnect', group.flatMap((d) => this.clientKeys(d.clientId)), group.map((d) => d.epoch))) as unknown[];
    } else {
      replies = await oneByOne(group, (d) => redis.run('willNormalDisconnect', this.clientKeys(d.clientId), [d.epoch]));
    }
    return group.map((d, i) => {
      const reply = replies[i];
      if (reply instanceof BatchItemError) return reply;
      try {
        const status = scriptStatus('will-normal-disconnect', reply, d);
        if (status === 'cancelled') this.o.metrics?.willsCancelledTotal.inc({ cause: 'normal' });
        return status === 'cancelled';
      } catch (err) {
        return new BatchItemError(err); // StaleEpochError: a newer CONNECT owns the client
      }
    });
  }

  /** Takes a due will; exactly one concurrent caller gets it. */
  async claimDueWill(clientId: string, epoch: number): Promise<{ kind: 'fire'; will: WillRecord } | { kind: 'not_due'; dueAtMs: number } | { kind: 'none' }> {
    // a token per claim: ioredis re-sending this script after its reply was lost gets 'fire' again
    const token = randomBytes(8).toString('hex');
    const reply = (await this.o.redis.run('claimDueWill', [this.o.keys.clientWill(clientId), this.o.keys.clientWillClaim(clientId)], [epoch, token])) as unknown[];
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
    let fired = 0;
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
      if (r.kind !== 'fire') return;
      fired++;
      const done = this.fireSafely(fire, r.will);
      if (done) firing.push(done);
    });
    const index: Promise<unknown>[] = [];
    if (notDue.length > 0) index.push(this.o.redis.client.zadd(key, ...notDue));
    if (settled.length > 0) index.push(this.o.redis.client.zrem(key, ...settled));
    await Promise.all([...firing, ...index]);
    if (failure !== undefined) throw failure;
    return { fired, seen: entries.length };
  }

  /**
   * After winning reap(deadMember): every client it owned goes offline and its will is
   * fired (delay 0) or scheduled. Safe to repeat: a client owned elsewhere is left alone.
   * Clients go in batches of WILL_BATCH (the first FIRST_ORPHAN_BATCH): on one Redis one
   * orphan-client.lua call per batch (the reaper's index written in it), one ZADD for the wills
   * it scheduled; the wills it fires are published as the reply arrives, while the next
   * batches are in Redis. In a Redis Cluster each client is its own call (its keys in its
   * slot), after one SADD for the batch.
   */
  /**
   * Reads and decodes, ahead of its reaping, the wills a member whose renewal is overdue would
   * fire (delay 0, not scheduled): the reaper then skips the decoding of those still the same
   * (orphanClients' `prefetch`). Read-only: the member is not dead, and may renew. The same
   * order as the reaping's (SSCAN of its index from the start), in reads of ~1,000 and
   * decodes of WILL_BATCH a turn; stops at PREFETCH_MAX_WILLS or stop().
   */
  prefetchWills(member: string, limit = PREFETCH_MAX_WILLS): WillPrefetch {
    const { redis, keys } = this.o;
    const prefetch = new WillPrefetch();
    // a Redis Cluster: the records are in other slots than the index, one command each would
    // cost the survivor more than decoding them in the reaping does; nothing is read ahead
    if (redis.isCluster) {
      prefetch.stop();
      return prefetch;
    }
    const { head, end } = keys.willKeyParts;
    const read = async () => {
      let cursor = '0';
      do {
        const reply = (await redis.run('readWillsAhead', [keys.nodeClients(member)], [cursor, ORPHAN_SCAN_COUNT, head, end])) as unknown[];
        cursor = str(reply[0]);
        for (let i = 1; i + 1 < reply.length; i += 2) {
          if (i > 1 && (i - 1) % (2 * WILL_BATCH) === 0) await nextTurn();
          if (!prefetch.reading || prefetch.size >= limit) return;
          const rec = buf(reply[i + 1]);
          if (!rec) continue;
          try {
            prefetch.add(str(reply[i]), rec, decodeWill(rec));
          } catch {
            // not kept: if the reaping claims it, it decodes it again and reports what is wrong
          }
        }
      } while (cursor !== '0' && prefetch.reading);
    };
    prefetch.done = read()
      .catch((err: Error) => this.o.log?.warn({ member, err: err.message }, 'reading wills ahead failed'))
      .finally(() => prefetch.stop());
    return prefetch;
  }

  async orphanClients(deadMember: string, fire: FireWill, reaper: string, prefetch?: WillPrefetch): Promise<OrphanReport> {
    // no more reads ahead: they would queue in front of the calls
    prefetch?.stop();
    const setKey = this.o.keys.nodeClients(deadMember);
    const orphaned: string[] = [];
    const withSession: string[] = [];
    const moved: string[] = [];
    const firing: Promise<void>[] = [];
    let fired = 0;
    let clients = 0;
    let scheduled = 0;
    let failure: unknown;
    const indexing: Promise<unknown>[] = [];
    // replies[from, to) of one batch: the wills fired, the scheduled ones collected in `due`
    const settle = (ids: readonly string[], replies: readonly unknown[], from: number, to: number, due: (string | number)[]) => {
      for (let i = from; i < to; i++) {
        const clientId = ids[i];
        try {
          const reply = replies[i];
          if (reply instanceof BatchItemError) throw reply.cause;
          const r = reply as unknown[];
          const status = scriptStatus('orphan-client', r, { clientId });
          if (status === 'fire' || (status === 'not_owner' && r.length > 1)) {
            fired++;
            const done = this.fireSafely(fire, this.willFrom(r[1], num(r[2]), prefetch, clientId));
            if (done) firing.push(done);
          }
          if (status === 'not_owner') {
            moved.push(clientId);
            continue;
          }
          orphaned.push(clientId);
          if (num(status === 'none' ? r[1] : r[3]) === 1) withSession.push(clientId);
          if (status === 'scheduled') {
            scheduled++;
            due.push(num(r[1]), this.o.keys.dueWillMember(clientId, num(r[2])));
          }
        } catch (err) {
          // the others of the batch still fire; the reaping reports the failure at the end
          failure ??= err;
        }
      }
    };
    // The dead member's ids are read ahead of the calls (SSCAN COUNT ORPHAN_SCAN_COUNT): a read
    // written behind the calls in flight is answered after them, and must not hold up the next
    // call. SSCAN may return an id again (rehashing): each id goes into one call only.
    const seen = new Set<string>();
    const ids: string[] = [];
    let cursor: string | undefined = '0'; // undefined once the index is read (or a read failed)
    let reading: Promise<void> | undefined;
    const readAhead = () => {
      if (reading || cursor === undefined || ids.length >= ORPHAN_CALLS_IN_FLIGHT * WILL_BATCH) return;
      reading = this.o.redis.client.sscan(setKey, cursor, 'COUNT', ORPHAN_SCAN_COUNT).then(
        ([next, found]) => {
          reading = undefined;
          cursor = next === '0' ? undefined : next;
          for (const id of found) {
            if (seen.has(id)) continue;
            seen.add(id);
            ids.push(id);
          }
          readAhead();
        },
        (err: unknown) => {
          // the calls in flight are still settled; the reaping reports the failure at the end
          reading = undefined;
          cursor = undefined;
          failure ??= err;
        },
      );
    };
    // ORPHAN_CALLS_IN_FLIGHT calls issued at a time: while the reaper publishes the wills of the
    // oldest reply, Redis has the next ones to run (with two, Redis sat idle from the end of
    // one call until the reaper had published the reply before it). The first call is small,
    // so the first wills go out while Redis runs the larger ones behind it.
    const calls: { ids: readonly string[]; replies: Promise<unknown[]> }[] = [];
    let size = FIRST_ORPHAN_BATCH;
    const issue = () => {
      while (calls.length < ORPHAN_CALLS_IN_FLIGHT && ids.length > 0 && (ids.length >= size || cursor === undefined)) {
        const batch = ids.splice(0, size);
        size = WILL_BATCH;
        clients += batch.length;
        // a token per call: ioredis re-sending it after its reply was lost gets the same answers
        const replies = this.orphanBatch(deadMember, reaper, randomBytes(8).toString('hex'), batch);
        // each promise left in flight gets a no-op handler: one left behind when a batch fails must not be an unhandled rejection
        replies.catch(() => undefined);
        calls.push({ ids: batch, replies });
      }
      readAhead();
    };
    const take = async (b: { ids: readonly string[]; replies: Promise<unknown[]> }) => {
      let replies: unknown[];
      try {
        replies = await b.replies;
      } catch (err) {
        // the whole call failed: the other batches still go; the reaping reports it at the end
        failure ??= err;
        return;
      }
      // published SETTLE_SLICE at a time, a turn of the event loop between: the reaper never
      // waits for Redis now, and a whole batch in one turn (hundreds of ms on a busy machine)
      // held up its lease renewal (a renewal and its survey take several turns) and the
      // deliveries of what it had published
      const due: (string | number)[] = [];
      for (let from = 0; from < replies.length; from += SETTLE_SLICE) {
        if (from > 0) await nextTurn();
        settle(b.ids, replies, from, Math.min(replies.length, from + SETTLE_SLICE), due);
      }
      // awaited at the end: the next batch need not wait for it
      if (due.length > 0) {
        const added = this.o.redis.client.zadd(this.o.keys.dueWills, ...due);
        added.catch(() => undefined);
        indexing.push(added);
      }
    };
    readAhead();
    for (;;) {
      issue();
      const oldest = calls.shift();
      if (oldest) {
        await take(oldest);
        // the event loop gets a turn between batches: the reaper renews its lease, serves its clients
        await nextTurn();
      } else if (reading) {
        await reading;
      } else {
        break;
      }
    }
    await Promise.all(indexing);
    await Promise.all(firing);
    if (failure !== undefined) throw failure;
    await this.o.redis.client.del(setKey);
    return { clients, fired, scheduled, orphaned, withSession, moved, prefetched: prefetch?.used ?? 0 };
  }

  /**
   * One batch of a dead member's clients moved to the reaper (orphan-client.lua): one call on
   * one Redis, the reaper's index written in it; in a Redis Cluster one SADD acknowledged
   * first (superset rule), then one call per client.
   */
  private async orphanBatch(deadMember: string, reaper: string, token: string, ids: readonly string[]): Promise<unknown[]> {
    const { redis, keys } = this.o;
    if (!redis.isCluster) {
      // the clients' keys built by the script from their ids: ioredis encodes 250 + 7
      // arguments, not 1,250 (about 4.5 µs of the reaper's CPU per client, 0.7 µs of Redis's)
      const { head, ends } = keys.orphanClientKeyParts;
      return (await redis.run('orphanClient', [keys.nodeClients(reaper)], [deadMember, reaper, 1, token, head, ends, ...ids])) as unknown[];
    }
    await redis.client.sadd(keys.nodeClients(reaper), ...ids);
    // a Redis Cluster routes a call by its declared keys: each client's are in KEYS
    return oneByOne(ids, (id) => redis.run('orphanClient', keys.orphanClientKeys(id), [deadMember, reaper, 0, token, '', '', id]));
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

  private willFrom(v: unknown, epoch: number, prefetch?: WillPrefetch, clientId?: string): WillRecord {
    const b = buf(v);
    if (!b) throw new UnexpectedScriptReplyError('will', v);
    const will = (prefetch && clientId !== undefined ? prefetch.take(clientId, b) : undefined) ?? decodeWill(b);
    will.epoch = epoch;
    return will;
  }

  /** Fires; never rejects. A promise only while the fire hook is still at work (see WillManager.fire). */
  private fireSafely(fire: FireWill, will: WillRecord): Promise<void> | undefined {
    const lost = (err: unknown) => {
      // the record is gone: log loudly, this will is lost
      this.o.log?.error({ clientId: will.clientId, err: (err as Error).message }, 'publishing a claimed will failed');
    };
    try {
      const done = fire(will);
      return done ? done.catch(lost) : undefined;
    } catch (err) {
      lost(err);
      return undefined;
    }
  }
}
