// The fleet console in a real headless Chromium against a real two-node cluster on Redis:
// a wrong token is refused; signed in, the operator finds the servers by prefix; the node
// holding them is SIGKILLed and the page shows them "down", one will "fired" by the surviving
// node, the other "denied" with the policy rule that denied it (its permission was removed
// before the crash). The admin token never shows up in a URL, the page source or a log.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { startNode, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { ClientPool } from '../helpers/mqtt.js';
import { launchBrowser, type Browser, type Page } from '../helpers/browser.js';

const TOKEN = `console-${'7f3a'.repeat(10)}`;
const WRONG = `wrong-${'c0de'.repeat(10)}`;
const policy = (denied: string[]) =>
  JSON.stringify({
    roles: {
      anonymous: {
        publish: ['status/#', 'telemetry/#'],
        subscribe: ['#'],
        ...(denied.length ? { deny: { publish: denied } } : {}),
      },
    },
  });

let redis: TestRedis;
let a: VigilNode;
let b: VigilNode;
let browser: Browser;
let page: Page;
let dir: string;
const clients = new ClientPool();
// generous CONNECT deadline: the suite runs on a loaded 2-core machine
const connect = (url: string, options: Parameters<ClientPool['connect']>[1]) => clients.connect(url, options, 20000);

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vigil-console-'));
  const acl = join(dir, 'acl.json');
  writeFileSync(acl, policy([]));
  redis = await startRedis();
  const prefix = randomPrefix('console');
  const env = { VIGIL_ADMIN_TOKEN: TOKEN, VIGIL_AUTH: 'none', VIGIL_ACL: acl };
  [a, b, browser] = await Promise.all([startNode({ redisUrl: redis.url, prefix, nodeId: 'node-a', env }, 60000), startNode({ redisUrl: redis.url, prefix, nodeId: 'node-b', env }, 60000), launchBrowser(60000)]);
  await waitUntil(async () => (await a.ready()) && (await b.ready()), 30000, 'nodes ready');
  page = await browser.newPage();
});
after(async () => {
  await clients.closeAll();
  await browser?.close();
  await Promise.all([a?.stop(), b?.kill('SIGKILL')]);
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const row = (id: string) => `document.querySelector('#fleet-table tr[data-client-id=${JSON.stringify(id)}]')`;

test('console: wrong token refused; find servers by prefix; SIGKILL their node; will fired by the survivor, will denied with its rule; token never in a URL, the source or a log', async () => {
  // servers on node B with wills (delay 0: they go as soon as a survivor reaps B), noise on node A
  const watcher = await connect(a.url, { protocolVersion: 5, clientId: 'ops-watcher' });
  await watcher.mqtt.subscribeAsync('status/#', { qos: 1 });
  for (const id of ['srv-rack1-01', 'srv-rack1-02']) {
    await connect(b.url, { protocolVersion: 5, clientId: id, will: { topic: `status/${id}`, payload: Buffer.from('offline'), qos: 1, retain: false } });
  }
  for (let i = 0; i < 3; i++) await connect(a.url, { protocolVersion: 4, clientId: `sensor-${i}` });

  // the admin API itself refuses the wrong token
  assert.equal((await fetch(`http://127.0.0.1:${a.metricsPort}/admin/fleet`, { headers: { authorization: `Bearer ${WRONG}` } })).status, 401);

  const base = `http://127.0.0.1:${a.metricsPort}/console/`;
  await page.goto(base);
  await page.waitFor(`!document.getElementById('login').hidden`, 30000, 'login form');

  // wrong token: refused, still on the login form
  await page.type('#token', WRONG);
  await page.click('#login-form button[type=submit]');
  const refused = await page.waitFor<string>(`!document.getElementById('login-error').hidden && document.getElementById('login-error').textContent`, 30000, 'refusal message');
  assert.match(refused, /refused/);
  assert.equal(await page.eval(`document.getElementById('tabs').hidden`), true, 'no view after a wrong token');
  assert.equal(await page.eval(`sessionStorage.length`), 0, 'a refused token is not kept');

  // right token: fleet view
  await page.type('#token', TOKEN);
  await page.click('#login-form button[type=submit]');
  await page.waitFor(`!document.getElementById('view-fleet').hidden`, 30000, 'fleet view');
  await page.type('#fleet-prefix', 'srv-rack1-');
  await page.click('#fleet-filter button[type=submit]');
  await page.waitFor(`${row('srv-rack1-01')} && ${row('srv-rack1-02')} && document.querySelectorAll('#fleet-table tbody tr').length === 2`, 30000, 'both servers, and only them');
  for (const id of ['srv-rack1-01', 'srv-rack1-02']) {
    assert.equal(await page.eval(`${row(id)}.dataset.state`), 'connected');
    assert.match(await page.eval<string>(`${row(id)}.textContent`), /node-b/);
    assert.match(await page.eval<string>(`${row(id)}.textContent`), /anonymous/, 'the owning identity (VIGIL_AUTH=none without a certificate)');
    assert.equal(await page.eval(`${row(id)}.dataset.will`), 'attached');
  }

  // the second server loses its permission to publish its will topic (policy reload on both nodes)
  const acl = join(dir, 'acl.json');
  writeFileSync(acl, policy(['status/srv-rack1-02']));
  const generation = async (n: VigilNode) => ((await (await fetch(`http://127.0.0.1:${n.metricsPort}/admin/identity`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as { acl: { generation: number } }).acl.generation;
  await waitUntil(async () => (await generation(a)) === 2 && (await generation(b)) === 2, 30000, 'policy generation 2 on both nodes');

  await b.kill('SIGKILL');
  await page.waitFor(`${row('srv-rack1-01')}?.dataset.state === 'down' && ${row('srv-rack1-01')}?.dataset.will === 'fired'`, 30000, 'srv-rack1-01 down, will fired');
  await page.waitFor(`${row('srv-rack1-02')}?.dataset.state === 'down' && ${row('srv-rack1-02')}?.dataset.will === 'denied'`, 30000, 'srv-rack1-02 down, will denied');
  const fired = await page.eval<string>(`${row('srv-rack1-01')}.querySelector('td.will').textContent`);
  assert.match(fired, /will fired/);
  assert.match(fired, /by node-a/, 'the node that fired it');
  const denied = await page.eval<string>(`${row('srv-rack1-02')}.querySelector('td.will').textContent`);
  assert.match(denied, /will denied/);
  assert.match(denied, /deny\.publish: status\/srv-rack1-02/, 'the rule that denied it');

  // the will explain record of the denied one
  await page.click(`#fleet-table tr[data-client-id="srv-rack1-02"]`);
  const explain = await page.waitFor<string>(`document.querySelector('#drawer-body dl[data-decision="denied"]')?.textContent`, 30000, 'decision record');
  assert.match(explain, /deny\.publish: status\/srv-rack1-02/);
  assert.match(explain, /node-a · lease node-a\//, 'decided by the reaper, under its lease');

  // the will decisions list shows both
  await page.eval(`location.hash = 'wills'`);
  await page.waitFor(`document.querySelector('#decisions-table tr[data-client-id="srv-rack1-01"][data-outcome="fired"]') && document.querySelector('#decisions-table tr[data-client-id="srv-rack1-02"][data-outcome="denied"]')`, 30000, 'decisions listed');

  // what MQTT saw agrees: one will published, the other not
  await waitUntil(() => watcher.messages.some((m) => m.topic === 'status/srv-rack1-01'), 30000, 'the fired will delivered');
  assert.ok(!watcher.messages.some((m) => m.topic === 'status/srv-rack1-02'), 'the denied will was not published');

  // the token: not in any URL the page asked for, not in the page source or its DOM, not in a log
  assert.ok(page.requests.length > 5, 'requests recorded');
  for (const url of [...page.requests, await page.eval<string>('location.href')]) {
    assert.ok(!url.includes(TOKEN) && !url.includes(WRONG), `token in URL ${url}`);
  }
  const source = await (await fetch(base)).text();
  assert.ok(!source.includes(TOKEN));
  assert.ok(!(await page.eval<string>('document.documentElement.outerHTML')).includes(TOKEN), 'token in the DOM');
  assert.equal(await page.eval(`document.cookie`), '', 'no cookie');
  for (const n of [a, b]) {
    const logs = JSON.stringify(n.logs);
    assert.ok(!logs.includes(TOKEN) && !logs.includes(WRONG), `token in the logs of ${n.nodeId}`);
  }
  assert.ok(a.logs.some((l) => l.msg === 'admin API: unauthorized request'), 'the refusal is logged (without the token)');
  assert.deepEqual(page.console.filter((l) => l.startsWith('exception')), [], 'no page errors');
});

test('console: off when the admin API is off', async () => {
  const off = await startNode({ prefix: randomPrefix('console-off'), nodeId: 'off' }, 60000);
  try {
    assert.equal((await fetch(`http://127.0.0.1:${off.metricsPort}/console/`)).status, 404);
    assert.equal((await fetch(`http://127.0.0.1:${off.metricsPort}/admin/fleet`)).status, 404);
  } finally {
    await off.stop();
  }
});
