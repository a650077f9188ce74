// The broker's cluster side (docs/cluster.md), assembled from its three concerns:
//   session-claims.ts   who holds a client's session: CONNECT, disconnect, takeover, lease
//                       loss and rejoin, adoption of a dead node's sessions
//   session-journal.ts  persistent sessions written through to Redis, checkpoints
//   forwarder.ts        publishes to other nodes and in from this node's bus
// The broker sees only BrokerCluster; the cluster node (membership, registry, routes, bus)
// calls back into this side directly, not through the server.
import type { Broker } from '../broker/broker.js';
import type { BrokerCluster, OpenResult } from '../broker/ports.js';
import type { RemoteRoutes, Routes } from '../broker/router.js';
import type { Session } from '../broker/session.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { StoredMessage, Subscription, WillRecord } from '../store/types.js';
import { Forwarder } from './forwarder.js';
import type { ClusterNode } from './node.js';
import { SessionClaims } from './session-claims.js';
import { ClusterSessionJournal } from './session-journal.js';

export class ClusterBridge implements BrokerCluster {
  readonly journal: ClusterSessionJournal;
  readonly claims: SessionClaims;
  readonly forwarder: Forwarder;

  constructor(
    broker: Broker,
    private readonly node: ClusterNode,
    private readonly log: Logger,
    metrics: Metrics,
  ) {
    this.journal = new ClusterSessionJournal(broker, node, log, metrics);
    this.claims = new SessionClaims(broker, node, this.journal, log, metrics);
    this.forwarder = new Forwarder(broker, node, this.claims, this.journal, log, metrics);
    this.journal.moves = { movedAway: (s) => this.claims.movedAway(s), handOn: (c, m, h) => this.forwarder.handOn(c, m, h) };
    node.attach({
      onBusMessage: this.forwarder.onBusMessage,
      onRejoined: (member, previous) => this.claims.rejoined(member, previous),
      adoptSessions: (clientIds) => this.claims.adopt(clientIds),
      deliverOrphaned: (envelopes, adopted, moved) => this.forwarder.deliverOrphaned(envelopes, adopted, moved),
    });
    broker.attachCluster(this);
  }

  get routes(): RemoteRoutes {
    return this.forwarder;
  }

  open(clientId: string, cleanStart: boolean, expiryIntervalS: number, will: WillRecord | undefined, owner: string): Promise<OpenResult> {
    return this.claims.open(clientId, cleanStart, expiryIntervalS, will, owner);
  }

  newMessageId(): string {
    return this.journal.newMessageId();
  }

  forward(message: StoredMessage, routes: Routes): void | Promise<void> {
    return this.forwarder.forward(message, routes);
  }

  replicated(writes: Promise<void>): Promise<void> {
    // the writes were all issued in this turn, on the main connection: once they are answered,
    // one WAIT (shared with the turn's other publishes) covers them before the PUBACK / PUBREC
    if (!this.node.redis.waitsForReplicas) return writes;
    const since = this.node.redis.generation;
    return writes.then(() => this.node.redis.replicated(since));
  }

  subscribed(session: Session, sub: Subscription): void {
    void this.node.routes.addLocal(sub).catch((err) => this.redisFailed('route', err));
    this.journal.subscribed(session, sub);
  }

  unsubscribed(session: Session, sub: Subscription): void {
    void this.node.routes.removeLocal(sub).catch((err) => this.redisFailed('route', err));
    this.journal.unsubscribed(session, sub);
  }

  /** The will was registered with the claim; the registry decides it (normal or not). */
  disconnected(session: Session, _will: WillRecord | undefined, normal: boolean): void {
    this.claims.disconnected(session, normal);
  }

  /** This node lost its lease: remembers what it held (settled when the lease is back). */
  leaseLost(): void {
    this.claims.leaseLost();
  }

  /** The lease was renewed without lapsing: settles what was closed meanwhile. */
  rejoined(member: string, previous: string): Promise<void> {
    return this.claims.rejoined(member, previous);
  }

  /** Disconnect bookkeeping still being written (awaited at shutdown). */
  async settle(): Promise<void> {
    await this.claims.settle();
    this.journal.stop();
  }

  private redisFailed(what: string, err: unknown): void {
    this.log.warn({ what, err: (err as Error)?.message ?? String(err) }, 'cluster operation failed');
  }
}
