import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadSettings, SETTINGS } from '../src/modules.ts';
import { SettingsError } from '../src/platform/settings.ts';
import { tempDir } from './helpers.ts';

test('defaults apply when nothing is set', () => {
  const settings = loadSettings({});
  assert.equal(settings.port, 8080);
  assert.equal(settings.host, 'localhost');
  assert.equal(settings.logLevel, 'info');
  assert.equal(settings.databaseUrl, undefined);
  assert.ok(
    settings.dataDir.endsWith('.orchestra') && settings.dataDir.startsWith('/'),
    'absolute data dir',
  );
  assert.ok(settings.instanceId.length > 0);
});

test('environment variables are converted to their types', () => {
  const settings = loadSettings({
    ORCHESTRA_PORT: '9000',
    ORCHESTRA_TRUST_PROXY: 'yes',
    ORCHESTRA_RATE_LIMIT_PER_SECOND: '2.5',
    ORCHESTRA_DATABASE_URL: 'postgresql://db.internal/orchestra',
  });
  assert.equal(settings.port, 9000);
  assert.equal(settings.trustProxy, true);
  assert.equal(settings.rateLimitPerSecond, 2.5);
  assert.equal(settings.databaseUrl, 'postgresql://db.internal/orchestra');
});

test('a bad value names the setting and what it allows; every problem is listed', () => {
  assert.throws(
    () =>
      loadSettings({
        ORCHESTRA_PORT: 'eighty',
        ORCHESTRA_LOG_LEVEL: 'loud',
        ORCHESTRA_JWT_SECRET: 'short',
      }),
    (err: unknown) => {
      assert.ok(err instanceof SettingsError);
      assert.match(err.message, /ORCHESTRA_PORT is "eighty"; allowed: an integer from 0 to 65535/);
      assert.match(
        err.message,
        /ORCHESTRA_LOG_LEVEL is "loud"; allowed: one of fatal, error, warn, info/,
      );
      assert.match(err.message, /ORCHESTRA_JWT_SECRET .*at least 32 characters/);
      return true;
    },
  );
  assert.throws(() => loadSettings({ ORCHESTRA_PORT: '70000' }), /ORCHESTRA_PORT/);
  assert.throws(
    () => loadSettings({ ORCHESTRA_DATABASE_URL: 'mysql://x' }),
    /ORCHESTRA_DATABASE_URL .*postgres:\/\//,
  );
  assert.throws(
    () => loadSettings({ ORCHESTRA_TRUST_PROXY: 'maybe' }),
    /ORCHESTRA_TRUST_PROXY .*true or false/,
  );
});

test('a config file sets values; the environment wins over it, and overrides over both', () => {
  const dir = tempDir();
  try {
    const file = join(dir.path, 'orchestra.json');
    writeFileSync(file, JSON.stringify({ port: 7000, logLevel: 'debug', host: '0.0.0.0' }));
    const settings = loadSettings(
      { ORCHESTRA_CONFIG_FILE: file, ORCHESTRA_LOG_LEVEL: 'warn' },
      { overrides: { host: '127.0.0.1' } },
    );
    assert.equal(settings.port, 7000);
    assert.equal(settings.logLevel, 'warn');
    assert.equal(settings.host, '127.0.0.1');
  } finally {
    dir.remove();
  }
});

test('a config file with unknown keys, wrong types or bad JSON is refused with its path', () => {
  const dir = tempDir();
  try {
    const file = join(dir.path, 'bad.json');
    writeFileSync(file, JSON.stringify({ prot: 1, port: '8080' }));
    assert.throws(
      () => loadSettings({}, { configFile: file }),
      (err: unknown) => {
        assert.ok(err instanceof SettingsError);
        assert.match(err.message, /unknown setting "prot"/);
        assert.match(err.message, /"port" is "8080"; allowed: an integer/);
        assert.ok(err.message.includes(file));
        return true;
      },
    );
    writeFileSync(file, '{ not json');
    assert.throws(() => loadSettings({}, { configFile: file }), /cannot be read as JSON/);
    writeFileSync(file, '[1]');
    assert.throws(() => loadSettings({}, { configFile: file }), /must hold a JSON object/);
    assert.throws(
      () => loadSettings({}, { configFile: join(dir.path, 'missing.json') }),
      /cannot be read/,
    );
  } finally {
    dir.remove();
  }
});

test('every setting has a distinct ORCHESTRA_ variable', () => {
  const envs = Object.values(SETTINGS).map((s) => s.env);
  assert.equal(new Set(envs).size, envs.length);
  for (const env of envs) assert.match(env, /^ORCHESTRA_[A-Z_]+$/);
});

test('error messages never repeat a secret or a URL password', () => {
  assert.throws(
    () =>
      loadSettings({
        ORCHESTRA_JWT_SECRET: 'hunter2-topsecret',
        ORCHESTRA_DATABASE_URL: 'mysql://admin:S3cretPw@db/x',
      }),
    (err: unknown) => {
      assert.ok(err instanceof SettingsError);
      assert.doesNotMatch(err.message, /hunter2|S3cretPw/);
      assert.match(err.message, /ORCHESTRA_JWT_SECRET is a hidden value of 17 characters/);
      assert.match(err.message, /ORCHESTRA_DATABASE_URL is "mysql:\/\/admin:\*\*\*@db\/x"/);
      return true;
    },
  );
});
