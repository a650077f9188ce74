// Every Redis key and pub/sub channel of the cluster (membership, client registry, wills,
// routes, bus, revocations), built here and nowhere else. The stores' keys (sessions,
// retained messages) are built by the class this one extends, src/store/redis/keys.ts, whose
// per-client hash tag these share: a client's owner record, will and session are in one
// Redis Cluster slot. Global keys (node leases, the due-will index, each node's route set
// and bus stream) have their own slots; no script touches a per-client key and a global key
// together.
//
// Key layout (P = config.redisPrefix), besides the stores' (src/store/redis/keys.ts):
//   P:{P:c:<clientId>}:owner      HASH  node, epoch, online, identity, orphan (token:epoch of the last reaper's claim)   client registry
//   P:{P:c:<clientId>}:will       HASH  rec, epoch, delayS, expiryS, dueAt
//   P:{P:c:<clientId>}:willclaim  HASH  token, rec of the last due-will claim; orphan, orphanRec, orphanWillEpoch
//                                       of the reaper's claim that fired it (1 min TTL): a re-sent claim fires
//   P:{P:nodes}:leases            ZSET  node member → lease expiry (ms, Redis clock)
//   P:{P:nodes}:reaped:<member>   STRING token of the reap claim that won (1 min TTL): a re-sent claim wins
//   P:{P:n:<member>}:clients      SET   client ids a node member has owned (reaper index)
//   P:{P:n:<member>}:routes       SET   filters with local subscribers on that member
//   P:{P:n:<member>}:routes:ver   STRING version of that route set
//   P:{P:n:<member>}:bus          STREAM messages forwarded to that member
//   P:{P:n:<member>}:bus:taken    STREAM the same, renamed by the member's reaper while it hands them on
//   P:{P:wills}:due               ZSET  "<epoch>|<clientId>" → dueAt (ms), an index only
//   P:{P:revocations}:list        HASH  "<kind>:<value>" → JSON RevocationEntry
//   P:{P:c:<clientId>}:info       HASH  epoch, node, username, roles, proto, connectedAt, endedAt, end   console (fleet view)
//   P:{P:c:<clientId>}:lastwill   STRING JSON of the last will decision (fired / denied), with a TTL
//   P:{P:fleet}:ids               ZSET  every client id the cluster has seen, score 0 (ZRANGEBYLEX paging)
//   P:{P:wills}:decisions         LIST  recent will decisions (JSON), newest first, capped
//   P:{P:nodes}:reaps             LIST  recent reaps (JSON: reaper, member, at, counts), newest first, capped
//   P:{P:n:<member>}:rates        STRING JSON ring of the member's rate samples, with a TTL
// Channels: P:routes:events, P:revocations:events.
import { StoreKeys } from '../store/redis/keys.js';

/** A client's keys of one script as head .. clientId .. ending (ends: space-separated, in the script's order). */
export interface KeyParts {
  readonly head: string;
  readonly ends: string;
}

export class ClusterKeys extends StoreKeys {
  private member(member: string, what: string): string {
    return this.global(`n:${member}`, what);
  }

  clientOwner(clientId: string): string {
    return this.client(clientId, 'owner');
  }
  clientWill(clientId: string): string {
    return this.client(clientId, 'will');
  }
  /** The token of the claim that took a due will, and the will (claim-due-will.lua); the reaper's claim of the client and the will it fired (orphan-client.lua). */
  clientWillClaim(clientId: string): string {
    return this.client(clientId, 'willclaim');
  }

  /** A client's keys for orphan-client.lua: owner, will, will-claim marker, session. */
  orphanClientKeys(clientId: string): [string, string, string, string] {
    return [this.clientOwner(clientId), this.clientWill(clientId), this.clientWillClaim(clientId), this.session(clientId)];
  }
  /**
   * orphanClientKeys as the text before the client id (the same in all four) and the four
   * endings after it, space-separated: on one Redis orphan-client.lua builds a batch's keys
   * from the ids (head .. id .. ending), so a call carries each client once, not its four keys.
   */
  get orphanClientKeyParts(): KeyParts {
    return (this.orphanParts ??= this.keyParts((id) => this.orphanClientKeys(id)));
  }
  private orphanParts?: KeyParts;

  /** A client's keys for claim-client.lua: owner, will, then its session's (sessionKeys). */
  claimClientKeys(clientId: string): string[] {
    return [this.clientOwner(clientId), this.clientWill(clientId), ...this.sessionKeys(clientId)];
  }
  /** claimClientKeys as a head and endings (see orphanClientKeyParts): claim-client.lua builds them on one Redis. */
  get claimClientKeyParts(): KeyParts {
    return (this.claimParts ??= this.keyParts((id) => this.claimClientKeys(id)));
  }
  private claimParts?: KeyParts;

  /** A client's keys (as `keysOf` builds them) as the text before the client id, shared by all, and the endings after it. */
  private keyParts(keysOf: (clientId: string) => readonly string[]): KeyParts {
    // a marker no prefix holds (prefixes are brace-free) and that no key text before the id contains
    const marker = '{}';
    const whole = keysOf(marker);
    const head = whole[0].slice(0, whole[0].indexOf(marker));
    const ends = whole.map((k) => {
      if (!k.startsWith(head + marker)) throw new Error(`client keys do not share a head: ${k}`);
      const end = k.slice(head.length + marker.length);
      if (/\s/.test(end) || end === '') throw new Error(`client key ending unfit for a space-separated list: ${JSON.stringify(end)}`);
      return end;
    });
    return { head, ends: ends.join(' ') };
  }

  /** clientWill as the text before the client id and after it: read-wills-ahead.lua builds a batch's will keys from the ids. */
  get willKeyParts(): { readonly head: string; readonly end: string } {
    if (this.willParts) return this.willParts;
    const marker = '{}';
    const whole = this.clientWill(marker);
    const at = whole.indexOf(marker);
    this.willParts = { head: whole.slice(0, at), end: whole.slice(at + marker.length) };
    return this.willParts;
  }
  private willParts?: { readonly head: string; readonly end: string };

  get nodeLeases(): string {
    return this.global('nodes', 'leases');
  }
  /** The token of the claim that won a member's reaping (reap-node.lua); in the leases' slot. */
  nodeReapedBy(member: string): string {
    return this.global('nodes', `reaped:${member}`);
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
    return this.global('wills', 'due');
  }
  dueWillMember(clientId: string, epoch: number): string {
    return `${epoch}|${clientId}`;
  }
  parseDueWillMember(member: string): { clientId: string; epoch: number } {
    const bar = member.indexOf('|');
    return { epoch: Number(member.slice(0, bar)), clientId: member.slice(bar + 1) };
  }

  /** Console: what the fleet view shows of a client (informational; the owner record decides). */
  clientInfo(clientId: string): string {
    return this.client(clientId, 'info');
  }
  clientLastWill(clientId: string): string {
    return this.client(clientId, 'lastwill');
  }
  get fleetIds(): string {
    return this.global('fleet', 'ids');
  }
  get willDecisions(): string {
    return this.global('wills', 'decisions');
  }
  get reaps(): string {
    return this.global('nodes', 'reaps');
  }
  nodeRates(member: string): string {
    return this.member(member, 'rates');
  }

  get revocations(): string {
    return this.global('revocations', 'list');
  }
  get revocationsChannel(): string {
    return `${this.prefix}:revocations:events`;
  }
  get routesChannel(): string {
    return `${this.prefix}:routes:events`;
  }
}
