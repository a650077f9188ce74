#!/usr/bin/env node
// The long fuzz run (`npm run fuzz`): builds, then runs both fuzz files — in-process
// (test/fuzz/protocol.fuzz.test.ts) and live sockets over TCP (test/fuzz/live-socket.fuzz.test.ts)
// — with VIGIL_FUZZ_RUNS iterations each (default 20000; `npm run fuzz -- --runs 5000`,
// `--seed N` replays a live-socket run). Takes minutes; the test suite runs the same files
// with a few hundred iterations.
import { spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';

const arg = (name) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const runs = arg('runs') ?? process.env.VIGIL_FUZZ_RUNS ?? '20000';
const seed = arg('seed');

const build = spawnSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', '.'], { stdio: 'inherit' });
if (build.status !== 0) process.exit(build.status ?? 1);

const files = ['dist/test/fuzz/protocol.fuzz.test.js', 'dist/test/fuzz/live-socket.fuzz.test.js'];
console.log(`fuzz: ${runs} runs per property, files: ${files.join(' ')}`);
const started = Date.now();
const child = spawn(process.execPath, ['--test', '--test-concurrency=1', '--test-timeout=3600000', ...files], {
  env: { ...process.env, VIGIL_FUZZ_RUNS: runs, ...(seed ? { VIGIL_FUZZ_SEED: seed } : {}) },
  stdio: ['ignore', 'pipe', 'inherit'],
});
const summary = [];
createInterface({ input: child.stdout }).on('line', (line) => {
  process.stdout.write(`${line}\n`);
  if (/fuzz/.test(line) && /iterations|connections/.test(line)) summary.push(line.replace(/^#\s*\\?#?\s*/, ''));
});
child.on('exit', (code) => {
  console.log(`\nfuzz summary (${Math.round((Date.now() - started) / 1000)} s):`);
  for (const s of summary) console.log(`  ${s}`);
  console.log(code === 0 ? 'fuzz: PASS' : 'fuzz: FAIL');
  process.exit(code ?? 1);
});
