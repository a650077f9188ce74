// ACL policy: compile once, match many. Pure functions (no I/O, no clock) so the same code
// runs in the auth worker pool and in unit tests. The document format is described in
// docs/acl.md; `compilePolicy` validates it strictly so a typo fails the reload (and the
// previous policy stays) instead of silently granting or denying.
import type { AuthAction, TokenAcl } from './types.js';
import { covers, innerFilter, matches, splitLevels, type Levels } from './topic-filter.js';
import { NO_TOPIC_LIMITS, validTopicFilter, validTopicName } from '../protocol/topics.js';

const isValidTopicFilter = (f: string) => validTopicFilter(f, NO_TOPIC_LIMITS);
const isValidTopicName = (t: string) => validTopicName(t, NO_TOPIC_LIMITS);

export class AclPolicyError extends Error {}

/** One filter of the policy, split into levels; `templated` when a level holds %u or %c. */
export interface CompiledRule {
  readonly filter: string;
  readonly levels: readonly string[];
  readonly templated: boolean;
  /** Where it came from, for explain views: e.g. "roles.server.publish". */
  readonly source: string;
}

export interface CompiledGrants {
  readonly publish: readonly CompiledRule[];
  readonly subscribe: readonly CompiledRule[];
}

/** One pattern of a `clientIds` list: `*` for any run of characters, %u / %s substituted. */
export interface ClientIdPattern {
  readonly pattern: string;
  readonly source: string;
}

export interface CompiledPolicy {
  /** Grants for every client, whatever its roles. */
  readonly allow: CompiledGrants;
  /** Denials for every client; they win over every grant. */
  readonly deny: CompiledGrants;
  readonly roles: Readonly<Record<string, { readonly allow: CompiledGrants; readonly deny: CompiledGrants; readonly clientIds?: readonly ClientIdPattern[] }>>;
  /** Client ids every client may use (top-level `clientIds`); undefined when the policy has none. */
  readonly clientIds?: readonly ClientIdPattern[];
}

/** What authorization needs to know about a client; a subset of Identity, cloneable. */
export interface AclSubject {
  readonly username: string;
  readonly clientId: string;
  /** TLS client certificate subject (CN), when the client presented a verified one. */
  readonly certSubject?: string;
  readonly roles: readonly string[];
  readonly tokenAcl?: TokenAcl;
}

export type AclReason = 'granted' | 'allow_all' | 'invalid_topic' | 'deny_rule' | 'no_grant' | 'token_acl' | 'revoked';

export interface AclDecision {
  readonly allowed: boolean;
  readonly reason: AclReason;
  /** The rule that decided, e.g. "deny.publish: $SYS/#" (absent for default deny). */
  readonly rule?: string;
}

const ACTIONS: readonly AuthAction[] = ['publish', 'subscribe'];
const EMPTY_GRANTS: CompiledGrants = { publish: [], subscribe: [] };

// ---------------------------------------------------------------------------------------
// Compile

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkKeys(obj: Record<string, unknown>, allowed: readonly string[], where: string): void {
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) throw new AclPolicyError(`${where}: unknown key ${JSON.stringify(key)} (expected ${allowed.join(', ')})`);
  }
}

function compileRule(filter: unknown, source: string): CompiledRule {
  if (typeof filter !== 'string' || !isValidTopicFilter(filter)) {
    throw new AclPolicyError(`${source}: ${JSON.stringify(filter)} is not a valid topic filter`);
  }
  if (filter.startsWith('$share/')) throw new AclPolicyError(`${source}: write the inner filter, not ${filter} (shared subscriptions are authorized on their inner filter)`);
  const levels = splitLevels(filter);
  return { filter, levels, templated: levels.some((l) => l.includes('%u') || l.includes('%c') || l.includes('%s')), source };
}

function compileGrants(value: unknown, where: string): CompiledGrants {
  if (value === undefined || value === null) return EMPTY_GRANTS;
  if (!isRecord(value)) throw new AclPolicyError(`${where}: expected a mapping with publish and/or subscribe`);
  checkKeys(value, ACTIONS, where);
  const out: Record<AuthAction, CompiledRule[]> = { publish: [], subscribe: [] };
  for (const action of ACTIONS) {
    const list = value[action];
    if (list === undefined || list === null) continue;
    if (!Array.isArray(list)) throw new AclPolicyError(`${where}.${action}: expected a list of topic filters`);
    out[action] = list.map((f) => compileRule(f, `${where}.${action}`));
  }
  return out;
}

function compileClientIds(value: unknown, where: string): ClientIdPattern[] {
  if (!Array.isArray(value)) throw new AclPolicyError(`${where}: expected a list of client id patterns`);
  return value.map((pattern) => {
    if (typeof pattern !== 'string' || pattern.length === 0) throw new AclPolicyError(`${where}: ${JSON.stringify(pattern)} is not a client id pattern`);
    if (pattern.includes('%c')) throw new AclPolicyError(`${where}: %c in ${JSON.stringify(pattern)} would match every client id`);
    return { pattern, source: where };
  });
}

/** Validates and compiles a parsed policy document (YAML or JSON). Throws AclPolicyError. */
export function compilePolicy(doc: unknown): CompiledPolicy {
  if (doc === null || doc === undefined) doc = {};
  if (!isRecord(doc)) throw new AclPolicyError('policy: expected a mapping with roles, allow and/or deny');
  checkKeys(doc, ['version', 'roles', 'allow', 'deny', 'clientIds'], 'policy');
  if (doc.version !== undefined && doc.version !== 1) throw new AclPolicyError(`version: only version 1 is known, got ${JSON.stringify(doc.version)}`);
  const roles: Record<string, { allow: CompiledGrants; deny: CompiledGrants; clientIds?: ClientIdPattern[] }> = Object.create(null);
  if (doc.roles !== undefined && doc.roles !== null) {
    if (!isRecord(doc.roles)) throw new AclPolicyError('roles: expected a mapping of role name to grants');
    for (const [name, spec] of Object.entries(doc.roles)) {
      const where = `roles.${name}`;
      if (spec === null) {
        roles[name] = { allow: EMPTY_GRANTS, deny: EMPTY_GRANTS };
        continue;
      }
      if (!isRecord(spec)) throw new AclPolicyError(`${where}: expected a mapping with publish, subscribe and/or deny`);
      checkKeys(spec, ['publish', 'subscribe', 'deny', 'clientIds'], where);
      const { deny, clientIds, ...allow } = spec;
      roles[name] = { allow: compileGrants(allow, where), deny: compileGrants(deny, `${where}.deny`) };
      if (clientIds !== undefined && clientIds !== null) roles[name].clientIds = compileClientIds(clientIds, `${where}.clientIds`);
    }
  }
  const compiled: { -readonly [K in keyof CompiledPolicy]: CompiledPolicy[K] } = { allow: compileGrants(doc.allow, 'allow'), deny: compileGrants(doc.deny, 'deny'), roles };
  if (doc.clientIds !== undefined && doc.clientIds !== null) compiled.clientIds = compileClientIds(doc.clientIds, 'clientIds');
  return compiled;
}

/** Validates a token `acl` claim. Returns undefined when it is not a valid claim. */
export function parseTokenAcl(claim: unknown): TokenAcl | undefined {
  if (!isRecord(claim)) return undefined;
  const out: { publish?: string[]; subscribe?: string[] } = {};
  for (const [key, list] of Object.entries(claim)) {
    if (key !== 'publish' && key !== 'subscribe') return undefined;
    if (!Array.isArray(list) || !list.every((f) => typeof f === 'string' && isValidTopicFilter(f))) return undefined;
    out[key] = list as string[];
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Evaluate

/**
 * A username or client id can be substituted into a level only when it cannot change the
 * shape of the filter: no level separator, no wildcard, not empty, and no leading '$' (which
 * would reach system topics). An identity with such a value never matches a templated rule.
 */
export function isSafeSubstitution(value: string): boolean {
  return value.length > 0 && !/[+#/\u0000]/.test(value) && !value.startsWith('$');
}

/** The placeholders of rule text: %u username, %c client id, %s TLS certificate subject. */
const PLACEHOLDER = /%[ucs]/g;

/** The value a placeholder stands for, or undefined when this subject has none that is safe. */
function placeholderValue(placeholder: string, subject: AclSubject): string | undefined {
  // %s: the TLS client certificate's subject (CN); a client without one never matches
  const value = placeholder === '%u' ? subject.username : placeholder === '%c' ? subject.clientId : subject.certSubject;
  return value !== undefined && isSafeSubstitution(value) ? value : undefined;
}

/**
 * Substitutes one level in a single pass over the rule text: an inserted value is never
 * scanned again, so a username that is literally "%c" stays the text "%c" and cannot pull in
 * the client id (the second-order substitution of CVE-2017-7650).
 */
function substitute(level: string, subject: AclSubject): string | undefined {
  let unsafe = false;
  const out = level.replace(PLACEHOLDER, (placeholder) => {
    const value = placeholderValue(placeholder, subject);
    if (value === undefined) unsafe = true;
    return value ?? '';
  });
  return unsafe ? undefined : out;
}

function ruleLevels(rule: CompiledRule, subject: AclSubject): Levels | undefined {
  if (!rule.templated) return rule.levels;
  const out: string[] = [];
  for (const level of rule.levels) {
    const substituted = level.includes('%') ? substitute(level, subject) : level;
    if (substituted === undefined) return undefined;
    out.push(substituted);
  }
  return out;
}

function firstMatch(rules: readonly CompiledRule[], subject: AclSubject, test: (rule: Levels) => boolean): CompiledRule | undefined {
  for (const rule of rules) {
    const levels = ruleLevels(rule, subject);
    if (levels !== undefined && test(levels)) return rule;
  }
  return undefined;
}

function describe(rule: CompiledRule): string {
  return `${rule.source}: ${rule.filter}`;
}

/**
 * Decides one action. `policy` null means "no policy file" in jwt mode: nothing is granted
 * except what the token's acl claim grants. With a policy, a topic must be granted by the
 * subject's roles (or the top-level allow), not hit by any deny rule, and — when the token
 * carries an acl claim — also be granted by the claim (the claim narrows, never widens).
 */
export function evaluate(policy: CompiledPolicy | null, subject: AclSubject, action: AuthAction, topic: string): AclDecision {
  if (action === 'publish') {
    if (!isValidTopicName(topic)) return { allowed: false, reason: 'invalid_topic' };
    const levels = splitLevels(topic);
    const test = (rule: Levels) => matches(rule, levels);
    return decide(policy, subject, 'publish', test);
  }
  const target = innerFilter(topic);
  if (target === undefined || !isValidTopicFilter(target)) return { allowed: false, reason: 'invalid_topic' };
  const levels = splitLevels(target);
  // Subscribe: an allowed filter must cover the requested filter entirely. A deny filter
  // refuses it only when it covers it too (nothing the filter matches could ever be
  // delivered); a deny that merely overlaps a wildcard filter leaves the subscription granted,
  // and the denied topics are held back message by message at delivery (evaluateReceive).
  const test = (rule: Levels) => covers(rule, levels);
  return decide(policy, subject, 'subscribe', test);
}

/**
 * May the subject receive a message on this concrete topic name (a delivery to one of its
 * subscriptions)? The subscribe rules decide, matched against the topic name: granted by an
 * allow, not hit by a deny, and — with a token acl claim — granted by its subscribe list.
 */
export function evaluateReceive(policy: CompiledPolicy | null, subject: AclSubject, topic: string): AclDecision {
  if (!isValidTopicName(topic)) return { allowed: false, reason: 'invalid_topic' };
  const levels = splitLevels(topic);
  const test = (rule: Levels) => matches(rule, levels);
  return decide(policy, subject, 'subscribe', test);
}

/** True when a subscribe rule the subject may meet (top level or one of its roles) substitutes %u, %c or %s. */
export function receiveRulesTemplated(policy: CompiledPolicy, roles: readonly string[]): boolean {
  const lists = [policy.allow.subscribe, policy.deny.subscribe];
  for (const r of roles) {
    if (!Object.hasOwn(policy.roles, r)) continue;
    lists.push(policy.roles[r]!.allow.subscribe, policy.roles[r]!.deny.subscribe);
  }
  return lists.some((list) => list.some((rule) => rule.templated));
}

/** The one rule order for every question: a deny that `applies` wins, then a grant that does, then the token claim narrows. */
function decide(policy: CompiledPolicy | null, subject: AclSubject, action: AuthAction, applies: (rule: Levels) => boolean): AclDecision {
  if (policy !== null) {
    const roleSpecs = subject.roles.filter((r) => Object.hasOwn(policy.roles, r)).map((r) => policy.roles[r]!);
    const denied = firstMatch(policy.deny[action], subject, applies) ?? firstOf(roleSpecs, (s) => firstMatch(s.deny[action], subject, applies));
    if (denied) return { allowed: false, reason: 'deny_rule', rule: describe(denied) };
    const granted = firstMatch(policy.allow[action], subject, applies) ?? firstOf(roleSpecs, (s) => firstMatch(s.allow[action], subject, applies));
    if (!granted) return { allowed: false, reason: 'no_grant' };
    if (subject.tokenAcl && !claimGrants(subject.tokenAcl, action, applies)) return { allowed: false, reason: 'token_acl', rule: describe(granted) };
    return { allowed: true, reason: 'granted', rule: describe(granted) };
  }
  if (subject.tokenAcl && claimGrants(subject.tokenAcl, action, applies)) return { allowed: true, reason: 'granted', rule: `token acl claim` };
  return { allowed: false, reason: subject.tokenAcl ? 'token_acl' : 'no_grant' };
}

function firstOf<T, R>(items: readonly T[], fn: (item: T) => R | undefined): R | undefined {
  for (const item of items) {
    const r = fn(item);
    if (r !== undefined) return r;
  }
  return undefined;
}

/** A claim without a list for this action grants nothing for it: a present claim is the whole allowance. */
function claimGrants(claim: TokenAcl, action: AuthAction, grants: (rule: Levels) => boolean): boolean {
  const list = claim[action];
  return list !== undefined && list.some((f) => grants(splitLevels(f)));
}

// ---------------------------------------------------------------------------------------
// Client ids

/**
 * Whether `subject` may connect with `clientId`. The patterns that apply are the top-level
 * `clientIds` and those of every role the subject holds; when none applies (no list in the
 * policy, or only in roles the subject does not hold) any client id is allowed, as before
 * client-id rules existed. Otherwise the id must match one of them.
 */
export function clientIdDecision(policy: CompiledPolicy | null, subject: AclSubject, clientId: string): { readonly allowed: boolean; readonly rule?: string } {
  if (policy === null) return { allowed: true };
  const lists: (readonly ClientIdPattern[])[] = [];
  if (policy.clientIds) lists.push(policy.clientIds);
  for (const role of subject.roles) {
    const list = Object.hasOwn(policy.roles, role) ? policy.roles[role]!.clientIds : undefined;
    if (list) lists.push(list);
  }
  if (lists.length === 0) return { allowed: true };
  for (const list of lists) {
    for (const p of list) if (clientIdMatches(p.pattern, subject, clientId)) return { allowed: true, rule: `${p.source}: ${p.pattern}` };
  }
  return { allowed: false };
}

/**
 * `*` in the rule text matches any run of characters; %u and %s are replaced, in one pass, by
 * the username and certificate subject as literal text (a `*` or `%` in them is not special).
 * A placeholder without a value (empty username, no certificate) never matches.
 */
function clientIdMatches(pattern: string, subject: AclSubject, clientId: string): boolean {
  const segments: string[] = [''];
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i]!;
    if (ch === '*') {
      segments.push('');
      continue;
    }
    if (ch === '%' && (pattern[i + 1] === 'u' || pattern[i + 1] === 's')) {
      const value = pattern[i + 1] === 'u' ? subject.username : subject.certSubject;
      if (value === undefined || value.length === 0) return false;
      segments[segments.length - 1] += value;
      i++;
      continue;
    }
    segments[segments.length - 1] += ch;
  }
  if (segments.length === 1) return clientId === segments[0];
  // literal head and tail, the middle segments in order between them (no backtracking needed)
  const head = segments[0]!;
  const tail = segments[segments.length - 1]!;
  if (clientId.length < head.length + tail.length || !clientId.startsWith(head) || !clientId.endsWith(tail)) return false;
  let at = head.length;
  const end = clientId.length - tail.length;
  for (let i = 1; i < segments.length - 1; i++) {
    const found = clientId.indexOf(segments[i]!, at);
    if (found < 0 || found + segments[i]!.length > end) return false;
    at = found + segments[i]!.length;
  }
  return true;
}
