// Every metric Vigil exports, in one module. Names follow Prometheus conventions:
// vigil_<thing>_<unit>, counters end in _total. Each node has its own registry so several
// brokers in one process (tests) do not collide; `node` is a default label.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type CounterConfiguration, type GaugeConfiguration } from 'prom-client';

type LabelValues<T extends string> = Partial<Record<T, string | number>>;

/** The key of one label set, in label-name order. */
function labelKey<T extends string>(names: readonly T[], labels: LabelValues<T>): string {
  if (names.length === 1) return String(labels[names[0]]);
  let key = '';
  for (const name of names) key += `${labels[name]}\u0000`;
  return key;
}

/**
 * A labelled counter counted on every connection (accept, CONNECT outcome, close) or every
 * message (in, out, dropped, bytes, verdict cache): inc()
 * adds to a plain number per label set, and the sums reach prom-client when the metric is
 * read (scrape, get()). prom-client hashes and validates the label object on every inc()
 * (~0.6 µs), which a connect storm paid several times per CONNECT. Label sets are the
 * metric's own bounded ones, so the map stays small.
 */
class DeferredCounter<T extends string> {
  private readonly counts = new Map<string, { labels: LabelValues<T>; n: number }>();
  private readonly names: readonly T[];
  readonly metric: Counter<T>;

  constructor(config: CounterConfiguration<T>) {
    const counts = this.counts;
    this.names = config.labelNames ?? [];
    this.metric = new Counter<T>({
      ...config,
      collect(this: Counter<T>) {
        for (const e of counts.values()) {
          if (e.n === 0) continue;
          this.inc(e.labels, e.n);
          e.n = 0;
        }
      },
    });
  }

  inc(labels: LabelValues<T>, n = 1): void {
    this.entry(labels).n += n;
  }

  /**
   * One label set bound once (per QoS, per cache result): inc() is then a plain addition.
   * The per-message counters use it: a QoS 0 message paid prom-client's label hashing once
   * on the way in and once per delivery, about 5 % of the broker's CPU in the pairs benchmark.
   */
  bind(labels: LabelValues<T>): { inc(n?: number): void } {
    const e = this.entry(labels);
    return { inc: (n = 1) => void (e.n += n) };
  }

  private entry(labels: LabelValues<T>): { labels: LabelValues<T>; n: number } {
    const key = labelKey(this.names, labels);
    let e = this.counts.get(key);
    if (!e) {
      e = { labels: { ...labels }, n: 0 };
      this.counts.set(key, e);
    }
    return e;
  }

  get(): ReturnType<Counter<T>['get']> {
    return this.metric.get();
  }
}

/** A labelled gauge changed on every connection; like DeferredCounter, handed to prom-client when read. */
class DeferredGauge<T extends string> {
  private readonly values = new Map<string, { labels: LabelValues<T>; v: number }>();
  private readonly names: readonly T[];
  readonly metric: Gauge<T>;

  constructor(config: GaugeConfiguration<T>) {
    const values = this.values;
    this.names = config.labelNames ?? [];
    this.metric = new Gauge<T>({
      ...config,
      collect(this: Gauge<T>) {
        for (const e of values.values()) this.set(e.labels, e.v);
      },
    });
  }

  private entry(labels: LabelValues<T>): { labels: LabelValues<T>; v: number } {
    const key = labelKey(this.names, labels);
    let e = this.values.get(key);
    if (!e) {
      e = { labels: { ...labels }, v: 0 };
      this.values.set(key, e);
    }
    return e;
  }

  set(labels: LabelValues<T>, v: number): void {
    this.entry(labels).v = v;
  }

  /** One label set's value, bound once (per listener, say): inc/dec/set are then plain arithmetic. */
  bind(labels: LabelValues<T>): { inc(): void; dec(): void; set(v: number): void } {
    const e = this.entry(labels);
    return { inc: () => void e.v++, dec: () => void e.v--, set: (v: number) => void (e.v = v) };
  }

  get(): ReturnType<Gauge<T>['get']> {
    return this.metric.get();
  }
}

export function createMetrics(nodeId: string, options: { processMetrics?: boolean } = {}) {
  const registry = new Registry();
  registry.setDefaultLabels({ node: nodeId });
  if (options.processMetrics !== false) collectDefaultMetrics({ register: registry, prefix: 'vigil_' });
  const r = [registry];

  const m = {
    registry,
    // --- connections ---
    connectionsCurrent: new DeferredGauge({ name: 'vigil_connections_current', help: 'Open MQTT connections (all listeners)', labelNames: ['listener'], registers: r }),
    connectionsOpenedTotal: new DeferredCounter({ name: 'vigil_connections_opened_total', help: 'Sockets accepted', labelNames: ['listener'], registers: r }),
    connectionsClosedTotal: new DeferredCounter({ name: 'vigil_connections_closed_total', help: 'Connections closed, by reason', labelNames: ['reason'], registers: r }),
    connectionsRefusedTotal: new Counter({ name: 'vigil_connections_refused_total', help: 'Sockets refused before CONNECT, by reason', labelNames: ['reason'], registers: r }),
    connectOutcomesTotal: new DeferredCounter({ name: 'vigil_connect_outcomes_total', help: 'CONNECT results by MQTT 5 reason code', labelNames: ['code', 'version'], registers: r }),
    protocolErrorsTotal: new Counter({ name: 'vigil_protocol_errors_total', help: 'Connections closed for a protocol violation or malformed packet', labelNames: ['reason'], registers: r }),
    takeoversTotal: new Counter({ name: 'vigil_takeovers_total', help: 'Session takeovers (a second connection with the same client id)', labelNames: ['scope'], registers: r }),
    takeoversRefusedTotal: new Counter({ name: 'vigil_takeovers_refused_total', help: 'CONNECTs refused because another identity owns the client id (its connection, session or pending will)', labelNames: ['scope'], registers: r }),

    // --- messages ---
    messagesInTotal: new DeferredCounter({ name: 'vigil_messages_in_total', help: 'PUBLISH packets received from clients', labelNames: ['qos'], registers: r }),
    messagesOutTotal: new DeferredCounter({ name: 'vigil_messages_out_total', help: 'PUBLISH packets sent to clients', labelNames: ['qos'], registers: r }),
    bytesInTotal: new DeferredCounter({ name: 'vigil_bytes_in_total', help: 'Bytes read from client sockets', registers: r }),
    bytesOutTotal: new DeferredCounter({ name: 'vigil_bytes_out_total', help: 'Bytes written to client sockets', registers: r }),
    messagesDroppedTotal: new DeferredCounter({ name: 'vigil_messages_dropped_total', help: 'Messages not delivered, by reason', labelNames: ['reason'], registers: r }),
    packetsDroppedTotal: new Counter({ name: 'vigil_packets_dropped_total', help: 'Packets other than PUBLISH not sent because they exceed the client\'s Maximum Packet Size, by packet type', labelNames: ['packet'], registers: r }),
    retainedMessages: new Gauge({ name: 'vigil_retained_messages', help: 'Retained messages stored', registers: r }),
    retainedSnapshots: new Gauge({ name: 'vigil_retained_snapshots', help: 'Retained snapshots being sent to subscribers (each a cursor over the store, sampled once a second)', registers: r }),
    retainedSnapshotsEndedTotal: new Counter({ name: 'vigil_retained_snapshots_ended_total', help: 'Retained snapshots ended: complete, or abandoned (unsubscribed, replaced by a new subscribe, disconnected)', labelNames: ['how'], registers: r }),

    // --- sessions ---
    sessionsCurrent: new DeferredGauge({ name: 'vigil_sessions_current', help: 'Sessions on this node, by state', labelNames: ['state'], registers: r }),
    subscriptionsCurrent: new Gauge({ name: 'vigil_subscriptions_current', help: 'Subscriptions held by sessions on this node', registers: r }),
    queuedMessages: new Gauge({ name: 'vigil_queued_messages', help: 'Messages waiting in session queues (offline or beyond in-flight)', registers: r }),
    queuedBytes: new Gauge({ name: 'vigil_queued_bytes', help: 'Bytes (payload and topic) of the messages waiting in session queues', registers: r }),
    inflightMessages: new Gauge({ name: 'vigil_inflight_messages', help: 'Outgoing QoS 1/2 messages awaiting acknowledgement', registers: r }),
    sessionsExpiredTotal: new Counter({ name: 'vigil_sessions_expired_total', help: 'Persistent sessions removed at expiry', registers: r }),

    // --- identity ---
    authVerificationsTotal: new DeferredCounter({ name: 'vigil_auth_verifications_total', help: 'Authentication attempts by outcome and reason', labelNames: ['outcome', 'reason'], registers: r }),
    authVerifySeconds: new Histogram({ name: 'vigil_auth_verify_seconds', help: 'Time to verify a token in the pool', buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1], registers: r }),
    authPoolQueueDepth: new Gauge({ name: 'vigil_auth_pool_queue_depth', help: 'Tasks waiting for a pool worker', registers: r }),
    authAdmissionWaiting: new Gauge({ name: 'vigil_auth_admission_waiting', help: 'CONNECT tokens in the admission queue, waiting for room in the auth pool (VIGIL_AUTH_QUEUE_MAX)', registers: r }),
    authPoolWaitSeconds: new Histogram({ name: 'vigil_auth_pool_wait_seconds', help: 'Time a task waited for a pool worker', buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1], registers: r }),
    authPoolTasksTotal: new Counter({ name: 'vigil_auth_pool_tasks_total', help: 'Tasks run in the auth pool, by task', labelNames: ['task'], registers: r }),
    authTokenCacheHitsTotal: new Counter({ name: 'vigil_auth_token_cache_hits_total', help: 'CONNECTs answered from the verified-token cache', registers: r }),
    jwksRefreshesTotal: new Counter({ name: 'vigil_jwks_refreshes_total', help: 'JWKS loads by trigger and outcome', labelNames: ['trigger', 'outcome'], registers: r }),
    jwksKeys: new Gauge({ name: 'vigil_jwks_keys', help: 'Keys known, by state (active, retired)', labelNames: ['state'], registers: r }),
    aclVerdictCacheTotal: new DeferredCounter({ name: 'vigil_acl_verdict_cache_total', help: 'ACL verdict cache lookups by result (hit, miss)', labelNames: ['result'], registers: r }),
    aclDeliveryEvaluationsTotal: new Counter({ name: 'vigil_acl_delivery_evaluations_total', help: 'Delivery authorizations evaluated on the main thread (a topic new to an identity class; the rest are table hits)', registers: r }),
    aclDeniesTotal: new DeferredCounter({ name: 'vigil_acl_denies_total', help: 'Authorization denials by action', labelNames: ['action'], registers: r }),
    aclReloadsTotal: new Counter({ name: 'vigil_acl_reloads_total', help: 'ACL policy reloads by outcome', labelNames: ['outcome'], registers: r }),
    revocationsTotal: new Counter({ name: 'vigil_revocations_total', help: 'Revocations received, by kind (subject, jti)', labelNames: ['kind'], registers: r }),
    tokenExpiriesTotal: new Counter({ name: 'vigil_token_expiries_total', help: 'Connections whose token expired, by action taken', labelNames: ['action'], registers: r }),
    reauthTotal: new Counter({ name: 'vigil_reauth_total', help: 'MQTT 5 re-authentications by outcome', labelNames: ['outcome'], registers: r }),

    // --- wills ---
    willsRegisteredTotal: new Counter({ name: 'vigil_wills_registered_total', help: 'Wills stored at CONNECT', registers: r }),
    willsFiredTotal: new Counter({ name: 'vigil_wills_fired_total', help: 'Wills published', registers: r }),
    willsDeniedTotal: new Counter({ name: 'vigil_wills_denied_total', help: 'Wills not published, by reason', labelNames: ['reason'], registers: r }),
    unhandledErrorsTotal: new Counter({ name: 'vigil_unhandled_errors_total', help: 'Promise rejections no code handled (a bug): logged with their stack, the broker goes on', labelNames: ['kind'], registers: r }),
    willRetriesTotal: new Counter({ name: 'vigil_will_retries_total', help: 'Wills routed again because a QoS 1/2 copy could not be stored (a journal or another node\'s bus stream: Redis failing over, routes resyncing); one that still fails after 60 s counts in vigil_messages_dropped_total{reason="will_not_stored"}', registers: r }),
    willsCancelledTotal: new Counter({ name: 'vigil_wills_cancelled_total', help: 'Wills discarded without publishing, by cause (normal, reconnect)', labelNames: ['cause'], registers: r }),
    willsPending: new Gauge({ name: 'vigil_wills_pending', help: 'Wills waiting for their delay to end', registers: r }),
    willFireLatencySeconds: new Histogram({ name: 'vigil_will_fire_latency_seconds', help: 'Time from the holding node\'s death to the will being published', buckets: [0.1, 0.5, 1, 2, 3, 4, 5, 7.5, 10, 30], registers: r }),

    // --- cluster ---
    clusterNodes: new Gauge({ name: 'vigil_cluster_nodes', help: 'Live nodes seen in the cluster', registers: r }),
    leaseRenewalsTotal: new Counter({ name: 'vigil_lease_renewals_total', help: 'Lease renewals by outcome', labelNames: ['outcome'], registers: r }),
    sessionCheckpointsTotal: new Counter({ name: 'vigil_session_checkpoints_total', help: 'Persistent sessions saved whole after journal writes failed (Redis trouble)', registers: r }),
    crossNodeMessagesTotal: new Counter({ name: 'vigil_cross_node_messages_total', help: 'Messages forwarded between nodes, by direction', labelNames: ['direction'], registers: r }),
    redisCommandSeconds: new Histogram({ name: 'vigil_redis_command_seconds', help: 'Redis command latency', labelNames: ['command'], buckets: [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5], registers: r }),
    redisErrorsTotal: new Counter({ name: 'vigil_redis_errors_total', help: 'Redis errors by kind', labelNames: ['kind'], registers: r }),
    redisWaitTimeoutsTotal: new Counter({ name: 'vigil_redis_wait_timeouts_total', help: 'Redis WAITs that did not confirm VIGIL_REDIS_WAIT_REPLICAS replicas in time, or whose connection changed: the writes they covered were not acknowledged', registers: r }),

    // --- limits ---
    limitHitsTotal: new Counter({ name: 'vigil_limit_hits_total', help: 'Times a configured limit refused or cut something, by limit', labelNames: ['limit'], registers: r }),
  };
  return {
    ...m,
    /**
     * vigil_connect_outcomes_total{code="success"} per protocol level, bound once: the
     * two-label lookup on every accepted CONNECT was measurable in a connect storm.
     */
    connectAccepted: {
      3: m.connectOutcomesTotal.bind({ code: 'success', version: '3' }),
      4: m.connectOutcomesTotal.bind({ code: 'success', version: '4' }),
      5: m.connectOutcomesTotal.bind({ code: 'success', version: '5' }),
    },
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
