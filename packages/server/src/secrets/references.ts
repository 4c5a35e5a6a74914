// Secret references in configs: `${secret:NAME}`. Pure functions, for any module that
// validates a config at write time or redacts what it logs.

const REFERENCE = /\$\{secret:([A-Za-z_][A-Za-z0-9_]{0,127})\}/g;

/** The names `text` refers to as `${secret:NAME}`, each once, in order of first use. */
export function secretReferences(text: string): string[] {
  return [...new Set(Array.from(text.matchAll(REFERENCE), (m) => m[1] as string))];
}

/** `text` with each reference replaced by `lookup(name)`. */
export function replaceReferences(text: string, lookup: (name: string) => string): string {
  return text.replace(REFERENCE, (_, name: string) => lookup(name));
}

export const REDACTED = '[redacted]';

/**
 * `text` with every occurrence of each of `values` replaced by `[redacted]`; longer values
 * first, so that a value containing another is hidden whole. Empty values are ignored.
 */
export function redact(text: string, values: readonly string[]): string {
  let out = text;
  for (const value of [...new Set(values)]
    .filter((v) => v !== '')
    .sort((a, b) => b.length - a.length)) {
    out = out.split(value).join(REDACTED);
  }
  return out;
}
