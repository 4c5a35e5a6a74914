/**
 * Tool search for the `search_tools` meta-tool: Okapi BM25 over each tool's name, title and
 * description (and the names of its input properties), tokenised so that `read_file`,
 * `readFile` and "read a file" meet. No index is kept: a catalogue of a few thousand tools
 * ranks in about a millisecond, and the catalogue is the caller's own (it depends on the
 * principal and the view), so there is nothing to share between requests.
 */

/** What the ranking reads of a tool. */
export interface SearchableTool {
  name: string;
  title?: string | undefined;
  description?: string | undefined;
  inputSchema?: unknown;
}

// BM25's usual constants: term-frequency saturation and length normalisation.
const K1 = 1.2;
const B = 0.75;
/** Words of the name count this many times: a query that names the tool should find it first. */
const NAME_WEIGHT = 3;

const STOP_WORDS = new Set([
  'a',
  'an',
  'and',
  'are',
  'as',
  'at',
  'be',
  'by',
  'for',
  'from',
  'in',
  'is',
  'it',
  'of',
  'on',
  'or',
  'that',
  'the',
  'this',
  'to',
  'with',
]);

/**
 * Splits text into lower-case terms: on anything but letters and digits, and between the
 * words of camelCase; drops stop words and a plural `s`, so that "files" finds "file".
 */
export function tokenize(text: string): string[] {
  const spaced = text
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1 $2')
    .toLowerCase();
  const terms: string[] = [];
  for (const word of spaced.split(/[^\p{L}\p{N}]+/u)) {
    if (word === '' || STOP_WORDS.has(word)) continue;
    terms.push(
      word.length > 3 && word.endsWith('s') && !word.endsWith('ss') ? word.slice(0, -1) : word,
    );
  }
  return terms;
}

function propertyNames(schema: unknown): string[] {
  if (typeof schema !== 'object' || schema === null) return [];
  const properties = (schema as { properties?: unknown }).properties;
  return typeof properties === 'object' && properties !== null ? Object.keys(properties) : [];
}

function termsOf(tool: SearchableTool): string[] {
  const name = tokenize(tool.name);
  const terms: string[] = [];
  for (let i = 0; i < NAME_WEIGHT; i++) terms.push(...name);
  terms.push(...tokenize(tool.title ?? ''));
  terms.push(...tokenize(tool.description ?? ''));
  for (const property of propertyNames(tool.inputSchema)) terms.push(...tokenize(property));
  return terms;
}

/**
 * The tools that match `query`, best first, at most `limit` of them. A tool matches when it
 * shares at least one term with the query; ties keep the catalogue's order. An empty query
 * (or one of stop words only) matches nothing.
 */
export function searchTools<T extends SearchableTool>(
  tools: readonly T[],
  query: string,
  limit: number,
): T[] {
  const queryTerms = [...new Set(tokenize(query))];
  if (queryTerms.length === 0 || tools.length === 0) return [];
  const documents = tools.map((tool) => {
    const counts = new Map<string, number>();
    const terms = termsOf(tool);
    for (const term of terms) counts.set(term, (counts.get(term) ?? 0) + 1);
    return { tool, counts, length: terms.length };
  });
  const averageLength = documents.reduce((sum, d) => sum + d.length, 0) / documents.length || 1;
  const idf = new Map<string, number>();
  for (const term of queryTerms) {
    const containing = documents.filter((d) => d.counts.has(term)).length;
    // The "plus one" form stays positive for a term that most tools share.
    idf.set(term, Math.log(1 + (documents.length - containing + 0.5) / (containing + 0.5)));
  }
  const scored: { tool: T; score: number; index: number }[] = [];
  documents.forEach((d, index) => {
    let score = 0;
    for (const term of queryTerms) {
      const frequency = d.counts.get(term);
      if (frequency === undefined) continue;
      const norm = K1 * (1 - B + (B * d.length) / averageLength);
      score += (idf.get(term) ?? 0) * ((frequency * (K1 + 1)) / (frequency + norm));
    }
    if (score > 0) scored.push({ tool: d.tool, score, index });
  });
  scored.sort((a, b) => b.score - a.score || a.index - b.index);
  return scored.slice(0, limit).map((s) => s.tool);
}
