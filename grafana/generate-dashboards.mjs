#!/usr/bin/env node
// Writes grafana/dashboards/*.json from the panel lists below, so the dashboards stay small to
// review and consistent. Run: node grafana/generate-dashboards.mjs  (then commit the JSON).
// test/integration/deploy-config.test.ts checks every query against the metrics Vigil exports.
import { writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const DS = { type: 'prometheus', uid: 'vigil-prometheus' };
const NODE = 'node=~"$node"';
const W = '$__rate_interval';

/** t(expr, legend) → a Prometheus target */
const t = (expr, legendFormat = '') => ({ expr, legendFormat });

/** Panels are laid out left to right, 24 columns wide; `w` is the width, rows wrap. */
const DASHBOARDS = [
  {
    file: 'vigil-overview.json',
    uid: 'vigil-overview',
    title: 'Vigil / Overview',
    description: 'Connections, throughput, latency and errors of every Vigil node.',
    rows: [
      {
        title: 'Connections',
        panels: [
          { type: 'stat', title: 'Open connections', w: 4, unit: 'short', desc: 'MQTT connections open now, all nodes and listeners.', targets: [t(`sum(vigil_connections_current{${NODE}})`)] },
          { type: 'stat', title: 'Sessions online / offline', w: 4, unit: 'short', desc: 'Sessions with a live connection, and persistent sessions waiting for their client.', targets: [t(`sum by (state) (vigil_sessions_current{${NODE}})`, '{{state}}')] },
          { title: 'Connections by node and listener', w: 8, unit: 'short', desc: 'Open connections per node and listener (tcp, tls, ws). An uneven spread means the load balancer or clients stick to one node.', targets: [t(`sum by (node, listener) (vigil_connections_current{${NODE}})`, '{{node}} {{listener}}')] },
          { title: 'Connection rate', w: 8, unit: 'ops', desc: 'Sockets accepted per second, by listener, and connections closed per second, by reason. A reconnect storm shows here first.', targets: [t(`sum by (listener) (rate(vigil_connections_opened_total{${NODE}}[${W}]))`, 'opened {{listener}}'), t(`sum by (reason) (rate(vigil_connections_closed_total{${NODE}}[${W}]))`, 'closed {{reason}}')] },
          { title: 'CONNECT outcomes', w: 12, unit: 'ops', desc: 'CONNACK results per second by reason (success, bad_username_or_password, not_authorized, server_busy, ...) and protocol version (4 = 3.1.1, 5 = 5.0).', targets: [t(`sum by (code, version) (rate(vigil_connect_outcomes_total{${NODE}}[${W}]))`, '{{code}} v{{version}}')] },
          { title: 'Takeovers', w: 12, unit: 'ops', desc: 'A second connection with the same client id took the session over (local: same node; cluster: from another node). A steady rate usually means two devices share a client id.', targets: [t(`sum by (scope) (rate(vigil_takeovers_total{${NODE}}[${W}]))`, '{{scope}}')] },
        ],
      },
      {
        title: 'Throughput',
        panels: [
          { title: 'Messages in / out', w: 12, unit: 'ops', desc: 'PUBLISH packets received from clients and sent to clients per second, by QoS. Out above in is fan-out.', targets: [t(`sum by (qos) (rate(vigil_messages_in_total{${NODE}}[${W}]))`, 'in qos {{qos}}'), t(`sum by (qos) (rate(vigil_messages_out_total{${NODE}}[${W}]))`, 'out qos {{qos}}')] },
          { title: 'Bytes in / out', w: 12, unit: 'Bps', desc: 'Bytes read from and written to client sockets per second.', targets: [t(`sum(rate(vigil_bytes_in_total{${NODE}}[${W}]))`, 'in'), t(`sum(rate(vigil_bytes_out_total{${NODE}}[${W}]))`, 'out')] },
          { title: 'Dropped messages', w: 8, unit: 'ops', desc: 'Messages not delivered, by reason: offline_qos0 / backpressure_qos0 (QoS 0 to an offline or slow client), queue_full / queue_bytes_full / queue_budget_full (a session queue or the node budget full), expired, too_large, not_authorized (a publish the ACL denied, or a delivery the subscriber may not receive).', targets: [t(`sum by (reason) (rate(vigil_messages_dropped_total{${NODE}}[${W}]))`, '{{reason}}')] },
          { title: 'Queued and in-flight', w: 8, unit: 'short', desc: 'Messages waiting in session queues, and outgoing QoS 1/2 messages not yet acknowledged. Growing without bound means consumers cannot keep up.', targets: [t(`sum(vigil_queued_messages{${NODE}})`, 'queued'), t(`sum(vigil_inflight_messages{${NODE}})`, 'in flight')] },
          { title: 'Subscriptions and retained', w: 8, unit: 'short', desc: 'Subscriptions held by sessions per node, and retained messages stored.', targets: [t(`sum by (node) (vigil_subscriptions_current{${NODE}})`, 'subscriptions {{node}}'), t(`max(vigil_retained_messages{${NODE}})`, 'retained')] },
        ],
      },
      {
        title: 'Latency',
        panels: [
          { title: 'Event loop lag p99', w: 8, unit: 's', desc: 'Node.js event loop delay, 99th percentile, per node. Every packet waits this long at worst; above ~50 ms the node is saturated.', targets: [t(`max by (node) (vigil_nodejs_eventloop_lag_p99_seconds{${NODE}})`, '{{node}}')] },
          { title: 'Token verification latency', w: 8, unit: 's', desc: 'Time to verify a JWT in the auth pool (p50, p99), and the time a task waited for a worker (p99). Waiting time growing means VIGIL_AUTH_WORKERS is too small.', targets: [t(`histogram_quantile(0.5, sum by (le) (rate(vigil_auth_verify_seconds_bucket{${NODE}}[${W}])))`, 'verify p50'), t(`histogram_quantile(0.99, sum by (le) (rate(vigil_auth_verify_seconds_bucket{${NODE}}[${W}])))`, 'verify p99'), t(`histogram_quantile(0.99, sum by (le) (rate(vigil_auth_pool_wait_seconds_bucket{${NODE}}[${W}])))`, 'pool wait p99')] },
          { title: 'Redis command latency p99', w: 8, unit: 's', desc: 'Cluster mode: 99th percentile of Redis command time, all commands. Details per command on the Cluster dashboard.', targets: [t(`histogram_quantile(0.99, sum by (le) (rate(vigil_redis_command_seconds_bucket{${NODE}}[${W}])))`, 'p99')] },
        ],
      },
      {
        title: 'Errors and limits',
        panels: [
          { title: 'Protocol errors', w: 8, unit: 'ops', desc: 'Connections closed for a protocol violation or malformed packet, by reason. A client bug or a scanner.', targets: [t(`sum by (reason) (rate(vigil_protocol_errors_total{${NODE}}[${W}]))`, '{{reason}}')] },
          { title: 'Refused before CONNECT', w: 8, unit: 'ops', desc: 'Sockets refused before CONNECT, by reason: max_connections, tls_handshake (bad or missing client certificate), ws_subprotocol.', targets: [t(`sum by (reason) (rate(vigil_connections_refused_total{${NODE}}[${W}]))`, '{{reason}}')] },
          { title: 'Limit hits', w: 8, unit: 'ops', desc: 'Times a configured limit refused or cut something (max_connections, max_packet_size, max_queued, connect_timeout, ...). Each limit is a VIGIL_* setting.', targets: [t(`sum by (limit) (rate(vigil_limit_hits_total{${NODE}}[${W}]))`, '{{limit}}')] },
        ],
      },
      {
        title: 'Process',
        panels: [
          { title: 'Resident memory', w: 8, unit: 'bytes', desc: 'Resident set size per node process, and the V8 heap in use.', targets: [t(`vigil_process_resident_memory_bytes{${NODE}}`, 'rss {{node}}'), t(`vigil_nodejs_heap_size_used_bytes{${NODE}}`, 'heap {{node}}')] },
          { title: 'CPU', w: 8, unit: 'percentunit', desc: 'CPU time used per second per node (1 = one core). Vigil runs the protocol on one thread; token verification runs in worker threads.', targets: [t(`rate(vigil_process_cpu_seconds_total{${NODE}}[${W}])`, '{{node}}')] },
          { title: 'Open file descriptors', w: 8, unit: 'short', desc: 'File descriptors per node against the process limit: every connection takes one.', targets: [t(`vigil_process_open_fds{${NODE}}`, 'open {{node}}'), t(`vigil_process_max_fds{${NODE}}`, 'max {{node}}')] },
        ],
      },
    ],
  },
  {
    file: 'vigil-identity-wills.json',
    uid: 'vigil-identity-wills',
    title: 'Vigil / Identity and wills',
    description: "Why didn't my will fire? Will outcomes by reason, authentication failures, JWKS state and revocations.",
    rows: [
      {
        title: 'Wills',
        panels: [
          { type: 'stat', title: 'Wills pending', w: 4, unit: 'short', desc: 'Wills waiting for their Will Delay Interval (or the 3.1.1 grace) to end. Each is published, or denied with a reason, when the delay ends.', targets: [t(`sum(vigil_wills_pending{${NODE}})`)] },
          { type: 'bargauge', title: 'Wills not published, by reason (range)', w: 8, unit: 'short', desc: 'The answer to "why didn\'t my will fire": wills denied at fire time over the selected range, by reason (revoked = subject or jti revoked; no_grant / deny_rule = the policy in force now does not allow the will topic; authorization_error). For one client, use GET /admin/wills/{clientId}/explain.', targets: [t(`sum by (reason) (increase(vigil_wills_denied_total{${NODE}}[$__range]))`, '{{reason}}')] },
          { title: 'Will outcomes', w: 12, unit: 'ops', desc: 'Wills registered at CONNECT, published, denied (by reason) and discarded without publishing, by cause (reconnect: the client came back before the delay ended; normal: a normal DISCONNECT discarded it); routed again: a will whose QoS 1/2 copy for another node or a persistent session could not be stored when it fired (Redis failing over), retried for up to 60 s (then counted in vigil_messages_dropped_total{reason=\"will_not_stored\"}).', targets: [t(`sum(rate(vigil_wills_registered_total{${NODE}}[${W}]))`, 'registered'), t(`sum(rate(vigil_wills_fired_total{${NODE}}[${W}]))`, 'published'), t(`sum by (reason) (rate(vigil_wills_denied_total{${NODE}}[${W}]))`, 'denied {{reason}}'), t(`sum by (cause) (rate(vigil_wills_cancelled_total{${NODE}}[${W}]))`, 'cancelled {{cause}}'), t(`sum(rate(vigil_will_retries_total{${NODE}}[${W}]))`, 'routed again (a copy not stored)')] },
          { title: 'Will fire latency after node death', w: 12, unit: 's', desc: "Cluster: time from the holding node's death to its wills being published by another node (p50, p99). Bounded by VIGIL_NODE_TIMEOUT_MS plus the delay.", targets: [t(`histogram_quantile(0.5, sum by (le) (rate(vigil_will_fire_latency_seconds_bucket{${NODE}}[${W}])))`, 'p50'), t(`histogram_quantile(0.99, sum by (le) (rate(vigil_will_fire_latency_seconds_bucket{${NODE}}[${W}])))`, 'p99')] },
        ],
      },
      {
        title: 'Authentication',
        panels: [
          { title: 'Authentication failures by reason', w: 12, unit: 'ops', desc: 'Refused authentications per second by reason (expired, unknown_kid, bad_signature, revoked, issuer, audience, server_busy, jwks_unavailable, ...). unknown_kid right after a key rotation means the JWKS was not refreshed yet.', targets: [t(`sum by (reason) (rate(vigil_auth_verifications_total{outcome!="allowed", ${NODE}}[${W}]))`, '{{reason}}')] },
          { title: 'Authentications allowed', w: 6, unit: 'ops', desc: 'Successful authentications per second by how (verified token, cache, anonymous), and CONNECTs answered from the verified-token cache.', targets: [t(`sum by (reason) (rate(vigil_auth_verifications_total{outcome="allowed", ${NODE}}[${W}]))`, '{{reason}}'), t(`sum(rate(vigil_auth_token_cache_hits_total{${NODE}}[${W}]))`, 'token cache hits')] },
          { title: 'Re-authentication and token expiry', w: 6, unit: 'ops', desc: 'MQTT 5 re-authentications by outcome, and live connections whose token expired, by the action taken (VIGIL_TOKEN_EXPIRY).', targets: [t(`sum by (outcome) (rate(vigil_reauth_total{${NODE}}[${W}]))`, 'reauth {{outcome}}'), t(`sum by (action) (rate(vigil_token_expiries_total{${NODE}}[${W}]))`, 'expired: {{action}}')] },
          { title: 'Auth pool', w: 12, unit: 'short', desc: 'Tasks waiting for an auth worker (queue depth per node), CONNECT tokens in the admission queue (Server Busy past VIGIL_AUTH_ADMISSION_MAX) and tasks run per second by task.', targets: [t(`max by (node) (vigil_auth_pool_queue_depth{${NODE}})`, 'queue {{node}}'), t(`max by (node) (vigil_auth_admission_waiting{${NODE}})`, 'admission {{node}}'), t(`sum by (task) (rate(vigil_auth_pool_tasks_total{${NODE}}[${W}]))`, '{{task}}/s')] },
        ],
      },
      {
        title: 'Keys, policy and revocations',
        panels: [
          { title: 'JWKS keys', w: 6, unit: 'short', desc: 'Keys known per node, by state: active (in the key set) and retired (removed, still verifying during VIGIL_JWKS_RETIRED_GRACE_S). Nodes disagreeing means one failed to refresh.', targets: [t(`max by (node, state) (vigil_jwks_keys{${NODE}})`, '{{node}} {{state}}')] },
          { title: 'JWKS refreshes', w: 6, unit: 'ops', desc: 'JWKS loads by trigger (start, interval, unknown_kid, ...) and outcome (ok, not_modified, error). Errors with a stale key set lead to unknown_kid failures.', targets: [t(`sum by (trigger, outcome) (rate(vigil_jwks_refreshes_total{${NODE}}[${W}]))`, '{{trigger}} {{outcome}}')] },
          { title: 'Revocations', w: 6, unit: 'short', desc: 'Revocations received over the range, by kind (subject, jti), from the admin API or another node.', targets: [t(`sum by (kind) (increase(vigil_revocations_total{${NODE}}[$__range]))`, '{{kind}}')] },
          { title: 'ACL', w: 6, unit: 'ops', desc: 'Authorization denials by action (publish, subscribe), policy reloads by outcome, and the verdict cache hit ratio.', targets: [t(`sum by (action) (rate(vigil_acl_denies_total{${NODE}}[${W}]))`, 'denied {{action}}'), t(`sum by (outcome) (rate(vigil_acl_reloads_total{${NODE}}[${W}]))`, 'reload {{outcome}}'), t(`sum(rate(vigil_acl_verdict_cache_total{result="hit", ${NODE}}[${W}])) / sum(rate(vigil_acl_verdict_cache_total{${NODE}}[${W}]))`, 'cache hit ratio')] },
        ],
      },
    ],
  },
  {
    file: 'vigil-cluster.json',
    uid: 'vigil-cluster',
    title: 'Vigil / Cluster',
    description: 'Cluster membership, takeovers, cross-node traffic and Redis.',
    rows: [
      {
        title: 'Membership',
        panels: [
          { type: 'stat', title: 'Live nodes (as seen by each node)', w: 6, unit: 'short', desc: 'vigil_cluster_nodes per node: the live nodes each node sees in Redis. All nodes should show the same number; a lower one on some node is a partition.', targets: [t(`min(vigil_cluster_nodes{${NODE}})`, 'min'), t(`max(vigil_cluster_nodes{${NODE}})`, 'max')] },
          { type: 'stat', title: 'Nodes scraped', w: 6, unit: 'short', desc: 'Nodes Prometheus currently scrapes (each exports its start time).', targets: [t(`count(vigil_process_start_time_seconds{${NODE}})`)] },
          { title: 'Lease renewals', w: 12, unit: 'ops', desc: 'Lease renewals by outcome. A failed or late renewal makes the other nodes take this node for dead after VIGIL_NODE_TIMEOUT_MS, and fire its wills.', targets: [t(`sum by (node, outcome) (rate(vigil_lease_renewals_total{${NODE}}[${W}]))`, '{{node}} {{outcome}}')] },
        ],
      },
      {
        title: 'Traffic',
        panels: [
          { title: 'Cross-node messages', w: 12, unit: 'ops', desc: 'Messages forwarded between nodes per second, by node and direction (out: sent to other nodes; in: received from them).', targets: [t(`sum by (node, direction) (rate(vigil_cross_node_messages_total{${NODE}}[${W}]))`, '{{node}} {{direction}}')] },
          { title: 'Takeovers by scope', w: 12, unit: 'ops', desc: 'Session takeovers: local (both connections on one node) or cluster (the session moved from another node).', targets: [t(`sum by (node, scope) (rate(vigil_takeovers_total{${NODE}}[${W}]))`, '{{node}} {{scope}}')] },
          { title: 'Connections per node', w: 12, unit: 'short', desc: 'Open connections per node: the balance the load balancer achieves.', targets: [t(`sum by (node) (vigil_connections_current{${NODE}})`, '{{node}}')] },
          { title: 'Sessions per node', w: 12, unit: 'short', desc: 'Sessions per node by state.', targets: [t(`sum by (node, state) (vigil_sessions_current{${NODE}})`, '{{node}} {{state}}')] },
        ],
      },
      {
        title: 'Redis',
        panels: [
          { title: 'Redis command latency p99 by command', w: 12, unit: 's', desc: '99th percentile Redis latency per command (script:* are the Lua scripts). Every session change and forward waits on these.', targets: [t(`histogram_quantile(0.99, sum by (le, command) (rate(vigil_redis_command_seconds_bucket{${NODE}}[${W}])))`, '{{command}}')] },
          { title: 'Redis commands per second', w: 6, unit: 'ops', desc: 'Redis commands per second by command.', targets: [t(`sum by (command) (rate(vigil_redis_command_seconds_count{${NODE}}[${W}]))`, '{{command}}')] },
          { title: 'Redis errors', w: 6, unit: 'ops', desc: 'Redis errors per second by kind (connection, timeout, script, ...).', targets: [t(`sum by (node, kind) (rate(vigil_redis_errors_total{${NODE}}[${W}]))`, '{{node}} {{kind}}')] },
          { title: 'Session checkpoints', w: 12, unit: 'ops', desc: 'Persistent sessions saved whole because some of their Redis writes failed (Redis away, lease lost): non-zero only around Redis trouble, and back to zero once Redis answers.', targets: [t(`sum by (node) (rate(vigil_session_checkpoints_total{${NODE}}[${W}]))`, '{{node}}')] },
        ],
      },
    ],
  },
];

function panelJson(p, id, gridPos) {
  const base = {
    id,
    type: p.type ?? 'timeseries',
    title: p.title,
    description: p.desc,
    datasource: DS,
    gridPos,
    targets: p.targets.map((tg, i) => ({ datasource: DS, refId: String.fromCharCode(65 + i), expr: tg.expr, legendFormat: tg.legendFormat || '__auto', range: true })),
    fieldConfig: { defaults: { unit: p.unit ?? 'short' }, overrides: [] },
  };
  if (base.type === 'timeseries') {
    base.fieldConfig.defaults.custom = { drawStyle: 'line', lineWidth: 1, fillOpacity: 10, showPoints: 'never', spanNulls: true };
    base.options = { legend: { displayMode: 'list', placement: 'bottom', showLegend: true }, tooltip: { mode: 'multi', sort: 'desc' } };
  } else if (base.type === 'stat') {
    base.options = { reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false }, colorMode: 'value', graphMode: 'area', textMode: 'auto' };
  } else if (base.type === 'bargauge') {
    base.options = { reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false }, orientation: 'horizontal', displayMode: 'basic', showUnfilled: true };
    for (const tg of base.targets) tg.instant = true;
  }
  return base;
}

function dashboardJson(d) {
  const panels = [];
  let id = 1;
  let y = 0;
  for (const row of d.rows) {
    panels.push({ id: id++, type: 'row', title: row.title, collapsed: false, gridPos: { h: 1, w: 24, x: 0, y }, panels: [] });
    y += 1;
    let x = 0;
    for (const p of row.panels) {
      const h = p.type === 'stat' ? 6 : 8;
      if (x + p.w > 24) {
        x = 0;
        y += 8;
      }
      panels.push(panelJson(p, id++, { h, w: p.w, x, y }));
      x += p.w;
    }
    y += 8;
  }
  return {
    uid: d.uid,
    title: d.title,
    description: d.description,
    tags: ['vigil', 'mqtt'],
    timezone: 'browser',
    schemaVersion: 39,
    version: 1,
    editable: true,
    graphTooltip: 1,
    refresh: '10s',
    time: { from: 'now-1h', to: 'now' },
    links: [{ title: 'Vigil dashboards', type: 'dashboards', tags: ['vigil'], asDropdown: true, includeVars: true, keepTime: true }],
    templating: {
      list: [
        {
          name: 'node',
          label: 'Node',
          type: 'query',
          datasource: DS,
          query: { query: 'label_values(vigil_process_start_time_seconds, node)', refId: 'nodes' },
          definition: 'label_values(vigil_process_start_time_seconds, node)',
          refresh: 2,
          includeAll: true,
          multi: true,
          allValue: '.*',
          current: { selected: true, text: ['All'], value: ['$__all'] },
          sort: 1,
        },
      ],
    },
    annotations: { list: [] },
    panels,
  };
}

/** Markdown list of every dashboard and panel, for docs/operate.md. */
function markdown() {
  const out = [];
  for (const d of DASHBOARDS) {
    out.push(`#### ${d.title} (\`grafana/dashboards/${d.file}\`)\n\n${d.description}\n`);
    for (const row of d.rows) {
      out.push(`*${row.title}*\n`);
      for (const p of row.panels) out.push(`- **${p.title}**: ${p.desc}`);
      out.push('');
    }
  }
  return out.join('\n');
}

if (process.argv.includes('--markdown')) {
  process.stdout.write(markdown());
} else {
  const dir = join(here, 'dashboards');
  mkdirSync(dir, { recursive: true });
  for (const d of DASHBOARDS) writeFileSync(join(dir, d.file), JSON.stringify(dashboardJson(d), null, 2) + '\n');
  process.stdout.write(`wrote ${DASHBOARDS.map((d) => d.file).join(', ')}\n`);
}
