// AdminDeps for one node, over the broker's public state: its live connections and its pending
// wills. A cluster build wraps or replaces this (owner node and lease from the membership).
import type { Verdict } from '../auth/types.js';
import type { Broker } from '../broker/broker.js';
import type { Clock } from '../clock.js';
import { nodeIdOf } from '../cluster/membership.js';
import type { Channel } from '../protocol/channel.js';
import { RC } from '../protocol/reason-codes.js';
import type { WillRecord } from '../store/types.js';
import { explainWillRecord, type AdminDeps, type ClientInfo, type RevocationKind, type WillExplanation } from './admin.js';

export interface LocalAdminOptions {
  readonly broker: Broker;
  readonly nodeId: string;
  readonly clock: Clock;
  readonly willAuthz: string;
  /** The decision a will would get if it fired now: willAuthorizedAtFire(record, deps). */
  decide(record: WillRecord): Verdict | Promise<Verdict>;
  revoke(kind: RevocationKind, value: string, ttlS?: number): void | Promise<void>;
  /** Owner and lease of a client's will; default: this node, lease 'local'. */
  owner?(clientId: string): { node: string; lease: string; leaseExpiresAtMs?: number } | Promise<{ node: string; lease: string; leaseExpiresAtMs?: number }>;
  /** Cluster: a will neither live nor pending here, read from the registry (held by another node, or due in Redis). */
  storedWill?(clientId: string): Promise<{ record: WillRecord; dueAtMs?: number; owner: string; online: boolean; leaseExpiresAtMs?: number } | undefined>;
}

function liveChannels(broker: Broker): Channel[] {
  // broker.connections holds the channels (LiveConnection is the part the sweep needs)
  return [...broker.connections].map((c) => c as unknown as Channel).filter((c) => c.connected && c.clientId !== '');
}

export function localAdminDeps(o: LocalAdminOptions): AdminDeps {
  const find = (clientId: string) => liveChannels(o.broker).find((c) => c.clientId === clientId);
  return {
    listClients(): ClientInfo[] {
      return liveChannels(o.broker).map((c) => ({
        clientId: c.clientId,
        node: o.nodeId,
        username: c.identity?.username ?? '',
        roles: c.identity?.roles ?? [],
        protocolVersion: c.protocolVersion,
        subscriptions: c.session?.subscriptions.size ?? 0,
        connectedSince: new Date(c.openedAtMs).toISOString(),
        listener: c.io.listener,
        remoteAddress: c.io.remoteAddress,
      }));
    },

    kick(clientId: string): boolean {
      const c = find(clientId);
      if (!c) return false;
      // not a normal disconnect: a will the client registered is published [MQTT-3.1.2-8]
      c.close(RC.ADMINISTRATIVE_ACTION, 'disconnected by an administrator');
      return true;
    },

    revoke: (kind, value, ttlS) => o.revoke(kind, value, ttlS),

    async explainWill(clientId: string): Promise<WillExplanation | undefined> {
      const live = find(clientId);
      const pending = o.broker.wills.pendingFor(clientId);
      const record = live?.will && !live.normalDisconnect ? live.will : pending?.record;
      if (!record) return o.storedWill ? explainStored(o, clientId) : undefined;
      let verdict: Verdict;
      try {
        verdict = await o.decide(record);
      } catch {
        verdict = { allowed: false, reason: 'authorization_error' };
      }
      const owner = o.owner ? await o.owner(clientId) : { node: o.nodeId, lease: 'local' };
      const attached = record === live?.will;
      return explainWillRecord({
        record,
        verdict,
        willAuthz: o.willAuthz,
        owner,
        nowMs: o.clock.now(),
        pendingDueAtMs: attached ? undefined : pending?.dueAtMs,
        attachedTo: attached ? { node: o.nodeId, listener: live!.io.listener, remoteAddress: live!.io.remoteAddress, connectedSinceMs: live!.openedAtMs } : undefined,
      });
    },
  };
}

async function explainStored(o: LocalAdminOptions, clientId: string): Promise<WillExplanation | undefined> {
  const stored = await o.storedWill!(clientId);
  if (!stored) return undefined;
  let verdict: Verdict;
  try {
    verdict = await o.decide(stored.record);
  } catch {
    verdict = { allowed: false, reason: 'authorization_error' };
  }
  const node = nodeIdOf(stored.owner);
  return explainWillRecord({
    record: stored.record,
    verdict,
    willAuthz: o.willAuthz,
    owner: { node, lease: stored.owner, leaseExpiresAtMs: stored.leaseExpiresAtMs },
    nowMs: o.clock.now(),
    pendingDueAtMs: stored.online ? undefined : (stored.dueAtMs ?? o.clock.now()),
    attachedTo: stored.online ? { node } : undefined,
  });
}
