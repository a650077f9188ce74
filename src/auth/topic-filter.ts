// Topic name / topic filter algebra used by authorization. Pure functions over level arrays,
// so they run the same in a piscina worker and in a unit test. Validating names and filters,
// and reading shared-subscription names, is protocol/topics.ts's (one validator).
//
// Two questions are answered here:
//   matches(filter, topic)    does a filter match a topic name (publish and delivery checks)
//   covers(outer, inner)      is every topic matched by `inner` also matched by `outer`
//                             (a SUBSCRIBE filter is allowed when an allowed filter covers it,
//                             refused when a denied filter covers it)

import { parseShared } from '../protocol/topics.js';

export type Levels = readonly string[];

export function splitLevels(topicOrFilter: string): string[] {
  return topicOrFilter.split('/');
}

/**
 * The filter that a subscription actually receives: `$share/{group}/{filter}` is authorized
 * on `{filter}` [MQTT-4.8.2]. Returns undefined for a malformed shared subscription.
 */
export function innerFilter(filter: string): string | undefined {
  return parseShared(filter)?.filter;
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
