// VigilRedis in Sentinel mode (real master, replica and three redis-sentinel processes):
// every connection follows a failover. 1. The master is SIGKILLed while 40 connections are
// open: each one is ready on the promoted replica afterwards (with ioredis's failoverDetector,
// about half of them ended for good: its disconnect on +switch-master, arriving while a
// connection was asking a sentinel for the master, leaves it in status 'end'). 2. The master
// is paused (it still holds the connections, answering nothing): once a replica is promoted,
// +switch-master moves every connection to it while the old master is still paused.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { VigilRedis, type RedisConnection } from '../../src/redis/connection.js';
import { startSentinelGroup, type TestSentinelGroup } from '../helpers/redis.js';
import { waitFor } from './support.js';
import type { Redis } from 'ioredis';

const CONNECTIONS = 40;

let group: TestSentinelGroup;
let redis: VigilRedis;
let all: RedisConnection[];

before(async () => {
  // a replica per failover: the second test promotes the last one
  group = await startSentinelGroup({ replicas: 2, sentinels: 3 });
  redis = new VigilRedis({ target: { sentinels: group.sentinels, sentinelMaster: group.masterName }, commandTimeoutMs: 5000 });
  all = [redis.client, redis.sibling().client, ...Array.from({ length: CONNECTIONS }, () => redis.duplicate())];
  await waitFor(() => all.every((c) => c.status === 'ready'), 20_000, 'every connection ready');
});
after(async () => {
  await redis?.close();
  await group?.stop();
});

/** Connections not ready on `port` now, counted by "<status>:<port they are on>". */
function notOn(port: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (const c of all) {
    if (c.status === 'ready' && (c as Redis).stream?.remotePort === port) continue;
    const key = `${c.status}:${(c as Redis).stream?.remotePort}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

async function everyConnectionOn(port: number, timeoutMs: number): Promise<void> {
  try {
    await waitFor(() => notOn(port).size === 0, timeoutMs, `every connection on the new master :${port}`);
  } catch (err) {
    throw new Error(`${(err as Error).message}; not there (status:port): ${JSON.stringify(Object.fromEntries(notOn(port)))}`);
  }
  // and they answer there (the write goes to a master: no READONLY)
  await Promise.all(all.map((c, i) => (c as Redis).set(`sentinel-conn:${i}`, String(port))));
}

describe('Sentinel mode: every connection follows the master', { timeout: 90_000 }, () => {
  test('master SIGKILLed: every connection is ready on the promoted replica', async () => {
    const old = await group.master();
    await group.kill(old);
    const now = await group.failedOver(old, 1, 30_000);
    await everyConnectionOn(now, 20_000);
  });

  test('master paused (answering nothing, connections open): every connection moves on +switch-master', async () => {
    const old = await group.master();
    await group.pause(old, 30_000);
    const now = await group.failedOver(old, 0, 25_000);
    // the old master is still paused for a while: only the announcement can move them
    await everyConnectionOn(now, 20_000);
  });
});
