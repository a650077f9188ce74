// Aedes with its defaults (in-memory persistence and emitter) on a plain TCP listener.
// Usage: node bench/brokers/aedes-server.mjs <port> [host]
import { createServer } from 'node:net';
import { Aedes } from 'aedes';

const port = Number(process.argv[2] ?? 1883);
const host = process.argv[3] ?? '127.0.0.1';

const broker = await Aedes.createBroker();
// noDelay: as Mosquitto with set_tcp_nodelay and Vigil, so Nagle does not add 40 ms stalls.
const server = createServer({ noDelay: true }, broker.handle);
server.maxConnections = Infinity;
server.listen({ port, host, backlog: 4096 }, () => {
  process.stderr.write(`aedes listening on ${host}:${port}\n`);
});

function shutdown() {
  server.close();
  broker.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
