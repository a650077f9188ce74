// Topic aliases Vigil assigns on one 5.0 connection (MQTT 5 §3.3.2.3.4): the topics sent most
// get an alias, at most the client's Topic Alias Maximum [MQTT-3.3.2-11]; none carried to a new connection [MQTT-3.3.2-7]. Pure bookkeeping,
// no I/O: the channel asks before each PUBLISH and reports when one that sets an alias went
// out. Memory is bounded by the alias count plus SEEN_MAX candidate topics.

/** A topic sent fewer times than this gets no alias: the first send would only cost 3 bytes more. */
const MIN_SENDS = 2;
/** Topics this short save nothing: an alias takes 3 bytes (identifier and value). */
const MIN_TOPIC_LENGTH = 4;
/** Candidate topics counted at most; the count starts over when it fills (a client subscribed to `#`). */
const SEEN_MAX = 1024;
/** Every so many sends, use counts halve, so aliases follow the traffic as it changes. */
const DECAY_EVERY = 4096;

export interface AliasSlot {
  readonly alias: number;
  /** The client has this alias mapped to the topic: send it with an empty topic. */
  readonly known: boolean;
}

interface Slot extends AliasSlot {
  topic: string;
  uses: number;
  known: boolean;
}

export class OutboundAliases {
  private readonly byTopic = new Map<string, Slot>();
  private readonly slots: Slot[] = [];
  private readonly seen = new Map<string, number>();
  private sends = 0;
  /** The topic last looked up and its slot: consecutive sends of one topic skip the map. */
  private lastTopic: string | undefined;
  private lastSlot: Slot | undefined;

  constructor(readonly max: number) {}

  /** The alias to send `topic` with, or undefined for none. */
  choose(topic: string): AliasSlot | undefined {
    if (++this.sends >= DECAY_EVERY) this.decay();
    const slot = topic === this.lastTopic ? this.lastSlot : this.byTopic.get(topic);
    if (slot !== undefined) {
      slot.uses++;
      this.lastTopic = topic;
      this.lastSlot = slot;
      return slot;
    }
    if (topic.length < MIN_TOPIC_LENGTH) return undefined;
    const count = (this.seen.get(topic) ?? 0) + 1;
    if (count < MIN_SENDS) return this.count(topic, count);
    let target: Slot;
    if (this.slots.length < this.max) {
      target = { alias: this.slots.length + 1, topic, uses: count, known: false };
      this.slots.push(target);
    } else {
      // all aliases in use: the least used one moves to this topic if it is sent more
      target = this.slots[0];
      for (const s of this.slots) if (s.uses < target.uses) target = s;
      if (target.uses >= count) return this.count(topic, count);
      this.byTopic.delete(target.topic);
      if (this.lastSlot === target) this.lastTopic = this.lastSlot = undefined;
      target.topic = topic;
      target.uses = count;
      target.known = false;
    }
    this.byTopic.set(topic, target);
    this.seen.delete(topic);
    return target;
  }

  /** The PUBLISH that maps `slot.alias` to its topic was written: later sends may leave the topic out. */
  established(slot: AliasSlot): void {
    (slot as Slot).known = true;
  }

  /** How many aliases are in use (for tests and the admin view). */
  get size(): number {
    return this.slots.length;
  }

  private count(topic: string, count: number): undefined {
    if (this.seen.size >= SEEN_MAX && !this.seen.has(topic)) this.seen.clear();
    this.seen.set(topic, count);
    return undefined;
  }

  private decay(): void {
    this.sends = 0;
    for (const s of this.slots) s.uses >>= 1;
    this.seen.clear();
  }
}
