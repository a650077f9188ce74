// The deployment files against the code: docker-compose.yml only sets real settings, HAProxy
// and Prometheus point at the three nodes on the right ports, and every Grafana query names
// a metric (and labels) that a running Vigil exports. A broker is started in-process and
// scraped after a little MQTT traffic.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import { parse as parseYaml } from 'yaml';
import { SETTINGS, loadConfig } from '../../src/config.js';
import { startBroker, type TestBroker } from '../helpers/broker.js';

// dist/test/integration → repository root
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const read = (rel: string) => readFileSync(join(ROOT, rel), 'utf8');
const NODES = ['vigil-1', 'vigil-2', 'vigil-3'];
const ENV_NAMES = new Set(Object.values(SETTINGS).map((s) => s.env));

type Service = { environment?: Record<string, string | number | boolean> | string[]; build?: unknown; image?: string; ports?: string[]; volumes?: string[] };

const compose = parseYaml(read('docker-compose.yml'), { merge: true }) as { services: Record<string, Service> };

function envOf(service: Service): Record<string, string> {
  const env = service.environment ?? {};
  const entries = Array.isArray(env) ? env.map((kv) => kv.split(/=(.*)/s).slice(0, 2) as [string, string]) : Object.entries(env).map(([k, v]) => [k, String(v)] as [string, string]);
  // compose interpolation: ${NAME:-default} / ${NAME} with nothing set in the environment
  return Object.fromEntries(entries.map(([k, v]) => [k, v.replace(/\$\{[A-Z0-9_]+(?::?-([^}]*))?\}/g, (_m, def: string | undefined) => def ?? '')]));
}

describe('docker-compose.yml', () => {
  it('has redis, three vigil nodes, haproxy, prometheus and grafana', () => {
    for (const name of ['redis', ...NODES, 'haproxy', 'prometheus', 'grafana']) assert.ok(compose.services[name], `service ${name}`);
    for (const n of NODES) assert.ok(compose.services[n].build, `${n} is built from the Dockerfile`);
  });

  it('sets only real VIGIL_* settings, with values the config accepts', () => {
    for (const [name, service] of Object.entries(compose.services)) {
      const env = envOf(service);
      for (const key of Object.keys(env).filter((k) => k.startsWith('VIGIL_'))) {
        assert.ok(ENV_NAMES.has(key), `${name}: ${key} is not a setting in src/config.ts`);
      }
      if (NODES.includes(name)) {
        const config = loadConfig({ env });
        assert.equal(config.nodeId, name);
        assert.equal(config.redisUrl, 'redis://redis:6379');
        assert.equal(config.metricsPort, 9464);
        assert.equal(config.wsPort, 8083);
        assert.equal(config.logLevel, 'info');
      }
    }
  });

  it('publishes MQTT and WebSocket through haproxy and mounts the configs', () => {
    const ports = compose.services.haproxy.ports ?? [];
    assert.ok(ports.includes('1883:1883') && ports.includes('8083:8083'), `haproxy ports ${ports}`);
    assert.ok(compose.services.haproxy.volumes?.some((v) => v.startsWith('./deploy/haproxy.cfg:')));
    assert.ok(compose.services.prometheus.volumes?.some((v) => v.startsWith('./deploy/prometheus.yml:')));
    const gv = compose.services.grafana.volumes ?? [];
    assert.ok(gv.some((v) => v.startsWith('./grafana/provisioning:/etc/grafana/provisioning')));
    const dashMount = gv.find((v) => v.startsWith('./grafana/dashboards:'))?.split(':')[1];
    const provider = parseYaml(read('grafana/provisioning/dashboards/vigil.yml')) as { providers: { options: { path: string } }[] };
    assert.equal(provider.providers[0].options.path, dashMount, 'dashboard provider reads where compose mounts the dashboards');
  });
});

describe('Redis persistence and the Sentinel variant (docker-compose.sentinel.yml)', () => {
  type Full = { services: Record<string, Service & { command?: string[] | string; depends_on?: Record<string, unknown> }>; volumes?: Record<string, unknown> };
  const base = compose as Full;
  const overlay = parseYaml(read('docker-compose.sentinel.yml'), { merge: true }) as Full;
  const arg = (command: string[] | string | undefined, flag: string) => {
    const list = Array.isArray(command) ? command : [];
    const i = list.indexOf(flag);
    return i >= 0 ? list[i + 1] : undefined;
  };

  it('Redis keeps an append-only file fsynced every second on a named volume', () => {
    for (const [file, services, volumes] of [
      ['docker-compose.yml', base.services, base.volumes],
      ['docker-compose.sentinel.yml', { ...overlay.services, redis: overlay.services.redis }, { ...base.volumes, ...overlay.volumes }],
    ] as const) {
      for (const [name, service] of Object.entries(services).filter(([n]) => n === 'redis' || n.startsWith('redis-replica'))) {
        assert.equal(arg(service.command, '--appendonly'), 'yes', `${file} ${name}: appendonly`);
        assert.equal(arg(service.command, '--appendfsync'), 'everysec', `${file} ${name}: appendfsync`);
        const mounts = service.volumes ?? base.services[name]?.volumes ?? [];
        const volume = mounts.find((v) => v.endsWith(':/data'))?.split(':')[0];
        assert.ok(volume && volumes && volume in volumes, `${file} ${name}: /data on a named volume (${mounts})`);
      }
    }
  });

  it('two replicas of redis, three sentinels with quorum 2 watching it under the name the nodes ask for', () => {
    const replicas = Object.keys(overlay.services).filter((n) => n.startsWith('redis-replica'));
    assert.equal(replicas.length, 2);
    for (const r of replicas) {
      assert.deepEqual(overlay.services[r].command?.slice(overlay.services[r].command!.indexOf('--replicaof'), overlay.services[r].command!.indexOf('--replicaof') + 3), ['--replicaof', 'redis', '6379']);
      assert.equal(arg(overlay.services[r].command, '--replica-announce-ip'), r, `${r} announces its compose host name`);
    }
    assert.equal(arg(overlay.services.redis.command, '--replica-announce-ip'), 'redis');
    const sentinels = Object.keys(overlay.services).filter((n) => n.startsWith('sentinel-'));
    assert.equal(sentinels.length, 3);
    for (const n of NODES) {
      const env = { ...envOf(base.services[n]), ...envOf(overlay.services[n]) };
      for (const key of Object.keys(env).filter((k) => k.startsWith('VIGIL_'))) assert.ok(ENV_NAMES.has(key), `${n}: ${key} is not a setting`);
      const config = loadConfig({ env });
      assert.equal(config.redisUrl, '', `${n}: no VIGIL_REDIS_URL beside the sentinels`);
      assert.deepEqual(config.redisSentinels, sentinels.map((s) => `${s}:26379`));
      assert.equal(config.redisWaitReplicas, 1);
      assert.ok(Object.keys(overlay.services[n].depends_on ?? {}).every((d) => sentinels.includes(d)) && sentinels.every((s) => s in (overlay.services[n].depends_on ?? {})), `${n} waits for the sentinels`);
      for (const s of sentinels) {
        const script = String(overlay.services[s].command);
        assert.match(script, new RegExp(`'sentinel monitor ${config.redisSentinelMaster} redis 6379 2'`), `${s} monitors the master the nodes name`);
        assert.match(script, /'port 26379'/);
        assert.match(script, /sentinel announce-ip \$\$\{ANNOUNCE_HOST\}/, 'compose-escaped $ for the shell');
        assert.equal(envOf(overlay.services[s]).ANNOUNCE_HOST, s);
        assert.match(script, /'sentinel resolve-hostnames yes'/);
      }
    }
  });
});

describe('deploy/haproxy.cfg', () => {
  const cfg = read('deploy/haproxy.cfg');
  const sections = new Map<string, string[]>();
  let current = '';
  for (const raw of cfg.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) continue;
    if (/^(global|defaults|frontend|backend|listen|resolvers)\b/.test(raw)) {
      current = line;
      sections.set(current, []);
    } else sections.get(current)?.push(line);
  }
  const backend = (name: string) => sections.get(`backend ${name}`) ?? assert.fail(`no backend ${name}`);
  const frontendBackend = (port: number) => {
    for (const [name, lines] of sections) {
      if (name.startsWith('frontend') && lines.some((l) => l === `bind :${port}` || l.startsWith(`bind :${port} `))) {
        return lines.find((l) => l.startsWith('default_backend'))?.split(/\s+/)[1];
      }
    }
    return undefined;
  };

  it('sends 1883 and 8083 to backends holding the three nodes on the MQTT and WebSocket ports', () => {
    const nodeEnv = envOf(compose.services['vigil-1']);
    const wsPort = Number(nodeEnv.VIGIL_WS_PORT);
    const mqttPort = Number(nodeEnv.VIGIL_MQTT_PORT ?? SETTINGS.mqttPort.default);
    for (const [front, port] of [[1883, mqttPort], [8083, wsPort]] as const) {
      const b = frontendBackend(front);
      assert.ok(b, `a frontend binds :${front}`);
      const servers = backend(b).filter((l) => l.startsWith('server ')).map((l) => l.split(/\s+/)[2]);
      assert.deepEqual(servers.sort(), NODES.map((n) => `${n}:${port}`), `backend ${b}`);
    }
  });

  it('health-checks /readyz on the metrics port', () => {
    const metricsPort = envOf(compose.services['vigil-1']).VIGIL_METRICS_PORT;
    const defaults = sections.get('defaults') ?? [];
    const serverLines = [...sections].filter(([n]) => n.startsWith('backend')).flatMap(([, l]) => l.filter((x) => x.startsWith('server ')));
    const checkPort = (l: string) => /\bcheck\b/.test(l) && new RegExp(`\\bport ${metricsPort}\\b`).test(l);
    const byDefault = defaults.some((l) => l.startsWith('default-server') && checkPort(l));
    for (const l of serverLines) assert.ok(byDefault || checkPort(l), `${l} is checked on port ${metricsPort}`);
    for (const name of ['vigil_mqtt', 'vigil_ws']) {
      assert.ok(backend(name).includes('option httpchk GET /readyz'), `${name} checks /readyz`);
      assert.ok(backend(name).includes('http-check expect status 200'));
    }
  });
});

describe('deploy/prometheus.yml', () => {
  it('scrapes /metrics of the three nodes on 9464', () => {
    const p = parseYaml(read('deploy/prometheus.yml')) as { scrape_configs: { job_name: string; metrics_path?: string; static_configs: { targets: string[] }[] }[] };
    const job = p.scrape_configs.find((j) => j.job_name === 'vigil');
    assert.ok(job);
    assert.equal(job.metrics_path ?? '/metrics', '/metrics');
    assert.deepEqual(job.static_configs.flatMap((s) => s.targets).sort(), NODES.map((n) => `${n}:9464`));
  });
});

// ---- dashboards against a running broker ------------------------------------------------

/** PromQL words that are not metric names. */
const PROMQL_WORDS = new Set(
  (
    'sum min max avg count stddev stdvar topk bottomk quantile count_values group by without on ignoring group_left group_right bool and or unless offset ' +
    'rate irate increase delta idelta deriv predict_linear histogram_quantile label_replace label_join abs ceil floor round clamp clamp_min clamp_max ' +
    'sort sort_desc time timestamp vector scalar absent absent_over_time changes resets avg_over_time min_over_time max_over_time sum_over_time ' +
    'count_over_time last_over_time quantile_over_time stddev_over_time exp ln log2 log10 sqrt inf nan'
  ).split(' '),
);
const TARGET_LABELS = new Set(['node', 'instance', 'job']);

interface QueryRef {
  where: string;
  expr: string;
}

function dashboardQueries(): QueryRef[] {
  const dir = join(ROOT, 'grafana/dashboards');
  const out: QueryRef[] = [];
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.json'))) {
    const d = JSON.parse(readFileSync(join(dir, file), 'utf8')) as {
      uid: string;
      panels: { title: string; type: string; datasource?: { uid: string }; targets?: { expr: string }[]; panels?: unknown[] }[];
      templating?: { list: { name: string; query?: { query: string } | string }[] };
    };
    assert.ok(d.uid && d.panels.length > 0, `${file} is a dashboard`);
    for (const p of d.panels) {
      if (p.type === 'row') continue;
      assert.equal(p.datasource?.uid, 'vigil-prometheus', `${file} / ${p.title} uses the provisioned data source`);
      assert.ok(p.targets && p.targets.length > 0, `${file} / ${p.title} has queries`);
      for (const tg of p.targets) out.push({ where: `${file} / ${p.title}`, expr: tg.expr });
    }
    for (const v of d.templating?.list ?? []) {
      const q = typeof v.query === 'string' ? v.query : v.query?.query ?? '';
      const m = /label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*(\w+)\s*\)/.exec(q);
      if (m) out.push({ where: `${file} / variable ${v.name}`, expr: `${m[1]}{${m[2]}=""}` });
    }
  }
  return out;
}

/** Metric names and label names a PromQL expression uses. */
function promqlNames(expr: string): { metrics: string[]; labels: string[] } {
  const labels: string[] = [];
  let e = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  e = e.replace(/\{([^}]*)\}/g, (_m, inner: string) => {
    for (const mm of inner.matchAll(/([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)/g)) labels.push(mm[1]);
    return ' ';
  });
  e = e.replace(/\[[^\]]*\]/g, ' ');
  e = e.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g, (_m, _kw, inner: string) => {
    labels.push(...inner.split(',').map((s) => s.trim()).filter(Boolean));
    return ' ';
  });
  e = e.replace(/\$\{?\w+\}?/g, ' ').replace(/\b\d+(\.\d+)?(e[+-]?\d+)?\b/gi, ' ');
  const metrics = [...e.matchAll(/[a-zA-Z_:][\w:]*/g)].map((m) => m[0]).filter((w) => !PROMQL_WORDS.has(w));
  return { metrics, labels };
}

describe('Grafana dashboards', { timeout: 60_000 }, () => {
  let broker: TestBroker;
  /** Sample and family names in the scrape, with each family's label names from the registry. */
  const exported = new Set<string>();
  const labelsOf = new Map<string, Set<string>>();
  const sampled = new Set<string>();

  before(async () => {
    broker = await startBroker();
    const url = broker.url;
    const sub = await mqtt.connectAsync(url, { clientId: 'deploy-sub', reconnectPeriod: 0, protocolVersion: 5 });
    const pub = await mqtt.connectAsync(url, { clientId: 'deploy-pub', reconnectPeriod: 0, protocolVersion: 4 });
    try {
      await sub.subscribeAsync('deploy/#', { qos: 1 });
      const got = new Promise<void>((r) => sub.once('message', () => r()));
      await pub.publishAsync('deploy/a', 'x', { qos: 1 });
      await pub.publishAsync('deploy/b', 'y', { qos: 0 });
      await got;
    } finally {
      await pub.endAsync();
      await sub.endAsync();
    }
    const res = await fetch(`http://127.0.0.1:${broker.metricsPort}/metrics`, { signal: AbortSignal.timeout(5000) });
    assert.equal(res.status, 200);
    for (const line of (await res.text()).split('\n')) {
      const type = /^# TYPE (\S+) (\S+)/.exec(line);
      if (type) {
        exported.add(type[1]);
        if (type[2] === 'histogram' || type[2] === 'summary') for (const s of ['_bucket', '_sum', '_count']) exported.add(type[1] + s);
      } else if (line && !line.startsWith('#')) {
        const name = /^[a-zA-Z_:][\w:]*/.exec(line)![0];
        exported.add(name);
        sampled.add(name);
      }
    }
    for (const m of broker.server.metrics.registry.getMetricsAsArray() as unknown as { name: string; labelNames?: string[]; type?: string }[]) {
      const names = [m.name, `${m.name}_bucket`, `${m.name}_sum`, `${m.name}_count`];
      for (const n of names) labelsOf.set(n, new Set([...(m.labelNames ?? []), ...(n.endsWith('_bucket') ? ['le'] : [])]));
    }
  });
  after(() => broker?.close());

  it('scrapes labelled series for the traffic it made', () => {
    for (const n of ['vigil_connections_opened_total', 'vigil_connections_current', 'vigil_messages_in_total', 'vigil_messages_out_total', 'vigil_connect_outcomes_total', 'vigil_bytes_in_total', 'vigil_process_resident_memory_bytes']) {
      assert.ok(sampled.has(n), `${n} has samples after MQTT traffic`);
    }
  });

  it('query only metrics and labels Vigil exports', () => {
    const queries = dashboardQueries();
    assert.ok(queries.length >= 40, `found ${queries.length} queries`);
    const problems: string[] = [];
    for (const q of queries) {
      const { metrics, labels } = promqlNames(q.expr);
      if (metrics.length === 0) problems.push(`${q.where}: no metric in ${q.expr}`);
      const allowed = new Set(TARGET_LABELS);
      for (const m of metrics) {
        if (!m.startsWith('vigil_') || !exported.has(m)) problems.push(`${q.where}: ${m} is not exported by Vigil`);
        for (const l of labelsOf.get(m) ?? []) allowed.add(l);
      }
      for (const l of labels) if (!allowed.has(l)) problems.push(`${q.where}: label ${l} is not a label of ${metrics.join(', ')}`);
    }
    assert.deepEqual(problems, []);
  });

  it('document every Vigil metric in README.md', () => {
    const doc = read('README.md');
    const own = (broker.server.metrics.registry.getMetricsAsArray() as unknown as { name: string }[])
      .map((m) => m.name)
      .filter((n) => !n.startsWith('vigil_process_') && !n.startsWith('vigil_nodejs_'));
    const missing = own.filter((n) => !doc.includes(`\`${n}\``));
    assert.deepEqual(missing, [], 'metrics missing from README.md');
  });

  it('parses PromQL the way the checks above assume', () => {
    const r = promqlNames('histogram_quantile(0.99, sum by (le, command) (rate(vigil_redis_command_seconds_bucket{node=~"$node", command!="x"}[$__rate_interval])))');
    assert.deepEqual(r.metrics, ['vigil_redis_command_seconds_bucket']);
    assert.deepEqual(r.labels.sort(), ['command', 'command', 'le', 'node'].sort());
    assert.deepEqual(promqlNames('sum(a_total) / sum(b_total)').metrics, ['a_total', 'b_total']);
  });
});

describe('Grafana provisioning', () => {
  it('provides the data source every dashboard refers to', () => {
    const ds = parseYaml(read('grafana/provisioning/datasources/prometheus.yml')) as { datasources: { uid: string; type: string; url: string }[] };
    const prom = ds.datasources.find((d) => d.uid === 'vigil-prometheus');
    assert.equal(prom?.type, 'prometheus');
    assert.equal(prom?.url, 'http://prometheus:9090');
  });
});
