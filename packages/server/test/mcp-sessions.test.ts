import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type McpSession, McpSessions } from '../src/mcp-gateway/sessions.ts';
import type { Principal } from '../src/platform/auth.ts';

// Issue 20: the gateway's stateful sessions are bounded per tenant and per node, and idle
// ones expire. The clock is the test's, so that idleness needs no waiting.

let clock = 0;
const closed: string[] = [];

function session(id: string, tenantId: string): McpSession {
  const closable = { close: async () => void closed.push(id) };
  return {
    id,
    tenantId,
    credential: `key-${tenantId}`,
    view: undefined,
    transport: closable as never,
    server: { close: async () => {} } as never,
    principal: {} as Principal,
    described: undefined,
    lastActiveMs: clock,
    openExchanges: 0,
  };
}

test('idle sessions expire; one with an open exchange (an event stream) does not', async () => {
  closed.length = 0;
  const sessions = new McpSessions(
    { maxSessions: 10, maxSessionsPerTenant: 10, idleMs: 1000 },
    () => clock,
  );
  clock = 0;
  const a = session('a', 't1');
  const b = session('b', 't1');
  sessions.add(a);
  sessions.add(b);
  const endB = sessions.touch(b);
  clock = 5000;
  assert.equal(await sessions.expireIdle(), 1);
  assert.deepEqual(closed, ['a']);
  assert.equal(sessions.get('a'), undefined);
  endB();
  assert.equal(await sessions.expireIdle(), 0, 'just active again');
  clock = 10_000;
  assert.equal(await sessions.expireIdle(), 1);
  assert.equal(sessions.size, 0);
});

test('at a bound the least recently used idle session makes room; when all are busy, none is made', async () => {
  closed.length = 0;
  const sessions = new McpSessions(
    { maxSessions: 3, maxSessionsPerTenant: 2, idleMs: 60_000 },
    () => clock,
  );
  clock = 1;
  sessions.add(session('old', 't1'));
  clock = 2;
  sessions.add(session('new', 't1'));
  assert.equal(await sessions.makeRoom('t1'), undefined);
  assert.deepEqual(closed, ['old'], 'the tenant bound closes its least recently used session');
  const busy = sessions.get('new') as McpSession;
  sessions.touch(busy);
  sessions.add(session('other', 't1'));
  sessions.touch(sessions.get('other') as McpSession);
  assert.equal(await sessions.makeRoom('t1'), 'tenant');
  assert.equal(await sessions.makeRoom('t2'), undefined, 'another tenant has room');
  sessions.add(session('t2-a', 't2'));
  sessions.touch(sessions.get('t2-a') as McpSession);
  assert.equal(await sessions.makeRoom('t3'), 'node');
  await sessions.closeAll();
  assert.equal(sessions.size, 0);
});
