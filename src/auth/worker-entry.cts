// The file the auth pool's threads load: a CommonJS door to worker.ts. Piscina loads a worker
// file with require(); on Node ≥ 20.19 requiring an ES module runs a synchronous module load,
// and a thread terminated in the middle of it (a pool closed right after it was created)
// aborts the whole process with a V8 fatal error ("IsGraphAsync must be used on an
// instantiated module"). From CommonJS the ES module is imported asynchronously instead,
// which a terminating thread simply abandons.
type Tasks = typeof import('./worker.js');
import { setPriority } from 'node:os';

/**
 * The pool's threads yield the core to the main thread when both want it: the event loop
 * renews the cluster lease, accepts sockets and answers them, and a storm of verifications
 * on the same core must not delay it past the lease fence (the node would give up every
 * connection). Tokens wait in the admission queue meanwhile. On Linux the nice value is per
 * thread (setpriority on the calling thread: only this worker); raising it needs no privilege.
 * Only the pool's threads load this file.
 */
const WORKER_NICE = 10;
try {
  setPriority(0, WORKER_NICE);
} catch {
  // not permitted here: the threads share the core evenly, as before
}

const tasks: Promise<Tasks> = import('./worker.js');

export async function verifyTokens(input: Parameters<Tasks['verifyTokens']>[0]): ReturnType<Tasks['verifyTokens']> {
  return (await tasks).verifyTokens(input);
}

export async function evaluateAcls(input: Parameters<Tasks['evaluateAcls']>[0]): Promise<ReturnType<Tasks['evaluateAcls']>> {
  return (await tasks).evaluateAcls(input);
}
