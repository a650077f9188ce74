// The Lua script loader: every script of both owners' folders loads, its header checked.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { commandName, loadScripts, LUA_FOLDERS, luaDir, parseScript } from '../../src/redis/scripts.js';

describe('Lua scripts', () => {
  it('loads every script of the store and cluster folders, named after its file', () => {
    const scripts = loadScripts();
    let files = 0;
    for (const folder of LUA_FOLDERS) {
      for (const file of readdirSync(luaDir(folder)).filter((f) => f.endsWith('.lua'))) {
        files++;
        const def = scripts.get(commandName(file));
        assert.ok(def, `${folder}/${file} loaded`);
        assert.equal(def.file, `${folder}/${file}`);
      }
    }
    assert.equal(scripts.size, files);
    assert.equal(scripts.get('sessionSave')?.file, 'store/redis/lua/session-save.lua');
    assert.equal(scripts.get('retainSet')?.file, 'store/redis/lua/retain-set.lua');
    assert.equal(scripts.get('claimClient')?.file, 'cluster/lua/claim-client.lua');
    assert.equal(scripts.get('sessionSave')?.numberOfKeys, 6);
  });

  it('refuses a script whose header does not name its keys, arguments and reply', () => {
    assert.throws(() => parseScript('x/no-returns.lua', '-- KEYS[1] a\n-- ARGV[1] b\nreturn 1'), /header must name/);
    assert.throws(() => parseScript('x/no-keys.lua', '-- ARGV: none\n-- Returns 1\nreturn 1'), /header must name/);
    const def = parseScript('x/two-keys.lua', '-- KEYS[1] a, KEYS[2] b\n-- ARGV: none\n-- Returns {ok}\nreturn 1');
    assert.equal(def.numberOfKeys, 2);
    assert.equal(def.command, 'twoKeys');
  });

  it('a script whose keys vary (several clients per call) has no fixed key count', () => {
    const def = parseScript('x/many.lua', '-- KEYS vary: 2 per client\n-- KEYS[1] a, KEYS[2] b\n-- ARGV[1] c\n-- Returns {ok}\nreturn 1');
    assert.equal(def.numberOfKeys, undefined);
    assert.equal(loadScripts().get('claimClient')?.numberOfKeys, undefined);
    assert.equal(loadScripts().get('willNormalDisconnect')?.numberOfKeys, undefined);
  });
});
