// Wires the console endpoints (admin-console.ts) to one node's parts: the fleet source (memory
// on one node, the Redis index in a cluster), the retained store, identity and the cluster.
import type { IdentityModule } from '../auth/index.js';
import type { RevocationKind } from '../auth/revocation.js';
import type { Broker } from '../broker/broker.js';
import type { Clock } from '../clock.js';
import type { ClusterNode } from '../cluster/node.js';
import { recentReaps, type ClusterFleet } from '../cluster/fleet-index.js';
import { nodeIdOf } from '../cluster/membership.js';
import type { RetainedStore } from '../store/types.js';
import { previewPayload, type ClusterView, type ConsoleDeps, type IdentityView, type RetainedView } from './admin-console.js';
import { smallestIds, type FleetSource } from './fleet.js';
import type { RateSample, RateSampler } from './node-rates.js';

export interface ConsoleDepsOptions {
  readonly broker: Broker;
  readonly nodeId: string;
  readonly clock: Clock;
  readonly identity: IdentityModule;
  readonly willAuthz: string;
  readonly fleet: FleetSource;
  readonly retained: RetainedStore;
  /** The publisher's epoch of each topic's retained message (retained fencing), when known. */
  writerEpochs(topics: readonly string[]): Promise<(number | null)[]>;
  readonly rates: RateSampler;
  readonly cluster?: { readonly node: ClusterNode; readonly fleet: ClusterFleet };
  explainWill: ConsoleDeps['explainWill'];
}

const iso = (ms: number | undefined): string | null => (ms === undefined ? null : new Date(ms).toISOString());

export function consoleDeps(o: ConsoleDepsOptions): ConsoleDeps {
  return {
    fleet: o.fleet,
    explainWill: o.explainWill,

    async retained(q) {
      const now = o.clock.now();
      // '#' does not match topics starting with '$' [MQTT-4.7.2-1]: browse those under their first level
      const filter = q.prefix.startsWith('$') ? `${q.prefix.split('/')[0]}/#` : '#';
      const all = await o.retained.match(filter, now);
      const byTopic = new Map(all.map((m) => [m.topic, m]));
      const topics = smallestIds(byTopic.keys(), { prefix: q.prefix, after: q.after }, q.limit + 1);
      const page = topics.slice(0, q.limit).map((t) => byTopic.get(t)!);
      const [epochs, owners] = await Promise.all([
        o.writerEpochs(page.map((m) => m.topic)),
        Promise.all(page.map(async (m) => (m.origin ? ((await o.fleet.entry(m.origin))?.username ?? null) : null))),
      ]);
      const messages: RetainedView[] = page.map((m, i) => ({
        topic: m.topic,
        payloadBytes: m.payload.length,
        preview: previewPayload(m.payload),
        qos: m.qos,
        publisher: m.origin,
        publisherUsername: owners[i],
        epoch: epochs[i],
        expiresAt: iso(m.expiresAtMs),
      }));
      return { messages, next: topics.length > q.limit ? page[page.length - 1].topic : null };
    },

    async deleteRetained(topic) {
      const found = (await o.retained.match(topic, o.clock.now())).some((m) => m.topic === topic);
      if (!found) return false;
      // an empty retained payload deletes [MQTT-3.3.1-6]; unfenced (no writer epoch): the administrator wins
      await o.retained.set({ topic, payload: Buffer.alloc(0), qos: 0, retain: true, origin: '' });
      return true;
    },

    identity(): IdentityView {
      const id = o.identity;
      const explain = id.explain();
      const acl = id.aclFile;
      const policy = acl?.current;
      const err = (e: { atMs: number; message: string } | undefined) => (e ? { at: new Date(e.atMs).toISOString(), message: e.message } : null);
      return {
        mode: explain.mode,
        algorithms: explain.algorithms,
        keys: explain.keys.map((k) => ({
          kid: k.kid ?? null,
          alg: k.alg ?? null,
          kty: k.kty,
          thumbprint: k.thumbprint,
          state: k.state,
          since: new Date(k.addedAtMs).toISOString(),
          retiredAt: iso(k.retiredAtMs),
          verifiesUntil: iso(k.verifiesUntilMs),
        })),
        jwks: { source: id.jwks ? 'configured' : null, lastError: err(id.jwks?.lastError) },
        acl: {
          file: explain.aclFile ?? null,
          generation: explain.aclGeneration,
          loadedAt: policy ? new Date(policy.loadedAtMs).toISOString() : null,
          roles: policy ? Object.keys(policy.policy.roles) : [],
          allowAll: explain.allowAll,
          lastError: err(acl?.lastError),
        },
        willAuthz: o.willAuthz,
      };
    },

    revocations: () => o.identity.revocations.list(),
    unrevoke: async (kind: RevocationKind, value: string) => await o.identity.revocations.unrevoke(kind, value),

    async cluster(): Promise<ClusterView> {
      const sampleIntervalMs = o.rates.intervalMs;
      if (!o.cluster) {
        return {
          node: o.nodeId,
          mode: 'single',
          now: new Date(o.clock.now()).toISOString(),
          members: [{ member: o.nodeId, node: o.nodeId, leaseExpiresAt: '', live: true, self: true, rates: [...o.rates.samples()] }],
          reaps: [],
          redis: null,
          sampleIntervalMs,
        };
      }
      const { node } = o.cluster;
      const { client } = node.redis;
      const started = performance.now();
      let pingMs: number | null = null;
      let info = '';
      let dbKeys: number | null = null;
      let error: string | null = null;
      try {
        await client.ping();
        pingMs = Math.round((performance.now() - started) * 100) / 100;
        info = node.redis.isCluster ? '' : await client.info();
        dbKeys = node.redis.isCluster ? null : await (client as import('ioredis').Redis).dbsize();
      } catch (err) {
        error = (err as Error).message;
      }
      const field = (name: string) => new RegExp(`^${name}:(.*)$`, 'm').exec(info)?.[1]?.trim() ?? null;
      const [time, leases, reaps] = await Promise.all([client.time(), client.zrange(node.keys.nodeLeases, 0, -1, 'WITHSCORES'), recentReaps(node.redis, node.keys, 50)]);
      const nowMs = Number(time[0]) * 1000 + Math.floor(Number(time[1]) / 1000);
      const members: { member: string; expiry: number }[] = [];
      for (let i = 0; i < leases.length; i += 2) members.push({ member: leases[i], expiry: Number(leases[i + 1]) });
      const rates = await Promise.all(members.map((m) => client.get(node.keys.nodeRates(m.member))));
      return {
        node: o.nodeId,
        mode: 'cluster',
        now: new Date(nowMs).toISOString(),
        members: members.map((m, i) => ({
          member: m.member,
          node: nodeIdOf(m.member),
          leaseExpiresAt: new Date(m.expiry).toISOString(),
          live: m.expiry > nowMs,
          self: m.member === node.member,
          rates: m.member === node.member ? [...o.rates.samples()] : rates[i] ? (JSON.parse(rates[i]!) as RateSample[]) : null,
        })),
        reaps,
        redis: { status: client.status, pingMs, version: field('redis_version'), usedMemory: field('used_memory_human'), keys: dbKeys, error },
        sampleIntervalMs,
      };
    },
  };
}
