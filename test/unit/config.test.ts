import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, loadConfig, SETTINGS } from '../../src/config.js';
import { hasRedisTarget, redisTargetFromConfig } from '../../src/redis/connection.js';

const cli = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
const root = fileURLToPath(new URL('../../../', import.meta.url));

test('defaults match the documented contract', () => {
  const c = loadConfig({ env: {} });
  assert.equal(c.mqttPort, 1883);
  assert.equal(c.bind, '0.0.0.0');
  assert.equal(c.metricsPort, 9464);
  assert.equal(c.auth, 'none');
  assert.equal(c.redisUrl, '');
  assert.match(c.nodeId, /.+-\d+$/);
});

test('the environment wins over the config file', () => {
  const c = loadConfig({ file: { mqttPort: 1000, maxQueued: 5 }, env: { VIGIL_MQTT_PORT: '2000' } });
  assert.equal(c.mqttPort, 2000);
  assert.equal(c.maxQueued, 5);
});

test('bad values name the setting', () => {
  assert.throws(() => loadConfig({ env: { VIGIL_MQTT_PORT: '70000' } }), (e: unknown) => e instanceof ConfigError && /VIGIL_MQTT_PORT/.test(e.message));
  assert.throws(() => loadConfig({ env: { VIGIL_AUTH: 'maybe' } }), /VIGIL_AUTH.*one of none, jwt/);
  assert.throws(() => loadConfig({ env: { VIGIL_AUTH: 'jwt' } }), /VIGIL_JWKS/);
  assert.throws(() => loadConfig({ file: { noSuchThing: 1 } }), /unknown setting/);
  assert.throws(() => loadConfig({ env: { VIGIL_JWT_ALGORITHMS: 'none' } }), /VIGIL_JWT_ALGORITHMS/);
});

test('CLI: a bad setting is one line on stderr and exit code 2', () => {
  const r = spawnSync(process.execPath, [cli], { env: { ...process.env, VIGIL_MAX_INFLIGHT: 'lots' }, encoding: 'utf8', timeout: 30000 });
  assert.equal(r.status, 2);
  assert.equal(r.stderr.trim().split('\n').length, 1);
  assert.match(r.stderr, /VIGIL_MAX_INFLIGHT/);
  assert.doesNotMatch(r.stderr, /at .*\.js/);
});

test('CLI: --config reads YAML; a broken file exits 2; --help lists every setting', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vigil-config-'));
  const bad = join(dir, 'bad.yaml');
  writeFileSync(bad, 'mqttPort: [unclosed');
  const r = spawnSync(process.execPath, [cli, '--config', bad], { encoding: 'utf8', timeout: 30000 });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /not valid YAML/);
  const help = spawnSync(process.execPath, [cli, '--help'], { encoding: 'utf8', timeout: 30000 });
  assert.equal(help.status, 0);
  for (const d of Object.values(SETTINGS)) assert.match(help.stdout, new RegExp(d.env));
});

test('README documents every setting', () => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  for (const d of Object.values(SETTINGS)) assert.ok(readme.includes(d.env), `${d.env} missing from README`);
});

test('Redis Sentinel, credentials, TLS and WAIT settings: checked together, secrets kept out of --help', () => {
  const c = loadConfig({ env: { VIGIL_REDIS_SENTINELS: '127.0.0.1:26379, [::1]:26380', VIGIL_REDIS_PASSWORD: 's3cret-redis', VIGIL_REDIS_SENTINEL_PASSWORD: 's3cret-sentinel', VIGIL_REDIS_WAIT_REPLICAS: '1' } });
  assert.deepEqual(c.redisSentinels, ['127.0.0.1:26379', '[::1]:26380']);
  assert.equal(c.redisSentinelMaster, 'mymaster');
  assert.equal(c.redisWaitReplicas, 1);
  assert.equal(c.redisWaitTimeoutMs, 500);
  const target = redisTargetFromConfig(c);
  assert.deepEqual(target.sentinels, c.redisSentinels);
  assert.equal(target.password, 's3cret-redis');
  assert.equal(target.sentinelPassword, 's3cret-sentinel');
  assert.equal(hasRedisTarget(c), true);
  assert.throws(() => loadConfig({ env: { VIGIL_REDIS_SENTINELS: 'nohostport' } }), /VIGIL_REDIS_SENTINELS.*host:port/);
  assert.throws(() => loadConfig({ env: { VIGIL_REDIS_SENTINELS: 'a:1', VIGIL_REDIS_CLUSTER_NODES: 'b:2' } }), /VIGIL_REDIS_SENTINELS.*cannot be combined/);
  assert.throws(() => loadConfig({ env: { VIGIL_REDIS_CLUSTER_NODES: 'b:2', VIGIL_REDIS_WAIT_REPLICAS: '1' } }), /VIGIL_REDIS_WAIT_REPLICAS.*not supported/);
  assert.throws(() => loadConfig({ env: { VIGIL_REDIS_URL: 'redis://x:1', VIGIL_REDIS_WAIT_REPLICAS: '1', VIGIL_REDIS_WAIT_TIMEOUT_MS: '2000' } }), /VIGIL_REDIS_WAIT_TIMEOUT_MS.*at most half/);
  assert.throws(() => redisTargetFromConfig({ ...c, redisTlsCa: '/nonexistent/ca.pem' }), /VIGIL_REDIS_TLS_CA.*ENOENT/);
  const help = spawnSync(process.execPath, [cli, '--help'], { encoding: 'utf8', timeout: 30000, env: { ...process.env, VIGIL_REDIS_PASSWORD: 's3cret-redis', VIGIL_REDIS_SENTINEL_PASSWORD: 's3cret-sentinel' } });
  assert.doesNotMatch(help.stdout, /s3cret/);
  assert.ok(SETTINGS.redisPassword.secret && SETTINGS.redisSentinelPassword.secret, 'passwords are secret settings');
});
