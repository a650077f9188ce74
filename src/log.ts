// Structured JSON logs (pino). Secrets and tokens never reach a log line: the fields that
// could carry them are redacted here, once, whatever the caller passes.
import { pino, destination as pinoDestination, type Logger, type DestinationStream } from 'pino';

export type { Logger };

const REDACT = ['password', 'token', 'authData', 'authenticationData', 'secret', 'jwtSecret', 'adminToken', '*.password', '*.token', '*.authData', '*.secret', 'headers.authorization'];

export function createLogger(level: string, nodeId: string, destination?: DestinationStream): Logger {
  return pino({ level, base: { node: nodeId }, redact: { paths: REDACT, censor: '[redacted]' } }, destination ?? pinoDestination({ sync: false }));
}

/**
 * At most `perSecond` lines a second of one kind: a fleet-sized burst (10,000 wills of a dead
 * node) logs the first ones of each second, and its metrics count every one.
 */
export class LineBudget {
  private startMs = -Infinity;
  private lines = 0;

  constructor(private readonly perSecond: number) {}

  /** Whether a line may be written now (and counts it). */
  take(nowMs: number): boolean {
    if (nowMs - this.startMs >= 1000) {
      this.startMs = nowMs;
      this.lines = 0;
    }
    if (this.lines >= this.perSecond) return false;
    this.lines++;
    return true;
  }

  /** Ms until the current second ends (and the budget is full again). */
  msLeft(nowMs: number): number {
    return 1000 - (nowMs - this.startMs);
  }
}
