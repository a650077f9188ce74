// Every Redis key and pub/sub channel Vigil uses, built here and nowhere else.
//
// Per-client keys carry a `{prefix:clientId}` hash tag so that one client's owner record,
// will, session and queue share a Redis Cluster slot: the Lua scripts that change them
// together are then legal in a cluster. Global keys (node leases, the due-will index, each
// node's route set and bus stream, retained messages) are separate and have their own slots;
// no script ever touches a per-client key and a global key together.
//
// Key layout (P = config.redisPrefix):
//   P:{P:c:<clientId>}:owner      HASH  node, epoch, online            client registry
//   P:{P:c:<clientId>}:will       HASH  rec, epoch, delayS, expiryS, dueAt
//   P:{P:c:<clientId>}:session    HASH  epoch, expiryS, seq, savedAt
//   P:{P:c:<clientId>}:subs       HASH  filter key → encoded Subscription
//   P:{P:c:<clientId>}:pending    HASH  seq → encoded PendingMessage
//   P:{P:c:<clientId>}:pstate     HASH  seq → "packetId:released"
//   P:{P:c:<clientId>}:qos2in     HASH  incoming QoS 2 packet id → id of a message not routed yet, or ''
//   P:{P:c:<clientId>}:seen       ZSET  message id → time (ms) it reached the session
//   P:{P:nodes}:leases            ZSET  node member → lease expiry (ms, Redis clock)
//   P:{P:n:<member>}:clients      SET   client ids a node member has owned (reaper index)
//   P:{P:n:<member>}:routes       SET   filters with local subscribers on that member
//   P:{P:n:<member>}:routes:ver   STRING version of that route set
//   P:{P:n:<member>}:bus          STREAM messages forwarded to that member
//   P:{P:n:<member>}:bus:taken    STREAM the same, renamed by the member's reaper while it hands them on
//   P:{P:wills}:due               ZSET  "<epoch>|<clientId>" → dueAt (ms), an index only
//   P:{P:retained}:msg            HASH  topic → "<seq>\n<encoded message>"
//   P:{P:retained}:meta           HASH  topic → "<writerEpoch>\n<writerClientId>"
//   P:{P:retained}:tomb           ZSET  topic → deletedAt (ms) for fenced deletes
//   P:{P:retained}:seq            STRING change counter
//   P:{P:revocations}:list        HASH  "<kind>:<value>" → JSON RevocationEntry
// Channels: P:retained:events, P:routes:events, P:revocations:events.

export class ClusterKeys {
  constructor(readonly prefix: string) {
    if (/[{}]/.test(prefix) || prefix === '') throw new Error(`redis prefix must be non-empty and free of braces: ${JSON.stringify(prefix)}`);
  }

  private client(clientId: string, what: string): string {
    // An empty tag would hash the whole key and split a client's keys across slots.
    if (clientId === '') throw new Error('empty client id has no Redis keys');
    return `${this.prefix}:{${this.prefix}:c:${clientId}}:${what}`;
  }

  private member(member: string, what: string): string {
    return `${this.prefix}:{${this.prefix}:n:${member}}:${what}`;
  }

  clientOwner(clientId: string): string {
    return this.client(clientId, 'owner');
  }
  clientWill(clientId: string): string {
    return this.client(clientId, 'will');
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

  get nodeLeases(): string {
    return `${this.prefix}:{${this.prefix}:nodes}:leases`;
  }
  nodeClients(member: string): string {
    return this.member(member, 'clients');
  }
  nodeRoutes(member: string): string {
    return this.member(member, 'routes');
  }
  nodeRoutesVersion(member: string): string {
    return this.member(member, 'routes:ver');
  }
  nodeBus(member: string): string {
    return this.member(member, 'bus');
  }
  /** A dead member's stream while its reaper hands the entries on (renamed: nothing more lands in it). */
  nodeBusTaken(member: string): string {
    return this.member(member, 'bus:taken');
  }

  get dueWills(): string {
    return `${this.prefix}:{${this.prefix}:wills}:due`;
  }
  dueWillMember(clientId: string, epoch: number): string {
    return `${epoch}|${clientId}`;
  }
  parseDueWillMember(member: string): { clientId: string; epoch: number } {
    const bar = member.indexOf('|');
    return { epoch: Number(member.slice(0, bar)), clientId: member.slice(bar + 1) };
  }

  get retainedMessages(): string {
    return `${this.prefix}:{${this.prefix}:retained}:msg`;
  }
  get retainedMeta(): string {
    return `${this.prefix}:{${this.prefix}:retained}:meta`;
  }
  get retainedTombstones(): string {
    return `${this.prefix}:{${this.prefix}:retained}:tomb`;
  }
  get retainedSeq(): string {
    return `${this.prefix}:{${this.prefix}:retained}:seq`;
  }
  get retainedChannel(): string {
    return `${this.prefix}:retained:events`;
  }
  get revocations(): string {
    return `${this.prefix}:{${this.prefix}:revocations}:list`;
  }
  get revocationsChannel(): string {
    return `${this.prefix}:revocations:events`;
  }
  get routesChannel(): string {
    return `${this.prefix}:routes:events`;
  }
}
