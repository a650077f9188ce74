// The MQTT protocol state machine of one connection. It takes decoded packets and answers
// through ChannelIO; it never touches a socket, so the same code runs over TCP, TLS and
// WebSocket, and a test can drive it without one. Packet handling lives in handlers/.
//
// Just over 400 lines on purpose: the connection's states and every transition between them
// (CONNECT, authentication, re-authentication, takeover, the timers a sweep checks, closing)
// are kept in one class, so the rules of which packet is legal in which state read in one
// place; what each packet does is in handlers/ already.
import '../transport/quiet-debug.js'; // before mqtt-packet: its per-packet debug calls become no-ops
import mqttPacket from 'mqtt-packet';
import type { Packet } from 'mqtt-packet';
import type { Identity } from '../auth/types.js';
import type { Broker } from '../broker/broker.js';
import type { BrokerDeps, LiveConnection } from '../broker/ports.js';
import type { Session } from '../broker/session.js';
import type { QueueLimit, SessionLink } from '../broker/session-ports.js';
import type { WillRecord } from '../store/types.js';
import type { FailureLimiter } from '../limits/rate-limiter.js';
import type { ConcurrencyGate } from '../limits/concurrency-gate.js';
import { AliasUse, forClient, type OutgoingPublish } from './publish-encoder.js';
import type { OutboundAliases } from './outbound-aliases.js';
import { ProtocolViolation, RC, reasonName, toReasonCode, type ReasonCode } from './reason-codes.js';
import { propertyViolation } from './properties.js';
import { handleConnect, refuse } from './handlers/connect.js';
import { handlePublish, handlePubrel, handlePuback, handlePubrec, handlePubcomp } from './handlers/publish.js';
import { handleSubscribe, handleUnsubscribe } from './handlers/subscribe.js';
import { handleDisconnect } from './handlers/disconnect.js';
import { handleAuth } from './handlers/auth.js';

/** What the transport provides to a channel. */
export interface ChannelIO {
  write(bytes: Buffer): void;
  /** Bytes written but not yet flushed to the socket. */
  readonly bufferedBytes: number;
  /** Flush what is written, then close. */
  end(): void;
  /**
   * Close when nothing more is owed to the peer (it sent DISCONNECT): what is written is
   * flushed, and a socket with nothing left to send may close at once instead of waiting
   * for the peer's end. Otherwise the same as end().
   */
  endOwingNothing(): void;
  readonly remoteAddress: string;
  readonly listener: string;
  readonly certSubject?: string;
}

/** Limiters shared by every connection of a node. */
export interface ChannelLimits {
  /** Failed signature checks per source address (VIGIL_AUTH_FAILURES_PER_ADDRESS). */
  readonly authFailuresByAddress: FailureLimiter;
  /** Cluster: CONNECTs whose claim and session load are in Redis at once (VIGIL_CLUSTER_CONNECTS_IN_FLIGHT). */
  readonly clusterConnects?: ConcurrencyGate;
}

/** The broker's own dependencies (less its retained store), the broker and the limits. */
export interface ChannelContext extends Omit<BrokerDeps, 'retained'> {
  readonly broker: Broker;
  readonly limits: ChannelLimits;
}

export type ChannelState = 'awaiting-connect' | 'authenticating' | 'connected' | 'reauthenticating' | 'closing' | 'closed';

/** Packets that arrive while an asynchronous step (authentication, authorization) runs wait here. */
const MAX_BACKLOG = 1000;

export class Channel implements SessionLink, LiveConnection {
  state: ChannelState = 'awaiting-connect';
  protocolVersion: 3 | 4 | 5 = 4;
  clientId = '';
  session: Session | null = null;
  identity?: Identity;
  will?: WillRecord;
  /** Authentication Method from CONNECT (MQTT 5); AUTH is allowed only with one. */
  authMethod?: string;
  keepaliveMs = 0;
  lastRxMs: number;
  readonly openedAtMs: number;
  /** When the CONNECT arrived: from then on the wait is the broker's, not the client's. */
  connectReceivedAtMs = 0;
  sendQuota: number;
  clientMaxPacketSize = 0;
  clientTopicAliasMax = 0;
  /** MQTT 5: the client id we assigned, and the keep alive we imposed, for CONNACK. */
  assignedClientId?: string;
  serverKeepAlive?: number;
  /** Whether reason strings and user properties may be sent (MQTT 5 Request Problem Information). */
  problemInfo = true;
  /** Topic aliases the client set (MQTT 5), made on first use: most connections never alias. */
  get inboundAliases(): Map<number, string> {
    return (this.aliases ??= new Map());
  }
  private aliases?: Map<number, string>;
  /** MQTT 5: the aliases Vigil sends this client, when it accepts some (Topic Alias Maximum > 0). */
  outboundAliases?: OutboundAliases;
  /** Set when the client ended with DISCONNECT 0x00: no will [MQTT-3.14.4-3]. */
  normalDisconnect = false;
  /** Cluster: acknowledgements waiting for their publish to be stored, in arrival order. */
  ackChain: Promise<unknown> = SETTLED;
  acksWaiting = 0;
  /** Cluster: closed because a newer incarnation took over elsewhere, or this node was fenced. */
  superseded = false;
  /** Superseded because this node lost its cluster lease (the session may stay, see closed()). */
  private leaseLost = false;
  closeReason = 'socket_closed';
  /** Made on first use: most connections never wait on an asynchronous step with packets behind it. */
  private backlog?: Packet[];
  /** An asynchronous step is running: later packets wait in the backlog to keep order. */
  private busy = false;
  private draining = false;
  private pumpScheduled = false;

  constructor(readonly ctx: ChannelContext, readonly io: ChannelIO) {
    this.openedAtMs = this.lastRxMs = ctx.clock.now();
    this.sendQuota = ctx.config.maxInflight;
    ctx.broker.connections.add(this);
  }

  get writable(): boolean {
    return this.io.bufferedBytes < this.ctx.config.outputBufferBytes;
  }

  get open(): boolean {
    return this.state !== 'closing' && this.state !== 'closed';
  }

  get connected(): boolean {
    return this.state === 'connected' || this.state === 'reauthenticating';
  }

  // ---- input ---------------------------------------------------------------------------

  /** `nowMs`: when the packet's bytes arrived (one clock read per socket chunk, not per packet). */
  handlePacket(packet: Packet, nowMs = this.ctx.clock.now()): void {
    this.lastRxMs = nowMs;
    if (this.state === 'closing' || this.state === 'closed') return;
    if (this.busy || this.state === 'authenticating') {
      if (packet.cmd === 'connect') return this.protocolError(RC.PROTOCOL_ERROR, 'second CONNECT'); // [MQTT-3.1.0-2]
      const backlog = (this.backlog ??= []);
      if (backlog.length >= MAX_BACKLOG) return this.protocolError(RC.RECEIVE_MAXIMUM_EXCEEDED, 'too many packets while waiting');
      backlog.push(packet);
      return;
    }
    this.dispatch(packet);
  }

  private dispatch(packet: Packet): void {
    try {
      if (this.state === 'awaiting-connect') {
        if (packet.cmd !== 'connect') return this.protocolError(RC.PROTOCOL_ERROR, `${packet.cmd} before CONNECT`); // [MQTT-3.1.0-1]
        return handleConnect(this, packet);
      }
      const props = (packet as { properties?: object }).properties;
      if (props !== undefined) {
        const bad = propertyViolation(packet.cmd, props);
        if (bad) return this.protocolError(bad.code, bad.reason);
      }
      switch (packet.cmd) {
        case 'publish': return handlePublish(this, packet);
        case 'puback': return handlePuback(this, packet);
        case 'pubrec': return handlePubrec(this, packet);
        case 'pubrel': return handlePubrel(this, packet);
        case 'pubcomp': return handlePubcomp(this, packet);
        case 'subscribe': return handleSubscribe(this, packet);
        case 'unsubscribe': return handleUnsubscribe(this, packet);
        case 'pingreq': return this.io.write(PINGRESP);
        case 'disconnect': return handleDisconnect(this, packet);
        case 'auth':
          if (this.protocolVersion !== 5) return this.protocolError(RC.PROTOCOL_ERROR, 'AUTH in MQTT 3.1.1');
          return handleAuth(this, packet);
        case 'connect': return this.protocolError(RC.PROTOCOL_ERROR, 'second CONNECT'); // [MQTT-3.1.0-2]
        default: return this.protocolError(RC.PROTOCOL_ERROR, `${packet.cmd} is not sent by clients`);
      }
    } catch (err) {
      if (err instanceof ProtocolViolation) return this.protocolError(err.reasonCode, err.message);
      this.ctx.log.error({ clientId: this.clientId, err: (err as Error).stack }, 'internal error handling packet');
      this.protocolError(RC.IMPLEMENTATION_SPECIFIC_ERROR, 'internal error');
    }
  }

  /** Runs an asynchronous step; packets arriving meanwhile wait and are handled after it, in order. */
  waitFor<T>(promise: Promise<T>, then: (value: T) => void): void {
    this.busy = true;
    promise.then(
      (value) => {
        this.busy = false;
        if (this.state === 'closing' || this.state === 'closed') return;
        try {
          then(value);
        } catch (err) {
          if (err instanceof ProtocolViolation) return this.protocolError(err.reasonCode, err.message);
          this.ctx.log.error({ clientId: this.clientId, err: (err as Error).stack }, 'internal error after async step');
          return this.protocolError(RC.IMPLEMENTATION_SPECIFIC_ERROR, 'internal error');
        }
        this.drainBacklog();
      },
      (err) => {
        this.busy = false;
        this.ctx.log.error({ clientId: this.clientId, err: (err as Error)?.message }, 'async step failed');
        this.protocolError(RC.UNSPECIFIED_ERROR, 'internal error');
      },
    );
  }

  /** Handles packets that waited while an asynchronous step ran. */
  drainBacklog(): void {
    if (this.draining || this.backlog === undefined) return;
    this.draining = true;
    try {
      // closed() drops the backlog: read it anew after each packet
      while (this.backlog !== undefined && this.backlog.length > 0 && !this.busy && this.state !== 'authenticating' && this.state !== 'closing' && this.state !== 'closed') {
        this.dispatch(this.backlog.shift()!);
      }
    } finally {
      this.draining = false;
    }
  }

  /** Malformed input from the framing layer [MQTT-4.13.1-1]. */
  handleFramingError(message: string, parserCode?: number): void {
    const reasonCode = toReasonCode(parserCode, RC.MALFORMED_PACKET);
    this.ctx.metrics.protocolErrorsTotal.inc({ reason: reasonName(reasonCode) });
    this.ctx.log.info({ clientId: this.clientId, remote: this.io.remoteAddress, reason: message }, 'malformed input, closing');
    this.close(reasonCode, message);
  }

  /**
   * A CONNECT with a protocol level we do not speak [MQTT-3.1.2-2]: CONNACK 0x01 in the 3.1.1
   * form (the only one a client of unknown version can be expected to read), then close.
   */
  refuseProtocolLevel(): void {
    this.ctx.metrics.connectOutcomesTotal.inc({ code: reasonName(RC.UNSUPPORTED_PROTOCOL_VERSION), version: 'unknown' });
    this.ctx.log.info({ remote: this.io.remoteAddress }, 'unsupported protocol level, closing');
    this.io.write(CONNACK_UNACCEPTABLE_PROTOCOL_LEVEL);
    this.close(undefined, 'connect_refused_unsupported_protocol_version');
  }

  // ---- output --------------------------------------------------------------------------

  send(packet: Packet): void {
    if (this.state === 'closed') return;
    let bytes = mqttPacket.generate(packet, { protocolVersion: this.protocolVersion });
    if (this.clientMaxPacketSize && bytes.length > this.clientMaxPacketSize) {
      // reason string and user properties go first [MQTT-3.2.2-19, MQTT-3.2.2-20, MQTT-3.4.2-2,
      // MQTT-3.4.2-3, MQTT-3.9.2-1, MQTT-3.9.2-2, MQTT-3.14.2-3, MQTT-3.14.2-4 ...]
      const props = (packet as { properties?: { reasonString?: string; userProperties?: unknown } }).properties;
      if (props && (props.reasonString !== undefined || props.userProperties !== undefined)) {
        delete props.reasonString;
        delete props.userProperties;
        bytes = mqttPacket.generate(packet, { protocolVersion: this.protocolVersion });
      }
      // still too large: not sent at all [MQTT-3.1.2-24]
      if (bytes.length > this.clientMaxPacketSize) {
        this.ctx.metrics.packetsDroppedTotal.inc({ packet: packet.cmd });
        this.ctx.log.debug({ clientId: this.clientId, packet: packet.cmd, bytes: bytes.length, max: this.clientMaxPacketSize }, 'packet larger than the client maximum, not sent');
        return;
      }
    }
    this.io.write(bytes);
  }

  /** Adds a reason string to a packet's properties when the client accepts them. */
  reasonString(text: string): { reasonString?: string } {
    return this.protocolVersion === 5 && this.problemInfo ? { reasonString: text } : {};
  }

  sendPublish(out: OutgoingPublish, qos: 0 | 1 | 2, retain: boolean, subscriptionIds: readonly number[] | undefined, packetId: number, dup: boolean): boolean {
    if (this.state === 'closing' || this.state === 'closed') return qos > 0; // keep it in flight for the next connection
    const aliases = this.outboundAliases;
    let slot = aliases?.choose(out.message.topic);
    let form = out.encode(this.protocolVersion, qos, retain, subscriptionIds, slot === undefined ? AliasUse.None : slot.known ? AliasUse.Use : AliasUse.Set);
    const max = this.clientMaxPacketSize;
    if (max && form.bytes.length > max && slot !== undefined && !slot.known) {
      // the alias would make it too large: without it, it may still fit
      slot = undefined;
      form = out.encode(this.protocolVersion, qos, retain, subscriptionIds, AliasUse.None);
    }
    if (max && form.bytes.length > max) {
      this.ctx.metrics.messagesDroppedTotal.inc({ reason: 'too_large' });
      return false;
    }
    this.io.write(qos === 0 && slot === undefined ? form.bytes : forClient(form, packetId, dup, slot?.alias ?? 0));
    // the client maps the alias once this PUBLISH is on its way; the stream keeps the order
    if (slot !== undefined && !slot.known) aliases!.established(slot);
    return true;
  }

  sendPubrel(packetId: number): void {
    this.io.write(ack(0x62, packetId));
  }

  closeForQuota(limit: QueueLimit): void {
    if (this.state === 'closing' || this.state === 'closed') return; // one hit per connection, not per message after it
    this.ctx.metrics.limitHitsTotal.inc({ limit });
    this.close(RC.QUOTA_EXCEEDED, limit === 'queued_bytes_budget' ? 'node queue budget spent' : 'session queue full');
  }

  pumpLater(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      this.drained();
    });
  }

  /** The socket can take more: send what waited in the session queue. */
  drained(): void {
    if (this.session && this.session.link === this) this.session.pump(this.ctx.clock.now());
  }

  // ---- closing -------------------------------------------------------------------------

  protocolError(reasonCode: ReasonCode, message: string): void {
    this.ctx.metrics.protocolErrorsTotal.inc({ reason: reasonName(reasonCode) });
    this.ctx.log.info({ clientId: this.clientId, remote: this.io.remoteAddress, reason: message }, 'protocol error, closing');
    this.close(reasonCode, message);
  }

  /**
   * Closes the connection; a 5.0 client that completed CONNECT gets DISCONNECT with the
   * reason first [MQTT-4.13.2-1], one still connecting gets CONNACK with it. The will follows the normal rules when the socket is gone.
   */
  close(reasonCode: ReasonCode | undefined, why: string, owingNothing = false): void {
    if (this.state === 'closing' || this.state === 'closed') return;
    if (this.protocolVersion === 5 && reasonCode !== undefined) {
      if (this.connected) this.send({ cmd: 'disconnect', reasonCode, properties: this.reasonString(why) });
      // a 5.0 CONNECT not yet answered is refused with the reason in CONNACK (MQTT 5 §4.13.1);
      // 3.1.1 closes without a CONNACK [MQTT-3.1.4-1]
      else if (this.state === 'awaiting-connect' || this.state === 'authenticating') return refuse(this, { code: reasonCode, reason: why });
    }
    this.closeReason = reasonCode === undefined ? why : reasonName(reasonCode);
    this.state = 'closing';
    if (owingNothing) this.io.endOwingNothing();
    else this.io.end();
  }

  /** Another connection took this client id [MQTT-3.1.4-3]: close now and settle the session. */
  takeover(): void {
    this.ctx.metrics.takeoversTotal.inc({ scope: 'local' });
    this.close(RC.SESSION_TAKEN_OVER, 'session taken over');
    this.closed();
  }

  /** The transport reports the socket is gone. Runs once; settles will and session. */
  closed(): void {
    if (this.state === 'closed') return;
    const wasConnected = this.session !== null;
    this.state = 'closed';
    this.ctx.broker.connections.delete(this);
    this.backlog = undefined;
    this.ctx.metrics.connectionsClosedTotal.inc({ reason: this.closeReason });
    const session = this.session;
    if (!wasConnected || !session || session.link !== this) return;
    if (this.superseded) {
      // a newer incarnation owns the client elsewhere, or this node lost its lease: the
      // will is not this node's to decide now (broker.sessionSuperseded)
      this.ctx.broker.sessionSuperseded(session, this.leaseLost);
      return;
    }
    this.ctx.broker.clientGone(session, this.will, this.normalDisconnect);
  }

  /**
   * Cluster: the client connected on another node (5.0 DISCONNECT 0x8E), or this node lost
   * its lease and may not act as owner (0x89).
   */
  supersede(reasonCode: ReasonCode, why: string, leaseLost = false): void {
    this.superseded = true;
    this.leaseLost = leaseLost;
    this.close(reasonCode, why);
    this.closed();
  }

  // ---- timers --------------------------------------------------------------------------

  tick(nowMs: number): void {
    if (this.state === 'awaiting-connect') {
      if (nowMs - this.openedAtMs > this.ctx.config.connectTimeoutS * 1000) {
        this.ctx.metrics.limitHitsTotal.inc({ limit: 'connect_timeout' });
        this.close(undefined, 'connect_timeout');
      }
      return;
    }
    if (this.state === 'authenticating') {
      // The client has done its part. Time queued behind the auth pool or Redis is the
      // broker's (a fleet reconnecting at once must converge, not time out), but bounded: a
      // CONNECT never holds its socket longer than this, whatever the broker is waiting for.
      if (nowMs - this.connectReceivedAtMs > this.ctx.config.connectAdmissionTimeoutS * 1000) {
        this.ctx.metrics.limitHitsTotal.inc({ limit: 'connect_admission_timeout' });
        refuse(this, { code: RC.SERVER_BUSY, reason: 'connect admission timeout' });
      }
      return;
    }
    if (!this.connected) return;
    // [MQTT-3.1.2-24] one and a half times the keep alive without a packet
    if (this.keepaliveMs > 0 && nowMs - this.lastRxMs > this.keepaliveMs * 1.5) {
      this.close(RC.KEEP_ALIVE_TIMEOUT, 'keep alive timeout');
      return;
    }
    const exp = this.identity?.expiresAtMs;
    if (exp !== undefined && nowMs >= exp && this.ctx.config.tokenExpiry === 'disconnect') {
      this.ctx.metrics.tokenExpiriesTotal.inc({ action: 'disconnect' });
      this.ctx.log.info({ clientId: this.clientId, username: this.identity?.username }, 'token expired, disconnecting');
      this.close(RC.NOT_AUTHORIZED, 'token expired');
    }
  }
}

const PINGRESP = Buffer.from([0xd0, 0x00]);
/** The start of every ackChain: one settled promise shared by all channels. */
const SETTLED: Promise<unknown> = Promise.resolve();
const CONNACK_UNACCEPTABLE_PROTOCOL_LEVEL = Buffer.from([0x20, 0x02, 0x00, 0x01]);

/** PUBACK / PUBREC / PUBREL / PUBCOMP with success: four bytes, no encoder needed. */
export function ack(firstByte: number, packetId: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b[0] = firstByte;
  b[1] = 2;
  b.writeUInt16BE(packetId, 2);
  return b;
}
