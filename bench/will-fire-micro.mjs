#!/usr/bin/env node
// Vigil's own CPU per fired will, without the kernel, Redis or a second node: a real
// VigilServer (one node) with a QoS 1 monitor on `bench/will/#` over an in-memory stream
// (attachStream: real CONNECT, SUBSCRIBE, PUBLISH encoding, PUBACK parsing, in-flight window,
// queue), and wills fired the way the cluster reaper fires a claim reply: 250 encoded will
// records cut out of one buffer (as a Redis reply hands them), decoded (decodeWill) and fired
// with WillManager.fireNow in one turn, the next batch a turn later. The monitor acknowledges
// each PUBLISH on a later turn, as a socket would. CPU is this process's own
// (process.cpuUsage): time the machine gives to others does not count, unlike the
// will-failover-fleet scenario's survivorCpuUsPerWill, which moves 1.5× with the load.
//
//   npx tsc -p . && node bench/will-fire-micro.mjs [--wills 10000] [--runs 5]
//
// An A/B tool for the fire + local delivery path (decode, authorization at fire, routing,
// session queue, encoder, PUBACK handling). It leaves out what only a cluster adds (the
// orphan-client.lua calls and their ioredis encoding, the message id, the route table).
import { Duplex } from 'node:stream';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({ options: { wills: { type: 'string', default: '10000' }, runs: { type: 'string', default: '5' } } });
const total = Number(args.wills);
const runs = Number(args.runs);
const BATCH = 250;
const { VigilServer } = await import('../dist/src/server.js');
const { loadConfig } = await import('../dist/src/config.js');
const { encodeWill, decodeWill } = await import('../dist/src/store/redis/codec.js');

function packet(type, body) {
  const len = [];
  let n = body.length;
  do {
    let b = n & 0x7f;
    n >>= 7;
    if (n > 0) b |= 0x80;
    len.push(b);
  } while (n > 0);
  return Buffer.concat([Buffer.from([type, ...len]), body]);
}
const str = (s) => {
  const b = Buffer.from(s);
  return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b]);
};
// 3.1.1 CONNECT (clean session, keep alive 0), SUBSCRIBE bench/will/# QoS 1
const CONNECT = packet(0x10, Buffer.concat([str('MQTT'), Buffer.from([4, 0x02, 0, 0]), str('monitor')]));
const SUBSCRIBE = packet(0x82, Buffer.concat([Buffer.from([0, 1]), str('bench/will/#'), Buffer.from([1])]));

/** The monitor's end: counts PUBLISHes and answers each QoS 1 one with a PUBACK, a turn later. */
class Monitor extends Duplex {
  constructor() {
    super({ allowHalfOpen: false });
    this.remoteAddress = '127.0.0.1';
    this.buf = Buffer.alloc(0);
    this.publishes = 0;
    this.subacked = false;
    this.acks = [];
    this.waiters = [];
  }
  _read() {}
  _write(chunk, _enc, cb) {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    let off = 0;
    for (;;) {
      if (this.buf.length - off < 2) break;
      let len = 0;
      let mul = 1;
      let i = off + 1;
      for (;;) {
        if (i >= this.buf.length) break;
        const b = this.buf[i++];
        len += (b & 0x7f) * mul;
        mul *= 128;
        if ((b & 0x80) === 0) break;
      }
      if (i + len > this.buf.length) break;
      const type = this.buf[off] >> 4;
      if (type === 3) {
        this.publishes++;
        if ((this.buf[off] >> 1) & 3) {
          const tl = this.buf.readUInt16BE(i);
          this.acks.push(0x40, 2, this.buf[i + 2 + tl], this.buf[i + 3 + tl]);
        }
      } else if (type === 9) this.subacked = true;
      off = i + len;
    }
    this.buf = this.buf.subarray(off);
    if (this.acks.length > 0 && !this.ackScheduled) {
      this.ackScheduled = true;
      setImmediate(() => {
        this.ackScheduled = false;
        const acks = Buffer.from(this.acks);
        this.acks = [];
        this.push(acks);
      });
    }
    for (const w of this.waiters.splice(0)) w();
    cb();
  }
  until(cond) {
    return new Promise((resolve) => {
      const check = () => (cond() ? resolve() : this.waiters.push(check));
      check();
    });
  }
}

/** The encoded will records of `n` clients, back to back in one buffer, as views into it. */
function records(run, n) {
  const parts = [];
  for (let k = 0; k < n; k++) {
    const clientId = `will-${run}-${k}`;
    parts.push(
      encodeWill({
        clientId,
        message: { topic: `bench/will/${clientId}`, payload: Buffer.from('gone'), qos: 1, retain: false, origin: clientId },
        delayS: 0,
        identity: { username: '', clientId, roles: ['anonymous'], authenticatedAtMs: 1764600000000 },
        epoch: 1,
        protocolVersion: 4,
      }),
    );
  }
  const whole = Buffer.concat(parts);
  const views = [];
  let off = 0;
  for (const p of parts) {
    views.push(whole.subarray(off, off + p.length));
    off += p.length;
  }
  return views;
}

const config = loadConfig({ env: {}, overrides: { mqttPort: 0, metricsPort: 0, bind: '127.0.0.1', metricsBind: '127.0.0.1', logLevel: 'warn', sysIntervalS: 0, maxQueued: 2 * total } });
const server = new VigilServer(config);
await server.start();
const monitor = new Monitor();
server.attachStream(monitor, 'tcp');
monitor.push(CONNECT);
monitor.push(SUBSCRIBE);
await monitor.until(() => monitor.subacked);
const wills = server.broker.wills;

async function measure(name, run) {
  const views = records(run, total);
  const before = monitor.publishes;
  const t0 = process.cpuUsage();
  const w0 = process.hrtime.bigint();
  for (let i = 0; i < total; i += BATCH) {
    for (let k = i; k < i + BATCH && k < total; k++) wills.fireNow(decodeWill(views[k]));
    await new Promise((r) => setImmediate(r));
  }
  await monitor.until(() => monitor.publishes - before >= total);
  const cpu = process.cpuUsage(t0);
  const wallMs = Number(process.hrtime.bigint() - w0) / 1e6;
  const us = (cpu.user + cpu.system) / total;
  console.log(`${name.padEnd(6)} ${us.toFixed(2)} µs CPU per will (${total} wills, ${wallMs.toFixed(0)} ms wall)`);
  return us;
}

await measure('warmup', 0);
const all = [];
for (let r = 1; r <= runs; r++) all.push(await measure('run', r));
const sorted = [...all].sort((a, b) => a - b);
console.log(`min ${sorted[0].toFixed(2)} µs, median ${sorted[Math.floor(sorted.length / 2)].toFixed(2)} µs CPU per will (${runs} runs of ${total})`);
monitor.destroy();
await server.stop();
