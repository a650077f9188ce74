// The orchestrator's clock base, shared with every generator process so payload timestamps
// and the will-failover kill time are on one scale (process.hrtime is CLOCK_MONOTONIC).
export const CLOCK_BASE = process.hrtime.bigint();

export function nowUs() {
  return Number(process.hrtime.bigint() - CLOCK_BASE) / 1000;
}
