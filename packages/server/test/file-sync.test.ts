import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { FileSync } from '../src/store/file-sync.ts';
import { tempDir } from './helpers.ts';

test('calls made while a sync runs share the next one; each resolves after a sync that began after it', async () => {
  const dir = tempDir();
  const path = join(dir.path, 'wal');
  writeFileSync(path, 'x');
  const file = new FileSync(path);
  try {
    const order: string[] = [];
    const first = file.sync().then(() => order.push('first'));
    // The first sync is under way: these must wait for another one, which they share.
    const later = Array.from({ length: 5 }, (_, i) =>
      file.sync().then(() => order.push(`later${i}`)),
    );
    await Promise.all([first, ...later]);
    assert.deepEqual(order, ['first', 'later0', 'later1', 'later2', 'later3', 'later4']);
    assert.equal(file.completed, 2);
    await file.sync();
    assert.equal(file.completed, 3);
  } finally {
    await file.close();
    dir.remove();
  }
});

test('a file that cannot be opened rejects every caller, and the next call tries again', async () => {
  const dir = tempDir();
  const path = join(dir.path, 'not-yet');
  const file = new FileSync(path);
  try {
    await assert.rejects(file.sync(), { code: 'ENOENT' });
    writeFileSync(path, 'x');
    await file.sync();
    assert.equal(file.completed, 1);
  } finally {
    await file.close();
    dir.remove();
  }
});
