// mqtt-packet's per-packet debug calls are no-ops unless DEBUG names them at start
// (src/transport/quiet-debug.ts), and DEBUG still switches them on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import mqttPacket from 'mqtt-packet';
import '../../src/protocol/channel.js';

const fromPacket = createRequire(createRequire(import.meta.url).resolve('mqtt-packet'));
const channelModule = fileURLToPath(new URL('../../src/protocol/channel.js', import.meta.url));

test('a namespace DEBUG does not enable gets an empty function; the real module stays reachable', () => {
  const createDebug = fromPacket('debug') as ((ns: string) => { (...a: unknown[]): void; enabled: boolean; namespace: string; extend(s: string): { enabled: boolean; namespace: string } }) & { enabled(ns: string): boolean; names: unknown };
  const logger = createDebug('mqtt-packet:parser');
  assert.equal(logger.enabled, false);
  assert.equal(logger.namespace, 'mqtt-packet:parser');
  assert.equal(logger('parse: %s', 'x'), undefined);
  assert.equal(logger.extend('more').namespace, 'mqtt-packet:parser:more');
  assert.equal('useColors' in logger, false, 'the real logger carries useColors; the quiet one does not');
  // the module's own API (used by ioredis and others) still answers
  assert.equal(createDebug.enabled('mqtt-packet:parser'), false);
  assert.ok(Array.isArray(createDebug.names));
});

test('packets still parse with the quiet logger in place', () => {
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  const seen: string[] = [];
  parser.on('packet', (p) => seen.push(p.cmd));
  parser.parse(mqttPacket.generate({ cmd: 'publish', topic: 'a/b', payload: Buffer.from('x'), qos: 0, retain: false, dup: false }));
  parser.parse(Buffer.from([0xc0, 0x00]));
  assert.deepEqual(seen, ['publish', 'pingreq']);
});

test('DEBUG=mqtt-packet:parser at start still logs the parser', async () => {
  const script = `
    await import(${JSON.stringify(channelModule)});
    const mqttPacket = (await import('mqtt-packet')).default;
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    parser.parse(Buffer.from([0xc0, 0x00]));
  `;
  const stderr = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, DEBUG: 'mqtt-packet:parser', DEBUG_COLORS: 'no' }, cwd: process.cwd() }, (err, _out, errOut) => (err ? reject(err) : resolve(errOut)));
  });
  assert.match(stderr, /mqtt-packet:parser parse: current state/);
});
