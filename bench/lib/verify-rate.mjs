// Baseline for the JWT connect storm: how many distinct RS256 signatures one thread of
// node:crypto verifies per second on this CPU. Only crypto.verify is timed (the tokens are
// split and base64url-decoded beforehand), so this is the ceiling for a single core.
// Usage: node verify-rate.mjs <tokens.json> <public.pem> <durationMs>   → JSON on stdout
import { createPublicKey, verify } from 'node:crypto';
import { readFileSync } from 'node:fs';

const [tokensPath, pubPath, durationArg] = process.argv.slice(2);
const durationMs = Number(durationArg ?? 2000);
const key = createPublicKey(readFileSync(pubPath));
const prepared = JSON.parse(readFileSync(tokensPath, 'utf8')).map(({ jwt }) => {
  const dot = jwt.lastIndexOf('.');
  return { input: Buffer.from(jwt.slice(0, dot)), sig: Buffer.from(jwt.slice(dot + 1), 'base64url') };
});

// Short warm-up, then a bounded timed loop.
for (let i = 0; i < Math.min(200, prepared.length); i++) verify('sha256', prepared[i].input, key, prepared[i].sig);
let n = 0;
let bad = 0;
const start = process.hrtime.bigint();
const limitNs = BigInt(durationMs) * 1000000n;
const maxIterations = 10000000;
while (n < maxIterations) {
  const t = prepared[n % prepared.length];
  if (!verify('sha256', t.input, key, t.sig)) bad++;
  n++;
  if ((n & 63) === 0 && process.hrtime.bigint() - start > limitNs) break;
}
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
process.stdout.write(JSON.stringify({ verifies: n, bad, seconds, rate: n / seconds }));
