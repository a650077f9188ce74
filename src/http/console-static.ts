// Serves the console's static files (src/http/console/) under /console. They hold no data: the
// page asks the admin API for everything, with the token the operator typed, kept in the tab's
// sessionStorage and sent as a Bearer header (never in a URL or a cookie). Off — 404 — when
// the admin API is off. The files are read from the source tree at run time, like the Lua
// scripts (tsc does not copy them; the Dockerfile copies src/).
import { existsSync, readFileSync } from 'node:fs';
import type http from 'node:http';
import { fileURLToPath } from 'node:url';

const FILES: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'console.css': 'text/css; charset=utf-8',
  'console.js': 'text/javascript; charset=utf-8',
  'favicon.svg': 'image/svg+xml',
};

/** No inline script or style, nothing from elsewhere, no framing, no form posts anywhere. */
export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export function consoleDir(): string {
  const candidates = [new URL('./console/', import.meta.url), new URL('../../../src/http/console/', import.meta.url)];
  for (const url of candidates) {
    const dir = fileURLToPath(url);
    if (existsSync(dir + 'index.html')) return dir;
  }
  throw new Error(`console files not found (looked in ${candidates.map((u) => fileURLToPath(u)).join(', ')})`);
}

export type ConsoleHandler = (req: http.IncomingMessage, res: http.ServerResponse, pathname: string) => boolean;

export function createConsoleHandler(enabled: boolean): ConsoleHandler {
  // read once at start: a missing file fails the start, not a request
  const files = new Map<string, { body: Buffer; type: string }>();
  if (enabled) {
    const dir = consoleDir();
    for (const [name, type] of Object.entries(FILES)) files.set(name, { body: readFileSync(dir + name), type });
  }
  return (req, res, pathname) => {
    if (pathname !== '/console' && !pathname.startsWith('/console/')) return false;
    const headers = {
      'content-security-policy': CONSOLE_CSP,
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      'x-frame-options': 'DENY',
      'cache-control': 'no-store',
    };
    if (!enabled) {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'not found' }));
      return true;
    }
    if (pathname === '/console') {
      res.writeHead(308, { ...headers, location: '/console/' }).end();
      return true;
    }
    const name = pathname.slice('/console/'.length) || 'index.html';
    const file = files.get(name);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { ...headers, allow: 'GET, HEAD' }).end();
    } else if (!file) {
      res.writeHead(404, { ...headers, 'content-type': 'text/plain; charset=utf-8' }).end('not found');
    } else {
      res.writeHead(200, { ...headers, 'content-type': file.type, 'content-length': file.body.length }).end(req.method === 'HEAD' ? undefined : file.body);
    }
    return true;
  };
}
