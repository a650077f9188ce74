// RS256 material for the JWT connect storm: one key pair, a JWKS file for Vigil, and a
// file of distinct signed tokens (one per connection; a token is never reused within one
// broker process, so a verification cache cannot flatter the result).
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const b64url = (buf) => Buffer.from(buf).toString('base64url');
const VERIFY_RATE = fileURLToPath(new URL('./verify-rate.mjs', import.meta.url));

/**
 * `subPrefix` names the subjects (`<prefix>-<i>`); `claims(sub)` adds claims (an acl, say).
 * Writes tokens.json (for the Node workers) and tokens.tsv ("sub<TAB>jwt" lines, for loadgen).
 * The signatures are made on every CPU at once (worker threads; ~0.5 ms per RS256 signature,
 * so 120,000 tokens would take a minute on one), the claims here.
 */
export async function makeJwtMaterial(dir, count, { subPrefix = 'bench', claims = () => ({}), name = 'tokens' } = {}) {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = 'bench-rs256';
  const jwk = { ...publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
  const jwksPath = path.join(dir, `${name}-jwks.json`);
  writeFileSync(jwksPath, JSON.stringify({ keys: [jwk] }));
  const header = b64url(JSON.stringify({ alg: 'RS256', typ: 'JWT', kid }));
  const now = Math.floor(Date.now() / 1000);
  const subs = [];
  const inputs = [];
  for (let i = 0; i < count; i++) {
    const sub = `${subPrefix}-${i}`;
    subs.push(sub);
    inputs.push(`${header}.${b64url(JSON.stringify({ sub, iat: now, exp: now + 7200, jti: randomUUID(), ...claims(sub) }))}`);
  }
  const signatures = await signAll(inputs, privateKey.export({ format: 'pem', type: 'pkcs8' }));
  const tokens = subs.map((sub, i) => ({ sub, jwt: `${inputs[i]}.${signatures[i]}` }));
  const tokensPath = path.join(dir, `${name}.json`);
  writeFileSync(tokensPath, JSON.stringify(tokens));
  const tsvPath = path.join(dir, `${name}.tsv`);
  writeFileSync(tsvPath, tokens.map((t) => `${t.sub}\t${t.jwt}\n`).join(''));
  const publicKeyPem = publicKey.export({ format: 'pem', type: 'spki' });
  const pubPath = path.join(dir, `${name}-public.pem`);
  writeFileSync(pubPath, publicKeyPem);
  return { jwksPath, tokensPath, tsvPath, pubPath, count };
}

/** The worker's body: RS256 (SHA-256, PKCS#1 v1.5) signatures of its share of the inputs, base64url. */
const SIGNER = `
const { parentPort, workerData } = require('node:worker_threads');
const { createPrivateKey, sign } = require('node:crypto');
const key = createPrivateKey(workerData.pem);
parentPort.postMessage(workerData.inputs.map((s) => sign('sha256', Buffer.from(s), key).toString('base64url')));
`;

/** Signs `inputs` in order, split over one worker thread per CPU. */
async function signAll(inputs, pem) {
  const threads = Math.max(1, Math.min(availableParallelism(), Math.ceil(inputs.length / 1000)));
  const per = Math.ceil(inputs.length / threads);
  const parts = [];
  for (let t = 0; t < threads; t++) {
    const share = inputs.slice(t * per, (t + 1) * per);
    parts.push(new Promise((resolve, reject) => {
      const w = new Worker(SIGNER, { eval: true, workerData: { pem, inputs: share } });
      w.once('message', resolve);
      w.once('error', reject);
      w.once('exit', (code) => { if (code !== 0) reject(new Error(`signer exited with ${code}`)); });
    }));
  }
  return (await Promise.all(parts)).flat();
}

/** Raw node:crypto RS256 verifications per second, single thread, pinned to `cpus`. */
export function measureVerifyRate({ cpus, tokensPath, pubPath, durationMs }) {
  return new Promise((resolve, reject) => {
    const child = spawn('taskset', ['-c', cpus, process.execPath, VERIFY_RATE, tokensPath, pubPath, String(durationMs)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), durationMs + 20000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`verify-rate exited with ${code}`));
      try {
        resolve(JSON.parse(out));
      } catch (err) {
        reject(err);
      }
    });
  });
}
