/**
 * The anchors of the realtime benchmark, one per process:
 *
 *   node bench/realtime/anchor-server.ts ws         a plain `ws` WebSocketServer
 *   node bench/realtime/anchor-server.ts socketio   a Socket.IO server (rooms)
 *
 * Both listen on 127.0.0.1, on a port of the system's choosing, and tell it to the parent
 * over IPC (`{port}`); they exit when the parent goes. Both do the least a real broadcast
 * server does: subscribe a connection to a topic, and on a publish, build the message once
 * and hand it to every subscriber. Neither authenticates, stores or replays anything.
 *
 * The message has the same fields as Orchestra's `message` frame (docs/protocol.md,
 * "Realtime protocol"), so that every system puts about the same bytes on the wire.
 */
import { createServer } from 'node:http';

const HOST = '127.0.0.1';
const kind = process.argv[2];

// Whatever happens to the benchmark, its children do not outlive it.
process.on('disconnect', () => process.exit(0));
process.on('SIGINT', () => undefined); // the benchmark stops its children itself
process.on('SIGTERM', () => process.exit(0));

let offset = 0;
/** The message for one publish: the fields of Orchestra's `message` frame. */
function message(topic: string, data: unknown) {
  offset += 1;
  const now = new Date().toISOString();
  return {
    header: { id: String(offset), type: 'EVENT', timestamp: now, source: 'anchor', version: 1 },
    payload: { kind: 'message', topic, offset, event: 'message', data, time: now },
  };
}

async function serveWs(): Promise<number> {
  const { WebSocketServer, WebSocket } = await import('ws');
  type Client = InstanceType<typeof WebSocket>;
  const wss = new WebSocketServer({
    host: HOST,
    port: 0,
    perMessageDeflate: false,
    clientTracking: false,
    maxPayload: 64 * 1024,
  });
  const topics = new Map<string, Set<Client>>();
  wss.on('connection', (ws) => {
    const mine = new Set<string>();
    ws.on('error', () => undefined);
    ws.on('close', () => {
      for (const topic of mine) topics.get(topic)?.delete(ws);
    });
    ws.on('message', (raw) => {
      let frame: { op?: unknown; id?: unknown; topic?: unknown; data?: unknown };
      try {
        frame = JSON.parse(String(raw));
      } catch {
        return;
      }
      const topic = typeof frame.topic === 'string' ? frame.topic : '';
      if (frame.op === 'sub') {
        let set = topics.get(topic);
        if (set === undefined) {
          set = new Set();
          topics.set(topic, set);
        }
        set.add(ws);
        mine.add(topic);
        ws.send(JSON.stringify({ op: 'subbed', id: frame.id, topic }));
      } else if (frame.op === 'pub') {
        // Serialised once, then sent as it is to every subscriber.
        const bytes = Buffer.from(JSON.stringify(message(topic, frame.data)));
        for (const client of topics.get(topic) ?? []) {
          if (client.readyState === WebSocket.OPEN) client.send(bytes, { binary: false });
        }
      }
    });
  });
  await new Promise<void>((done) => wss.once('listening', done));
  const address = wss.address();
  return typeof address === 'object' && address !== null ? address.port : 0;
}

async function serveSocketIo(): Promise<number> {
  const { Server } = await import('socket.io');
  const http = createServer();
  const io = new Server(http, {
    serveClient: false,
    transports: ['websocket'],
    perMessageDeflate: false,
    maxHttpBufferSize: 64 * 1024,
  });
  io.on('connection', (socket) => {
    socket.on('subscribe', (topic: unknown, ack: unknown) => {
      if (typeof topic === 'string') void socket.join(topic);
      if (typeof ack === 'function') ack({ ok: true });
    });
    socket.on('publish', (topic: unknown, data: unknown) => {
      if (typeof topic === 'string') io.to(topic).emit('message', message(topic, data));
    });
  });
  await new Promise<void>((done) => http.listen(0, HOST, done));
  const address = http.address();
  return typeof address === 'object' && address !== null ? address.port : 0;
}

if (kind !== 'ws' && kind !== 'socketio') {
  process.stderr.write('usage: node bench/realtime/anchor-server.ts ws|socketio\n');
  process.exit(2);
}
const port = kind === 'ws' ? await serveWs() : await serveSocketIo();
process.send?.({ port });
