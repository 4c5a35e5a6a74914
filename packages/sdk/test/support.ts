import assert from 'node:assert/strict';
import { OrchestraError } from '../src/index.ts';

/** Runs `fn`, expecting it to reject with an `OrchestraError`, and returns that error. */
export async function rejection(fn: () => Promise<unknown>): Promise<OrchestraError> {
  try {
    await fn();
  } catch (err) {
    assert.ok(err instanceof OrchestraError, `expected an OrchestraError, got ${err}`);
    return err;
  }
  assert.fail('expected the call to reject');
}

/** Every item of an async iterable. */
export async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const all: T[] = [];
  for await (const item of items) all.push(item);
  return all;
}
