import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { startServer } from '../src/server.ts';
import { createTestDatabase, tempDir, testSettings } from './helpers.ts';
import { FIXTURES, WAIT_MS } from './mcp-servers.ts';
import { NatsServer } from './nats-server.ts';

/**
 * Two nodes on one PostgreSQL and one NATS: a stdio MCP server runs on the node that holds
 * its claim; calls through the other node are forwarded to it; when that node goes away,
 * the other takes the server over.
 */
describe('MCP servers in a cluster', () => {
  test('one node runs the server, both serve its tools, and the survivor takes it over', async () => {
    const database = await createTestDatabase();
    const nats = await NatsServer.start();
    const dirs = [tempDir(), tempDir()];
    const nodes: { url: string; close(): Promise<void> }[] = [];
    try {
      for (const [i, dir] of dirs.entries()) {
        const settings = testSettings(dir.path, {
          ORCHESTRA_DATABASE_URL: database.url,
          ORCHESTRA_NATS_URL: nats.url,
          ORCHESTRA_INSTANCE_ID: `node-${i}`,
          ORCHESTRA_MCP_RECONCILE_MS: '500',
          ORCHESTRA_MCP_SANDBOX: 'off',
        });
        nodes.push(await startServer(settings, { log: pino({ level: 'silent' }) }));
      }
      const key = readFileSync(join(dirs[0]?.path ?? '', 'admin-key'), 'utf8').trim();
      const call = async (url: string, method: string, path: string, body?: unknown) => {
        const res = await fetch(url + path, {
          method,
          headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
        return { status: res.status, body: (await res.json()) as any };
      };
      const [a, b] = nodes as [(typeof nodes)[number], (typeof nodes)[number]];
      const created = await call(a.url, 'POST', '/v1/mcp/servers', {
        name: 'shared',
        transport: 'stdio',
        command: process.execPath,
        args: [join(FIXTURES, 'changing-server.ts')],
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      await call(a.url, 'POST', '/v1/tool-policies', {
        name: 'shared',
        effect: 'allow',
        tools: ['shared__*'],
      });

      const readyOn = async (url: string, not?: string) => {
        const deadline = Date.now() + WAIT_MS;
        for (;;) {
          const s = (await call(url, 'GET', '/v1/mcp/servers/shared')).body;
          if (s.status.state === 'ready' && s.status.node !== not && s.tools > 0)
            return s.status.node as string;
          if (Date.now() > deadline) assert.fail(`not ready: ${JSON.stringify(s.status)}`);
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
      };
      const owner = await readyOn(a.url);
      for (const node of [a, b]) {
        const res = await call(node.url, 'POST', '/v1/tools/shared__echo/invoke', {
          arguments: { text: `via ${node.url}` },
        });
        assert.equal(res.status, 200, JSON.stringify(res.body));
        assert.equal(res.body.call.status, 'succeeded', JSON.stringify(res.body));
        assert.equal(res.body.result.content[0].text, `via ${node.url}`);
      }

      // The owner leaves; its claim ends with its lease, and the other node takes over.
      const ownerIndex = owner === 'node-0' ? 0 : 1;
      const survivor = nodes[1 - ownerIndex] as (typeof nodes)[number];
      await nodes[ownerIndex]?.close();
      nodes.splice(ownerIndex, 1);
      assert.equal(await readyOn(survivor.url, owner), owner === 'node-0' ? 'node-1' : 'node-0');
      const after = await call(survivor.url, 'POST', '/v1/tools/shared__echo/invoke', {
        arguments: { text: 'still here' },
      });
      assert.equal(after.body.call.status, 'succeeded', JSON.stringify(after.body));
    } finally {
      for (const node of nodes) await node.close();
      for (const dir of dirs) dir.remove();
      await nats.stop();
      await database.drop();
    }
  });
});
