// Builds the console's parts for one node (server.ts calls this when the admin API is on):
// the fleet source and observer (memory, or the Redis index in a cluster), the will decision
// record, the rate sampler, and the endpoints' dependencies.
import type { IdentityModule } from '../auth/index.js';
import type { Verdict } from '../auth/types.js';
import type { Broker } from '../broker/broker.js';
import type { Clock } from '../clock.js';
import { ClusterFleet, type StoredWill } from '../cluster/fleet-index.js';
import type { ClusterNode } from '../cluster/node.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import { MemoryRetainedStore } from '../store/memory/retained.js';
import type { WillRecord } from '../store/types.js';
import { explainVerdict, type AdminDeps } from './admin.js';
import { consoleDeps } from './console-deps.js';
import { decisionOf, describeRule, type WillDecision } from './fleet.js';
import { LocalFleet } from './fleet-local.js';
import { RateSampler } from './node-rates.js';

export interface ConsoleParts {
  /** The admin API's dependencies with the console endpoints added. */
  withConsole(local: AdminDeps): AdminDeps;
  /** Cluster: a will held in Redis, for `will explain` on any node. */
  readonly storedWill?: (clientId: string) => Promise<StoredWill | undefined>;
  stop(): void;
}

export interface ConsoleWiringOptions {
  readonly config: Pick<Config, 'nodeId' | 'willAuthz'>;
  readonly broker: Broker;
  readonly clock: Clock;
  readonly identity: IdentityModule;
  readonly cluster?: ClusterNode;
  readonly log: Logger;
}

const RATES_TTL_MS = 60_000;

export function createConsole(o: ConsoleWiringOptions): ConsoleParts {
  const { broker, clock, identity, cluster, config } = o;
  const lease = () => cluster?.member ?? 'local';

  const describe = (record: WillRecord, verdict: Verdict): WillDecision => {
    const topic = record.message.topic;
    // the rule that decided: evaluated again at once on the main thread (never cached)
    const fromPolicy = verdict.allowed ? config.willAuthz !== 'connect' : verdict.reason !== 'revoked';
    const explained = fromPolicy ? identity.authorizer.explain(record.identity, 'publish', topic) : undefined;
    return decisionOf(record, verdict, {
      node: config.nodeId,
      lease: lease(),
      nowMs: clock.now(),
      rule: verdict.allowed && !fromPolicy ? 'VIGIL_WILL_AUTHZ=connect: checked at CONNECT only' : describeRule(verdict, explained, topic),
      explanation: explainVerdict(verdict, config.willAuthz).replace('would be published', 'published').replace('would NOT be published', 'NOT published'),
      policyGeneration: identity.aclFile?.current.generation ?? 0,
      willAuthz: config.willAuthz,
    });
  };

  const clusterFleet = cluster ? new ClusterFleet({ redis: cluster.redis, keys: cluster.keys, broker, member: () => cluster.member, describe, log: o.log }) : undefined;
  const fleet = clusterFleet ?? new LocalFleet({ broker, nodeId: config.nodeId, clock, describe });
  broker.observer = fleet;

  const rates = new RateSampler({
    broker,
    clock,
    onSample: cluster
      ? (samples) => void cluster.redis.client.set(cluster.keys.nodeRates(cluster.member), JSON.stringify(samples), 'PX', RATES_TTL_MS).catch(() => undefined)
      : undefined,
  });
  rates.start();

  const retained = broker.deps.retained;
  const writerEpochs = async (topics: readonly string[]): Promise<(number | null)[]> => {
    if (topics.length === 0) return [];
    if (retained instanceof MemoryRetainedStore) return topics.map((t) => retained.writerEpoch(t));
    if (!cluster) return topics.map(() => null);
    // "<writerEpoch>\n<writerClientId>" (retain-set.lua)
    const meta = await cluster.redis.client.hmget(cluster.keys.retainedMeta, ...topics);
    return meta.map((m) => (m ? Number(m.slice(0, m.indexOf('\n'))) : null));
  };

  return {
    withConsole: (local) => ({
      ...local,
      console: consoleDeps({
        broker,
        nodeId: config.nodeId,
        clock,
        identity,
        willAuthz: config.willAuthz,
        fleet,
        retained,
        writerEpochs,
        rates,
        cluster: cluster && clusterFleet ? { node: cluster, fleet: clusterFleet } : undefined,
        explainWill: async (clientId) => await local.explainWill(clientId),
      }),
    }),
    storedWill: clusterFleet ? (clientId) => clusterFleet.storedWill(clientId) : undefined,
    stop: () => rates.stop(),
  };
}
