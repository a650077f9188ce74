// Turning run results into medians, ratios, goal verdicts, a console table, a Markdown
// report and an SVG chart. Pure functions of the summary object built by run.mjs.
import { LABEL } from './brokers.mjs';

export function median(values) {
  const v = values.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

/** Median of every numeric field over a broker's successful runs. */
export function medians(runs) {
  const keys = new Set(runs.flatMap((r) => Object.keys(r)));
  const out = {};
  for (const k of keys) {
    const vals = runs.map((r) => r[k]).filter((x) => typeof x === 'number');
    if (vals.length) out[k] = median(vals);
  }
  return out;
}

const fmtInt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

export function fmt(value, unit) {
  if (value === undefined || value === null || !Number.isFinite(value)) return '—';
  if (unit === 'ms') return value >= 100 ? `${fmtInt.format(value)} ms` : `${value.toFixed(value >= 10 ? 1 : 2)} ms`;
  if (unit === '%') return `${value.toFixed(0)} %`;
  if (unit === 'B/conn') return `${fmtInt.format(value)} B`;
  return `${fmtInt.format(value)}${unit ? ` ${unit}` : ''}`;
}

export function ratio(a, b) {
  return Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? a / b : NaN;
}

const fmtRatio = (r) => (Number.isFinite(r) ? `${r.toFixed(2)}×` : '—');

/** Rows per scenario: headline metric, latency, CPU; each with a value per broker. */
export function tableRows(summary) {
  const rows = [];
  for (const s of summary.scenarios) {
    if (s.skipped) {
      rows.push({ scenario: s.id, metric: `skipped: ${s.skipped}`, values: {}, ratios: false });
      continue;
    }
    const m = (b) => s.results[b]?.median ?? {};
    const scale = s.metric.scale ?? 1;
    const unit = s.metric.unit;
    const first = rows.length;
    rows.push({ scenario: s.id, metric: `${s.metric.key === 'p99Us' ? 'p99' : s.metric.unit}${s.metric.higherIsBetter ? '' : ' (lower better)'}`, values: byBroker(summary, (b) => m(b)[s.metric.key] * scale), unit, ratios: true });
    if (s.metric.key !== 'p99Us' && m(summary.brokers.find((b) => s.results[b]))?.p50Us !== undefined) {
      rows.push({ scenario: '', metric: 'p50 latency', values: byBroker(summary, (b) => m(b).p50Us / 1000), unit: 'ms', ratios: true });
      rows.push({ scenario: '', metric: 'p99 latency', values: byBroker(summary, (b) => m(b).p99Us / 1000), unit: 'ms', ratios: true });
    } else if (s.metric.key === 'p99Us') {
      rows.push({ scenario: '', metric: 'p50', values: byBroker(summary, (b) => m(b).p50Us / 1000), unit: 'ms', ratios: false });
    }
    if (s.id === 'jwt-storm') {
      rows.push({ scenario: '', metric: 'raw RS256 verify/s', values: byBroker(summary, (b) => m(b).verifyPerSec), unit: '', ratios: false });
    }
    if (s.id.endsWith('connect-storm') || s.id === 'jwt-storm' || s.id === 'bare-node-floor') {
      rows.push({ scenario: '', metric: 'broker CPU µs / connection', values: byBroker(summary, (b) => m(b).brokerUsPerConn), unit: 'µs', ratios: false });
      rows.push({ scenario: '', metric: '… of which user', values: byBroker(summary, (b) => m(b).brokerUserUsPerConn), unit: 'µs', ratios: false });
      rows.push({ scenario: '', metric: '… of which kernel', values: byBroker(summary, (b) => m(b).brokerSystemUsPerConn), unit: 'µs', ratios: false });
      if (summary.brokers.some((b) => Number.isFinite(m(b).redisUsPerConn))) {
        rows.push({ scenario: '', metric: 'Redis CPU µs / connection (generator CPU)', values: byBroker(summary, (b) => m(b).redisUsPerConn), unit: 'µs', ratios: false });
      }
    }
    if (s.id === 'fleet-reconnect') {
      rows.push({ scenario: '', metric: 'all connected after', values: byBroker(summary, (b) => m(b).allConnectedMs), unit: 'ms', ratios: false });
      rows.push({ scenario: '', metric: 'node B RSS (fleet connected)', values: byBroker(summary, (b) => m(b).rssMb), unit: 'MB', ratios: false });
      rows.push({ scenario: '', metric: 'accept queue overflows (kernel; SYN retried after 1 s, 3 s)', values: byBroker(summary, (b) => m(b).listenOverflows), unit: '', ratios: false });
    }
    if (s.id.endsWith('-sweep')) {
      rows.push({ scenario: '', metric: 'best window', values: byBroker(summary, (b) => m(b).bestWindow), unit: '', ratios: false });
      rows.push({ scenario: '', metric: 'generator CPU, max over windows', values: byBroker(summary, (b) => m(b).genCpuMaxPct), unit: '%', ratios: false });
    }
    if (s.id === 'retained-snapshot') {
      // a broker that truncates the snapshot finishes sooner: the time alone would rank it first
      rows.push({ scenario: '', metric: 'messages received', values: byBroker(summary, (b) => m(b).received), unit: '', ratios: false });
      rows.push({ scenario: '', metric: 'peak RSS', values: byBroker(summary, (b) => m(b).peakRssMb), unit: 'MB', ratios: false });
    }
    if (s.id === 'idle-memory') {
      rows.push({ scenario: '', metric: 'RSS at 10k conns', values: byBroker(summary, (b) => m(b).rssMb), unit: 'MB', ratios: false });
    }
    rows.push({ scenario: '', metric: 'broker CPU', values: byBroker(summary, (b) => m(b).brokerCpuPct), unit: '%', ratios: false });
    rows.push({ scenario: '', metric: 'generator CPU', values: byBroker(summary, (b) => m(b).genCpuPct), unit: '%', ratios: false });
    if (summary.brokers.some((b) => m(b).otherLoadPct >= 10)) {
      rows.push({ scenario: '', metric: 'OTHER LOAD (not bench)', values: byBroker(summary, (b) => m(b).otherLoadPct), unit: '%', ratios: false });
    }
    // every ratio of a scenario is against the Mosquitto setting with the better headline
    const ref = mosquittoRef(summary, s.id);
    for (let i = first; i < rows.length; i++) rows[i].mosquitto = ref;
    for (const b of summary.brokers) {
      const r = s.results[b];
      if (r && r.errors.length && !r.runs.length) rows.push({ scenario: '', metric: `${LABEL[b]} failed: ${r.errors[0].split('\n')[0].slice(0, 90)}`, values: {}, ratios: false });
    }
  }
  return rows;
}

/**
 * Which Mosquitto a scenario's ratios use: `mosquitto` (set_tcp_nodelay true), or
 * `mosquitto-nagle` (its default) when that was run too and did better on the headline metric.
 */
export function mosquittoRef(summary, id) {
  const s = summary.scenarios.find((x) => x.id === id);
  if (!s || s.skipped) return 'mosquitto';
  const head = (b) => s.results[b]?.median?.[s.metric.key];
  const a = head('mosquitto');
  const n = head('mosquitto-nagle');
  if (!Number.isFinite(n)) return 'mosquitto';
  if (!Number.isFinite(a)) return 'mosquitto-nagle';
  return (s.metric.higherIsBetter ? n > a : n < a) ? 'mosquitto-nagle' : 'mosquitto';
}

const hasMosquitto = (cols) => cols.includes('mosquitto') || cols.includes('mosquitto-nagle');

function byBroker(summary, f) {
  const out = {};
  for (const b of summary.brokers) out[b] = f(b);
  return out;
}

export function consoleTable(summary) {
  const rows = tableRows(summary);
  const cols = summary.brokers;
  const showVA = cols.includes('vigil') && cols.includes('aedes');
  const showVM = cols.includes('vigil') && hasMosquitto(cols);
  const header = ['scenario', 'metric', ...cols.map((b) => LABEL[b]), ...(showVA ? ['V/Aedes'] : []), ...(showVM ? ['V/Mosq'] : [])];
  const lines = [header];
  for (const r of rows) {
    const cells = [r.scenario, r.metric];
    if (!Object.keys(r.values).length) {
      lines.push(cells);
      continue;
    }
    for (const b of cols) cells.push(fmt(r.values[b], r.unit));
    if (showVA) cells.push(r.ratios ? fmtRatio(ratio(r.values.vigil, r.values.aedes)) : '');
    if (showVM) cells.push(r.ratios ? fmtRatio(ratio(r.values.vigil, r.values[r.mosquitto ?? 'mosquitto'])) : '');
    lines.push(cells);
  }
  const widths = header.map((_, i) => Math.max(...lines.filter((l) => l.length === header.length).map((l) => String(l[i] ?? '').length)));
  return lines.map((l) => {
    if (l.length < header.length) return `${l[0].padEnd(widths[0])}  ${l[1]}`;
    return l.map((c, i) => (i < 2 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ');
  }).join('\n');
}

function get(summary, id, broker, key) {
  const s = summary.scenarios.find((x) => x.id === id);
  return s && !s.skipped ? s.results[broker]?.median?.[key] : undefined;
}

/** The issue's goals, each with the measured value and met / not met / n/a. */
export function goals(summary) {
  const g = [];
  // against the better of Mosquitto's two settings where both ran (the measured text says which)
  const refNote = (id) => (mosquittoRef(summary, id) === 'mosquitto-nagle' ? ' (vs Mosquitto with Nagle on, its better setting here)' : '');
  const vsMosq = (id, text, key, atLeast) => {
    const r = ratio(get(summary, id, 'vigil', key), get(summary, id, mosquittoRef(summary, id), key));
    g.push({ goal: text, measured: Number.isFinite(r) ? `${fmtRatio(r)}${refNote(id)}` : fmtRatio(r), status: verdict(r, (x) => x >= atLeast) });
  };
  vsMosq('qos0-pairs', 'QoS 0 pairs throughput ≥ 1.0× Mosquitto', 'msgsPerSec', 1.0);
  vsMosq('fanout', 'Fan-out throughput ≥ 1.0× Mosquitto', 'msgsPerSec', 1.0);
  vsMosq('qos1-pairs', 'QoS 1 pairs throughput ≥ 1.0× Mosquitto', 'msgsPerSec', 1.0);
  {
    const r = ratio(get(summary, 'qos1-pairs', 'vigil', 'p50Us'), get(summary, 'qos1-pairs', mosquittoRef(summary, 'qos1-pairs'), 'p50Us'));
    g.push({ goal: 'QoS 1 p50 latency ≤ 2× Mosquitto’s', measured: fmtRatio(r), status: verdict(r, (x) => x <= 2) });
  }
  vsMosq('connect-storm', 'Anonymous connect storm ≥ 0.5× Mosquitto', 'connectsPerSec', 0.5);
  {
    const r = get(summary, 'jwt-storm', 'vigil', 'ratioToVerify');
    const v = get(summary, 'jwt-storm', 'vigil', 'verifyPerSec');
    // bounded by the connect path itself: an anonymous storm on the same CPU, with no verify at
    // all, is shown beside it (when it is below 0.5× of the verify rate, no verifier can meet this)
    const anon = ratio(get(summary, 'connect-storm', 'vigil', 'connectsPerSec'), v);
    const bound = Number.isFinite(anon) ? `; the anonymous storm, no verify at all, is ${fmtRatio(anon)} of it` : '';
    g.push({ goal: 'JWT connect storm ≥ 0.5× raw RS256 verify rate', measured: Number.isFinite(r) ? `${fmtRatio(r)} (of ${fmt(v, 'verify/s')}${bound})` : '—', status: verdict(r, (x) => x >= 0.5) });
  }
  {
    const v = get(summary, 'idle-memory', 'vigil', 'bytesPerConn');
    const a = get(summary, 'idle-memory', 'aedes', 'bytesPerConn');
    const r = ratio(v, a);
    g.push({ goal: 'Idle memory per connection ≤ Aedes’s', measured: Number.isFinite(r) ? `${fmt(v, 'B/conn')} vs ${fmt(a, 'B/conn')} (${fmtRatio(r)})` : '—', status: verdict(r, (x) => x <= 1) });
  }
  {
    const r = ratio(get(summary, 'cluster-qos0', 'vigil', 'msgsPerSec'), get(summary, 'qos0-pairs', 'vigil', 'msgsPerSec'));
    // both nodes and Redis share the broker CPU here: what each costs per message says what a
    // node would carry on a core of its own (as in production), next to the ratio as measured
    const one = get(summary, 'qos0-pairs', 'vigil', 'cpuUsPerMsg');
    const per = ['vigil-a', 'vigil-b', 'redis'].map((p) => get(summary, 'cluster-qos0', 'vigil', `cpuUsPerMsg.${p}`));
    const own = [0, 1].map((i) => ratio(one, per[i]));
    const split = per.every(Number.isFinite) && Number.isFinite(one)
      ? `; CPU per message node A ${per[0].toFixed(1)} µs, node B ${per[1].toFixed(1)} µs, Redis ${per[2].toFixed(1)} µs, single node ${one.toFixed(1)} µs: each node on a core of its own would carry ${fmtRatio(own[0])} / ${fmtRatio(own[1])} of a single node`
      : '';
    g.push({ goal: 'Cross-node QoS 0 ≥ 0.5× single node', measured: `${fmtRatio(r)}${split}`, status: verdict(r, (x) => x >= 0.5) });
  }
  {
    const p99 = get(summary, 'will-failover', 'vigil', 'p99Us');
    const timeout = get(summary, 'will-failover', 'vigil', 'nodeTimeoutMs');
    const ms = Number.isFinite(p99) ? p99 / 1000 : NaN;
    g.push({ goal: 'Will failover p99 ≤ node timeout + 1 s', measured: Number.isFinite(ms) ? `${fmt(ms, 'ms')} (limit ${fmt(timeout + 1000, 'ms')})` : '—', status: verdict(ms, (x) => x <= timeout + 1000) });
  }
  {
    const p99 = get(summary, 'will-failover-fleet', 'vigil', 'p99Us');
    const timeout = get(summary, 'will-failover-fleet', 'vigil', 'nodeTimeoutMs');
    const wills = get(summary, 'will-failover-fleet', 'vigil', 'wills');
    const ms = Number.isFinite(p99) ? p99 / 1000 : NaN;
    g.push({ goal: 'Will failover of a fleet (10,000 wills) p99 ≤ node timeout + 1 s', measured: Number.isFinite(ms) ? `${fmt(wills, '')} wills, p99 ${fmt(ms, 'ms')} (limit ${fmt(timeout + 1000, 'ms')})` : '—', status: verdict(ms, (x) => x <= timeout + 1000) });
  }
  {
    const got = get(summary, 'retained-snapshot', 'vigil', 'received');
    const want = get(summary, 'retained-snapshot', 'vigil', 'topics');
    const last = get(summary, 'retained-snapshot', 'vigil', 'lastMessageMs');
    const rss = get(summary, 'retained-snapshot', 'vigil', 'peakRssMb');
    const r = ratio(got, want);
    g.push({ goal: 'Retained snapshot: a monitor gets every retained message (100,000 topics)', measured: Number.isFinite(r) ? `${fmt(got, '')}/${fmt(want, '')} in ${fmt(last, 'ms')}, peak RSS ${fmt(rss, 'MB')}` : '—', status: verdict(r, (x) => x >= 1) });
  }
  const measuredOn = [['qos0-pairs'], ['fanout'], ['qos1-pairs'], ['qos1-pairs'], ['connect-storm'], ['jwt-storm'], ['idle-memory'], ['cluster-qos0', 'qos0-pairs'], ['will-failover'], ['will-failover-fleet'], ['retained-snapshot']];
  measuredOn.forEach((ids, i) => (g[i].sources = ids));
  // fleet scale (issue 13): the connect path, cluster and JWT storms, the fleet, saturation
  {
    // each as total (user + kernel): how much of a broker's cost is its own user-space code
    const perConn = (scenario, broker, name) => {
      const total = get(summary, scenario, broker, 'brokerUsPerConn');
      if (!Number.isFinite(total)) return { total, text: '' };
      const user = get(summary, scenario, broker, 'brokerUserUsPerConn');
      const kernel = get(summary, scenario, broker, 'brokerSystemUsPerConn');
      const split = Number.isFinite(user) && Number.isFinite(kernel) ? ` (user ${user.toFixed(0)} + kernel ${kernel.toFixed(0)})` : '';
      return { total, text: `${name}${total.toFixed(0)} µs${split}` };
    };
    const vigil = perConn('connect-storm', 'vigil', '');
    const beside = [perConn('bare-node-floor', 'vigil', 'bare Node floor ').text, perConn('connect-storm', 'mosquitto', 'Mosquitto ').text].filter(Boolean).join('; ');
    g.push({ goal: 'Broker CPU per anonymous CONNECT ≤ 40 µs (one core)', measured: Number.isFinite(vigil.total) ? `${vigil.text}${beside ? `; ${beside}` : ''}` : '—', status: verdict(vigil.total, (x) => x <= 40) });
    g[g.length - 1].sources = ['connect-storm'];
  }
  {
    const r = ratio(get(summary, 'cluster-connect-storm', 'vigil', 'connectsPerSec'), get(summary, 'connect-storm', 'vigil', 'connectsPerSec'));
    g.push({ goal: 'Cluster node connect storm ≥ 0.5× single node', measured: fmtRatio(r), status: verdict(r, (x) => x >= 0.5) });
    g[g.length - 1].sources = ['cluster-connect-storm', 'connect-storm'];
  }
  {
    const r = ratio(get(summary, 'jwt-storm', 'vigil', 'connectsPerSec'), get(summary, 'connect-storm', 'vigil', 'connectsPerSec'));
    g.push({ goal: 'Distinct-token JWT storm ≥ 0.5× anonymous storm (same CPUs)', measured: fmtRatio(r), status: verdict(r, (x) => x >= 0.5) });
    g[g.length - 1].sources = ['jwt-storm', 'connect-storm'];
  }
  {
    const n = get(summary, 'fleet-reconnect', 'vigil', 'clients');
    const c = get(summary, 'fleet-reconnect', 'vigil', 'connected');
    const p50 = get(summary, 'fleet-reconnect', 'vigil', 'p50Us');
    const p99 = get(summary, 'fleet-reconnect', 'vigil', 'p99Us');
    const rss = get(summary, 'fleet-reconnect', 'vigil', 'rssMb');
    const ok = Number.isFinite(n) && Number.isFinite(c) ? (c >= n ? 1 : 0) : NaN;
    const overflows = get(summary, 'fleet-reconnect', 'vigil', 'listenOverflows');
    const somaxconn = get(summary, 'fleet-reconnect', 'vigil', 'somaxconn');
    // a tail made by the kernel's full accept queue (SYN retried 1 s, 3 s later), said as such
    const queue = overflows > 0 ? `; ${fmt(overflows, '')} connections overflowed the kernel's accept queue (net.core.somaxconn ${fmt(somaxconn, '')}) and retried their SYN` : '';
    const measured = Number.isFinite(n) ? `${fmt(c, '')}/${fmt(n, '')} CONNACKs, p50 ${fmt(p50 / 1000, 'ms')}, p99 ${fmt(p99 / 1000, 'ms')}, node RSS ${fmt(rss, 'MB')}${queue}` : '—';
    g.push({ goal: 'Fleet reconnect: every client (JWT, will, persistent session) gets a CONNACK from one cluster node', measured, status: verdict(ok, (x) => x === 1) });
    g[g.length - 1].sources = ['fleet-reconnect'];
  }
  for (const [id, name] of [['qos0-sweep', 'QoS 0'], ['qos1-sweep', 'QoS 1']]) {
    const v = get(summary, id, 'vigil', 'msgsPerSec');
    const ref = mosquittoRef(summary, id);
    const m = get(summary, id, ref, 'msgsPerSec');
    const r = ratio(v, m);
    const wv = get(summary, id, 'vigil', 'bestWindow');
    const wm = get(summary, id, ref, 'bestWindow');
    g.push({ goal: `${name} pairs at saturation (best window each) ≥ 1.0× Mosquitto`, measured: Number.isFinite(r) ? `${fmtRatio(r)} (Vigil best at ${wv}, ${LABEL[ref]} at ${wm})` : '—', status: verdict(r, (x) => x >= 1) });
    g[g.length - 1].sources = [id];
  }
  // issue 12: delivery-time authorization costs at most 10 % (same run, policy vs none)
  for (const [id, base, name] of [['qos0-pairs-acl', 'qos0-pairs', 'QoS 0 pairs'], ['fanout-acl', 'fanout', 'Fan-out']]) {
    const r = ratio(get(summary, id, 'vigil', 'msgsPerSec'), get(summary, base, 'vigil', 'msgsPerSec'));
    g.push({ goal: `${name} with a 10-role ACL ≥ 0.9× without (every delivery authorized)`, measured: fmtRatio(r), status: verdict(r, (x) => x >= 0.9) });
    g[g.length - 1].sources = [id, base];
  }
  // a goal names the scenarios it was measured on (goals without a list are never flagged)
  g.forEach((goal) => {
    goal.noisy = goal.status !== 'n/a' && (goal.sources ?? []).some((id) => {
      const s = summary.scenarios.find((x) => x.id === id);
      return s && !s.skipped && Object.values(s.results).some((r) => r.median?.otherLoadPct >= 10 || r.median?.genCpuPct > 85);
    });
  });
  return g;
}

function verdict(x, ok) {
  if (!Number.isFinite(x)) return 'n/a';
  return ok(x) ? 'met' : 'not met';
}

export function markdown(summary) {
  const m = summary.meta;
  const out = [];
  out.push(`# Vigil benchmark — ${m.date}`, '');
  if (m.incomplete) out.push(`> **Incomplete:** ${m.incomplete}.`, '');
  out.push(`Mode: ${m.quick ? '`--quick`' : 'full'}, ${m.runs} run(s) per broker per scenario in A B A B order (fresh broker process per run), medians shown. Total time ${Math.round(m.elapsedS)} s.`, '');
  out.push('## Machine', '');
  out.push('| | |', '|---|---|');
  for (const [k, v] of Object.entries(m.machine)) out.push(`| ${k} | ${v} |`);
  out.push('');
  out.push('## Brokers', '');
  for (const b of m.allBrokers) {
    const st = m.brokerStatus[b];
    out.push(`- **${LABEL[b]}** ${st.version ? `(${st.version})` : ''}: ${st.available ? 'benchmarked' : `not benchmarked — ${st.reason}`}`);
  }
  out.push(`- Cluster mode (Vigil + Redis): ${m.cluster.available ? 'available' : `skipped: ${m.cluster.reason}`}`);
  out.push('');
  out.push('## Goals', '');
  out.push('| goal | measured | status |', '|---|---|---|');
  for (const g of goals(summary)) {
    const status = g.status === 'met' ? '✅ met' : g.status === 'not met' ? '❌ not met' : 'n/a';
    out.push(`| ${g.goal} | ${g.measured} | ${status}${g.noisy ? ' (unreliable: busy machine or saturated generator, see below)' : ''} |`);
  }
  out.push('');
  out.push('## Results (medians)', '');
  const cols = summary.brokers;
  const showVA = cols.includes('vigil') && cols.includes('aedes');
  const showVM = cols.includes('vigil') && hasMosquitto(cols);
  const vmHead = cols.includes('mosquitto-nagle') ? 'Vigil/Mosquitto (better setting)' : 'Vigil/Mosquitto';
  out.push(`| scenario | metric | ${cols.map((b) => LABEL[b]).join(' | ')}${showVA ? ' | Vigil/Aedes' : ''}${showVM ? ` | ${vmHead}` : ''} |`);
  out.push(`|---|---|${cols.map(() => '---:').join('|')}${showVA ? '|---:' : ''}${showVM ? '|---:' : ''}|`);
  const width = 2 + cols.length + (showVA ? 1 : 0) + (showVM ? 1 : 0);
  for (const r of tableRows(summary)) {
    if (!Object.keys(r.values).length) {
      out.push(`| ${r.scenario} | ${r.metric} |${' |'.repeat(width - 2)}`);
      continue;
    }
    const cells = [r.scenario ? `**${r.scenario}**` : '', r.metric, ...cols.map((b) => fmt(r.values[b], r.unit))];
    if (showVA) cells.push(r.ratios ? fmtRatio(ratio(r.values.vigil, r.values.aedes)) : '');
    if (showVM) cells.push(r.ratios ? fmtRatio(ratio(r.values.vigil, r.values[r.mosquitto ?? 'mosquitto'])) : '');
    out.push(`| ${cells.join(' | ')} |`);
  }
  out.push('', '![chart](chart.svg)', '');
  const sweeps = summary.scenarios.filter((x) => x.id.endsWith('-sweep') && !x.skipped);
  if (sweeps.length) {
    out.push('## Saturation: window sweeps', '');
    out.push('Each broker process is driven at every window per publisher in turn (median of the runs per window). A broker whose throughput still rises at the largest window, or whose generator CPU is near 100 %, was not saturated.', '');
    for (const sw of sweeps) {
      out.push(`**${sw.title}**`, '', '| broker | window | msg/s | p50 | p99 | broker CPU | generator CPU |', '|---|---:|---:|---:|---:|---:|---:|');
      for (const b of cols) {
        const runs = sw.results[b]?.runs ?? [];
        if (!runs.length) continue;
        for (const w of runs[0].curve.map((c) => c.window)) {
          const at = runs.map((r) => r.curve.find((c) => c.window === w)).filter(Boolean);
          const med = medians(at);
          const best = w === sw.results[b].median.bestWindow ? ' (best)' : '';
          out.push(`| ${LABEL[b]} | ${w}${best} | ${fmt(med.msgsPerSec, '')} | ${fmt(med.p50Us / 1000, 'ms')} | ${fmt(med.p99Us / 1000, 'ms')} | ${fmt(med.brokerCpuPct, '%')} | ${fmt(med.genCpuPct, '%')} |`);
        }
      }
      out.push('');
    }
  }
  out.push('## Scenarios', '');
  for (const s of summary.scenarios) out.push(`- **${s.id}** — ${s.title}: ${s.what}.${s.skipped ? ` *Skipped: ${s.skipped}.*` : ''}`);
  out.push('');
  out.push('## Load generator headroom', '');
  if (m.generator === 'c') {
    out.push(`Generator: flow scenarios (qos0-pairs, qos1-pairs, fanout, fanin, cluster-qos0/1) use \`bench/gen/loadgen.c\`, one compiled single-threaded epoll process on CPU ${m.genCpus}; the other scenarios use ${m.workers} Node processes (raw \`net\` + mqtt-packet) on the same CPU. Brokers on CPU ${m.brokerCpus}. "generator CPU" is the generator's user+system CPU during the measured window as a share of one core (getrusage for the C tool, process.cpuUsage for Node); "broker CPU" the broker's own from /proc/<pid>/stat (it can exceed 100 % only if the broker CPU set has several cores).`, '');
  } else {
    out.push(`Generator: ${m.workers} Node processes on CPU ${m.genCpus} (raw \`net\` + mqtt-packet), brokers on CPU ${m.brokerCpus}. "generator CPU" is the generator processes' user+system CPU during the measured window as a share of one core (process.cpuUsage); "broker CPU" the broker's own from /proc/<pid>/stat (it can exceed 100 % only if the broker CPU set has several cores).`, '');
  }
  if (m.generatorNote) out.push(`Load generator: ${m.generatorNote}.`, '');
  out.push(`Load average when the bench started: ${m.loadAverageAtStart.toFixed(2)}. "other load" = busy time of the benchmark CPUs (/proc/stat) minus the broker's and the generator's own CPU time.`, '');
  const warnings = saturationWarnings(summary);
  if (warnings.length) for (const w of warnings) out.push(`- ⚠️ ${w}`);
  else out.push('- No run had the generator above 85 % of its core or other processes above 10 % of a core: the brokers, not the generator or the machine, set these numbers.');
  out.push('');
  out.push('## All runs', '');
  out.push('| scenario | broker | run | headline | p50 | p99 | broker CPU | generator CPU | other load | notes |', '|---|---|---:|---:|---:|---:|---:|---:|---:|---|');
  for (const s of summary.scenarios) {
    if (s.skipped) continue;
    for (const b of cols) {
      const r = s.results[b];
      if (!r) continue;
      r.all.forEach((run, i) => {
        if (run.error) {
          out.push(`| ${s.id} | ${LABEL[b]} | ${i + 1} | failed | | | | | | ${run.error.split('\n')[0].replace(/\|/g, '/')} |`);
          return;
        }
        const scale = s.metric.scale ?? 1;
        const notes = [];
        if (run.stalls) notes.push(`${run.stalls} window stalls (QoS 0 drops)`);
        if (run.refused) notes.push(`${run.refused} refused`);
        if (run.errors) notes.push(`${run.errors} socket errors`);
        if (run.tokensRanOut) notes.push('tokens ran out before the window ended (raise jwtTokens)');
        if (Number.isFinite(run.received) && Number.isFinite(run.topics) && run.received < run.topics) notes.push(`received ${fmtInt.format(run.received)} of ${fmtInt.format(run.topics)} (the time is to the last that came)`);
        if (Number.isFinite(run.publishedPerSec) && run.publishedPerSec > 0 && s.id !== 'fanout') {
          const lost = 1 - run.msgsPerSec / run.publishedPerSec;
          if (lost > 0.01) notes.push(`${(lost * 100).toFixed(1)} % of published not delivered in window`);
        }
        out.push(`| ${s.id} | ${LABEL[b]} | ${i + 1} | ${fmt(run[s.metric.key] * scale, s.metric.unit)} | ${fmt(run.p50Us / 1000, 'ms')} | ${fmt(run.p99Us / 1000, 'ms')} | ${fmt(run.brokerCpuPct, '%')} | ${fmt(run.genCpuPct, '%')} | ${fmt(run.otherLoadPct, '%')} | ${notes.join('; ')} |`);
      });
    }
  }
  out.push('');
  out.push('## Method', '');
  out.push('- Loopback only (brokers listen on 127.0.0.1; generator sockets bind to 127.0.0.2–254 so connect storms do not exhaust one address\'s ephemeral ports).');
  out.push('- Flow scenarios keep a bounded window per publisher (QoS 0: messages not yet seen by the tracking subscriber; QoS 1: unacknowledged PUBLISHes), so brokers are compared at saturation without unbounded queues. Latency = receive time − send time stamped in the payload (CLOCK_MONOTONIC, shared by all processes).');
  out.push('- Every broker runs with its defaults except: Mosquitto `max_connections -1`, persistence off; Vigil `VIGIL_SYS_INTERVAL_S=0`, `VIGIL_LOG_LEVEL=warn`.');
  out.push(`- Warm-up ${m.profile.warmupMs} ms, measured window ${m.profile.measureMs} ms (storms ${m.profile.stormMs} ms); idle memory at ${m.profile.idleConnections} connections; retained storm over ${m.profile.retainedTopics} topics.`);
  out.push('');
  return out.join('\n');
}

export function saturationWarnings(summary) {
  const w = [];
  for (const s of summary.scenarios) {
    if (s.skipped) continue;
    const gen = [];
    const other = [];
    for (const b of summary.brokers) {
      const med = s.results[b]?.median;
      if (med && med.genCpuPct > 85) gen.push(`${LABEL[b]} ${med.genCpuPct.toFixed(0)} %`);
      if (med && med.otherLoadPct >= 10) other.push(`${LABEL[b]} ${med.otherLoadPct.toFixed(0)} %`);
    }
    if (gen.length) w.push(`${s.id}: generator above 85 % of its core (${gen.join(', ')}) — these numbers may be limited by the generator.`);
    if (other.length) w.push(`${s.id}: other processes busy on the benchmark CPUs (${other.join(', ')} of a core) — rerun on a quiet machine.`);
  }
  return w;
}

const COLORS = { vigil: '#2f6fd0', aedes: '#8a8a8a', mosquitto: '#3f9e4d', 'mosquitto-nagle': '#a6d96a' };

function escapeXml(s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Grouped horizontal bars: per scenario, each broker's headline relative to the best. */
export function svgChart(summary) {
  const groups = summary.scenarios.filter((s) => !s.skipped && summary.brokers.some((b) => s.results[b]?.runs.length));
  const barH = 16;
  const gap = 4;
  const left = 230;
  const barMax = 420;
  const width = left + barMax + 190;
  let y = 60;
  const parts = [];
  for (const s of groups) {
    const brokers = summary.brokers.filter((b) => s.results[b]);
    const scale = s.metric.scale ?? 1;
    const vals = brokers.map((b) => (s.results[b].median?.[s.metric.key] ?? NaN) * scale);
    const finite = vals.filter(Number.isFinite);
    const best = finite.length ? (s.metric.higherIsBetter ? Math.max(...finite) : Math.min(...finite)) : NaN;
    const maxVal = finite.length ? Math.max(...finite) : 1;
    parts.push(`<text x="10" y="${y + 12}" font-weight="bold">${escapeXml(s.title)}</text>`);
    parts.push(`<text x="10" y="${y + 28}" fill="#666" font-size="11">${escapeXml(s.metric.unit)}${s.metric.higherIsBetter ? '' : ', lower is better'}</text>`);
    brokers.forEach((b, i) => {
      const v = vals[i];
      const by = y + i * (barH + gap);
      const w = Number.isFinite(v) && maxVal > 0 ? Math.max(1, (v / maxVal) * barMax) : 0;
      parts.push(`<rect x="${left}" y="${by}" width="${w.toFixed(1)}" height="${barH}" fill="${COLORS[b]}"${v === best ? ' stroke="#000" stroke-width="1"' : ''}/>`);
      parts.push(`<text x="${(left + w + 6).toFixed(1)}" y="${by + 12}" font-size="11">${escapeXml(LABEL[b])}: ${escapeXml(Number.isFinite(v) ? fmt(v, s.metric.unit) : 'failed')}</text>`);
    });
    y += Math.max(40, brokers.length * (barH + gap)) + 18;
  }
  const legend = summary.brokers.map((b, i) => `<rect x="${left + i * 170}" y="32" width="12" height="12" fill="${COLORS[b]}"/><text x="${left + i * 170 + 16}" y="42" font-size="12">${LABEL[b]}</text>`).join('');
  const title = `Vigil benchmark ${summary.meta.date}${summary.meta.quick ? ' (--quick)' : ''} — medians of ${summary.meta.runs} run(s), bars relative to the largest value`;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y + 10}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="#fff"/>
<text x="10" y="20" font-size="14" font-weight="bold">${escapeXml(title)}</text>
${legend}
${parts.join('\n')}
</svg>
`;
}
