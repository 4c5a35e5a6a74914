import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { type AddressInfo, createServer as createNetServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import packageJson from '../package.json' with { type: 'json' };
import {
  type CliResult,
  closedPort,
  expectExit,
  jsonOf,
  killSpawned,
  logLines,
  runCli as runOrchestraCli,
  type SpawnedOrchestra,
  spawnOrchestra,
  tempDir,
} from './helpers.ts';

// The `orchestra` CLI as a user runs it: a spawned `node bin/orchestra.js`, with nothing
// but PATH and the ORCHESTRA_* variables each test names in its environment.

const KEY = /ork_[A-Za-z0-9]+/g;

const dirs: { remove: () => void }[] = [];

/** A directory without `.orchestra`, so that the CLI's default data dir holds no key. */
const workDir = tempDir('orchestra-cli-cwd-');
dirs.push(workDir);

after(() => {
  killSpawned();
  for (const dir of dirs) dir.remove();
});

function newDataDir(): string {
  const dir = tempDir('orchestra-cli-data-');
  dirs.push(dir);
  return dir.path;
}

/** Runs one CLI command to completion from the work dir. */
function runCli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return runOrchestraCli(args, { cwd: workDir.path, env });
}

const json = jsonOf;

/** Spawns `orchestra start` from the work dir, on a free port. */
function startOrchestra(
  dataDir: string,
  env: Record<string, string> = {},
): Promise<SpawnedOrchestra> {
  return spawnOrchestra({ cwd: workDir.path, dataDir, env });
}

describe('orchestra start', () => {
  test('prints the first admin key once and writes it to the data directory with mode 0600', async () => {
    const dataDir = newDataDir();
    const server = await startOrchestra(dataDir);
    try {
      const stderr = await server.printed(/\/v1\/whoami/);
      assert.equal(stderr.match(/first admin key/g)?.length, 1, stderr);
      const keys = new Set(stderr.match(KEY));
      assert.equal(keys.size, 1, `expected one ork_ key in stderr: ${stderr}`);
      const [key] = keys;
      // The example names the address the server really listens on, not the port setting (0).
      assert.ok(stderr.includes(`${server.url}/v1/whoami`), stderr);
      assert.ok(!server.stdout().includes(String(key)), 'the secret must not be in the log');

      const file = join(dataDir, 'admin-key');
      assert.equal(statSync(file).mode & 0o777, 0o600);
      assert.equal(readFileSync(file, 'utf8').trim(), key);

      const me = json(
        await runCli(['whoami', '--json', '--url', server.url, '--api-key', `${key}`]),
      );
      assert.equal(me.role, 'admin');
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });

  test('a second start on the same data directory prints no key and keeps the first one', async () => {
    const dataDir = newDataDir();
    const first = await startOrchestra(dataDir);
    assert.equal(await first.stop(), 0);
    const key = readFileSync(join(dataDir, 'admin-key'), 'utf8').trim();

    const second = await startOrchestra(dataDir);
    try {
      assert.doesNotMatch(second.stderr(), KEY);
      assert.equal(readFileSync(join(dataDir, 'admin-key'), 'utf8').trim(), key);
      const me = json(await runCli(['whoami', '--json', '--url', second.url, '--api-key', key]));
      assert.equal(me.tenant.id, 'default');
      // Several nodes: one that refuses connections is passed over.
      const down = `http://127.0.0.1:${await closedPort()}`;
      const via = json(
        await runCli(['whoami', '--json', '--url', `${down},${second.url}`, '--api-key', key]),
      );
      assert.equal(via.tenant.id, 'default');
    } finally {
      assert.equal(await second.stop(), 0);
    }
  });

  test('a port in use stops start-up naming ORCHESTRA_PORT, before any tenant or key is made', async () => {
    const holder = createNetServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const { port } = holder.address() as AddressInfo;
    const dataDir = newDataDir();
    try {
      const taken = await runCli(['start'], {
        ORCHESTRA_PORT: String(port),
        ORCHESTRA_HOST: '127.0.0.1',
        ORCHESTRA_DATA_DIR: dataDir,
      });
      expectExit(taken, 1);
      assert.match(taken.stderr, new RegExp(`ORCHESTRA_PORT: port ${port} is in use`));
      assert.doesNotMatch(taken.stdout, /ork_/, 'no admin key printed');
      assert.doesNotMatch(taken.stderr, /\n\s+at /, 'no stack trace');
      // Nothing was created: the next start, on a free port, is the first one.
      assert.deepEqual(
        readdirSync(dataDir).filter((f) => f === 'admin-key' || f.startsWith('orchestra.db')),
        [],
      );
    } finally {
      await new Promise((resolve) => holder.close(resolve));
    }
  });

  test('a PostgreSQL that never answers or refuses stops start-up with a clear error, not a hang', async () => {
    const sockets = new Set<Socket>();
    const silent = createNetServer((socket) => {
      sockets.add(socket); // accepted, never answered
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as AddressInfo;
    try {
      const hung = await runCli(['start'], {
        ORCHESTRA_PORT: '0',
        ORCHESTRA_DATA_DIR: newDataDir(),
        ORCHESTRA_DATABASE_URL: `postgres://orchestra:pw@127.0.0.1:${port}/orchestra`,
      });
      expectExit(hung, 1);
      assert.match(
        hung.stderr,
        new RegExp(
          `cannot migrate the postgres store at postgres://orchestra:?@127.0.0.1:${port}/orchestra`,
        ),
      );
      assert.match(hung.stderr, /caused by: .*timeout/i);
      assert.doesNotMatch(hung.stderr, /pw@|\n\s+at /, 'no password, no stack trace');

      const refused = await runCli(['start'], {
        ORCHESTRA_PORT: '0',
        ORCHESTRA_DATA_DIR: newDataDir(),
        ORCHESTRA_DATABASE_URL: `postgres://127.0.0.1:${await closedPort()}/orchestra`,
      });
      expectExit(refused, 1);
      assert.match(refused.stderr, /caused by: .*ECONNREFUSED/);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  test('ORCHESTRA_PORT=abc is refused with the variable and what it allows', async () => {
    const result = await runCli(['start'], {
      ORCHESTRA_PORT: 'abc',
      ORCHESTRA_DATA_DIR: newDataDir(),
    });
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /ORCHESTRA_PORT/);
    assert.match(result.stderr, /"abc"/);
    assert.match(result.stderr, /an integer from 0 to 65535/);
  });

  test('ORCHESTRA_LOG_LEVEL=loud is refused with the variable and what it allows', async () => {
    const result = await runCli(['start'], {
      ORCHESTRA_LOG_LEVEL: 'loud',
      ORCHESTRA_PORT: '0',
      ORCHESTRA_DATA_DIR: newDataDir(),
    });
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /ORCHESTRA_LOG_LEVEL/);
    assert.match(result.stderr, /fatal, error, warn, info, debug, trace, silent/);
  });
});

describe('admin key loss and recovery', () => {
  test('a first start whose key file cannot be written still prints the key, and serves', async () => {
    const dataDir = newDataDir();
    mkdirSync(join(dataDir, 'admin-key')); // a directory where the file should go
    const server = await startOrchestra(dataDir);
    try {
      const stderr = await server.printed(/\/v1\/whoami/);
      assert.match(stderr, /could not be saved in the data directory/);
      const [key] = stderr.match(KEY) ?? [];
      assert.ok(key, stderr);
      assert.equal(
        json(await runCli(['whoami', '--json', '--url', server.url, '--api-key', key])).role,
        'admin',
      );
      assert.ok(
        logLines(server.stdout()).some(
          (l) => l.msg === 'could not save the admin key file; the key is printed only',
        ),
      );
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });

  test('recover-admin-key creates a working admin key straight in the store, while the server runs', async () => {
    const dataDir = newDataDir();
    const server = await startOrchestra(dataDir);
    try {
      const recovered = json(
        await runCli(['recover-admin-key', '--json'], { ORCHESTRA_DATA_DIR: dataDir }),
      );
      assert.equal(recovered.role, 'admin');
      assert.equal(recovered.created_by, 'recovery');
      assert.match(recovered.secret, /^ork_/);
      const me = json(
        await runCli(['whoami', '--json', '--url', server.url, '--api-key', recovered.secret]),
      );
      assert.deepEqual([me.tenant.id, me.role], ['default', 'admin']);

      const missing = await runCli(['recover-admin-key', '--tenant', 'ghost'], {
        ORCHESTRA_DATA_DIR: dataDir,
      });
      expectExit(missing, 2);
      assert.match(missing.stderr, /Tenant "ghost" does not exist/);
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });
});

describe('commands against a running server', () => {
  let server: SpawnedOrchestra;
  let dataDir: string;
  let adminKey: string;
  /** Runs a command against the server with the admin key unless `key` says otherwise. */
  const cli = (args: string[], key = adminKey) =>
    runCli([...args, '--url', server.url, '--api-key', key]);

  before(async () => {
    dataDir = newDataDir();
    server = await startOrchestra(dataDir);
    adminKey = readFileSync(join(dataDir, 'admin-key'), 'utf8').trim();
  });
  after(async () => {
    await server.stop();
  });

  test('whoami prints a table and --json', async () => {
    const table = await cli(['whoami']);
    expectExit(table, 0);
    const [header, row] = table.stdout.trim().split('\n');
    assert.match(String(header), /^TENANT\s+ROLE\s+CREDENTIAL\s+EXPIRES$/);
    assert.match(String(row), /^default \(Default\)\s+admin\s+API key key_\S+ \(bootstrap admin/);
    assert.ok(!table.stdout.includes(adminKey), 'whoami must not print the secret');

    const me = json(await cli(['whoami', '--json']));
    assert.equal(me.tenant.id, 'default');
    assert.equal(me.tenant.kind, 'system');
    assert.equal(me.role, 'admin');
    assert.equal(me.credential.type, 'api_key');
    assert.equal(adminKey.startsWith(me.credential.prefix), true);
  });

  test('keys create prints the secret once, and --json gives it', async () => {
    const created = await cli(['keys', 'create', '--name', 'x', '--role', 'viewer']);
    expectExit(created, 0);
    const secrets = created.stdout.match(KEY) ?? [];
    assert.equal(secrets.length, 1, created.stdout);
    assert.match(created.stdout, /^Created API key key_\S+ \(x, role viewer\)\./);
    assert.match(created.stdout, /not shown again/);
    const viewer = json(await cli(['whoami', '--json'], String(secrets[0])));
    assert.equal(viewer.role, 'viewer');
    assert.equal(viewer.credential.name, 'x');

    const key = json(await cli(['keys', 'create', '--name', 'y', '--role', 'operator', '--json']));
    assert.match(key.secret, /^ork_[A-Za-z0-9]+$/);
    assert.equal(key.name, 'y');
    assert.equal(key.role, 'operator');
    assert.equal(key.status, 'active');
    assert.equal(key.expires_at, null);
  });

  test('keys create --expires-in 30d sets an expiry 30 days ahead', async () => {
    const sentMs = Date.now();
    const key = json(
      await cli([
        'keys',
        'create',
        '--name',
        'month',
        '--role',
        'agent',
        '--expires-in',
        '30d',
        '--json',
      ]),
    );
    const answeredMs = Date.now();
    const day = 86_400_000;
    const expires = Date.parse(key.expires_at);
    assert.ok(expires >= sentMs + 30 * day && expires <= answeredMs + 30 * day, key.expires_at);

    const table = await cli([
      'keys',
      'create',
      '--name',
      'month2',
      '--role',
      'agent',
      '--expires-in',
      '30d',
    ]);
    expectExit(table, 0);
    assert.match(table.stdout, /role agent, expires \d{4}-\d\d-\d\dT/);

    const bad = await cli([
      'keys',
      'create',
      '--name',
      'z',
      '--role',
      'agent',
      '--expires-in',
      '30x',
    ]);
    expectExit(bad, 2);
    assert.match(bad.stderr, /--expires-in must be a number followed by s, m, h or d/);

    const tooFar = await cli([
      'keys',
      'create',
      '--name',
      'z',
      '--role',
      'agent',
      '--expires-in',
      '999999999999d',
    ]);
    expectExit(tooFar, 2);
    assert.match(tooFar.stderr, /at most 36500d/);
  });

  test('keys list shows the keys as a table and as a --json array', async () => {
    const key = json(
      await cli(['keys', 'create', '--name', 'listed', '--role', 'viewer', '--json']),
    );

    const table = await cli(['keys', 'list']);
    expectExit(table, 0);
    assert.match(
      table.stdout,
      /^ID\s+NAME\s+ROLE\s+STATUS\s+PREFIX\s+CREATED\s+EXPIRES\s+LAST USED\n/,
    );
    const row = table.stdout.split('\n').find((line) => line.startsWith(key.id));
    assert.ok(row, `${key.id} is not in\n${table.stdout}`);
    assert.match(row, new RegExp(`^${key.id}\\s+listed\\s+viewer\\s+active\\s+${key.prefix}`));
    assert.ok(!table.stdout.includes(key.secret), 'keys list must not print secrets');

    const list = json(await cli(['keys', 'list', '--json']));
    assert.ok(Array.isArray(list));
    const found = list.filter((k: { id: string }) => k.id === key.id);
    assert.equal(found.length, 1);
    assert.equal(found[0].name, 'listed');
    assert.equal(found[0].secret, undefined);
    assert.ok(list.some((k: { name: string }) => k.name === 'bootstrap admin'));
  });

  test('keys revoke stops the key at once', async () => {
    const key = json(
      await cli(['keys', 'create', '--name', 'doomed', '--role', 'viewer', '--json']),
    );
    expectExit(await cli(['whoami'], key.secret), 0);

    const revoked = await cli(['keys', 'revoke', key.id]);
    expectExit(revoked, 0);
    assert.match(revoked.stdout, new RegExp(`Revoked API key ${key.id} \\(doomed\\)`));

    const refused = await cli(['whoami'], key.secret);
    expectExit(refused, 1);
    assert.match(refused.stderr, /API_KEY_REVOKED/);
    assert.match(refused.stderr, /HTTP 401/);

    const active = json(await cli(['keys', 'list', '--json']));
    assert.ok(!active.some((k: { id: string }) => k.id === key.id));
    const all = json(await cli(['keys', 'list', '--include-revoked', '--json']));
    assert.equal(all.find((k: { id: string }) => k.id === key.id)?.status, 'revoked');

    const missing = await cli(['keys', 'revoke']);
    expectExit(missing, 2);
    assert.match(missing.stderr, /keys revoke needs the key id/);
  });

  test('tenants create prints an admin key that belongs to the new tenant', async () => {
    const created = await cli(['tenants', 'create', 'acme', '--name', 'Acme']);
    expectExit(created, 0);
    assert.match(created.stdout, /^Created tenant acme \(Acme\) with admin key key_\S+:/);
    const secrets = created.stdout.match(KEY) ?? [];
    assert.equal(secrets.length, 1, created.stdout);
    const acmeKey = String(secrets[0]);

    const me = json(await cli(['whoami', '--json'], acmeKey));
    assert.equal(me.tenant.id, 'acme');
    assert.equal(me.tenant.name, 'Acme');
    assert.equal(me.role, 'admin');

    // The new tenant sees only its own keys.
    const keys = json(await cli(['keys', 'list', '--json'], acmeKey));
    assert.deepEqual(
      keys.map((k: { tenant_id: string }) => k.tenant_id),
      ['acme'],
    );

    const again = await cli(['tenants', 'create', 'acme']);
    expectExit(again, 1);
    assert.match(again.stderr, /TENANT_ALREADY_EXISTS/);
  });

  test('tenants list shows every tenant to a system admin', async () => {
    json(await cli(['tenants', 'create', 'listed-co', '--json']));

    const table = await cli(['tenants', 'list']);
    expectExit(table, 0);
    assert.match(table.stdout, /^ID\s+NAME\s+KIND\s+CREATED\n/);
    assert.match(table.stdout, /^default\s+Default\s+system\s+\d{4}-/m);
    assert.match(table.stdout, /^listed-co\s+\S.*\s+standard\s+\d{4}-/m);

    const list = json(await cli(['tenants', 'list', '--json']));
    const ids = list.map((t: { id: string }) => t.id);
    assert.ok(ids.includes('default') && ids.includes('listed-co'), ids.join(', '));
  });

  test('tenants update sets a tenant’s own limits; tenants get shows where each value comes from', async () => {
    json(await cli(['tenants', 'create', 'limited-co', '--json']));
    const updated = await cli([
      'tenants',
      'update',
      'limited-co',
      '--name',
      'Limited Co',
      '--limit',
      'max_topics=12',
      '--limit',
      'task_input_max_bytes=2097152',
    ]);
    expectExit(updated, 0);
    assert.match(updated.stdout, /^Tenant limited-co \(Limited Co\), standard, created /);
    assert.match(updated.stdout, /^LIMIT\s+VALUE\s+SET BY$/m);
    assert.match(updated.stdout, /^max_topics\s+12\s+tenant$/m);
    assert.match(updated.stdout, /^task_input_max_bytes\s+2097152\s+tenant$/m);
    assert.match(updated.stdout, /^max_sessions\s+10000\s+setting$/m);

    const removed = json(
      await cli(['tenants', 'update', 'limited-co', '--unset-limit', 'max_topics', '--json']),
    );
    assert.deepEqual(removed.limit_overrides, { task_input_max_bytes: 2097152 });
    const shown = await cli(['tenants', 'get', 'limited-co']);
    expectExit(shown, 0);
    assert.match(shown.stdout, /^max_topics\s+10000\s+setting$/m);

    const bad = await cli(['tenants', 'update', 'limited-co', '--limit', 'max_topics=-1']);
    expectExit(bad, 2);
    assert.match(bad.stderr, /--limit takes NAME=VALUE/);
    const unknown = await cli(['tenants', 'update', 'limited-co', '--limit', 'max_widgets=3']);
    expectExit(unknown, 1);
    assert.match(unknown.stderr, /body\.limits\.max_widgets: is not allowed \(VALIDATION_FAILED/);
    const nothing = await cli(['tenants', 'update', 'limited-co']);
    expectExit(nothing, 2);
    assert.match(nothing.stderr, /needs --name, --limit or --unset-limit/);
  });

  test('a wrong key exits 1 and names INVALID_API_KEY', async () => {
    const result = await cli(['whoami'], 'ork_thisisnotarealkey0000000000000000000000');
    expectExit(result, 1);
    assert.match(result.stderr, /INVALID_API_KEY/);
    assert.equal(result.stdout, '');
  });

  test('keys create without --role is a usage error (exit 2)', async () => {
    const result = await cli(['keys', 'create', '--name', 'norole']);
    expectExit(result, 2);
    assert.match(result.stderr, /--role/);
    assert.match(result.stderr, /orchestra keys --help/);
    const list = json(await cli(['keys', 'list', '--json']));
    assert.ok(!list.some((k: { name: string }) => k.name === 'norole'));
  });

  test('the credential comes from ORCHESTRA_API_KEY before the data directory', async () => {
    const viewer = json(
      await cli(['keys', 'create', '--name', 'env', '--role', 'viewer', '--json']),
    );
    const me = json(
      await runCli(['whoami', '--json'], {
        ORCHESTRA_URL: server.url,
        ORCHESTRA_API_KEY: viewer.secret,
        ORCHESTRA_DATA_DIR: dataDir,
      }),
    );
    assert.equal(me.role, 'viewer');
    assert.equal(me.credential.id, viewer.id);
  });

  test('without ORCHESTRA_API_KEY the CLI uses the admin-key file in ORCHESTRA_DATA_DIR', async () => {
    const me = json(
      await runCli(['whoami', '--json'], {
        ORCHESTRA_URL: server.url,
        ORCHESTRA_DATA_DIR: dataDir,
      }),
    );
    assert.equal(me.role, 'admin');
    assert.equal(me.tenant.id, 'default');
    assert.equal(adminKey.startsWith(me.credential.prefix), true);
  });

  test('the local admin-key file is never sent to a server on another host', async () => {
    // .invalid never resolves, and the CLI must refuse before it tries to connect.
    const result = await runCli(['whoami', '--url', 'http://orchestra.invalid:8080'], {
      ORCHESTRA_DATA_DIR: dataDir,
    });
    expectExit(result, 2);
    assert.match(result.stderr, /No credential/);
  });

  test('without any credential the CLI says how to pass one (exit 2)', async () => {
    const result = await runCli(['whoami'], {
      ORCHESTRA_URL: server.url,
      ORCHESTRA_DATA_DIR: newDataDir(),
    });
    expectExit(result, 2);
    assert.match(result.stderr, /No credential: pass --api-key or set ORCHESTRA_API_KEY/);
  });
});

/** Every command of the CLI, each with its own --help. */
const COMMANDS = [
  'start',
  'whoami',
  'keys',
  'tenants',
  'templates',
  'task',
  'agents',
  'sessions',
  'recover-admin-key',
  'version',
];

// Independent commands: run side by side to keep the suite short.
describe('commands without a server', { concurrency: 4 }, () => {
  for (const command of COMMANDS) {
    test(`${command} --help prints its usage and exits 0`, async () => {
      // An empty data dir and no key: help must not need a server or a credential.
      const result = await runCli([command, '--help'], { ORCHESTRA_DATA_DIR: newDataDir() });
      expectExit(result, 0);
      assert.match(result.stdout, new RegExp(`^Usage: orchestra ${command}\\b`));
      assert.equal(result.stderr, '');
    });
  }

  test('--help lists the commands', async () => {
    const result = await runCli(['--help']);
    expectExit(result, 0);
    assert.match(result.stdout, /^Usage: orchestra <command>/m);
    for (const command of COMMANDS) {
      assert.match(result.stdout, new RegExp(`^ {2}${command}\\b`, 'm'));
    }
  });

  test('an unknown command exits 2 with a message on stderr', async () => {
    const result = await runCli(['frobnicate']);
    expectExit(result, 2);
    assert.match(result.stderr, /unknown command "frobnicate"/);
    assert.match(result.stderr, /orchestra --help/);
    assert.equal(result.stdout, '');
  });

  test('an unknown option exits 2', async () => {
    const result = await runCli(['whoami', '--frobnicate', '--api-key', 'ork_x']);
    expectExit(result, 2);
    assert.match(result.stderr, /--frobnicate/);
  });

  test('version prints the package version, and --json', async () => {
    const text = await runCli(['version']);
    expectExit(text, 0);
    assert.equal(
      text.stdout.trim(),
      `orchestra ${packageJson.version} (Node.js ${process.versions.node})`,
    );
    assert.deepEqual(json(await runCli(['version', '--json'])), {
      version: packageJson.version,
      node: process.versions.node,
    });
  });

  test('an unreachable server exits 1 with CONNECTION_FAILED', async () => {
    const port = await closedPort();
    const result = await runCli([
      'whoami',
      '--url',
      `http://127.0.0.1:${port}`,
      '--api-key',
      'ork_whatever',
    ]);
    expectExit(result, 1);
    assert.match(result.stderr, /CONNECTION_FAILED/);
    assert.match(result.stderr, new RegExp(`127\\.0\\.0\\.1:${port}`));
  });
});
