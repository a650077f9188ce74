import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseShared, topicMatches, validTopicFilter, validTopicName } from '../../src/protocol/topics.js';

const limits = { maxTopicLength: 65535, maxTopicLevels: 128 };

test('topic names: no wildcards, no NUL, not empty [MQTT-4.7.3-1, MQTT-3.3.2-2]', () => {
  assert.equal(validTopicName('a/b/c', limits), true);
  assert.equal(validTopicName('/', limits), true);
  assert.equal(validTopicName('', limits), false);
  assert.equal(validTopicName('a/+/c', limits), false);
  assert.equal(validTopicName('a/#', limits), false);
  assert.equal(validTopicName('a\u0000b', limits), false);
  assert.equal(validTopicName('a/b/c', { maxTopicLength: 4, maxTopicLevels: 128 }), false);
  assert.equal(validTopicName('a/b/c', { maxTopicLength: 100, maxTopicLevels: 2 }), false);
});

test('topic filters: wildcards occupy whole levels, # last [MQTT-4.7.1-1..3]', () => {
  for (const ok of ['#', '+', 'a/#', 'a/+/c', '+/+', '/+', 'sport/tennis/#']) assert.equal(validTopicFilter(ok, limits), true, ok);
  for (const bad of ['', 'a#', 'a/#/b', 'a+/b', 'sport/tennis#', '#/a', 'a/b+']) assert.equal(validTopicFilter(bad, limits), false, bad);
});

test('matching: + is one level, # is any depth including the parent, $ topics need an explicit first level', () => {
  assert.equal(topicMatches('a/+/c', 'a/b/c'), true);
  assert.equal(topicMatches('a/+/c', 'a/b/d'), false);
  assert.equal(topicMatches('a/#', 'a'), true);
  assert.equal(topicMatches('a/#', 'a/b/c'), true);
  assert.equal(topicMatches('+', '/a'), false);
  assert.equal(topicMatches('+/+', '/a'), true);
  assert.equal(topicMatches('#', '$SYS/broker/uptime'), false);
  assert.equal(topicMatches('+/broker/uptime', '$SYS/broker/uptime'), false);
  assert.equal(topicMatches('$SYS/#', '$SYS/broker/uptime'), true);
});

test('shared subscriptions parse into group and filter [MQTT-4.8.2-1, MQTT-4.8.2-2]', () => {
  assert.deepEqual(parseShared('$share/g1/a/+'), { filter: 'a/+', group: 'g1' });
  assert.deepEqual(parseShared('a/b'), { filter: 'a/b' });
  assert.equal(parseShared('$share/g1'), null);
  assert.equal(parseShared('$share//a'), null);
  assert.equal(parseShared('$share/g+/a'), null);
});
