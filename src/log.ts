// Structured JSON logs (pino). Secrets and tokens never reach a log line: the fields that
// could carry them are redacted here, once, whatever the caller passes.
import { pino, destination as pinoDestination, type Logger, type DestinationStream } from 'pino';

export type { Logger };

const REDACT = ['password', 'token', 'authData', 'authenticationData', 'secret', 'jwtSecret', 'adminToken', '*.password', '*.token', '*.authData', '*.secret', 'headers.authorization'];

export function createLogger(level: string, nodeId: string, destination?: DestinationStream): Logger {
  return pino({ level, base: { node: nodeId }, redact: { paths: REDACT, censor: '[redacted]' } }, destination ?? pinoDestination({ sync: false }));
}
