import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { covers, innerFilter, matches, splitLevels } from '../../../src/auth/topic-filter.js';
import { NO_TOPIC_LIMITS, validTopicFilter, validTopicName } from '../../../src/protocol/topics.js';

const isValidTopicName = (t: string) => validTopicName(t, NO_TOPIC_LIMITS);
const isValidTopicFilter = (f: string) => validTopicFilter(f, NO_TOPIC_LIMITS);

const m = (f: string, t: string) => matches(splitLevels(f), splitLevels(t));
const c = (outer: string, inner: string) => covers(splitLevels(outer), splitLevels(inner));

describe('topic filter algebra', () => {
  it('matches topic names against filters', () => {
    assert.ok(m('trusted/+/dvs/#', 'trusted/x/dvs/server/state'));
    assert.ok(m('a/#', 'a'), '# matches the parent level [MQTT-4.7.1-2]');
    assert.ok(m('#', 'a/b/c'));
    assert.ok(m('+/+', 'a/b'));
    assert.ok(m('a/+', 'a/'), '+ matches an empty level');
    assert.ok(!m('a/+', 'a/b/c'));
    assert.ok(!m('a/b', 'a/b/c'));
    assert.ok(!m('a/b/c', 'a/b'));
    assert.ok(!m('#', '$SYS/broker'), 'wildcards do not match $ topics [MQTT-4.7.2-1]');
    assert.ok(!m('+/broker', '$SYS/broker'));
    assert.ok(m('$SYS/#', '$SYS/broker'));
  });

  it('covers: an allowed filter covers a requested filter only if every matched topic is allowed', () => {
    assert.ok(c('trusted/+/dvs/#', 'trusted/x/dvs/state'));
    assert.ok(c('trusted/+/dvs/#', 'trusted/+/dvs/a/#'));
    assert.ok(c('trusted/+/dvs/#', 'trusted/x/dvs'), '# covers the parent level');
    assert.ok(!c('trusted/+/dvs/#', 'trusted/#'));
    assert.ok(!c('trusted/+/dvs/#', 'trusted/+/#'));
    assert.ok(!c('trusted/x/dvs/#', 'trusted/+/dvs/#'), 'a literal does not cover +');
    assert.ok(c('a/+', 'a/+'));
    assert.ok(!c('a/+', 'a/#'), '+ does not cover #');
    assert.ok(c('#', '#'));
    assert.ok(c('#', 'a/+/b'));
    assert.ok(!c('#', '$SYS/#'));
    assert.ok(!c('a/b', 'a/b/c'));
    assert.ok(!c('a/b/c', 'a/b'));
  });

  it('validates names and filters as the ACL does (the protocol validator, no size limits)', () => {
    assert.ok(isValidTopicName('a/b'));
    for (const bad of ['', 'a/+', 'a/#', 'a\u0000b']) assert.ok(!isValidTopicName(bad), bad);
    for (const good of ['#', '+', 'a/+/b', 'a/#', '/']) assert.ok(isValidTopicFilter(good), good);
    for (const bad of ['', 'a/#/b', 'a/b#', 'a+/b', '##']) assert.ok(!isValidTopicFilter(bad), bad);
  });

  it('unwraps shared subscriptions', () => {
    assert.equal(innerFilter('$share/g1/trusted/+/state'), 'trusted/+/state');
    assert.equal(innerFilter('plain/topic'), 'plain/topic');
    assert.equal(innerFilter('$share/g1'), undefined);
    assert.equal(innerFilter('$share//a'), undefined);
    assert.equal(innerFilter('$share/g+/a'), undefined);
  });
});
