// RS256 material for the JWT connect storm: one key pair, a JWKS file for Vigil, and a
// file of distinct signed tokens (one per connection; a token is never reused within one
// broker process, so a verification cache cannot flatter the result).
import { generateKeyPairSync, sign, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const b64url = (buf) => Buffer.from(buf).toString('base64url');
const VERIFY_RATE = fileURLToPath(new URL('./verify-rate.mjs', import.meta.url));

/**
 * `subPrefix` names the subjects (`<prefix>-<i>`); `claims(sub)` adds claims (an acl, say).
 * Writes tokens.json (for the Node workers) and tokens.tsv ("sub<TAB>jwt" lines, for loadgen).
 */
export function makeJwtMaterial(dir, count, { subPrefix = 'bench', claims = () => ({}), name = 'tokens' } = {}) {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = 'bench-rs256';
  const jwk = { ...publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
  const jwksPath = path.join(dir, `${name}-jwks.json`);
  writeFileSync(jwksPath, JSON.stringify({ keys: [jwk] }));
  const header = b64url(JSON.stringify({ alg: 'RS256', typ: 'JWT', kid }));
  const now = Math.floor(Date.now() / 1000);
  const tokens = [];
  for (let i = 0; i < count; i++) {
    const sub = `${subPrefix}-${i}`;
    const body = b64url(JSON.stringify({ sub, iat: now, exp: now + 7200, jti: randomUUID(), ...claims(sub) }));
    const input = `${header}.${body}`;
    const sig = sign('sha256', Buffer.from(input), privateKey);
    tokens.push({ sub, jwt: `${input}.${b64url(sig)}` });
  }
  const tokensPath = path.join(dir, `${name}.json`);
  writeFileSync(tokensPath, JSON.stringify(tokens));
  const tsvPath = path.join(dir, `${name}.tsv`);
  writeFileSync(tsvPath, tokens.map((t) => `${t.sub}\t${t.jwt}\n`).join(''));
  const publicKeyPem = publicKey.export({ format: 'pem', type: 'spki' });
  const pubPath = path.join(dir, `${name}-public.pem`);
  writeFileSync(pubPath, publicKeyPem);
  return { jwksPath, tokensPath, tsvPath, pubPath, count };
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
