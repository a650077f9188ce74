// Writes report.md and chart.svg again from a results-<date>.json of bench/run.mjs, with the
// report code of this checkout: a report row added later shows for a run made before it.
// Usage: node bench/rerender.mjs bench/results/results-<date>.json [--out DIR] [--md NAME]
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { markdown, svgChart } from './lib/report.mjs';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { out: { type: 'string' }, md: { type: 'string', default: 'report.md' } } });
if (positionals.length !== 1) {
  console.error('usage: node bench/rerender.mjs RESULTS.json [--out DIR] [--md NAME]');
  process.exit(2);
}
const summary = JSON.parse(readFileSync(positionals[0], 'utf8'));
const out = values.out ?? path.dirname(positionals[0]);
writeFileSync(path.join(out, values.md), markdown(summary));
writeFileSync(path.join(out, 'chart.svg'), svgChart(summary));
console.log(`wrote ${path.join(out, values.md)} and ${path.join(out, 'chart.svg')}`);
