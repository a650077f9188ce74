// Orchestrator side of the load generator: forks the worker processes for one run, walks
// them through setup → go → result, and always kills them afterwards. Workers inherit this
// process's CPU affinity (run.mjs pins itself to the generator CPU).
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { CLOCK_BASE } from './clock.mjs';

const WORKER = fileURLToPath(new URL('../gen/worker.mjs', import.meta.url));

/**
 * @param {object} o
 * @param {string} o.kind         scenario kind understood by gen/worker.mjs
 * @param {(shard:number)=>object} o.params  per-shard parameters
 * @param {number} o.shards
 * @param {number} o.setupTimeoutMs
 * @param {number} o.runTimeoutMs
 * @param {()=>Promise<object|void>} [o.beforeGo]  runs after every worker is ready; its result is sent with go
 * @param {()=>Promise<void>} [o.afterResults]      runs while workers still hold their connections
 * @param {(ms:number)=>void} [o.onGo]
 * @returns {Promise<{ results: object[], ready: object[] }>}
 */
export async function runLoad(o) {
  const workers = [];
  const kill = () => { for (const w of workers) if (w.exitCode === null) w.kill('SIGKILL'); };
  try {
    const readyAll = [];
    const resultAll = [];
    for (let shard = 0; shard < o.shards; shard++) {
      const w = fork(WORKER, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      workers.push(w);
      const inbox = makeInbox(w, shard);
      readyAll.push(inbox.next('ready'));
      resultAll.push(inbox.next('result', true));
      const params = { lifetimeMs: o.setupTimeoutMs + o.runTimeoutMs + 10000, ...o.params(shard) };
      w.send({ type: 'setup', kind: o.kind, params, shard, shards: o.shards, clockBase: CLOCK_BASE.toString() });
    }
    const ready = await withTimeout(Promise.all(readyAll), o.setupTimeoutMs, 'load generator setup');
    const extra = o.beforeGo ? await o.beforeGo() : undefined;
    for (const w of workers) w.send({ type: 'go', ...(extra ?? {}) });
    if (o.onGo) o.onGo();
    const results = await withTimeout(Promise.all(resultAll), o.runTimeoutMs, 'load generator run');
    if (o.afterResults) await o.afterResults();
    return { results, ready };
  } finally {
    for (const w of workers) if (w.connected) w.send({ type: 'stop' });
    await new Promise((r) => setTimeout(r, 50));
    kill();
  }
}

function makeInbox(w, shard) {
  const waiters = new Map();
  let failure = null;
  const failAll = (err) => {
    failure = err;
    for (const { reject } of waiters.values()) reject(err);
    waiters.clear();
  };
  w.on('message', (msg) => {
    if (msg.type === 'error') return failAll(new Error(`generator ${shard}: ${msg.message}`));
    const waiter = waiters.get(msg.type);
    if (waiter) {
      waiters.delete(msg.type);
      waiter.resolve(msg.type === 'ready' ? msg.info : msg.result);
    }
  });
  w.on('exit', (code, signal) => {
    if (waiters.size) failAll(failure ?? new Error(`generator ${shard} exited (${code ?? signal}) before finishing`));
  });
  return {
    next(type, deferred = false) {
      const p = new Promise((resolve, reject) => {
        if (failure) return reject(failure);
        waiters.set(type, { resolve, reject });
      });
      // Results are awaited only after setup; avoid an unhandled rejection in between.
      if (deferred) p.catch(() => {});
      return p;
    },
  };
}

export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}
