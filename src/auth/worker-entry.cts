// The file the auth pool's threads load: a CommonJS door to worker.ts. Piscina loads a worker
// file with require(); on Node ≥ 20.19 requiring an ES module runs a synchronous module load,
// and a thread terminated in the middle of it (a pool closed right after it was created)
// aborts the whole process with a V8 fatal error ("IsGraphAsync must be used on an
// instantiated module"). From CommonJS the ES module is imported asynchronously instead,
// which a terminating thread simply abandons.
type Tasks = typeof import('./worker.js');

const tasks: Promise<Tasks> = import('./worker.js');

export async function verifyTokens(input: Parameters<Tasks['verifyTokens']>[0]): ReturnType<Tasks['verifyTokens']> {
  return (await tasks).verifyTokens(input);
}

export async function evaluateAcl(input: Parameters<Tasks['evaluateAcl']>[0]): Promise<ReturnType<Tasks['evaluateAcl']>> {
  return (await tasks).evaluateAcl(input);
}
