import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, loadConfig, SETTINGS } from '../../src/config.js';

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
