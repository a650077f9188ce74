// Preloaded (node --import) into a broker by bench/storm-alloc.mjs: V8's sampling heap
// profiler, driven by signals so that only the storms are sampled. First SIGUSR2: sample every
// allocation. Second SIGUSR2: write that profile to $HEAP_SAMPLER_OUT.all.json, then sample only
// what a major GC frees (objects a scavenge promoted that died in the old generation) and
// what stays alive. SIGTERM: write that to $HEAP_SAMPLER_OUT.major.json and exit.
import { Session } from 'node:inspector';
import { writeFileSync } from 'node:fs';
import { isMainThread } from 'node:worker_threads';

if (isMainThread && process.env.HEAP_SAMPLER_OUT) {
  const out = process.env.HEAP_SAMPLER_OUT;
  const session = new Session();
  session.connect();
  const post = (method, params) => new Promise((resolve, reject) => session.post(method, params, (err, r) => (err ? reject(err) : resolve(r))));
  const start = (minor) => post('HeapProfiler.startSampling', { samplingInterval: 512, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: minor });
  // the callback runs before post() returns (a session on the main thread answers at once):
  // the file is written before a broker's own SIGTERM handler exits (the bare floor's does)
  const saveNow = (name, then) =>
    session.post('HeapProfiler.stopSampling', (err, r) => {
      if (!err) writeFileSync(`${out}.${name}.json`, JSON.stringify(r.profile));
      then();
    });
  const save = (name) => new Promise((resolve) => saveNow(name, resolve));
  let phase = 0;
  process.on('SIGUSR2', () => {
    phase++;
    if (phase === 1) void post('HeapProfiler.enable').then(() => start(true));
    else if (phase === 2) void save('all').then(() => start(false));
  });
  process.on('SIGTERM', () => saveNow('major', () => process.exit(0)));
}
