/** One difference between two JSON values, at a JSON Pointer (RFC 6901) path. */
export type JsonChange =
  | { op: 'add'; path: string; value: unknown }
  | { op: 'remove'; path: string; old_value: unknown }
  | { op: 'replace'; path: string; old_value: unknown; value: unknown };

const escapeSegment = (segment: string) => segment.replaceAll('~', '~0').replaceAll('/', '~1');

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The changes that turn `a` into `b`: objects are compared key by key (in sorted order),
 * arrays index by index, anything else as a whole. `undefined` stands for "absent" (a
 * deleted key), so a diff against a deletion removes or adds at the root.
 */
export function jsonDiff(a: unknown, b: unknown, path = ''): JsonChange[] {
  if (a === undefined && b === undefined) return [];
  if (a === undefined) return [{ op: 'add', path, value: b }];
  if (b === undefined) return [{ op: 'remove', path, old_value: a }];
  if (isObject(a) && isObject(b)) {
    const changes: JsonChange[] = [];
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    for (const key of keys) {
      const at = `${path}/${escapeSegment(key)}`;
      const inA = Object.hasOwn(a, key);
      const inB = Object.hasOwn(b, key);
      if (inA && !inB) changes.push({ op: 'remove', path: at, old_value: a[key] });
      else if (!inA && inB) changes.push({ op: 'add', path: at, value: b[key] });
      else changes.push(...jsonDiff(a[key], b[key], at));
    }
    return changes;
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    const changes: JsonChange[] = [];
    const common = Math.min(a.length, b.length);
    for (let i = 0; i < common; i++) changes.push(...jsonDiff(a[i], b[i], `${path}/${i}`));
    for (let i = common; i < b.length; i++)
      changes.push({ op: 'add', path: `${path}/${i}`, value: b[i] });
    // Removed from the end backwards, so that each path is right when applied in order.
    for (let i = a.length - 1; i >= common; i--)
      changes.push({ op: 'remove', path: `${path}/${i}`, old_value: a[i] });
    return changes;
  }
  if (JSON.stringify(a) === JSON.stringify(b)) return [];
  return [{ op: 'replace', path, old_value: a, value: b }];
}
