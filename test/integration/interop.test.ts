// Interop with Debian's mosquitto_pub / mosquitto_sub (package mosquitto-clients) over
// MQTT 3.1.1 and 5.0: QoS 0/1/2 and retained messages pass between them through Vigil.
// scripts/ensure-system-deps.sh installs the package; if it cannot, the tests skip and say why.
import { after, before, describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, uniqueId, VERSIONS, versionName, sleep, withTimeout, type Version } from '../helpers/mqtt.js';

const hasMosquitto = () => spawnSync('sh', ['-c', 'command -v mosquitto_pub && command -v mosquitto_sub'], { stdio: 'ignore' }).status === 0;

function ensureMosquitto(): string | undefined {
  if (hasMosquitto()) return undefined;
  const script = fileURLToPath(new URL('../../../scripts/ensure-system-deps.sh', import.meta.url));
  const r = spawnSync('bash', [script], { encoding: 'utf8', timeout: 120_000 });
  if (hasMosquitto()) return undefined;
  return `mosquitto-clients is not installed and could not be installed: ${(r.stderr || r.error?.message || 'unknown error').trim()}`;
}

const cliVersion = (v: Version) => (v === 5 ? 'mqttv5' : 'mqttv311');

interface SubMessage {
  topic: string;
  qos: number;
  retain: boolean;
  payload: string;
}

/**
 * Runs mosquitto_sub until it has `count` messages; resolves once the broker holds its
 * subscription (its stdout is block-buffered in a pipe, so it is read only at exit).
 */
async function mosquittoSub(broker: TestBroker, v: Version, topic: string, count: number, procs: ChildProcess[]) {
  const clientId = uniqueId('msub');
  const child = spawn('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(broker.port), '-V', cliVersion(v), '-i', clientId, '-t', topic, '-q', '2', '-C', String(count), '-W', '8', '-F', 'MSG|%t|%q|%r|%p']);
  procs.push(child);
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (d: string) => (out += d));
  child.stderr.on('data', (d: string) => (out += d));
  // 'close', not 'exit': the output may still be in the pipe at exit
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  const deadline = Date.now() + 5000;
  // (a retained message may have let it finish already)
  while (!(broker.server.broker.sessions.get(clientId)?.subscriptions.size ?? 0) && child.exitCode === null) {
    if (Date.now() > deadline) throw new Error(`mosquitto_sub did not subscribe: ${out}`);
    await sleep(20);
  }
  return {
    messages: async (): Promise<SubMessage[]> => {
      const code = await withTimeout(exited, 10000, 'mosquitto_sub to exit');
      assert.equal(code, 0, `mosquitto_sub exited with ${code}: ${out}`);
      return out
        .split('\n')
        .filter((l) => l.startsWith('MSG|'))
        .map((l) => {
          const [, t, q, r, ...p] = l.split('|');
          return { topic: t, qos: Number(q), retain: r === '1', payload: p.join('|') };
        });
    },
  };
}

/** Runs mosquitto_pub to completion (asynchronously: the broker runs in this process). */
async function mosquittoPub(port: number, v: Version, topic: string, message: string, qos: number, retain = false): Promise<void> {
  const args = ['-h', '127.0.0.1', '-p', String(port), '-V', cliVersion(v), '-i', uniqueId('mpub'), '-t', topic, '-q', String(qos)];
  args.push(...(message === '' ? ['-n'] : ['-m', message]));
  if (retain) args.push('-r');
  const child = spawn('mosquitto_pub', args);
  let err = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d: string) => (err += d));
  // 'close', not 'exit': the output may still be in the pipe at exit
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  const code = await withTimeout(exited, 5000, 'mosquitto_pub').finally(() => child.exitCode === null && child.kill());
  assert.equal(code, 0, `mosquitto_pub failed: ${err}`);
}

describe('interop with mosquitto clients', { timeout: 60000 }, () => {
  let broker: TestBroker;
  let skipReason: string | undefined;
  const pool = new ClientPool();
  const procs: ChildProcess[] = [];
  before(async () => {
    skipReason = ensureMosquitto();
    broker = await startBroker();
  });
  after(async () => {
    for (const p of procs) if (p.exitCode === null) p.kill();
    await pool.closeAll();
    await broker.close();
  });
  const skipped = (t: TestContext) => {
    if (skipReason) t.skip(skipReason);
    return !!skipReason;
  };

  for (const v of VERSIONS) {
    describe(versionName(v), () => {
      it('mosquitto_sub receives mosquitto_pub messages at QoS 0, 1 and 2', async (t) => {
        if (skipped(t)) return;
        const topic = `interop/${v}/live`;
        const sub = await mosquittoSub(broker, v, `${topic}/#`, 3, procs);
        for (const q of [0, 1, 2]) await mosquittoPub(broker.port, v, `${topic}/q${q}`, `hello q${q}`, q);
        const got = await sub.messages();
        assert.deepEqual(got, [0, 1, 2].map((q) => ({ topic: `${topic}/q${q}`, qos: q, retain: false, payload: `hello q${q}` })));
      });

      it('a retained message from mosquitto_pub reaches a later mosquitto_sub with the retain flag', async (t) => {
        if (skipped(t)) return;
        const topic = `interop/${v}/retained`;
        await mosquittoPub(broker.port, v, topic, 'kept', 1, true);
        const sub = await mosquittoSub(broker, v, topic, 1, procs);
        assert.deepEqual(await sub.messages(), [{ topic, qos: 1, retain: true, payload: 'kept' }]);
        await mosquittoPub(broker.port, v, topic, '', 1, true); // -n: delete it again
      });

      it('mqtt.js and the mosquitto clients talk both ways', async (t) => {
        if (skipped(t)) return;
        const topic = `interop/${v}/mixed`;
        const js = await pool.connect(broker.url, { protocolVersion: v, clientId: uniqueId() });
        await js.mqtt.subscribeAsync(`${topic}/from-mosquitto`, { qos: 2 });
        const sub = await mosquittoSub(broker, v, `${topic}/from-js`, 1, procs);
        await js.mqtt.publishAsync(`${topic}/from-js`, 'to mosquitto', { qos: 2 });
        await mosquittoPub(broker.port, v, `${topic}/from-mosquitto`, 'to mqtt.js', 2);
        assert.deepEqual(await sub.messages(), [{ topic: `${topic}/from-js`, qos: 2, retain: false, payload: 'to mosquitto' }]);
        const [m] = await js.waitForMessages(1);
        assert.deepEqual([m.payload, m.packet.qos], ['to mqtt.js', 2]);
      });
    });
  }
});
