// The +switch-master watch's decisions (src/redis/sentinel-switch.ts): what an announcement
// says, and which connections are on another server than the announced master — by IP, or
// by a host name as sentinels with announce-hostnames send (docker-compose.sentinel.yml).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { elsewhere, masterAddresses, parseSwitchMaster } from '../../src/redis/sentinel-switch.js';

describe('sentinel +switch-master watch', () => {
  test('an announcement names the master group and the new address', () => {
    assert.deepEqual(parseSwitchMaster('vigil 10.0.0.1 6379 10.0.0.2 6380'), { name: 'vigil', host: '10.0.0.2', port: 6380 });
    assert.deepEqual(parseSwitchMaster('vigil redis 6379 redis-replica-1 6379'), { name: 'vigil', host: 'redis-replica-1', port: 6379 });
    assert.equal(parseSwitchMaster('vigil 10.0.0.1 6379'), undefined);
    assert.equal(parseSwitchMaster('vigil a 1 b x'), undefined);
  });

  test('a connection elsewhere: another port, or another address of the same port', async () => {
    const ip = await masterAddresses('127.0.0.1');
    assert.equal(elsewhere({ remoteAddress: '127.0.0.1', remotePort: 7000 }, ip, 7000), false);
    assert.equal(elsewhere({ remoteAddress: '::ffff:127.0.0.1', remotePort: 7000 }, ip, 7000), false, 'IPv4 mapped into IPv6');
    assert.equal(elsewhere({ remoteAddress: '127.0.0.2', remotePort: 7000 }, ip, 7000), true);
    assert.equal(elsewhere({ remoteAddress: '127.0.0.1', remotePort: 7001 }, ip, 7000), true);
  });

  test('a host name is resolved: a connection to the old master on the same port is elsewhere', async () => {
    const named = await masterAddresses('localhost');
    assert.ok(named && (named.has('127.0.0.1') || named.has('::1')), `localhost resolves: ${[...(named ?? [])]}`);
    const local = named!.has('127.0.0.1') ? '127.0.0.1' : '::1';
    assert.equal(elsewhere({ remoteAddress: local, remotePort: 6379 }, named, 6379), false);
    assert.equal(elsewhere({ remoteAddress: '127.0.0.9', remotePort: 6379 }, named, 6379), true);
    // a name that does not resolve: the port alone decides
    const unknown = await masterAddresses('no-such-host.invalid');
    assert.equal(unknown, undefined);
    assert.equal(elsewhere({ remoteAddress: '127.0.0.9', remotePort: 6379 }, unknown, 6379), false);
    assert.equal(elsewhere({ remoteAddress: '127.0.0.9', remotePort: 6380 }, unknown, 6379), true);
  });
});
