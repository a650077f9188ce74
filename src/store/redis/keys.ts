// The Redis keys and channels of the state stores (sessions, retained messages), built here
// and nowhere else; the cluster's own keys (src/cluster/keys.ts) extend these and share the
// per-client hash tag.
//
// Per-client keys carry a `{prefix:clientId}` hash tag so that one client's keys (these and
// the cluster's owner and will records) share a Redis Cluster slot: the Lua scripts that
// change them together are then legal in a cluster. The retained keys share their own slot;
// no script ever touches a per-client key and a global key together.
//
// Key layout (P = config.redisPrefix):
//   P:{P:c:<clientId>}:session    HASH  epoch, expiryS, seq, savedAt
//   P:{P:c:<clientId>}:subs       HASH  filter key → encoded Subscription
//   P:{P:c:<clientId>}:pending    HASH  seq → encoded PendingMessage
//   P:{P:c:<clientId>}:pstate     HASH  seq → "packetId:released"
//   P:{P:c:<clientId>}:qos2in     HASH  incoming QoS 2 packet id → id of a message not routed yet, or ''
//   P:{P:c:<clientId>}:seen       ZSET  message id → time (ms) it reached the session
//   P:{P:retained}:msg            HASH  topic → "<seq>\n<encoded message>"
//   P:{P:retained}:meta           HASH  topic → "<writerEpoch>\n<writerClientId>"
//   P:{P:retained}:tomb           ZSET  topic → deletedAt (ms) for fenced deletes
//   P:{P:retained}:seq            STRING change counter
// Channel: P:retained:events.

export class StoreKeys {
  constructor(readonly prefix: string) {
    if (/[{}]/.test(prefix) || prefix === '') throw new Error(`redis prefix must be non-empty and free of braces: ${JSON.stringify(prefix)}`);
  }

  /** A per-client key, in the client's hash slot. */
  protected client(clientId: string, what: string): string {
    // An empty tag would hash the whole key and split a client's keys across slots.
    if (clientId === '') throw new Error('empty client id has no Redis keys');
    return `${this.prefix}:{${this.prefix}:c:${clientId}}:${what}`;
  }

  /** A global key in a slot of its own `group`. */
  protected global(group: string, what: string): string {
    return `${this.prefix}:{${this.prefix}:${group}}:${what}`;
  }

  session(clientId: string): string {
    return this.client(clientId, 'session');
  }
  sessionSubscriptions(clientId: string): string {
    return this.client(clientId, 'subs');
  }
  sessionPending(clientId: string): string {
    return this.client(clientId, 'pending');
  }
  sessionPendingState(clientId: string): string {
    return this.client(clientId, 'pstate');
  }
  sessionIncomingQos2(clientId: string): string {
    return this.client(clientId, 'qos2in');
  }
  /** Ids of the QoS 1/2 messages that reached the session lately (a second copy is dropped). */
  sessionSeen(clientId: string): string {
    return this.client(clientId, 'seen');
  }
  /** All per-session keys, in the order the session scripts take them. */
  sessionKeys(clientId: string): [string, string, string, string, string, string] {
    return [this.session(clientId), this.sessionSubscriptions(clientId), this.sessionPending(clientId), this.sessionPendingState(clientId), this.sessionIncomingQos2(clientId), this.sessionSeen(clientId)];
  }

  get retainedMessages(): string {
    return this.global('retained', 'msg');
  }
  get retainedMeta(): string {
    return this.global('retained', 'meta');
  }
  get retainedTombstones(): string {
    return this.global('retained', 'tomb');
  }
  get retainedSeq(): string {
    return this.global('retained', 'seq');
  }
  get retainedChannel(): string {
    return `${this.prefix}:retained:events`;
  }
}
