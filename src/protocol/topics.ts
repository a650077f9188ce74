// Topic names, filters and shared-subscription names [MQTT-4.7, MQTT-4.8.2]: the one place
// they are validated, built and parsed. Pure functions (no imports), used on every PUBLISH
// and SUBSCRIBE, by the ACL (also in a piscina worker), the session store and the route table.

export interface TopicLimits {
  readonly maxTopicLength: number;
  readonly maxTopicLevels: number;
}

/** The form alone, no size limits (ACL rules, token claims: the listener enforces the limits). */
export const NO_TOPIC_LIMITS: TopicLimits = { maxTopicLength: Infinity, maxTopicLevels: Infinity };

function countLevels(s: string): number {
  let n = 1;
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) === 47 /* / */) n++;
  return n;
}

/** A topic name in PUBLISH: non-empty, no wildcards, no NUL [MQTT-3.3.2-2, MQTT-4.7.3-1, MQTT-4.7.3-2]. */
export function validTopicName(topic: string, limits: TopicLimits): boolean {
  if (topic.length === 0 || topic.length > limits.maxTopicLength) return false;
  for (let i = 0; i < topic.length; i++) {
    const c = topic.charCodeAt(i);
    if (c === 43 /* + */ || c === 35 /* # */ || c === 0) return false;
  }
  return countLevels(topic) <= limits.maxTopicLevels;
}

/** A topic filter in SUBSCRIBE / UNSUBSCRIBE [MQTT-4.7.1-1, MQTT-4.7.1-2, MQTT-4.7.1-3]. */
export function validTopicFilter(filter: string, limits: TopicLimits): boolean {
  if (filter.length === 0 || filter.length > limits.maxTopicLength) return false;
  if (filter.indexOf('\u0000') !== -1) return false;
  const levels = filter.split('/');
  if (levels.length > limits.maxTopicLevels) return false;
  for (let i = 0; i < levels.length; i++) {
    const l = levels[i];
    if (l.length > 1 && (l.includes('+') || l.includes('#'))) return false;
    if (l === '#' && i !== levels.length - 1) return false;
  }
  return true;
}

export interface ParsedFilter {
  readonly filter: string;
  readonly group?: string;
}

const SHARE_PREFIX = '$share/';

/**
 * Splits `$share/{group}/{filter}` [MQTT-4.8.2-1, MQTT-4.8.2-2]. Returns null when a shared
 * subscription is malformed (empty group, group with wildcards, no filter).
 */
export function parseShared(raw: string): ParsedFilter | null {
  if (!raw.startsWith(SHARE_PREFIX)) return { filter: raw };
  const rest = raw.slice(SHARE_PREFIX.length);
  const slash = rest.indexOf('/');
  if (slash <= 0) return null;
  const group = rest.slice(0, slash);
  if (group.includes('+') || group.includes('#')) return null;
  const filter = rest.slice(slash + 1);
  if (!filter) return null;
  return { filter, group };
}

/**
 * A subscription's name as the client wrote it: `$share/{group}/{filter}` for a shared one,
 * else the filter. It is the subscription's key in a session, in the session store and in the
 * route table; parseShared() reads it back.
 */
export function sharedName(sub: ParsedFilter): string {
  return sub.group === undefined ? sub.filter : `${SHARE_PREFIX}${sub.group}/${sub.filter}`;
}

/** Does a topic name match a filter? `$` topics are not matched by a leading wildcard [MQTT-4.7.2-1]. */
export function topicMatches(filter: string, topic: string): boolean {
  if (topic.charCodeAt(0) === 36 /* $ */ && (filter.charCodeAt(0) === 43 || filter.charCodeAt(0) === 35)) return false;
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length) return false;
    if (f[i] !== '+' && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}
