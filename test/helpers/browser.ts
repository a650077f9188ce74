// A real headless Chromium (Debian's /usr/bin/chromium, installed by
// scripts/ensure-system-deps.sh) driven over the Chrome DevTools Protocol with `ws`: no browser
// download, no extra dependency. One browser per test file, a fresh profile directory each
// time; every request URL and console message of the page is recorded, so a test can check
// what left the page.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';

export const CHROMIUM = process.env.VIGIL_CHROMIUM ?? '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-extensions', '--hide-scrollbars', '--mute-audio'];

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

type Pending = { resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void };

export interface Browser {
  newPage(width?: number, height?: number): Promise<Page>;
  close(): Promise<void>;
}

export interface Page {
  /** Every URL the page requested so far (documents, scripts, fetches). */
  readonly requests: string[];
  /** Console messages and uncaught exceptions of the page. */
  readonly console: string[];
  /** Loads a document (not for a same-document #hash change: set location.hash with eval). */
  goto(url: string): Promise<void>;
  /** Evaluates an expression in the page (awaiting a promise) and returns its JSON value. */
  eval<T = unknown>(expression: string): Promise<T>;
  /** Waits until the expression is truthy; returns its value. */
  waitFor<T = unknown>(expression: string, timeoutMs: number, what: string): Promise<T>;
  /** Focuses the element and types the text as keyboard input. */
  type(selector: string, text: string): Promise<void>;
  click(selector: string): Promise<void>;
  screenshot(path: string): Promise<void>;
}

export async function launchBrowser(timeoutMs = 60000): Promise<Browser> {
  const profile = mkdtempSync(join(tmpdir(), 'vigil-chromium-'));
  const proc = spawn(CHROMIUM, [...FLAGS, `--user-data-dir=${profile}`, '--remote-debugging-port=0', 'about:blank'], { stdio: ['ignore', 'ignore', 'pipe'] });
  live.add(proc);
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  void exited.then(() => live.delete(proc));
  const endpoint = await new Promise<string>((resolve, reject) => {
    let stderr = '';
    const timer = setTimeout(() => reject(new Error(`chromium did not start: ${stderr.slice(-2000)}`)), timeoutMs);
    proc.once('error', (err) => reject(new Error(`chromium could not run (${CHROMIUM}): ${err.message}`)));
    proc.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      const m = /DevTools listening on (ws:\/\/\S+)/.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    void exited.then(() => reject(new Error(`chromium exited: ${stderr.slice(-2000)}`)));
  });
  proc.stderr!.resume();

  const ws = new WebSocket(endpoint, { perMessageDeflate: false });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  let nextId = 1;
  const pending = new Map<number, Pending>();
  const listeners = new Map<string, Set<(params: Record<string, unknown>) => void>>();
  ws.on('message', (data: Buffer) => {
    const msg = JSON.parse(data.toString()) as { id?: number; result?: Record<string, unknown>; error?: { message: string }; method?: string; params?: Record<string, unknown>; sessionId?: string };
    if (msg.id !== undefined) {
      const p = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.error) p?.reject(new Error(msg.error.message));
      else p?.resolve(msg.result ?? {});
    } else if (msg.method) {
      for (const l of listeners.get(`${msg.sessionId ?? ''}|${msg.method}`) ?? []) l(msg.params ?? {});
    }
  });
  const send = (method: string, params: Record<string, unknown> = {}, sessionId?: string): Promise<Record<string, unknown>> =>
    new Promise((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve, reject });
      ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    });
  const on = (sessionId: string, method: string, fn: (params: Record<string, unknown>) => void) => {
    const key = `${sessionId}|${method}`;
    if (!listeners.has(key)) listeners.set(key, new Set());
    listeners.get(key)!.add(fn);
    return () => listeners.get(key)!.delete(fn);
  };

  return {
    async newPage(width = 1360, height = 860) {
      const { targetId } = (await send('Target.createTarget', { url: 'about:blank' })) as { targetId: string };
      const { sessionId } = (await send('Target.attachToTarget', { targetId, flatten: true })) as { sessionId: string };
      const s = (method: string, params?: Record<string, unknown>) => send(method, params, sessionId);
      const requests: string[] = [];
      const consoleLines: string[] = [];
      on(sessionId, 'Network.requestWillBeSent', (p) => requests.push((p.request as { url: string }).url));
      on(sessionId, 'Runtime.consoleAPICalled', (p) => consoleLines.push((p.args as { value?: unknown; description?: string }[]).map((a) => String(a.value ?? a.description ?? '')).join(' ')));
      on(sessionId, 'Runtime.exceptionThrown', (p) => consoleLines.push(`exception: ${JSON.stringify(p.exceptionDetails)}`));
      await Promise.all([s('Page.enable'), s('Runtime.enable'), s('Network.enable')]);
      await s('Emulation.setDeviceMetricsOverride', { width, height, deviceScaleFactor: 1, mobile: false });
      // confirm() dialogs (retained delete) are accepted
      on(sessionId, 'Page.javascriptDialogOpening', () => void s('Page.handleJavaScriptDialog', { accept: true }));

      const evaluate = async <T>(expression: string): Promise<T> => {
        const r = (await s('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true })) as { result: { value?: T }; exceptionDetails?: { text: string; exception?: { description?: string } } };
        if (r.exceptionDetails) throw new Error(`page: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
        return r.result.value as T;
      };
      const page: Page = {
        requests,
        console: consoleLines,
        async goto(url) {
          const loaded = new Promise<void>((resolve) => {
            const off = on(sessionId, 'Page.loadEventFired', () => {
              off();
              resolve();
            });
          });
          await s('Page.navigate', { url });
          let timer: NodeJS.Timeout | undefined;
          const timeout = new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`page load of ${url} timed out`)), 60000);
          });
          await Promise.race([loaded, timeout]).finally(() => clearTimeout(timer));
        },
        eval: evaluate,
        async waitFor<T>(expression: string, timeoutMs: number, what: string): Promise<T> {
          const deadline = Date.now() + timeoutMs;
          for (;;) {
            const v = await evaluate<T>(expression).catch(() => undefined);
            if (v) return v;
            if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
            await new Promise((r) => setTimeout(r, 100));
          }
        },
        async type(selector, text) {
          await evaluate(`(() => { const e = document.querySelector(${JSON.stringify(selector)}); e.focus(); e.value = ''; return true; })()`);
          await s('Input.insertText', { text });
        },
        async click(selector) {
          await evaluate(`(() => { const e = document.querySelector(${JSON.stringify(selector)}); if (!e) throw new Error('no element ' + ${JSON.stringify(selector)}); e.click(); return true; })()`);
        },
        async screenshot(path) {
          const { data } = (await s('Page.captureScreenshot', { format: 'png', captureBeyondViewport: false })) as { data: string };
          writeFileSync(path, Buffer.from(data, 'base64'));
        },
      };
      return page;
    },
    async close() {
      await send('Browser.close').catch(() => undefined);
      ws.close();
      const timer = setTimeout(() => proc.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
