// Topic name / topic filter algebra used by authorization. Pure functions over level arrays,
// so they run the same in a piscina worker and in a unit test.
//
// Three questions are answered here:
//   matches(filter, topic)    does a filter match a topic name (publish checks)
//   covers(outer, inner)      is every topic matched by `inner` also matched by `outer`
//                             (a SUBSCRIBE filter is allowed when an allowed filter covers it)
//   overlaps(a, b)            is there at least one topic matched by both
//                             (a SUBSCRIBE filter is denied when it overlaps a denied filter)

export type Levels = readonly string[];

export function splitLevels(topicOrFilter: string): string[] {
  return topicOrFilter.split('/');
}

/** A topic name as PUBLISH carries it: non-empty, no wildcards, no NUL. [MQTT-4.7.3-1] [MQTT-3.3.2-2] */
export function isValidTopicName(topic: string): boolean {
  return topic.length > 0 && !/[+#\u0000]/.test(topic);
}

/** A topic filter as SUBSCRIBE carries it. [MQTT-4.7.1-2] [MQTT-4.7.1-3] */
export function isValidTopicFilter(filter: string): boolean {
  if (filter.length === 0 || filter.includes('\u0000')) return false;
  const levels = splitLevels(filter);
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i]!;
    if (level.includes('#') && (level !== '#' || i !== levels.length - 1)) return false;
    if (level.includes('+') && level !== '+') return false;
  }
  return true;
}

const SHARE_PREFIX = '$share/';

/**
 * The filter that a subscription actually receives: `$share/{group}/{filter}` is authorized
 * on `{filter}` [MQTT-4.8.2]. Returns undefined for a malformed shared subscription.
 */
export function innerFilter(filter: string): string | undefined {
  if (!filter.startsWith(SHARE_PREFIX)) return filter;
  const rest = filter.slice(SHARE_PREFIX.length);
  const slash = rest.indexOf('/');
  if (slash <= 0) return undefined;
  const group = rest.slice(0, slash);
  // [MQTT-4.8.2-2] the ShareName must not contain "/", "+" or "#".
  if (/[+#]/.test(group)) return undefined;
  const inner = rest.slice(slash + 1);
  return inner.length > 0 ? inner : undefined;
}

function isWildcard(level: string | undefined): boolean {
  return level === '+' || level === '#';
}

/**
 * Topics starting with '$' are not matched by a filter starting with a wildcard. [MQTT-4.7.2-1]
 * `a` is the first level of a filter, `b` the first level of a topic or filter.
 */
function dollarBlocks(filterFirst: string | undefined, otherFirst: string | undefined): boolean {
  return isWildcard(filterFirst) && otherFirst !== undefined && !isWildcard(otherFirst) && otherFirst.startsWith('$');
}

export function matches(filter: Levels, topic: Levels): boolean {
  if (dollarBlocks(filter[0], topic[0])) return false;
  for (let i = 0; i < filter.length; i++) {
    const f = filter[i]!;
    // '#' also matches the parent level: "a/#" matches "a". [MQTT-4.7.1-2]
    if (f === '#') return true;
    if (i >= topic.length) return false;
    if (f !== '+' && f !== topic[i]) return false;
  }
  return filter.length === topic.length;
}

export function covers(outer: Levels, inner: Levels): boolean {
  if (dollarBlocks(outer[0], inner[0])) return false;
  for (let i = 0; i < outer.length; i++) {
    const o = outer[i]!;
    if (o === '#') return true;
    const n = inner[i];
    if (n === undefined || n === '#') return false;
    if (o === '+') continue;
    if (n === '+' || n !== o) return false;
  }
  return outer.length === inner.length;
}

export function overlaps(a: Levels, b: Levels): boolean {
  if (dollarBlocks(a[0], b[0]) || dollarBlocks(b[0], a[0])) return false;
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i];
    const y = b[i];
    if (x === '#' || y === '#') return true;
    if (x === undefined || y === undefined) return false;
    if (x === '+' || y === '+') continue;
    if (x !== y) return false;
  }
  return true;
}
