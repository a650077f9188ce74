#!/usr/bin/env node
// Rewrites the settings table in README.md from src/config.ts (via dist), between the
// <!-- settings:begin --> and <!-- settings:end --> markers. Run after adding a setting:
//   npx tsc -p . && node scripts/settings-table.mjs
import { readFileSync, writeFileSync } from 'node:fs';
const { SETTINGS } = await import('../dist/src/config.js');
const rows = Object.entries(SETTINGS).map(([key, d]) => {
  const def = d.secret ? '(unset)' : Array.isArray(d.default) ? d.default.join(',') || '(unset)' : d.default === '' ? '(unset)' : String(d.default);
  return `| \`${d.env}\` | \`${key}\` | \`${def}\` | ${d.doc} |`;
});
const table = ['| Variable | Config key | Default | Meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
const readme = readFileSync('README.md', 'utf8');
const re = /<!-- settings:begin -->[\s\S]*<!-- settings:end -->/;
if (!re.test(readme)) throw new Error('README.md has no settings markers');
writeFileSync('README.md', readme.replace(re, `<!-- settings:begin -->\n${table}\n<!-- settings:end -->`));
console.log(`README.md: ${rows.length} settings`);
