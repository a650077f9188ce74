// Messages between nodes: a publish goes out once per node the router named (the bus,
// src/cluster/bus.ts), and what arrives on this node's bus is delivered here — this node
// reads its own bus. Every send and every delivery answers with its completion: the
// publisher's ack, or the bus entry's, waits for the QoS 1/2 copies to be stored.
// A message for a session that moved on is handed on to the node holding it now.
import type { Broker } from '../broker/broker.js';
import type { RemoteMatch, RemoteRoutes, Routes } from '../broker/router.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { StoredMessage } from '../store/types.js';
import type { BusEnvelope, PublishEnvelope } from './bus-codec.js';
import type { ClusterNode } from './node.js';
import type { SessionClaims } from './session-claims.js';
import type { ClusterSessionJournal } from './session-journal.js';
import { systemClock } from '../clock.js';
import { retryWithBackoff, type Backoff } from '../limits/retry.js';

/** How often a message may be handed on after its session (a client moving twice at once). */
const MAX_HOPS = 3;
/** A dead node's message for a moved client that could not be stored is handed on again (deliverOrphaned). */
const HAND_ON_RETRY: Backoff = { firstMs: 250, maxDelayMs: 5000, forMs: 30_000 };

export class Forwarder implements RemoteRoutes {
  constructor(
    private readonly broker: Broker,
    private readonly node: ClusterNode,
    private readonly claims: SessionClaims,
    private readonly journal: ClusterSessionJournal,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {}

  // ---- the route table, for the router ----------------------------------------------------

  get member(): string {
    return this.node.member;
  }

  route(topic: string, once?: boolean): RemoteMatch {
    return this.node.routes.route(topic, once);
  }

  // ---- out --------------------------------------------------------------------------------

  /**
   * Sends a message to the other nodes the router named: those with matching subscriptions,
   * and the one picked for each shared group. QoS 0 is posted without waiting; QoS 1/2
   * resolves once every bus entry is stored (and rejects when one could not be).
   */
  forward(message: StoredMessage, routes: Routes): void | Promise<void> {
    const match = routes.remote;
    if (!match) return;
    const shared = routes.remoteShared;
    // no other node needs it (a reaper's wills to a monitor here): nothing to send or wait for
    if (match.members.size === 0 && shared.length === 0 && (message.qos === 0 || this.node.routes.fresh)) return;
    if (message.qos === 0 && shared.length === 0) {
      // the common QoS 0 case: nothing to wait for, nothing allocated per message
      for (const member of match.members) this.node.bus.post(member, message, true);
      return;
    }
    if (shared.length === 0 && match.members.size === 1 && this.node.routes.fresh) {
      // the common QoS 1/2 case, one other node: the publisher waits for that node's batch
      for (const member of match.members) return this.node.bus.store(member, message, true);
    }
    const sharedFor = new Map<string, { group: string; filter: string }[]>();
    for (const pick of shared) {
      let list = sharedFor.get(pick.member);
      if (!list) sharedFor.set(pick.member, (list = []));
      list.push({ group: pick.group, filter: pick.filter });
    }
    const writes: Promise<void>[] = [];
    const targets = new Set([...match.members, ...sharedFor.keys()]);
    if (!this.node.routes.fresh && message.qos > 0) {
      // the route mirror may be missing nodes: acknowledging could lose the message
      writes.push(Promise.reject(new Error('route table resyncing after a Redis reconnect')));
    }
    for (const member of targets) {
      const sent = this.node.bus.forward(member, message, { normal: match.members.has(member), shared: sharedFor.get(member) ?? [] });
      // no stream for that node (gone, or not started yet): not stored, so not acknowledged
      writes.push(
        sent.then((ok) => {
          if (ok) return;
          this.metrics.messagesDroppedTotal.inc({ reason: 'node_gone' });
          throw new Error(`no bus stream for ${member}`);
        }),
      );
    }
    if (writes.length === 0 || message.qos === 0) {
      for (const w of writes) w.catch((err) => this.redisFailed('forward', err));
      return;
    }
    return Promise.all(writes).then(() => undefined);
  }

  /**
   * A message for a session that is no longer here: to the node that holds it now, for that
   * client only. Resolves once stored there (the bus entry, or this node's own journal).
   */
  async handOn(clientId: string, message: StoredMessage, hops: number): Promise<void> {
    if (hops > MAX_HOPS) {
      this.metrics.messagesDroppedTotal.inc({ reason: 'session_moving' });
      this.log.warn({ clientId, hops }, 'message for a moving session dropped after too many hand-ons');
      return;
    }
    const owner = await this.node.registry.owner(clientId);
    if (!owner?.node) return; // the session ended: nothing to deliver to
    if (owner.node !== this.member) {
      const ok = await this.node.bus.forward(owner.node, message, { normal: true, only: [clientId], hops });
      if (!ok) throw new Error(`no bus stream for ${owner.node}`);
      return;
    }
    await this.deliverOnly(message, clientId, hops);
  }

  // ---- in ---------------------------------------------------------------------------------

  /** This node's bus handler: resolves once the entry is handled (then it is acknowledged). */
  readonly onBusMessage = (envelope: BusEnvelope): void | Promise<void> => {
    // without the lease this node may not act for its sessions: the entry waits (read again)
    if (!this.node.membership.owner) return Promise.reject(new Error('not a cluster owner now'));
    const handled = this.handle(envelope);
    if (this.journal.clean) return handled;
    // a session here is ahead of Redis: a copy of a message it has in memory only would be
    // dropped as a duplicate, so the entry is acknowledged once the session is saved
    const saved = this.journal.checkpointDirty().then((clean) => {
      if (!clean) throw new Error('sessions not saved yet');
    });
    return handled ? Promise.all([handled, saved]).then(() => undefined) : saved;
  };

  private handle(envelope: BusEnvelope): void | Promise<void> {
    if (envelope.kind === 'kick') return this.claims.kicked(envelope);
    if (envelope.only) {
      const hops = envelope.hops ?? 0;
      return Promise.all(envelope.only.map((clientId) => this.deliverOnly(envelope.message, clientId, hops, envelope.normal, envelope.shared))).then(() => undefined);
    }
    // the bus acknowledges the entry once the persistent sessions have it (QoS 0: nothing to wait for)
    return this.broker.deliverForwarded(envelope.message, envelope.normal, envelope.shared);
  }

  /** Delivers to one client's session here (waiting for its CONNECT to finish), or hands it on. */
  private async deliverOnly(message: StoredMessage, clientId: string, hops: number, normal = true, shared: PublishEnvelope['shared'] = []): Promise<void> {
    await this.claims.opened(clientId);
    if (!this.claims.holds(clientId)) return this.handOn(clientId, message, hops + 1);
    await this.broker.deliverForwarded(message, normal, shared, new Set([clientId]));
  }

  /**
   * Publishes a reaped node had not handled go to the sessions they were for: the ones adopted
   * here (journaled before the dead stream is deleted), and — restricted to those clients — to
   * the nodes where its other clients have connected since.
   */
  async deliverOrphaned(envelopes: readonly PublishEnvelope[], adopted: readonly string[], moved: readonly string[]): Promise<void> {
    const byMember = new Map<string, string[]>();
    for (const clientId of moved) {
      const owner = await this.node.registry.owner(clientId).catch(() => undefined);
      if (!owner?.node) continue;
      let list = byMember.get(owner.node);
      if (!list) byMember.set(owner.node, (list = []));
      list.push(clientId);
    }
    const local = new Set([...adopted, ...(byMember.get(this.node.member) ?? [])]);
    byMember.delete(this.node.member);
    const writes: (void | Promise<unknown>)[] = [];
    // a forward that stored nothing (the client's node has no stream yet: it is rejoining, or
    // Redis failed): handed on client by client, the client's node looked up anew, 250 ms later
    // and doubling, for up to 30 s (HAND_ON_RETRY), then counted node_gone; before, it was
    // dropped here without a word
    const unstored: { clientId: string; message: StoredMessage }[] = [];
    for (const e of envelopes) {
      writes.push(this.broker.deliverForwarded(e.message, e.normal, e.shared, local));
      for (const [member, only] of byMember) {
        const stored = this.node.bus.forward(member, e.message, { normal: e.normal, only }).catch(() => false);
        writes.push(
          stored.then((ok) => {
            if (!ok) for (const clientId of only) unstored.push({ clientId, message: e.message });
          }),
        );
      }
    }
    await Promise.allSettled(writes);
    this.log.info({ messages: envelopes.length, adopted: adopted.length, moved: moved.length, retrying: unstored.length }, 'undelivered messages of a dead node handed on');
    // nobody else has these: the dead node's stream is deleted after this
    for (const { clientId, message } of unstored) {
      retryWithBackoff(systemClock, HAND_ON_RETRY, () => this.handOn(clientId, message, 1), new Error('not stored'), {
        gaveUp: (err) => {
          this.metrics.messagesDroppedTotal.inc({ reason: 'node_gone' });
          this.log.error({ clientId, topic: message.topic, err: (err as Error)?.message ?? String(err) }, 'undelivered message of a dead node could not be handed on; dropped');
        },
      });
    }
  }

  private redisFailed(what: string, err: unknown): void {
    this.log.warn({ what, err: (err as Error)?.message ?? String(err) }, 'cluster operation failed');
  }
}
