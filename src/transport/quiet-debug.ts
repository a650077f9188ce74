// mqtt-packet logs through the `debug` package about ten times for every packet it parses
// (`debug('parse: current state: %s', ...)` and so on). With DEBUG unset each call still
// builds a rest-arguments array and runs the `enabled` getter: about 7 % of the broker's CPU
// in the QoS 0 pairs benchmark (bench/README.md). Imported before mqtt-packet, this module
// swaps the cached `debug` export for a wrapper: a namespace that DEBUG enables at start gets
// the real logger, every other one an empty function that V8 inlines away.
//
// The one behaviour given up: `debug.enable()` called at run time cannot switch on a logger
// that was created quiet. Vigil never calls it; DEBUG is read once, at start, as the debug
// package itself documents for Node.
import { createRequire } from 'node:module';

interface DebugLogger {
  (...args: unknown[]): void;
  enabled: boolean;
  namespace: string;
  log?: unknown;
  extend(sub: string, delimiter?: string): DebugLogger;
  destroy(): boolean;
}
const QUIET = Symbol.for('vigil.quiet-debug');
type CreateDebug = ((namespace: string) => DebugLogger) & { [QUIET]?: true };

function install(): void {
  const require = createRequire(import.meta.url);
  // The copy mqtt-packet resolves (npm may nest it); loading it here also caches it.
  const path = createRequire(require.resolve('mqtt-packet')).resolve('debug');
  const real = require(path) as CreateDebug;
  const cached = require.cache[path];
  if (!cached || real[QUIET]) return; // not CommonJS-cached, or done already

  const quiet = function createQuietDebug(namespace: string): DebugLogger {
    const logger = real(namespace);
    if (logger.enabled) return logger;
    const off = function quietDebug(): void {} as unknown as DebugLogger;
    off.enabled = false;
    off.namespace = namespace;
    off.log = logger.log;
    off.extend = (sub: string, delimiter = ':') => quiet(namespace + delimiter + sub);
    off.destroy = () => false;
    return off;
  } as CreateDebug;
  // enable(), disable(), enabled(ns), formatters, ... stay the real module's.
  Object.setPrototypeOf(quiet, real);
  quiet[QUIET] = true;
  cached.exports = quiet;
}

install();
