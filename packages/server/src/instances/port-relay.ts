// The port relay of an instance (run by the process driver, never imported): started by
// the server's own Node inside the instance's network namespace (nsenter), it listens on a
// Unix socket the server can reach; each connection names a port on its first line
// (`8080\n`), gets `OK\n` once joined to 127.0.0.1:<port> there (or `ERR <why>\n`), and is
// then a byte pipe. It ends when the server does (its standard input closes), or after a
// minute without connections. Node built-ins only, and only erasable TypeScript.
import { unlinkSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';

const socketPath = process.argv[2];
if (socketPath === undefined) {
  process.stderr.write('usage: port-relay <socket path>\n');
  process.exit(2);
}
const IDLE_MS = 60_000;

/**
 * Exits, taking its socket file along (the directory stays: the server may be starting
 * another relay in it).
 */
function leave(code: number): never {
  try {
    unlinkSync(socketPath as string);
  } catch {
    // gone already
  }
  process.exit(code);
}
let open = 0;
let idle: NodeJS.Timeout | undefined;
const armIdle = () => {
  clearTimeout(idle);
  idle = setTimeout(() => leave(0), IDLE_MS);
};

function relay(client: Socket): void {
  let head = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    head = Buffer.concat([head, chunk]);
    const newline = head.indexOf(10);
    if (newline === -1) {
      if (head.length > 16) client.destroy();
      return;
    }
    client.off('data', onData);
    client.pause();
    const port = Number(head.subarray(0, newline).toString('latin1'));
    const rest = head.subarray(newline + 1);
    if (!Number.isInteger(port) || port < 1 || port > 65_535) {
      client.end('ERR bad port\n');
      return;
    }
    const upstream = connect(port, '127.0.0.1');
    upstream.once('connect', () => {
      client.write('OK\n');
      if (rest.length > 0) upstream.write(rest);
      client.pipe(upstream).pipe(client);
      client.resume();
    });
    upstream.once('error', (err: NodeJS.ErrnoException) => {
      if (client.writable) client.end(`ERR ${err.code ?? err.message}\n`);
    });
    upstream.on('close', () => client.destroy());
    client.on('close', () => upstream.destroy());
  };
  client.on('data', onData);
  client.on('error', () => client.destroy());
}

const server = createServer((client) => {
  open += 1;
  clearTimeout(idle);
  client.once('close', () => {
    open -= 1;
    if (open === 0) armIdle();
  });
  relay(client);
});
server.listen(socketPath, () => {
  process.stdout.write('ready\n');
  armIdle();
});
server.on('error', (err) => {
  process.stderr.write(`port-relay: ${err.message}\n`);
  process.exit(1);
});
// The server holds the other end of standard input: when it is gone, so is the relay.
process.stdin.on('end', () => leave(0));
process.stdin.on('close', () => leave(0));
process.stdin.resume();
