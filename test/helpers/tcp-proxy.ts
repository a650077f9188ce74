// A loopback TCP proxy in front of a server, for tests that need a connection to die at an
// exact point: cutOnReply(marker) drops the next server reply that contains `marker` (it never
// reaches the client) and closes that connection pair, as a server that executed a command and
// then went away before answering. New connections are accepted at once (the client's first
// reconnect succeeds).
import net from 'node:net';

export interface TcpProxy {
  readonly port: number;
  /** The next reply chunk containing `marker` is swallowed and its connection closed; resolves when that happened. */
  cutOnReply(marker: string): Promise<void>;
  close(): Promise<void>;
}

export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  const pairs = new Set<{ client: net.Socket; upstream: net.Socket }>();
  let cut: { marker: string; done: () => void } | undefined;
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
      if (cut && d.includes(cut.marker)) {
        const done = cut.done;
        cut = undefined;
        end();
        done();
        return;
      }
      client.write(d);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    cutOnReply(marker) {
      return new Promise<void>((resolve) => (cut = { marker, done: resolve }));
    },
    async close() {
      for (const p of pairs) {
        p.client.destroy();
        p.upstream.destroy();
      }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
