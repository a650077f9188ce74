// The console's small charts: this node's own counters sampled into a short ring (ten minutes
// at the default 5 s). Prometheus stays the long-term store; this is what the page draws
// without one. In a cluster each sample is also published for the other nodes' consoles.
import type { Broker } from '../broker/broker.js';
import type { Clock } from '../clock.js';

export interface RateSample {
  /** ms since epoch */
  readonly at: number;
  readonly connections: number;
  readonly messagesInPerS: number;
  readonly messagesOutPerS: number;
}

export interface RateSamplerOptions {
  readonly broker: Broker;
  readonly clock: Clock;
  readonly intervalMs?: number;
  readonly size?: number;
  /** Called after every sample with the whole ring (oldest first). */
  onSample?(samples: readonly RateSample[]): void;
}

export class RateSampler {
  private readonly ring: RateSample[] = [];
  private timer?: NodeJS.Timeout;
  private last?: { at: number; received: number; sent: number };

  constructor(private readonly o: RateSamplerOptions) {}

  get intervalMs(): number {
    return this.o.intervalMs ?? 5000;
  }

  start(): void {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  samples(): readonly RateSample[] {
    return this.ring;
  }

  sample(): void {
    const at = this.o.clock.now();
    const { messagesReceived, messagesSent } = this.o.broker.stats;
    const prev = this.last;
    const seconds = prev ? Math.max(0.001, (at - prev.at) / 1000) : 0;
    this.ring.push({
      at,
      connections: this.o.broker.connections.size,
      messagesInPerS: prev ? round((messagesReceived - prev.received) / seconds) : 0,
      messagesOutPerS: prev ? round((messagesSent - prev.sent) / seconds) : 0,
    });
    if (this.ring.length > (this.o.size ?? 120)) this.ring.shift();
    this.last = { at, received: messagesReceived, sent: messagesSent };
    this.o.onSample?.(this.ring);
  }
}

const round = (n: number): number => Math.round(n * 10) / 10;
