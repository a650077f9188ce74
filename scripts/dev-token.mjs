#!/usr/bin/env node
// Development keys and tokens for trying VIGIL_AUTH=jwt (not a production issuer).
//   node scripts/dev-token.mjs keygen KEY-A [RS256|ES256] [dir]   writes dir/KEY-A.private.jwk and adds the public key to dir/jwks.json
//   node scripts/dev-token.mjs sign dir/KEY-A.private.jwk <sub> [roles,comma,separated] [expires-in-seconds]
import { readFileSync, writeFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, importJWK, SignJWT } from 'jose';

const [cmd, ...args] = process.argv.slice(2);
if (cmd === 'keygen') {
  const [kid, alg = 'RS256', dir = '.'] = args;
  if (!kid) throw new Error('usage: keygen <kid> [alg] [dir]');
  mkdirSync(dir, { recursive: true });
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  writeFileSync(join(dir, `${kid}.private.jwk`), JSON.stringify({ ...(await exportJWK(privateKey)), kid, alg }), { mode: 0o600 });
  const jwksPath = join(dir, 'jwks.json');
  const jwks = existsSync(jwksPath) ? JSON.parse(readFileSync(jwksPath, 'utf8')) : { keys: [] };
  jwks.keys = jwks.keys.filter((k) => k.kid !== kid).concat({ ...(await exportJWK(publicKey)), kid, alg, use: 'sig' });
  writeFileSync(jwksPath, JSON.stringify(jwks, null, 2));
  console.log(`wrote ${join(dir, `${kid}.private.jwk`)} and ${jwksPath}`);
} else if (cmd === 'sign') {
  const [keyPath, sub, roles = '', expiresIn = '3600'] = args;
  if (!keyPath || !sub) throw new Error('usage: sign <private.jwk> <sub> [roles] [expires-in-s]');
  const jwk = JSON.parse(readFileSync(keyPath, 'utf8'));
  const key = await importJWK(jwk, jwk.alg);
  const now = Math.floor(Date.now() / 1000);
  const token = await new SignJWT({ roles: roles ? roles.split(',') : [] })
    .setProtectedHeader({ alg: jwk.alg, kid: jwk.kid, typ: 'JWT' })
    .setSubject(sub).setIssuedAt(now).setExpirationTime(now + Number(expiresIn))
    .sign(key);
  console.log(token);
} else {
  console.error('usage: dev-token.mjs keygen <kid> [alg] [dir] | sign <private.jwk> <sub> [roles] [expires-in-s]');
  process.exit(2);
}
