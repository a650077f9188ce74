// The TLS and WebSocket listeners. Both end in attachConnection, so the channel cannot tell
// them from plain TCP; the only differences it sees are the listener name and, over TLS with
// a verified client certificate, the certificate subject the ACL may use.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { WebSocketServer, createWebSocketStream, type WebSocket } from 'ws';
import type { Config } from '../config.js';
import type { ChannelContext } from '../protocol/channel.js';
import { attachConnection, type ByteStream, type Untrack } from './connection.js';

/** A listener the server starts and stops; `close` also ends connections still open. */
export interface MqttListener {
  readonly name: string;
  listen(port: number, host: string): Promise<void>;
  close(): Promise<void>;
  address(): AddressInfo | null;
  readonly port: number;
}

export interface ListenerDeps {
  readonly ctx: ChannelContext;
  /**
   * Decides whether a new connection is taken (draining, connection limit) and may track it.
   * false = refused: the listener destroys the stream. Default: every connection is taken.
   */
  readonly admit?: (stream: Duplex, listener: string) => boolean;
  /** Told when an admitted stream closes (the tracking admit started). */
  readonly untrack?: Untrack;
}

/** The WebSocket path clients connect to. */
export const WS_PATH = '/mqtt';
/** Subprotocols accepted, in order of preference: MQTT 3.1.1/5.0 name first, then the 3.1 one. */
export const WS_SUBPROTOCOLS = ['mqtt', 'mqttv3.1'] as const;

// ---- TLS ---------------------------------------------------------------------------------

export interface TlsFiles {
  readonly cert: string;
  readonly key: string;
  readonly ca?: string;
  readonly requireClientCert: boolean;
}

export function tlsFilesFromConfig(config: Config): TlsFiles {
  return { cert: config.tlsCert, key: config.tlsKey, ca: config.tlsCa || undefined, requireClientCert: config.tlsRequireClientCert };
}

function readTlsFiles(files: TlsFiles): tls.SecureContextOptions {
  const read = (path: string, what: string) => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new Error(`cannot read TLS ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
  };
  return { cert: read(files.cert, 'certificate'), key: read(files.key, 'key'), ca: files.ca ? read(files.ca, 'CA') : undefined };
}

/**
 * The subject a verified client certificate names: its CN when there is one, otherwise the
 * whole subject as `K=v,K=v`. undefined when no certificate was presented or it was not
 * verified against the CA, so an unverified certificate can never grant anything.
 */
export function verifiedCertSubject(socket: tls.TLSSocket): string | undefined {
  if (!socket.authorized) return undefined;
  const cert = socket.getPeerCertificate();
  if (!cert || !cert.subject || Object.keys(cert).length === 0) return undefined;
  const subject = cert.subject as unknown as Record<string, string | string[]>;
  const cn = subject.CN;
  if (typeof cn === 'string' && cn) return cn;
  if (Array.isArray(cn) && cn.length > 0) return cn[0];
  const parts = Object.entries(subject).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join('+') : v}`);
  return parts.length > 0 ? parts.join(',') : undefined;
}

class TlsListener implements MqttListener {
  readonly name = 'tls';
  private readonly server: tls.Server;
  private readonly streams = new Set<tls.TLSSocket>();
  /** The transport tells this listener and the server's admit that a stream closed (no 'close' listener of their own). */
  private readonly untrack: Untrack;

  constructor(private readonly files: TlsFiles, private readonly deps: ListenerDeps) {
    const { ctx } = deps;
    this.untrack = untrackBoth(this.streams, deps);
    this.server = tls.createServer({
      ...readTlsFiles(files),
      // with a CA, a certificate is asked for; without requireClientCert a client may still go without one
      requestCert: files.requireClientCert || !!files.ca,
      rejectUnauthorized: files.requireClientCert,
      handshakeTimeout: ctx.config.connectTimeoutS * 1000,
      minVersion: 'TLSv1.2',
    });
    this.server.maxConnections = ctx.config.maxConnections;
    this.server.on('secureConnection', (socket) => this.accept(socket));
    this.server.on('tlsClientError', (err, socket) => {
      ctx.metrics.connectionsRefusedTotal.inc({ reason: 'tls_handshake' });
      ctx.log.info({ listener: 'tls', remote: socket.remoteAddress, err: err.message }, 'TLS handshake failed');
    });
  }

  private accept(socket: tls.TLSSocket): void {
    if (this.deps.admit && !this.deps.admit(socket, this.name)) {
      socket.destroy();
      return;
    }
    this.streams.add(socket);
    attachConnection(socket as ByteStream, this.deps.ctx, this.name, verifiedCertSubject(socket), this.untrack);
  }


  /** Loads certificate, key and CA again (rotation); connections already open keep theirs. */
  reloadCertificates(): void {
    this.server.setSecureContext(readTlsFiles(this.files));
  }

  listen(port: number, host: string): Promise<void> {
    return listenOn(this.server, port, host, this.deps.ctx.config.listenBacklog);
  }

  address(): AddressInfo | null {
    return this.server.address() as AddressInfo | null;
  }

  get port(): number {
    return this.address()?.port ?? 0;
  }

  close(): Promise<void> {
    return closeServer(this.server, this.streams);
  }
}

export type TlsMqttListener = MqttListener & { reloadCertificates(): void };

/** MQTT over TLS. Throws (naming the file) when a certificate, key or CA cannot be read. */
export function createTlsListener(files: TlsFiles, deps: ListenerDeps): TlsMqttListener {
  return new TlsListener(files, deps);
}

// ---- WebSocket ---------------------------------------------------------------------------

/** Picks the subprotocol; null when the client offered some but none of ours. */
export function chooseSubprotocol(header: string | undefined): string | null | undefined {
  if (header === undefined || header.trim() === '') return undefined;
  const offered = new Set(header.split(',').map((s) => s.trim()).filter(Boolean));
  for (const p of WS_SUBPROTOCOLS) if (offered.has(p)) return p;
  return null;
}

class WebSocketListener implements MqttListener {
  readonly name = 'ws';
  private readonly server: http.Server;
  private readonly wss: WebSocketServer;
  private readonly streams = new Set<Duplex>();
  private readonly untrack: Untrack;

  constructor(private readonly deps: ListenerDeps) {
    const { ctx } = deps;
    this.untrack = untrackBoth(this.streams, deps);
    // MQTT-over-WebSocket clients send one packet per message; the MQTT parser enforces the real
    // limit, this one only stops ws from buffering an unbounded frame first.
    const maxPayload = ctx.config.maxPacketSize + 16;
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload,
      perMessageDeflate: false,
      // [MQTT-6.0.0-4] the subprotocol returned is the one the client offered ("mqtt")
      handleProtocols: (protocols) => chooseSubprotocol([...protocols].join(',')) ?? false,
    });
    this.server = http.createServer((_req, res) => {
      res.writeHead(426, { 'content-type': 'text/plain', upgrade: 'websocket' }).end(`MQTT over WebSocket: connect to ${WS_PATH}\n`);
    });
    this.server.maxConnections = ctx.config.maxConnections;
    this.server.on('upgrade', (req, socket, head) => this.upgrade(req, socket as net.Socket, head));
    this.server.on('clientError', (_err, socket) => socket.destroy());
  }

  private upgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    const { ctx } = this.deps;
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (path !== WS_PATH) return refuseUpgrade(socket, 404, 'Not Found');
    // The MQTT spec says a client MUST offer "mqtt" [MQTT-6.0.0-3]; a client offering none is
    // taken (some embedded clients omit the header), one offering only others is refused.
    if (chooseSubprotocol(req.headers['sec-websocket-protocol']) === null) {
      ctx.metrics.connectionsRefusedTotal.inc({ reason: 'ws_subprotocol' });
      return refuseUpgrade(socket, 400, 'Bad Request');
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws, req));
  }

  private accept(ws: WebSocket, req: http.IncomingMessage): void {
    const stream = createWebSocketStream(ws) as ByteStream;
    stream.remoteAddress = req.socket.remoteAddress;
    stream.setNoDelay = (noDelay?: boolean) => req.socket.setNoDelay(noDelay);
    if (this.deps.admit && !this.deps.admit(stream, this.name)) {
      ws.terminate();
      stream.destroy();
      return;
    }
    this.streams.add(stream);
    attachConnection(stream, this.deps.ctx, this.name, undefined, this.untrack);
  }

  listen(port: number, host: string): Promise<void> {
    return listenOn(this.server, port, host, this.deps.ctx.config.listenBacklog);
  }

  address(): AddressInfo | null {
    return this.server.address() as AddressInfo | null;
  }

  get port(): number {
    return this.address()?.port ?? 0;
  }

  async close(): Promise<void> {
    for (const ws of this.wss.clients) ws.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
    await closeServer(this.server, this.streams);
    this.server.closeAllConnections();
  }
}

/** MQTT over WebSocket at ws://host:port/mqtt. */
export function createWebSocketListener(deps: ListenerDeps): MqttListener {
  return new WebSocketListener(deps);
}

/** The listeners the config turns on, not yet listening (tlsPort / wsPort 0 = off). */
export function listenersFromConfig(config: Config, deps: ListenerDeps): { listener: MqttListener; port: number }[] {
  const out: { listener: MqttListener; port: number }[] = [];
  if (config.tlsPort) out.push({ listener: createTlsListener(tlsFilesFromConfig(config), deps), port: config.tlsPort });
  if (config.wsPort) out.push({ listener: createWebSocketListener(deps), port: config.wsPort });
  return out;
}

// ---- shared ------------------------------------------------------------------------------

/** A listener's own set of open streams, and the server's tracking behind admit. */
function untrackBoth(streams: Set<Duplex>, deps: ListenerDeps): Untrack {
  const server = deps.untrack;
  return (stream) => {
    streams.delete(stream);
    server?.(stream);
  };
}

function refuseUpgrade(socket: net.Socket, status: number, text: string): void {
  socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  socket.destroySoon?.();
}

/**
 * `backlog`: connections the kernel completes before Node accepts them (Linux caps it at
 * net.core.somaxconn). Past it, SYNs are dropped and the client retries after 1 s, 3 s, 7 s:
 * a fleet reconnecting at once turns into minutes of stragglers with Node's default of 511.
 */
export function listenOn(server: net.Server, port: number, host: string, backlog?: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host, backlog }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** Stops accepting, destroys what is still open (the server's drain has run by then), waits. */
function closeServer(server: net.Server, streams: Set<Duplex>): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      for (const s of streams) s.destroy();
      resolve();
      return;
    }
    server.close(() => resolve());
    for (const s of streams) s.destroy();
  });
}
