// At most `max` pieces of work in flight; the rest wait their turn, first in first out.
// Used for the cluster part of CONNECT (claim, session load, will registration): a fleet
// reconnecting at once would otherwise put tens of thousands of scripts in front of Redis
// together, and the node's own lease renewal — on its own connection, but served by the
// same Redis — would wait behind them past the fence (the node then gives up ownership and
// closes every connection: a storm that never converges).

/** Starts the work: true if it did (it calls leave() when done), false to give the slot to the next. */
export type GateTurn = () => boolean;

export class ConcurrencyGate {
  private inFlight = 0;
  private waiting: GateTurn[] = [];
  private head = 0;

  constructor(private readonly max: number) {}

  /** Work in flight now. */
  get active(): number {
    return this.inFlight;
  }

  /** Turns waiting for a slot. */
  get queued(): number {
    return this.waiting.length - this.head;
  }

  /** Runs `turn` now if a slot is free, otherwise when one is. */
  enter(turn: GateTurn): void {
    if (this.inFlight < this.max && this.queued === 0) {
      this.inFlight++;
      if (!turn()) this.leave();
      return;
    }
    this.waiting.push(turn);
  }

  /** The work of a turn that returned true is done: the next waiting turn gets its slot. */
  leave(): void {
    this.inFlight--;
    while (this.inFlight < this.max && this.queued > 0) {
      const next = this.waiting[this.head++]!;
      if (this.head === this.waiting.length) {
        this.waiting = [];
        this.head = 0;
      } else if (this.head > 4096 && this.head * 2 > this.waiting.length) {
        this.waiting = this.waiting.slice(this.head);
        this.head = 0;
      }
      this.inFlight++;
      if (!next()) this.inFlight--;
    }
  }
}
