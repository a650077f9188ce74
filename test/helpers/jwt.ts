// Real keys, real tokens and a real JWKS server for identity tests. Nothing is mocked: key
// pairs come from jose, JWKS files are written to a temp directory, and the HTTP server
// listens on 127.0.0.1.
import { createServer, type Server } from 'node:http';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';

export type TestAlg = 'RS256' | 'ES256' | 'PS256' | 'EdDSA';

export interface TestKey {
  readonly kid: string;
  readonly alg: TestAlg;
  readonly privateKey: CryptoKey;
  readonly publicKey: CryptoKey;
  /** Public JWK with kid, alg and use. */
  readonly jwk: JWK;
  /** Public key as SPKI PEM (what an algorithm-confusion attacker uses as an HMAC secret). */
  readonly publicPem: string;
}

export async function makeKey(kid: string, alg: TestAlg = 'RS256'): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { kid, alg, privateKey, publicKey, jwk, publicPem: await exportSPKI(publicKey) };
}

export function jwksDocument(keys: readonly (TestKey | JWK)[]): { keys: JWK[] } {
  return { keys: keys.map((k) => ('jwk' in k ? (k as TestKey).jwk : (k as JWK))) };
}

export interface TokenOptions {
  readonly sub?: string;
  /** Seconds from now; negative = already expired. Null = no exp claim. */
  readonly expiresInS?: number | null;
  readonly notBeforeInS?: number;
  readonly issuer?: string;
  readonly audience?: string;
  /** Overrides the header kid (undefined keeps the key's kid, null drops it). */
  readonly kid?: string | null;
  readonly claims?: JWTPayload;
  readonly nowS?: number;
}

export async function signToken(key: TestKey, options: TokenOptions = {}): Promise<string> {
  const nowS = options.nowS ?? Math.floor(Date.now() / 1000);
  const header: { alg: string; kid?: string; typ: string } = { alg: key.alg, typ: 'JWT' };
  const kid = options.kid === undefined ? key.kid : options.kid;
  if (kid !== null) header.kid = kid;
  const jwt = new SignJWT({ ...options.claims }).setProtectedHeader(header).setIssuedAt(nowS);
  if (options.sub !== undefined) jwt.setSubject(options.sub);
  if (options.expiresInS !== null) jwt.setExpirationTime(nowS + (options.expiresInS ?? 3600));
  if (options.notBeforeInS !== undefined) jwt.setNotBefore(nowS + options.notBeforeInS);
  if (options.issuer) jwt.setIssuer(options.issuer);
  if (options.audience) jwt.setAudience(options.audience);
  return jwt.sign(key.privateKey);
}

export async function signHmac(secret: string | Uint8Array, claims: JWTPayload, header: Record<string, unknown> = {}): Promise<string> {
  const bytes = typeof secret === 'string' ? new TextEncoder().encode(secret) : secret;
  const nowS = Math.floor(Date.now() / 1000);
  return new SignJWT({ exp: nowS + 3600, ...claims }).setProtectedHeader({ alg: 'HS256', typ: 'JWT', ...header }).sign(bytes);
}

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** Malicious and broken tokens, each of which must be refused. */
export const malicious = {
  /** alg "none" with an empty signature. */
  algNone(claims: JWTPayload): string {
    return `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.`;
  },
  /** alg "none" with a non-empty (ignored) signature part, to defeat a naive "3 non-empty parts" check. */
  algNoneWithSignature(claims: JWTPayload): string {
    return `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.AAAA`;
  },
  /** The classic confusion attack: HS256 "signed" with the RSA public key PEM, naming the RSA kid. */
  hs256WithPublicKey(key: TestKey, claims: JWTPayload): Promise<string> {
    return signHmac(key.publicPem, claims, { kid: key.kid });
  },
  /**
   * A properly signed token with a critical header extension nobody implements. jose refuses
   * to produce one, so it is signed with WebCrypto directly (RS256 / ES256 keys).
   */
  async unknownCrit(key: TestKey, claims: JWTPayload): Promise<string> {
    const nowS = Math.floor(Date.now() / 1000);
    const input = `${b64({ alg: key.alg, kid: key.kid, crit: ['x-vigil-unknown'], 'x-vigil-unknown': true })}.${b64({ exp: nowS + 3600, ...claims })}`;
    const algorithm = key.alg === 'ES256' ? { name: 'ECDSA', hash: 'SHA-256' } : { name: 'RSASSA-PKCS1-v1_5' };
    const signature = await crypto.subtle.sign(algorithm, key.privateKey as unknown as globalThis.CryptoKey, new TextEncoder().encode(input));
    return `${input}.${Buffer.from(signature).toString('base64url')}`;
  },
  /** A valid token with its signature replaced by another token's. */
  async swappedSignature(key: TestKey, claims: JWTPayload, other: string): Promise<string> {
    const nowS = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({ exp: nowS + 3600, ...claims }).setProtectedHeader({ alg: key.alg, kid: key.kid }).sign(key.privateKey);
    const [h, p] = token.split('.');
    return `${h}.${p}.${other.split('.')[2]}`;
  },
  garbage: ['not-a-jwt', 'a.b', 'a.b.c.d.e', '!!!.???.***', `${b64('str')}.${b64({})}.AAAA`, `${Buffer.from('{not json').toString('base64url')}.e30.AAAA`],
};

export interface TempDir {
  readonly path: string;
  file(name: string): string;
  /** Writes atomically (write + rename), as deploy tools do. */
  write(name: string, content: string | object): Promise<string>;
  remove(): Promise<void>;
}

export async function tempDir(prefix = 'vigil-auth-'): Promise<TempDir> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  let n = 0;
  return {
    path,
    file: (name) => join(path, name),
    async write(name, content) {
      const target = join(path, name);
      const tmp = join(path, `.${name}.${n++}.tmp`);
      await writeFile(tmp, typeof content === 'string' ? content : JSON.stringify(content));
      await rename(tmp, target);
      return target;
    },
    remove: () => rm(path, { recursive: true, force: true }),
  };
}

export interface JwksServer {
  readonly url: string;
  /** Requests served so far. */
  readonly requests: number;
  setKeys(keys: readonly (TestKey | JWK)[]): void;
  /** Make every response slow, to widen the window in which concurrent callers pile up. */
  setDelayMs(ms: number): void;
  /** Hold every response from now on until the returned function is called (then all are answered). */
  hold(): () => void;
  /** Requests waiting in a hold. */
  readonly held: number;
  /** Serve exactly this body (e.g. `{"keys":[]}`), until setKeys. */
  setBody(body: string): void;
  /**
   * Answer with a chunked body (no Content-Length) of `chunkBytes` chunks, written as fast as
   * the client reads, until the client hangs up or `maxBytes` have gone (bounded). Resolves
   * with the bytes written once that response ended.
   */
  streamEndless(maxBytes: number, chunkBytes?: number): Promise<number>;
  close(): Promise<void>;
}

export async function startJwksServer(keys: readonly (TestKey | JWK)[] = []): Promise<JwksServer> {
  let body = JSON.stringify(jwksDocument(keys));
  let requests = 0;
  let delayMs = 0;
  let holding: (() => void)[] | undefined;
  let stream: { maxBytes: number; chunk: Buffer; done: (written: number) => void } | undefined;
  const server: Server = createServer((req, res) => {
    requests++;
    const endless = stream;
    if (endless) {
      stream = undefined;
      res.writeHead(200, { 'content-type': 'application/json' }); // no length: chunked
      let written = 0;
      let over = false;
      const finish = () => {
        if (over) return;
        over = true;
        endless.done(written);
      };
      res.on('close', finish);
      const pump = () => {
        while (!over && written < endless.maxBytes) {
          written += endless.chunk.length;
          if (!res.write(endless.chunk)) return void res.once('drain', pump);
        }
        if (!over) res.end(finish);
      };
      res.write('{"keys":[');
      pump();
      return;
    }
    const answer = () =>
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(body);
      }, delayMs);
    if (holding) holding.push(answer);
    else answer();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (typeof address !== 'object' || address === null) throw new Error('no address');
  return {
    url: `http://127.0.0.1:${address.port}/.well-known/jwks.json`,
    get requests() {
      return requests;
    },
    setKeys(next) {
      body = JSON.stringify(jwksDocument(next));
    },
    setDelayMs(ms) {
      delayMs = ms;
    },
    hold() {
      const waiting: (() => void)[] = (holding = []);
      return () => {
        if (holding === waiting) holding = undefined;
        for (const answer of waiting.splice(0)) answer();
      };
    },
    get held() {
      return holding?.length ?? 0;
    },
    setBody(next) {
      body = next;
    },
    streamEndless(maxBytes, chunkBytes = 64 * 1024) {
      return new Promise<number>((done) => {
        stream = { maxBytes, chunk: Buffer.alloc(chunkBytes, 0x20), done };
      });
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
