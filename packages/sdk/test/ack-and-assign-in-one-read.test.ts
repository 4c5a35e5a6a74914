import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { WebSocketServer, type WebSocket as WsSocket } from 'ws';
import { AgentWorker } from '../src/index.ts';

// Regression: the server frees an agent's slot when it stores a task's result, so the next
// assignment can arrive right behind the ack, in the same read. A worker at concurrency 1
// still counted the finished task until the ack's waiter ran, and rejected the assignment
// ("at its concurrency limit"): the task was delayed and dispatch order broken.
//
// The peer here speaks the agent protocol (docs/protocol.md) just far enough to put both
// frames in one write; the rest of the suite runs AgentWorker against the real server.

function frame(type: string, payload: Record<string, unknown>, correlationId?: string): string {
  return JSON.stringify({
    header: {
      id: randomUUID(),
      ...(correlationId ? { correlation_id: correlationId } : {}),
      type,
      timestamp: new Date().toISOString(),
      source: 'test-peer',
      version: 1,
    },
    payload,
  });
}

function assignment(id: string) {
  return {
    kind: 'task.assign',
    task: {
      id,
      attempt: 1,
      input: id,
      template: null,
      capabilities: ['echo'],
      priority: 0,
      timeout_ms: 60_000,
      deadline_at: new Date(Date.now() + 60_000).toISOString(),
      labels: {},
      concurrency_key: null,
      session_id: null,
      created_at: new Date().toISOString(),
    },
  };
}

test('an assignment that arrives in the same read as the previous ack is accepted', async () => {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0, path: '/v1/agents/connect' });
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  const received: { kind: string; task_id?: string }[] = [];
  let peer: WsSocket | undefined;
  const secondAnswered = new Promise<void>((resolve) => {
    server.on('connection', (socket) => {
      peer = socket;
      socket.on('message', (data) => {
        const message = JSON.parse(String(data)) as {
          header: { id: string };
          payload: { kind: string; task_id?: string };
        };
        const { kind, task_id } = message.payload;
        if (kind === 'heartbeat') return;
        received.push({ kind, ...(task_id ? { task_id } : {}) });
        if (kind === 'register') {
          socket.send(
            frame(
              'RESPONSE',
              {
                kind: 'registered',
                agent_id: 'slots',
                heartbeat_interval_ms: 60_000,
                heartbeat_timeout_ms: 120_000,
                max_frame_bytes: 1_048_576,
                resumed: [],
                lost: [],
                server: { version: 'test', instance_id: 'test' },
              },
              message.header.id,
            ),
          );
          socket.send(frame('REQUEST', assignment('tsk_first')));
        } else if (kind === 'task.result' && task_id === 'tsk_first') {
          // The ack and the next assignment leave in one write, as the server sends them.
          const tcp = (socket as unknown as { _socket: import('node:net').Socket })._socket;
          tcp.cork();
          socket.send(
            frame(
              'RESPONSE',
              { kind: 'ack', task_id, attempt: 1, accepted: true, state: 'succeeded' },
              message.header.id,
            ),
          );
          socket.send(frame('REQUEST', assignment('tsk_second')));
          tcp.uncork();
        } else if (task_id === 'tsk_second') {
          resolve();
        }
      });
    });
  });
  const worker = new AgentWorker({
    url: `http://127.0.0.1:${port}`,
    apiKey: 'ork_test',
    agentId: 'slots',
    capabilities: ['echo'],
    concurrency: 1,
    handleSignals: false,
    handler: async (input) => input,
  });
  try {
    await worker.start();
    await secondAnswered;
    assert.deepEqual(received.slice(0, 4), [
      { kind: 'register' },
      { kind: 'task.accept', task_id: 'tsk_first' },
      { kind: 'task.result', task_id: 'tsk_first' },
      { kind: 'task.accept', task_id: 'tsk_second' },
    ]);
  } finally {
    peer?.terminate();
    await worker.stop().catch(() => {});
    server.close();
  }
});
