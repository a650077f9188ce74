// Lua statuses as typed outcomes (store/errors.ts): the table of each script's outcomes
// matches what the scripts can return, outcomes come back as they are, failing statuses
// become their typed errors, anything else is an unexpected reply.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LUA_FOLDERS, luaDir } from '../../src/redis/scripts.js';
import {
  ClientIdHeldError,
  LeaseLapsedError,
  LeaseReapedError,
  RetainedFencedError,
  SCRIPT_OUTCOMES,
  StaleEpochError,
  UnexpectedScriptReplyError,
  scriptStatus,
  type ScriptName,
} from '../../src/store/errors.js';

const FAILURES = new Set(['stale', 'reaped', 'lapsed', 'fenced', 'not_owner', 'error']);

/** Every status literal a script returns: `return {'status', ...}`, or a reply table built first (`local out = {'ok', ...}`). */
function returnedStatuses(source: string): Set<string> {
  return new Set([...source.matchAll(/(?:return|=)\s*\{\s*'([a-z_]+)'/g)].map((m) => m[1]));
}

describe('Lua script statuses', () => {
  it('every status a script returns is an outcome in the table or a failure with a typed error; no outcome is listed that the script never returns', () => {
    let checked = 0;
    for (const folder of LUA_FOLDERS) {
      for (const file of readdirSync(luaDir(folder)).filter((f) => f.endsWith('.lua'))) {
        const statuses = returnedStatuses(readFileSync(join(luaDir(folder), file), 'utf8'));
        if (statuses.size === 0) continue; // a script answering with a number (fleet-ended)
        const name = file.replace(/\.lua$/, '') as ScriptName;
        const outcomes: readonly string[] | undefined = SCRIPT_OUTCOMES[name];
        assert.ok(outcomes, `${folder}/${file} is in SCRIPT_OUTCOMES`);
        for (const s of statuses) assert.ok(outcomes.includes(s) || FAILURES.has(s), `${file}: status '${s}' is neither an outcome nor a failure`);
        for (const o of outcomes) assert.ok(statuses.has(o), `${file}: outcome '${o}' listed but never returned`);
        checked++;
      }
    }
    assert.equal(checked, Object.keys(SCRIPT_OUTCOMES).length, 'every table entry is a script');
  });

  it('returns an outcome as it is, also from a Buffer reply', () => {
    assert.equal(scriptStatus('claim-due-will', ['not_due', 5]), 'not_due');
    assert.equal(scriptStatus('orphan-client', [Buffer.from('not_owner')]), 'not_owner', "an outcome here, a failure for claim-client");
    assert.equal(scriptStatus('session-pending', ['dup'], {}, ['ok', 'dup']), 'dup');
  });

  it('turns failing statuses into their typed errors, with the context', () => {
    assert.throws(
      () => scriptStatus('session-save', ['stale'], { clientId: 'c', epoch: 4 }),
      (err: unknown) => err instanceof StaleEpochError && err.clientId === 'c' && err.epoch === 4,
    );
    assert.throws(() => scriptStatus('renew-lease', ['reaped', 1], { member: 'n/1' }), (err: unknown) => err instanceof LeaseReapedError && err.member === 'n/1');
    assert.throws(() => scriptStatus('renew-lease', ['lapsed', 1], { member: 'n/1' }), LeaseLapsedError);
    assert.throws(() => scriptStatus('retain-set', ['fenced', 3], { topic: 't', clientId: 'c', epoch: 2 }), (err: unknown) => err instanceof RetainedFencedError && err.topic === 't');
    assert.throws(() => scriptStatus('claim-client', ['not_owner'], { clientId: 'c' }), ClientIdHeldError);
  });

  it('an unknown status, or an outcome this use of the script does not expect, is an unexpected reply', () => {
    assert.throws(() => scriptStatus('session-load', ['what']), UnexpectedScriptReplyError);
    assert.throws(() => scriptStatus('session-load', []), UnexpectedScriptReplyError);
    assert.throws(() => scriptStatus('session-pending', ['none'], {}, ['ok', 'dup']), UnexpectedScriptReplyError, 'an append never answers none');
  });
});
