#!/usr/bin/env node
// Vigil's own CPU per CONNECT → CONNACK → DISCONNECT, without the kernel: connections are
// in-memory Duplex streams handed to a real VigilServer (attachStream, the path every TCP,
// TLS and WebSocket connection takes), in rounds of 100 at once, for a fixed number of
// connections. Beside it the same loop against a bare handler (write a fixed CONNACK, end):
// what Node's stream machinery costs by itself. CPU is this process's own (process.cpuUsage),
// so time the machine gives to others does not count, unlike wall-clock rates.
//
//   npx tsc -p . && node bench/connect-path-micro.mjs [--connections 100000] [--runs 3]
//
// Not a benchmark of the broker (no sockets, no kernel): an A/B tool for changes to the
// connect path, stable on a busy machine. The storm (connect-storm, bare-node-floor) is the number.
import { Duplex } from 'node:stream';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({ options: { connections: { type: 'string', default: '100000' }, runs: { type: 'string', default: '3' } } });
const total = Number(args.connections);
const runs = Number(args.runs);
const { VigilServer } = await import('../dist/src/server.js');
const { loadConfig } = await import('../dist/src/config.js');

const CONNACK = Buffer.from([0x20, 0x02, 0x00, 0x00]);
const DISCONNECT = Buffer.from([0xe0, 0x00]);

/** A 3.1.1 CONNECT, clean session, keep alive 60, as bench/gen/loadgen.c sends it. */
function connectPacket(id) {
  const cid = Buffer.from(id);
  const body = Buffer.concat([Buffer.from([0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 0x02, 0, 60, cid.length >> 8, cid.length & 0xff]), cid]);
  return Buffer.concat([Buffer.from([0x10, body.length]), body]);
}

/** The client end: reads what the broker wrote; 'close' when the broker ended or destroyed it. */
class Pipe extends Duplex {
  constructor() {
    super({ allowHalfOpen: false });
    this.remoteAddress = '127.0.0.1';
    this.got = 0;
  }
  _read() {}
  _write(chunk, _enc, cb) {
    this.got += chunk.length;
    if (this.onBytes) this.onBytes();
    cb();
  }
  _final(cb) {
    cb();
    this.destroy();
  }
}

/** One connection through `attach`: CONNECT, wait for 4 bytes back, DISCONNECT + EOF, wait for close. */
function oneConnection(attach, id) {
  return new Promise((resolve, reject) => {
    const s = new Pipe();
    s.on('error', reject);
    s.on('close', resolve);
    s.onBytes = () => {
      if (s.got < 4 || s.done) return;
      s.done = true;
      // later, as a socket would deliver it: not from inside the broker's write
      setImmediate(() => {
        s.push(DISCONNECT);
        s.push(null);
      });
    };
    attach(s);
    s.push(connectPacket(id));
  });
}

function bareAttach(s) {
  let answered = false;
  s.on('data', (chunk) => {
    if (!answered) {
      answered = true;
      s.write(CONNACK);
    }
    if (chunk[chunk.length - 2] === 0xe0) s.end();
  });
}

async function measure(name, attach) {
  let n = 0;
  const t0 = process.cpuUsage();
  const w0 = process.hrtime.bigint();
  while (n < total) {
    const round = [];
    for (let k = 0; k < 100 && n < total; k++, n++) round.push(oneConnection(attach, `micro-${n}`));
    await Promise.all(round);
  }
  const cpu = process.cpuUsage(t0);
  const wallMs = Number(process.hrtime.bigint() - w0) / 1e6;
  const us = (cpu.user + cpu.system) / total;
  console.log(`${name.padEnd(6)} ${us.toFixed(2)} µs CPU per connection (${total} connections, ${wallMs.toFixed(0)} ms wall)`);
  return us;
}

const config = loadConfig({ env: {}, overrides: { mqttPort: 0, metricsPort: 0, bind: '127.0.0.1', metricsBind: '127.0.0.1', logLevel: 'warn', sysIntervalS: 0, maxConnections: 1_000_000 } });
const server = new VigilServer(config);
await server.start();
const vigil = (s) => server.attachStream(s, 'tcp');
// warm-up: JIT and the first session maps
await measure('warmup', vigil);
const v = [];
const b = [];
for (let r = 0; r < runs; r++) {
  v.push(await measure('vigil', vigil));
  b.push(await measure('bare', bareAttach));
}
const min = (xs) => Math.min(...xs);
console.log(`min of ${runs}: vigil ${min(v).toFixed(2)} µs, bare streams ${min(b).toFixed(2)} µs, Vigil's own ${(min(v) - min(b)).toFixed(2)} µs per connection`);
await server.stop();
