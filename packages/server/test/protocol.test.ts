// The wire contract (@orchestra/protocol, decision 0014) names a few things the server's
// settings also define: these tests hold the two in step.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TENANT_LIMIT_NAMES, TENANT_LIMITS } from '@orchestra/protocol';
import { PLATFORM_SETTINGS as SETTINGS } from '../src/platform/settings.ts';
import { TENANT_LIMIT_SETTINGS } from '../src/platform/tenant-limits.ts';

test('each tenant limit has the variable, bounds and meaning of the setting it overrides', () => {
  for (const name of TENANT_LIMIT_NAMES) {
    const setting = SETTINGS[TENANT_LIMIT_SETTINGS[name]];
    const limit = TENANT_LIMITS[name];
    assert.equal(limit.env, setting.env, name);
    assert.equal(limit.allowed, setting.allowed, name);
    assert.equal(limit.description, setting.description, name);
    const bounds = setting.schema as { minimum?: number; maximum?: number; type?: string };
    assert.deepEqual(
      { type: 'integer', minimum: limit.minimum, maximum: limit.maximum },
      { type: bounds.type, minimum: bounds.minimum, maximum: bounds.maximum },
      name,
    );
  }
  assert.deepEqual(Object.keys(TENANT_LIMIT_SETTINGS).sort(), [...TENANT_LIMIT_NAMES].sort());
});
