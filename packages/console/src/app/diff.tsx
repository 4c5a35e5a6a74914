// A line diff for showing what changed between two versions (of a template, of a config
// value), as JSON pretty-printed with sorted keys so that key order does not show as a
// change. Longest common subsequence over lines: versions are small (capped at a few
// thousand lines here, beyond which the whole text counts as replaced).

export type DiffLine = { kind: 'same' | 'added' | 'removed'; text: string };

const MAX_CELLS = 4_000_000;

/** JSON with keys sorted at every level, two-space indented. */
export function canonicalJson(value: unknown): string {
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort);
    if (v !== null && typeof v === 'object') {
      return Object.fromEntries(
        Object.keys(v as Record<string, unknown>)
          .sort()
          .map((k) => [k, sort((v as Record<string, unknown>)[k])]),
      );
    }
    return v;
  };
  return JSON.stringify(sort(value), null, 2) ?? 'undefined';
}

export function diffLines(before: string, after: string): DiffLine[] {
  const a = before.split('\n');
  const b = after.split('\n');
  if (a.length * b.length > MAX_CELLS) {
    return [
      ...a.map((text) => ({ kind: 'removed' as const, text })),
      ...b.map((text) => ({ kind: 'added' as const, text })),
    ];
  }
  // lengths[i][j]: the longest common subsequence of a[i..] and b[j..].
  const width = b.length + 1;
  const lengths = new Uint32Array((a.length + 1) * width);
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lengths[i * width + j] =
        a[i] === b[j]
          ? (lengths[(i + 1) * width + j + 1] ?? 0) + 1
          : Math.max(lengths[(i + 1) * width + j] ?? 0, lengths[i * width + j + 1] ?? 0);
    }
  }
  const out: DiffLine[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    if (a[i] === b[j]) {
      out.push({ kind: 'same', text: a[i] ?? '' });
      i++;
      j++;
    } else if ((lengths[(i + 1) * width + j] ?? 0) >= (lengths[i * width + j + 1] ?? 0)) {
      out.push({ kind: 'removed', text: a[i++] ?? '' });
    } else {
      out.push({ kind: 'added', text: b[j++] ?? '' });
    }
  }
  while (i < a.length) out.push({ kind: 'removed', text: a[i++] ?? '' });
  while (j < b.length) out.push({ kind: 'added', text: b[j++] ?? '' });
  return out;
}

const SIGN = { same: ' ', added: '+', removed: '-' } as const;

/** A diff as a block of lines marked +/-, with a count of changes for screen readers. */
export function Diff(props: { before: unknown; after: unknown; label: string }) {
  const lines = diffLines(canonicalJson(props.before), canonicalJson(props.after));
  const changed = lines.filter((l) => l.kind !== 'same').length;
  return (
    <figure className="diff-figure" aria-label={props.label}>
      <figcaption className="muted">
        {changed === 0 ? 'No differences.' : `${changed} changed line${changed === 1 ? '' : 's'}.`}
      </figcaption>
      <pre className="diff">
        {lines.map((line, index) => (
          // biome-ignore lint/suspicious/noArrayIndexKey: lines have no identity but their place
          <span key={index} className={`diff-${line.kind}`}>
            {SIGN[line.kind]} {line.text}
            {'\n'}
          </span>
        ))}
      </pre>
    </figure>
  );
}
