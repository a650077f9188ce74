// What the broker is wired with, and what it sees of the rest of Vigil: its dependencies,
// the cluster side it hands claims, forwarding and persistence to, and a live connection.
// The broker (broker.ts) implements none of these; server.ts, cluster/bridge.ts and
// protocol/channel.ts do.
import type { Authenticator, Authorizer, Identity } from '../auth/types.js';
import type { Config } from '../config.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { ReasonCode } from '../protocol/reason-codes.js';
import type { RetainedStore, StoredMessage, Subscription, WillRecord } from '../store/types.js';
import type { RemoteRoutes, Routes } from './router.js';
import type { Session } from './session.js';
import type { SessionLink } from './session-ports.js';

export interface BrokerDeps {
  readonly config: Config;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly clock: Clock;
  readonly authenticator: Authenticator;
  readonly authorizer: Authorizer;
  readonly retained: RetainedStore;
}

/** A CONNECT's session: opened (resumed or new), or refused with a CONNACK reason code. */
export type OpenResult =
  | { readonly session: Session; readonly present: boolean }
  | { readonly refused: ReasonCode; readonly reason: string };

/**
 * The cluster side of a broker (src/cluster/bridge.ts): set with attachCluster when
 * VIGIL_REDIS_URL is given. Without it the broker is a single node with in-memory state.
 */
export interface BrokerCluster {
  /**
   * CONNECT: claims the client id cluster-wide for `owner` and loads or creates its session;
   * refused (0x85) when another identity holds it and VIGIL_SESSION_TAKEOVER does not allow that.
   */
  open(clientId: string, cleanStart: boolean, expiryIntervalS: number, will: WillRecord | undefined, owner: string): Promise<OpenResult>;
  /** The cluster's route table, for the router. */
  readonly routes: RemoteRoutes;
  /** A cluster-wide id for a QoS 1/2 message published on this node (copies are dropped by id). */
  newMessageId(): string;
  /** Forwards to the other nodes the router named; a promise while QoS 1/2 forwards are being stored. */
  forward(message: StoredMessage, routes: Routes): void | Promise<void>;
  /**
   * The copies of a QoS 1/2 publish (journals here, bus entries for other nodes), all written
   * in this turn: resolves once Redis has them and, with VIGIL_REDIS_WAIT_REPLICAS, its
   * replicas too. The publisher's PUBACK / PUBREC waits for this.
   */
  replicated(writes: Promise<void>): Promise<void>;
  subscribed(session: Session, sub: Subscription): void;
  unsubscribed(session: Session, sub: Subscription): void;
  /** A connection ended; the cluster decides its will and persists the session end. */
  disconnected(session: Session, will: WillRecord | undefined, normal: boolean): void;
}

/** A live client connection, as the broker and the server see it (the Channel). */
export interface LiveConnection extends Pick<SessionLink, 'supersede'> {
  readonly clientId: string;
  readonly identity?: Identity;
  /** The periodic sweep: keepalive and timeouts. */
  tick(nowMs: number): void;
  /** Closes with a DISCONNECT reason code (5.0). */
  close(reasonCode: ReasonCode | undefined, why: string): void;
}
