// A loopback TCP proxy in front of a server, for tests that need a connection to die at an
// exact point. cutOnReply(marker) drops the next server reply that contains `marker` (it never
// reaches the client) and closes that connection pair, as a server that executed a command and
// then went away before answering; new connections are accepted at once (the client's first
// reconnect succeeds). cutAllAfterReply(marker) lets that reply through, then closes every
// connection and stops listening until release() (connections are refused, as by a server that
// is down): a client cut off from the server right after it read something.
import net from 'node:net';

export interface TcpProxy {
  readonly port: number;
  /** The next reply chunk containing `marker` is swallowed and its connection closed; resolves when that happened. */
  cutOnReply(marker: string): Promise<void>;
  /** The next reply chunk containing `marker` is delivered, then every connection is closed and new ones refused until release(). */
  cutAllAfterReply(marker: string): Promise<void>;
  release(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  const pairs = new Set<{ client: net.Socket; upstream: net.Socket }>();
  let cut: { marker: string; deliver: boolean; done: () => void } | undefined;
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    const pair = { client, upstream };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.on('data', (d) => upstream.write(d));
    upstream.on('data', (d) => {
      if (!cut || !d.includes(cut.marker)) return void client.write(d);
      const { deliver, done } = cut;
      cut = undefined;
      if (!deliver) {
        end();
        return done();
      }
      server.close();
      pairs.delete(pair);
      upstream.destroy();
      client.end(d); // the reply, then FIN
      for (const p of [...pairs]) {
        p.client.destroy();
        p.upstream.destroy();
      }
      done();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    cutOnReply(marker) {
      return new Promise<void>((resolve) => (cut = { marker, deliver: false, done: resolve }));
    },
    cutAllAfterReply(marker) {
      return new Promise<void>((resolve) => (cut = { marker, deliver: true, done: resolve }));
    },
    release() {
      if (!server.listening) server.listen(port, '127.0.0.1');
    },
    async close() {
      for (const p of pairs) {
        p.client.destroy();
        p.upstream.destroy();
      }
      if (server.listening) await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
