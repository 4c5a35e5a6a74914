// Issue 18, finding 6: the data directory was 0755 and orchestra.db 0644, so another local
// user (nobody) read the realtime signing secret from the database, forged a token for
// another tenant and read its config topic.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { describe, test } from 'node:test';
import pino from 'pino';
import { parseSecretKey, SecretBox } from '../src/platform/secret-box.ts';
import type { Settings } from '../src/platform/settings.ts';
import { startServer } from '../src/server.ts';
import { TEST_SECRET_KEY, tempDir, testSettings } from './helpers.ts';

function modeOf(path: string): string {
  return `0${(statSync(path).mode & 0o777).toString(8)}`;
}

/** Settings as a user who set no ORCHESTRA_SECRETS_KEY has them: the key file is used. */
function defaultSettings(dataDir: string): Settings {
  return { ...testSettings(dataDir), secretsKey: undefined };
}

async function start(settings: Settings, logTo?: Record<string, unknown>[]) {
  let adminKey: string | undefined;
  const server = await startServer(settings, {
    log: logTo
      ? pino({ level: 'info' }, { write: (line: string) => logTo.push(JSON.parse(line)) })
      : pino({ level: 'silent' }),
    onAdminKey: (key) => {
      adminKey = key.secret;
    },
  });
  return { server, adminKey };
}

function storedSecret(dataDir: string): { id: string; secret: string } {
  const db = new DatabaseSync(join(dataDir, 'orchestra.db'));
  try {
    const row = db.prepare('select id, secret from realtime_keys').get() as {
      id: string;
      secret: string;
    };
    return row;
  } finally {
    db.close();
  }
}

describe('files on disk are readable by other local users', () => {
  test('a first start makes the data directory 0700 and the database, WAL, admin key and node key 0600', async () => {
    const dir = tempDir();
    const dataDir = join(dir.path, 'data');
    const { server } = await start(defaultSettings(dataDir));
    try {
      // A write, so that the WAL holds something.
      const res = await fetch(`${server.url}/healthz`);
      assert.equal(res.status, 200);
      assert.equal(modeOf(dataDir), '0700');
      for (const name of [
        'orchestra.db',
        'orchestra.db-wal',
        'orchestra.db-shm',
        'admin-key',
        'node-key',
      ]) {
        assert.equal(modeOf(join(dataDir, name)), '0600', name);
      }
      if (process.getuid?.() === 0) {
        // What the attack did: read the database as another user. Now refused.
        const read = spawnSync(
          'su',
          ['nobody', '-s', '/bin/sh', '-c', `cat ${join(dataDir, 'orchestra.db')}`],
          {
            encoding: 'utf8',
          },
        );
        assert.notEqual(read.status, 0);
        assert.match(read.stderr, /Permission denied/);
      }
    } finally {
      await server.close();
      dir.remove();
    }
  });

  test('wider permissions left on an existing data directory are tightened at start, with a log line', async () => {
    const dir = tempDir();
    const dataDir = join(dir.path, 'data');
    const first = await start(defaultSettings(dataDir));
    await first.server.close();
    chmodSync(dataDir, 0o755);
    for (const name of ['orchestra.db', 'admin-key', 'node-key'])
      chmodSync(join(dataDir, name), 0o644);
    const lines: Record<string, unknown>[] = [];
    const second = await start(defaultSettings(dataDir), lines);
    try {
      assert.equal(modeOf(dataDir), '0700');
      for (const name of ['orchestra.db', 'admin-key', 'node-key']) {
        assert.equal(modeOf(join(dataDir, name)), '0600', name);
      }
      const tightened = lines.filter(
        (l) => l.msg === 'data directory permissions tightened: other users could read it',
      );
      assert.deepEqual(
        tightened.map((l) => [String(l.path).slice(dataDir.length), l.mode, l.now]).sort(),
        [
          ['', '0755', '0700'],
          ['/admin-key', '0644', '0600'],
          ['/node-key', '0644', '0600'],
          ['/orchestra.db', '0644', '0600'],
        ],
      );
    } finally {
      await second.server.close();
      dir.remove();
    }
  });

  test('the realtime signing secret is stored encrypted with the node key; one stored in the clear is sealed at start and its tokens stay valid', async () => {
    const dir = tempDir();
    const dataDir = join(dir.path, 'data');
    const first = await start(defaultSettings(dataDir));
    let token: string;
    try {
      const issued = await fetch(`${first.server.url}/v1/realtime/tokens`, {
        method: 'POST',
        headers: { authorization: `Bearer ${first.adminKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ topics: ['news'], ttl_seconds: 3600 }),
      });
      assert.equal(issued.status, 201, await issued.clone().text());
      token = ((await issued.json()) as { token: string }).token;
    } finally {
      await first.server.close();
    }
    const row = storedSecret(dataDir);
    assert.match(row.secret, /^sealed:v2:[0-9a-f]{8}:/);
    const key = parseSecretKey(readFileSync(join(dataDir, 'node-key'), 'utf8'));
    assert.ok(key);
    const plaintext = new SecretBox(key).open(row.secret, `realtime_keys.secret:${row.id}`);
    assert.equal(Buffer.from(plaintext, 'base64url').length, 32);
    assert.ok(!row.secret.includes(plaintext));

    // As a version before encryption at rest stored it.
    const db = new DatabaseSync(join(dataDir, 'orchestra.db'));
    db.prepare('update realtime_keys set secret = ? where id = ?').run(plaintext, row.id);
    db.close();
    const second = await start(defaultSettings(dataDir));
    try {
      assert.match(storedSecret(dataDir).secret, /^sealed:v2:[0-9a-f]{8}:/);
      const read = await fetch(`${second.server.url}/v1/topics/news/messages`, {
        headers: { authorization: `Bearer ${token}` },
      });
      assert.notEqual(read.status, 401, 'a token signed before the secret was sealed still holds');
    } finally {
      await second.server.close();
      dir.remove();
    }
  });

  test('a node with another ORCHESTRA_SECRETS_KEY refuses to start, naming the setting', async () => {
    const dir = tempDir();
    const first = await start(testSettings(dir.path));
    await first.server.close();
    try {
      const other = Buffer.alloc(32, 9).toString('base64');
      assert.notEqual(other, TEST_SECRET_KEY);
      await assert.rejects(
        start({ ...testSettings(dir.path), secretsKey: other }),
        /ORCHESTRA_SECRETS_KEY/,
      );
    } finally {
      dir.remove();
    }
  });
});
