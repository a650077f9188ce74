// The Lua scripts, loaded from the source tree at runtime (tsc does not copy .lua files into
// dist/). Each owner keeps its scripts beside its code: the stores' in src/store/redis/lua/
// (sessions, retained messages), the cluster's in src/cluster/lua/ (membership, client
// registry, wills, routes). Every script is defined on every connection (src/redis/connection.ts),
// so a script name must be unique across the folders. Each file starts with a header naming KEYS, ARGV and the
// reply; the number of keys is read from that header (every `KEYS[n]` in the leading comment lines), so the header
// cannot drift from how the script is called. A script that takes the keys of several clients at
// once (the CONNECTs of one event-loop turn) says `-- KEYS vary:` in its header and names the
// keys of one group: its callers pass the key count with each call. A script
// `claim-client.lua` becomes the ioredis command `claimClient` (and `claimClientBuffer` for
// binary replies).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface ScriptDef {
  readonly file: string;
  readonly command: string;
  /** undefined: the header says `KEYS vary:`, every call passes its key count. */
  readonly numberOfKeys: number | undefined;
  readonly lua: string;
}

/** The folders holding Lua scripts, relative to src/. */
export const LUA_FOLDERS = ['store/redis/lua', 'cluster/lua'] as const;

/** A Lua folder both when running dist/src/redis/*.js and src/redis/*.ts directly. */
export function luaDir(folder: string): string {
  const candidates = [new URL(`../${folder}/`, import.meta.url), new URL(`../../../src/${folder}/`, import.meta.url)];
  for (const url of candidates) {
    const dir = fileURLToPath(url);
    if (existsSync(dir) && readdirSync(dir).some((f) => f.endsWith('.lua'))) return dir;
  }
  throw new Error(`Lua scripts not found (looked in ${candidates.map((u) => fileURLToPath(u)).join(', ')})`);
}

export function commandName(file: string): string {
  return file.slice(file.lastIndexOf('/') + 1).replace(/\.lua$/, '').replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

export function parseScript(file: string, lua: string): ScriptDef {
  let numberOfKeys = 0;
  let sawArgv = false;
  let vary = false;
  for (const line of lua.split('\n')) {
    if (!line.startsWith('--')) break;
    if (/^--\s*KEYS vary:/.test(line)) vary = true;
    for (const k of line.matchAll(/\bKEYS\[(\d+)\]/g)) numberOfKeys = Math.max(numberOfKeys, Number(k[1]));
    if (/^--\s*(ARGV\[\d+\]|ARGV: none)/.test(line)) sawArgv = true;
  }
  if (numberOfKeys === 0 || !sawArgv || !/^--\s*Returns/m.test(lua)) {
    throw new Error(`${file}: header must name KEYS[n], ARGV[n] (or "ARGV: none") and "Returns"`);
  }
  return { file, command: commandName(file), numberOfKeys: vary ? undefined : numberOfKeys, lua };
}

let cache: Map<string, ScriptDef> | undefined;

export function loadScripts(): Map<string, ScriptDef> {
  if (cache) return cache;
  const out = new Map<string, ScriptDef>();
  for (const folder of LUA_FOLDERS) {
    const dir = luaDir(folder);
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.lua')).sort()) {
      const def = parseScript(`${folder}/${file}`, readFileSync(dir + file, 'utf8'));
      const clash = out.get(def.command);
      if (clash) throw new Error(`${def.file}: script name already used by ${clash.file}`);
      out.set(def.command, def);
    }
  }
  cache = out;
  return out;
}
