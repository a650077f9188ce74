// The transport: bytes in, packets to the channel; packets out, batched per event-loop
// turn (cork/uncork gives one writev for everything a turn produced; what a received chunk's
// packets write goes out as soon as the chunk is parsed, a single write uncorked). Oversized
// packets are refused from the fixed header, before their body is buffered.
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Packet } from 'mqtt-packet';
import type { Metrics } from '../metrics.js';
import { Channel, type ChannelContext, type ChannelIO } from '../protocol/channel.js';
import { RC } from '../protocol/reason-codes.js';
import { releaseParser, strictParser, type FramingError, type PacketSink, type StrictMqttParser } from './strict-parser.js';

/** Socket-like streams: net.Socket, tls.TLSSocket, or a WebSocket stream. */
export type ByteStream = Duplex & { remoteAddress?: string; setNoDelay?(noDelay?: boolean): unknown; cork(): void; uncork(): void };

/**
 * The per-connection counters of one listener, bound once per metrics registry: a label
 * lookup (key building, map search, label object) per accept, close and chunk was a
 * measurable share of a connect storm.
 */
interface ListenerCounters {
  readonly open: { inc(): void; dec(): void };
  readonly opened: { inc(n?: number): void };
  readonly bytesIn: { inc(n?: number): void };
  readonly bytesOut: { inc(n?: number): void };
}
const countersByRegistry = new WeakMap<Metrics, Map<string, ListenerCounters>>();

function listenerCounters(metrics: Metrics, listener: string): ListenerCounters {
  let byListener = countersByRegistry.get(metrics);
  if (!byListener) countersByRegistry.set(metrics, (byListener = new Map()));
  let c = byListener.get(listener);
  if (!c) {
    c = {
      open: metrics.connectionsCurrent.bind({ listener }),
      opened: metrics.connectionsOpenedTotal.bind({ listener }),
      bytesIn: metrics.bytesInTotal.bind({}),
      bytesOut: metrics.bytesOutTotal.bind({}),
    };
    byListener.set(listener, c);
  }
  return c;
}

class StreamIO implements ChannelIO {
  private corked = false;
  private pendingBytesOut = 0;
  /**
   * The 'drain' listener is added the first time a write is refused (returns false): a stream
   * emits 'drain' only after that, and most connections (a connect storm's all) never fill
   * their socket, so they skip a listener per connection.
   */
  private drainWatched = false;

  constructor(
    private readonly stream: ByteStream,
    private readonly counters: ListenerCounters,
    readonly listener: string,
    readonly certSubject: string | undefined,
  ) {
    this.plainTcp = stream instanceof Socket && (stream as Socket & { encrypted?: boolean }).encrypted !== true;
  }

  /**
   * A plain TCP socket, which may be closed outright: closing a TLS or WebSocket stream
   * without its close_notify / close frame would look like a broken connection to the peer.
   */
  private readonly plainTcp: boolean;

  /** Read on first use (a getpeername call): most CONNECTs never need it. */
  get remoteAddress(): string {
    return (this.remote ??= this.stream.remoteAddress ?? 'unknown');
  }
  private remote?: string;

  /**
   * Set while a received chunk is parsed: what its packets write goes out when the chunk is
   * done (chunkDone), the moment the nextTick would have come, without a nextTick (a tick
   * object per CONNECT in a connect storm). Writes at any other time (deliveries,
   * asynchronous steps, drain) are corked until the next tick.
   */
  inChunk = false;
  /**
   * A chunk's first write, held until the chunk is done or writes again: a chunk that writes
   * once (the CONNACK of a CONNECT, a PUBACK) goes straight to the stream, without the
   * cork, the buffered entry and the uncork's flush (~300 bytes per CONNECT). A second write
   * corks both, as before: one writev for everything the chunk produced.
   */
  private held?: Buffer;

  write(bytes: Buffer): void {
    if (this.stream.destroyed) return;
    this.pendingBytesOut += bytes.length;
    if (!this.corked) {
      if (this.inChunk && this.held === undefined) {
        this.held = bytes;
        return;
      }
      this.corked = true;
      this.stream.cork();
      if (!this.inChunk) process.nextTick(uncork, this);
    }
    const held = this.held;
    if (held !== undefined) {
      this.held = undefined;
      this.put(held);
    }
    this.put(bytes);
  }

  private put(bytes: Buffer): void {
    if (!this.stream.write(bytes) && !this.drainWatched) {
      this.drainWatched = true;
      this.stream.on('drain', onDrain);
    }
  }

  /** The received chunk is parsed: what it wrote goes out now. */
  chunkDone(): void {
    this.inChunk = false;
    if (this.corked || this.held !== undefined) this.flush();
  }

  flush(): void {
    const held = this.held;
    if (held !== undefined) {
      this.held = undefined;
      if (!this.stream.destroyed) this.put(held);
    }
    if (this.corked) {
      this.corked = false;
      this.stream.uncork();
    }
    if (this.pendingBytesOut > 0) {
      this.counters.bytesOut.inc(this.pendingBytesOut);
      this.pendingBytesOut = 0;
    }
  }

  get bufferedBytes(): number {
    return this.stream.writableLength + (this.held?.length ?? 0);
  }

  end(): void {
    if (this.stream.destroyed) return;
    if (this.corked || this.held !== undefined) this.flush();
    this.stream.end();
    // a peer that never reads must not keep the socket open
    this.lingerSlot = lingering.add(this.stream);
  }

  /**
   * The peer sent DISCONNECT: it is owed nothing more. Once everything written is with the
   * kernel, a plain TCP socket is closed at once (close(2), which still sends what the kernel
   * holds, then FIN) instead of end(): no shutdown(2), no wait for the peer's FIN with another
   * epoll round and read, a measurable share of a connect storm. The peer's FIN is not data, so
   * this is no RST; only bytes it sent after its DISCONNECT, which it must not [MQTT-3.14.4-2],
   * would turn it into one.
   */
  endOwingNothing(): void {
    if (this.stream.destroyed) return;
    if (this.corked || this.held !== undefined) this.flush();
    if (this.plainTcp && this.stream.writableLength === 0) this.stream.destroy();
    else this.end();
  }

  /** The ring slot of lingering this stream waits in, once ended; -1 before. */
  lingerSlot = -1;

  /** The stream closed: it stops waiting (lingering must not keep a closed connection's objects alive). */
  closed(): void {
    if (this.lingerSlot >= 0) lingering.remove(this.stream, this.lingerSlot);
    this.lingerSlot = -1;
  }
}

/**
 * Streams ended but perhaps not closed yet (a peer that never reads), destroyed once
 * LINGER_MS has passed. One shared timer for all of them: a timer per connection was a
 * measurable share of a connect storm. A stream that closes meanwhile leaves at once: held
 * for the whole linger, the closed sockets of a connect storm (with their channels and
 * sessions) were promoted to the old generation and made major GCs a visible share.
 */
const LINGER_MS = 2000;
/** A stream waits between LINGER_MS and LINGER_MS * (1 + 1 / GENERATIONS). */
const GENERATIONS = 4;
class Lingering {
  private readonly ring: Set<ByteStream>[] = Array.from({ length: GENERATIONS + 1 }, () => new Set());
  private slot = 0;
  private waiting = 0;
  private timer?: NodeJS.Timeout;

  get size(): number {
    return this.waiting;
  }

  /** Returns the slot it waits in, for remove(). */
  add(stream: ByteStream): number {
    this.ring[this.slot].add(stream);
    this.waiting++;
    if (!this.timer) {
      this.timer = setInterval(() => this.tick(), LINGER_MS / GENERATIONS);
      this.timer.unref();
    }
    return this.slot;
  }

  /** A stream that closed before its time (if its slot was due meanwhile, it is gone already). */
  remove(stream: ByteStream, slot: number): void {
    if (this.ring[slot].delete(stream)) this.waiting--;
  }

  /** The slot filled GENERATIONS ticks ago and more is due. */
  private tick(): void {
    this.slot = (this.slot + 1) % this.ring.length;
    const due = this.ring[this.slot];
    this.ring[this.slot] = new Set();
    this.waiting -= due.size;
    for (const s of due) if (!s.destroyed) s.destroy();
    if (this.waiting === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }
}
const lingering = new Lingering();

/** Streams waiting in the linger (ended, not closed yet): for tests. */
export function lingeringStreams(): number {
  return lingering.size;
}

function uncork(io: StreamIO): void {
  io.flush();
}

/** Where a stream's listeners find their connection; cleared when the stream closes. */
const ATTACHED = Symbol('vigil.attached');
type AttachedStream = ByteStream & { [ATTACHED]?: AttachedConnection };

/**
 * One connection's transport state. The stream's listeners are shared functions that reach it
 * through the stream (no closures per connection), and the stream lets go of it when it
 * closes. Why: in a connect storm the sockets end up in V8's old generation (measured: every
 * storm socket, in Vigil and in a bare Node server alike), where a dead socket stays until a
 * major GC and keeps everything it points to alive through every scavenge. Closures in its
 * listener table held the channel, session and parser, so a storm copied and promoted all of
 * them (scavenges took 10-20 ms per ~1,200 connections).
 */
class AttachedConnection implements PacketSink {
  /** When the current chunk arrived: one clock read per chunk, not per packet. */
  chunkAtMs = 0;

  constructor(
    readonly channel: Channel,
    readonly io: StreamIO,
    readonly parser: StrictMqttParser,
    readonly counters: ListenerCounters,
    private readonly max: number,
    readonly untrack: Untrack | undefined,
  ) {}

  packet(packet: Packet): void {
    if (packetSize(packet.length ?? 0) > this.max) return tooLarge(this.channel);
    this.channel.handlePacket(packet, this.chunkAtMs);
  }

  framingError(err: FramingError): void {
    const channel = this.channel;
    if (channel.state === 'closing' || channel.state === 'closed') return;
    if (channel.state === 'awaiting-connect' && err.message === 'Invalid protocol version') return channel.refuseProtocolLevel();
    // a 5.0 CONNECT that fails to parse is answered in 5.0's form (CONNACK with the reason)
    if (channel.state === 'awaiting-connect' && this.parser.connectVersion === 5) channel.protocolVersion = 5;
    channel.handleFramingError(err.message, err.reasonCode);
  }

  data(chunk: Buffer): void {
    const channel = this.channel;
    if (channel.state === 'closing' || channel.state === 'closed') return;
    this.chunkAtMs = channel.ctx.clock.now();
    this.counters.bytesIn.inc(chunk.length);
    const io = this.io;
    io.inChunk = true;
    try {
      this.parser.parse(chunk);
    } catch (err) {
      // mqtt-packet can throw on some malformed input instead of emitting 'error'
      channel.handleFramingError((err as Error).message);
      return;
    } finally {
      io.chunkDone();
    }
    // the header is parsed and the body is still coming: refuse before buffering it (MQTT 5 §3.2.2.3.6)
    const pendingLength = this.parser.pendingLength;
    if (pendingLength > 0 && packetSize(pendingLength) > this.max) tooLarge(channel);
  }
}

function onData(this: AttachedStream, chunk: Buffer): void {
  this[ATTACHED]?.data(chunk);
}

function onDrain(this: AttachedStream): void {
  this[ATTACHED]?.channel.drained();
}

function onClose(this: AttachedStream): void {
  const c = this[ATTACHED];
  if (!c) return;
  this[ATTACHED] = undefined;
  c.counters.open.dec();
  c.io.closed();
  c.channel.closed();
  // nothing calls this connection's parser again (data() is reached through ATTACHED only);
  // not from inside its own parse, should a stream close synchronously there
  if (!c.io.inChunk) releaseParser(c.parser);
  // last: a listener that counts its open streams sees one gone only once its channel settled
  c.untrack?.(this);
}

/**
 * A listener's bookkeeping of its open streams (the server's, for its connection limit and
 * stop()), told when one closes: one shared function called from the transport's own 'close'
 * listener, not a 'close' listener of its own per stream. A second listener turns the
 * stream's 'close' slot into an array, which every emit copies.
 */
export type Untrack = (stream: Duplex) => void;

export function attachConnection(stream: ByteStream, ctx: ChannelContext, listener: string, certSubject?: string, untrack?: Untrack): Channel {
  const counters = listenerCounters(ctx.metrics, listener);
  const io = new StreamIO(stream, counters, listener, certSubject);
  const channel = new Channel(ctx, io);
  const parser = strictParser();
  counters.open.inc();
  counters.opened.inc();
  // a no-op when the server set it at accept (net.createServer({ noDelay: true }))
  stream.setNoDelay?.(true);

  const c = new AttachedConnection(channel, io, parser, counters, ctx.config.maxPacketSize, untrack);
  parser.sink = c;
  (stream as AttachedStream)[ATTACHED] = c;
  stream.on('data', onData);
  stream.on('error', ignore); // 'close' follows; nothing a peer does may crash the process
  stream.on('close', onClose); // the only one: the listener's untrack is called from it
  return channel;
}

function ignore(): void {}

/** Maximum Packet Size counts the whole packet: fixed header byte, remaining length, body [MQTT-3.2.2-15]. */
function packetSize(remainingLength: number): number {
  const lengthBytes = remainingLength < 128 ? 1 : remainingLength < 16384 ? 2 : remainingLength < 2097152 ? 3 : 4;
  return 1 + lengthBytes + remainingLength;
}

function tooLarge(channel: Channel): void {
  if (channel.state === 'closing' || channel.state === 'closed') return;
  channel.ctx.metrics.limitHitsTotal.inc({ limit: 'max_packet_size' });
  channel.handleFramingError('packet exceeds maximum packet size', RC.PACKET_TOO_LARGE);
}
