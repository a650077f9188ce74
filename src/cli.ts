#!/usr/bin/env node
// `vigil`: starts one node. Settings come from --config FILE and VIGIL_* variables (the
// variables win). A bad setting is one line on stderr and exit code 2, never a stack trace.
import { ConfigError, describeSettings, loadConfig, readConfigFile } from './config.js';
import { VigilServer } from './server.js';

const USAGE = `Usage: vigil [--config FILE]

Vigil, an MQTT 3.1.1 / 5.0 broker. Every setting is a config-file key (YAML or JSON) and
an environment variable; the variable wins.

Settings:
`;

async function main(argv: string[]): Promise<void> {
  let file: Record<string, unknown> | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') {
      process.stdout.write(USAGE + describeSettings() + '\n');
      return;
    }
    if (arg === '--config' || arg === '-c') {
      const path = argv[++i];
      if (!path) throw new ConfigError('--config', 'needs a file path');
      file = readConfigFile(path);
    } else if (arg.startsWith('--config=')) {
      file = readConfigFile(arg.slice('--config='.length));
    } else {
      throw new ConfigError(arg, 'unknown argument (see vigil --help)');
    }
  }
  const config = loadConfig({ file });
  const server = new VigilServer(config);
  try {
    await server.start();
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'EADDRINUSE' || e.code === 'EACCES' || e.code === 'EADDRNOTAVAIL') {
      process.stderr.write(`vigil: cannot listen: ${e.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  // A rejection nothing handled is a bug; Node's default ends the process, and with it every
  // connection (whose wills a survivor then fires). It is logged with its stack and counted
  // (vigil_unhandled_errors_total), and the broker goes on: a rejected promise has unwound no
  // synchronous state. A thrown exception still ends the process (Node's default).
  process.on('unhandledRejection', (reason) => {
    server.metrics.unhandledErrorsTotal.inc({ kind: 'unhandled_rejection' });
    server.log.error({ err: reason instanceof Error ? (reason.stack ?? reason.message) : String(reason) }, 'unhandled promise rejection (a bug); going on');
  });
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    server.log.info({ signal }, 'shutting down');
    server.stop().then(
      () => process.exit(0),
      (err) => {
        server.log.error({ err: (err as Error).message }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main(process.argv.slice(2)).catch((err) => {
  if (err instanceof ConfigError) {
    process.stderr.write(`vigil: bad setting ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`vigil: failed to start: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
