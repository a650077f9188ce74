// What the broker tells an observer about its clients, for the console (src/http/fleet-*.ts,
// src/cluster/fleet-index.ts): a client connected, its connection ended, its will was decided.
// Observers must not throw and must not block: they record, nothing else.
import type { Verdict } from '../auth/types.js';
import type { WillRecord } from '../store/types.js';

export interface ConnectedClient {
  readonly clientId: string;
  readonly epoch: number;
  readonly username: string;
  readonly roles: readonly string[];
  readonly protocolVersion: number;
  readonly connectedAtMs: number;
}

export interface FleetObserver {
  connected(client: ConnectedClient): void;
  /** The connection ended; `normal`: a DISCONNECT that discards the will. */
  gone(clientId: string, epoch: number, normal: boolean, atMs: number): void;
  /** Every will decision (WillManager.fire): published or denied, with the verdict. */
  willDecided(record: WillRecord, verdict: Verdict): void;
}
