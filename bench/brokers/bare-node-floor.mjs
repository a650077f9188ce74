// The floor of the connect storm: what Node itself costs per connection. A bare `net` server
// that does only what any broker must for CONNECT → CONNACK → DISCONNECT: accept, read the
// CONNECT, write a fixed CONNACK (3.1.1, accepted), close the socket on DISCONNECT (as Vigil
// and Mosquitto do: destroy(), a plain close(2), nothing is owed after it), end it on EOF.
// No MQTT parsing, no session, no metrics. Not a broker: it answers every first chunk with
// CONNACK whatever it holds. Same socket options as Vigil (noDelay, backlog 65535).
// Usage: node bench/brokers/bare-node-floor.mjs <port> [host]
import { createServer } from 'node:net';

const port = Number(process.argv[2] ?? 1883);
const host = process.argv[3] ?? '127.0.0.1';
const CONNACK = Buffer.from([0x20, 0x02, 0x00, 0x00]);

const server = createServer({ noDelay: true }, (socket) => {
  let answered = false;
  socket.on('data', (chunk) => {
    if (!answered) {
      answered = true;
      socket.write(CONNACK);
    }
    // DISCONNECT (0xe0 0x00) ends a chunk of a storm client; EOF ends the socket anyway
    if (chunk.length >= 2 && chunk[chunk.length - 2] === 0xe0 && chunk[chunk.length - 1] === 0) socket.destroy();
  });
  socket.on('error', () => undefined);
});
server.maxConnections = Infinity;
server.listen({ port, host, backlog: 65535 }, () => process.stderr.write(`bare node floor listening on ${host}:${port}\n`));
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
