import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  type DurationFormat,
  durationPattern,
  durationUnitsText,
  formatDuration,
  parseDuration,
} from '../src/platform/duration.ts';

// The one duration grammar of the CLI's flags and the API's `?wait=`, with each caller's
// format as it uses it.

const API_WAIT: DurationFormat = {
  units: ['ms', 's', 'm'],
  maxDigits: 6,
  bareUnit: 'ms',
  maxMs: 300_000,
};
const CLI_WAIT: DurationFormat = { units: ['ms', 's', 'm', 'h'], maxDigits: 9 };
const EXPIRES_IN: DurationFormat = { units: ['s', 'm', 'h', 'd'], maxMs: 36_500 * 86_400_000 };

test('the API pattern is the one OpenAPI has always published', () => {
  assert.equal(durationPattern(API_WAIT), '^\\d{1,6}(ms|s|m)?$');
  assert.equal(durationPattern(CLI_WAIT), '^\\d{1,9}(ms|s|m|h)$');
  assert.equal(durationPattern(EXPIRES_IN), '^\\d+(s|m|h|d)$');
});

test('each unit, and a bare number where the format has a bare unit', () => {
  const cases: [string, DurationFormat, number][] = [
    ['500ms', CLI_WAIT, 500],
    ['30s', CLI_WAIT, 30_000],
    ['2m', CLI_WAIT, 120_000],
    ['1h', CLI_WAIT, 3_600_000],
    ['0s', CLI_WAIT, 0],
    ['250', API_WAIT, 250],
    ['5m', API_WAIT, 300_000],
    ['30d', EXPIRES_IN, 30 * 86_400_000],
    ['36500d', EXPIRES_IN, 36_500 * 86_400_000],
  ];
  for (const [text, format, ms] of cases) {
    assert.deepEqual(parseDuration(text, format), { ok: true, ms }, text);
  }
});

test('what a format does not accept is refused with the reason', () => {
  const refused: [string, DurationFormat][] = [
    ['30', CLI_WAIT], // no bare unit on the CLI
    ['1d', CLI_WAIT], // no days for a wait
    ['500ms', EXPIRES_IN], // no milliseconds for an expiry
    ['1h', API_WAIT],
    ['1234567', API_WAIT], // seven digits
    ['1234567890s', CLI_WAIT], // ten digits
    ['-1s', CLI_WAIT],
    ['1.5s', CLI_WAIT],
    ['30 s', CLI_WAIT],
    ['s', CLI_WAIT],
    ['', API_WAIT],
    ['soon', API_WAIT],
    ['30S', CLI_WAIT],
  ];
  for (const [text, format] of refused) {
    assert.deepEqual(parseDuration(text, format), { ok: false, reason: 'format' }, text);
  }
  assert.deepEqual(parseDuration('301s', API_WAIT), {
    ok: false,
    reason: 'too_long',
    maxMs: 300_000,
  });
  assert.deepEqual(parseDuration('36501d', EXPIRES_IN), {
    ok: false,
    reason: 'too_long',
    maxMs: 36_500 * 86_400_000,
  });
  // A huge number is too long, not a wrong format, when the digits are not limited.
  assert.equal(parseDuration(`${'9'.repeat(400)}s`, EXPIRES_IN).ok, false);
});

test('messages name the units and the longest duration in the caller’s terms', () => {
  assert.equal(durationUnitsText(CLI_WAIT), 'ms, s, m or h');
  assert.equal(durationUnitsText(EXPIRES_IN), 's, m, h or d');
  assert.equal(formatDuration(36_500 * 86_400_000, EXPIRES_IN), '36500d');
  assert.equal(formatDuration(300_000, API_WAIT), '5m');
  assert.equal(formatDuration(1500, CLI_WAIT), '1500ms');
});
