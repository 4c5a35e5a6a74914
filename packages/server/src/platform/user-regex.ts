import { RE2JS } from 're2js';

/**
 * Regular expressions written by users (JSON Schema `pattern` and `patternProperties`),
 * matched by RE2 in time linear in the input, so no pattern can hold the event loop.
 *
 * A pattern is read with ECMAScript semantics (the `u` flag, as JSON Schema and Ajv read
 * it) and rewritten into RE2 syntax where the two differ: `.`, `\s` and `\S` keep their
 * ECMAScript sets, `\uHHHH`, `\u{…}`, `\cX`, `\0`, `[^]` and `[]` are spelled the RE2 way,
 * a character class never picks up RE2's `[[:alpha:]]` meaning, named groups match like
 * any group. What RE2 cannot run is refused with the reason: backreferences, lookahead
 * and lookbehind, inline modifiers `(?i:…)`, repeat counts above 1000, Unicode properties
 * RE2 does not know.
 */

/** A pattern that is not valid ECMAScript, or that RE2 cannot run; `reason` says which. */
export class UnsupportedPatternError extends Error {
  readonly pattern: string;
  readonly reason: string;

  constructor(pattern: string, reason: string, options?: { cause?: unknown }) {
    super(`the pattern ${JSON.stringify(pattern)} ${reason}`, options);
    this.name = 'UnsupportedPatternError';
    this.pattern = pattern;
    this.reason = reason;
  }
}

/** A compiled user pattern; `test` searches anywhere in the string, like `RegExp#test`. */
export class LinearRegExp {
  readonly source: string;
  readonly #re2: RE2JS;

  constructor(source: string) {
    this.source = source;
    const translated = translatePattern(source);
    try {
      this.#re2 = RE2JS.compile(translated);
    } catch (err) {
      const reason = (err as Error).message.replace(/^error parsing regexp: /, '');
      throw new UnsupportedPatternError(source, `cannot be run by RE2: ${reason}`, { cause: err });
    }
  }

  test(value: string): boolean {
    return this.#re2.test(value);
  }

  // Ajv keys its compiled patterns by this string: it must differ between patterns.
  toString(): string {
    return `/${this.source}/u`;
  }
}

/**
 * The `code.regExp` option of an Ajv instance that validates user schemas. Ajv calls it
 * with the `u` flag; it throws `UnsupportedPatternError` for a pattern RE2 cannot run.
 */
export const linearRegExpEngine = Object.assign(
  (pattern: string, flags: string): LinearRegExp => {
    if (flags !== '' && flags !== 'u') {
      throw new UnsupportedPatternError(pattern, `has flags "${flags}", which are not supported`);
    }
    return new LinearRegExp(pattern);
  },
  // Only used by Ajv's standalone code generation, which user schemas never go through.
  { code: 'orchestra.linearRegExpEngine' },
);

/** The reason a user pattern would be refused, or undefined when it can be used. */
export function patternProblem(pattern: string): string | undefined {
  try {
    new LinearRegExp(pattern);
    return undefined;
  } catch (err) {
    if (err instanceof UnsupportedPatternError) return err.reason;
    throw err;
  }
}

const MAX_CODE_POINT = 0x10ffff;
// ECMAScript's \s: WhiteSpace and LineTerminator (RE2's \s is only [\t\n\f\r ]).
const ES_SPACE: Range[] = [
  [0x09, 0x0d],
  [0x20, 0x20],
  [0xa0, 0xa0],
  [0x1680, 0x1680],
  [0x2000, 0x200a],
  [0x2028, 0x2029],
  [0x202f, 0x202f],
  [0x205f, 0x205f],
  [0x3000, 0x3000],
  [0xfeff, 0xfeff],
];
// ECMAScript's `.` without the s flag: anything but a line terminator (RE2 excludes only \n).
const ES_DOT: Range[] = complement([
  [0x0a, 0x0a],
  [0x0d, 0x0d],
  [0x2028, 0x2029],
]);
const ASCII: Range[] = [[0x00, 0x7f]];

// Long General_Category values of ECMAScript; RE2 knows only the short ones.
const CATEGORY_ALIASES: Record<string, string> = {
  Letter: 'L',
  Cased_Letter: 'LC',
  Uppercase_Letter: 'Lu',
  Lowercase_Letter: 'Ll',
  Titlecase_Letter: 'Lt',
  Modifier_Letter: 'Lm',
  Other_Letter: 'Lo',
  Mark: 'M',
  Combining_Mark: 'M',
  Nonspacing_Mark: 'Mn',
  Spacing_Mark: 'Mc',
  Enclosing_Mark: 'Me',
  Number: 'N',
  Decimal_Number: 'Nd',
  digit: 'Nd',
  Letter_Number: 'Nl',
  Other_Number: 'No',
  Punctuation: 'P',
  punct: 'P',
  Connector_Punctuation: 'Pc',
  Dash_Punctuation: 'Pd',
  Open_Punctuation: 'Ps',
  Close_Punctuation: 'Pe',
  Initial_Punctuation: 'Pi',
  Final_Punctuation: 'Pf',
  Other_Punctuation: 'Po',
  Symbol: 'S',
  Math_Symbol: 'Sm',
  Currency_Symbol: 'Sc',
  Modifier_Symbol: 'Sk',
  Other_Symbol: 'So',
  Separator: 'Z',
  Space_Separator: 'Zs',
  Line_Separator: 'Zl',
  Paragraph_Separator: 'Zp',
  Other: 'C',
  Control: 'Cc',
  cntrl: 'Cc',
  Format: 'Cf',
  Surrogate: 'Cs',
  Private_Use: 'Co',
  Unassigned: 'Cn',
};

type Range = [number, number];

/** One atom of a pattern: a single code point, or a set written for RE2. */
type SetAtom = { kind: 'set'; inClass: string; alone: string };
type Atom = { kind: 'char'; codePoint: number } | SetAtom | { kind: 'assertion'; text: string };

function hex(codePoint: number): string {
  return `\\x{${codePoint.toString(16)}}`;
}

function complement(ranges: Range[]): Range[] {
  const out: Range[] = [];
  let next = 0;
  for (const [from, to] of ranges) {
    if (from > next) out.push([next, from - 1]);
    next = to + 1;
  }
  if (next <= MAX_CODE_POINT) out.push([next, MAX_CODE_POINT]);
  return out;
}

function rangeSet(ranges: Range[]): SetAtom {
  const inClass = ranges.map(([a, b]) => (a === b ? hex(a) : `${hex(a)}-${hex(b)}`)).join('');
  return { kind: 'set', inClass, alone: `[${inClass}]` };
}

function propertySet(negated: boolean, name: string): SetAtom {
  const p = negated ? 'P' : 'p';
  return { kind: 'set', inClass: `\\${p}{${name}}`, alone: `\\${p}{${name}}` };
}

const DOT = rangeSet(ES_DOT).alone;

/**
 * Rewrites an ECMAScript pattern (read with the `u` flag) into RE2 syntax with the same
 * meaning; throws `UnsupportedPatternError` when that is not possible.
 */
export function translatePattern(source: string): string {
  try {
    new RegExp(source, 'u');
  } catch (err) {
    throw new UnsupportedPatternError(
      source,
      `is not a valid regular expression: ${(err as Error).message}`,
      { cause: err },
    );
  }
  // From here on the syntax is known to be valid ECMAScript, which the reader relies on.
  const fail = (reason: string): never => {
    throw new UnsupportedPatternError(source, reason);
  };
  let i = 0;
  let out = '';

  const readCodePoint = (): number => {
    const codePoint = source.codePointAt(i) ?? 0;
    i += codePoint > 0xffff ? 2 : 1;
    return codePoint;
  };

  const readHex = (digits: number): number => {
    const value = Number.parseInt(source.slice(i, i + digits), 16);
    i += digits;
    return value;
  };

  /** Reads what follows a backslash (at `i`, past the backslash). */
  const readEscape = (inClass: boolean): Atom => {
    const c = source[i++] ?? '';
    switch (c) {
      case 'd':
      case 'D':
      case 'w':
      case 'W':
        // ASCII-only in both engines (no i flag is ever set).
        return { kind: 'set', inClass: `\\${c}`, alone: `\\${c}` };
      case 's':
        return rangeSet(ES_SPACE);
      case 'S':
        return rangeSet(complement(ES_SPACE));
      case 'b':
        return inClass ? { kind: 'char', codePoint: 0x08 } : { kind: 'assertion', text: '\\b' };
      case 'B':
        return { kind: 'assertion', text: '\\B' };
      case 'f':
        return { kind: 'char', codePoint: 0x0c };
      case 'n':
        return { kind: 'char', codePoint: 0x0a };
      case 'r':
        return { kind: 'char', codePoint: 0x0d };
      case 't':
        return { kind: 'char', codePoint: 0x09 };
      case 'v':
        return { kind: 'char', codePoint: 0x0b };
      case '0':
        return { kind: 'char', codePoint: 0 };
      case 'c':
        return { kind: 'char', codePoint: (source.codePointAt(i++) ?? 0) % 32 };
      case 'x':
        return { kind: 'char', codePoint: readHex(2) };
      case 'u': {
        if (source[i] === '{') {
          const end = source.indexOf('}', i);
          const codePoint = Number.parseInt(source.slice(i + 1, end), 16);
          i = end + 1;
          return { kind: 'char', codePoint };
        }
        const unit = readHex(4);
        // A surrogate pair written as two escapes is one code point under the u flag.
        if (
          unit >= 0xd800 &&
          unit <= 0xdbff &&
          /^\\u[dD][c-fC-F][0-9a-fA-F]{2}/.test(source.slice(i))
        ) {
          i += 2;
          const low = readHex(4);
          return { kind: 'char', codePoint: 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00) };
        }
        return { kind: 'char', codePoint: unit };
      }
      case 'p':
      case 'P': {
        const end = source.indexOf('}', i);
        const body = source.slice(i + 1, end);
        i = end + 1;
        return unicodeProperty(c === 'P', body);
      }
      case 'k':
      case '1':
      case '2':
      case '3':
      case '4':
      case '5':
      case '6':
      case '7':
      case '8':
      case '9':
        return fail('uses a backreference, which RE2 cannot run in linear time');
      default:
        // An escaped syntax character (or `-` in a class) stands for itself.
        i -= 1;
        return { kind: 'char', codePoint: readCodePoint() };
    }
  };

  const unicodeProperty = (negated: boolean, body: string): Atom => {
    const [name = '', value] = body.split('=');
    if (value !== undefined) {
      if (name === 'General_Category' || name === 'gc') {
        return propertySet(negated, CATEGORY_ALIASES[value] ?? value);
      }
      if (name === 'Script' || name === 'sc') return propertySet(negated, value);
      return fail(`uses the Unicode property ${name}, which RE2 does not support`);
    }
    if (name === 'ASCII') return rangeSet(negated ? complement(ASCII) : ASCII);
    return propertySet(negated, CATEGORY_ALIASES[name] ?? name);
  };

  const readClass = (): string => {
    const negated = source[i] === '^';
    if (negated) i += 1;
    if (source[i] === ']') {
      i += 1;
      // [] matches nothing and [^] any code point; RE2 has no such spelling.
      return negated ? `[${hex(0)}-${hex(MAX_CODE_POINT)}]` : `[^${hex(0)}-${hex(MAX_CODE_POINT)}]`;
    }
    const readMember = (): Atom => {
      if (source[i] === '\\') {
        i += 1;
        return readEscape(true);
      }
      return { kind: 'char', codePoint: readCodePoint() };
    };
    let members = '';
    while (source[i] !== ']') {
      const first = readMember();
      if (first.kind !== 'char') {
        members += first.kind === 'set' ? first.inClass : '';
        continue;
      }
      if (source[i] === '-' && source[i + 1] !== ']') {
        i += 1;
        const last = readMember();
        // Valid ECMAScript guarantees both ends of a range are single code points.
        if (last.kind === 'char') members += `${hex(first.codePoint)}-${hex(last.codePoint)}`;
        continue;
      }
      members += hex(first.codePoint);
    }
    i += 1;
    return `[${negated ? '^' : ''}${members}]`;
  };

  while (i < source.length) {
    const c = source[i] ?? '';
    if (c === '\\') {
      i += 1;
      const atom = readEscape(false);
      out +=
        atom.kind === 'char' ? hex(atom.codePoint) : atom.kind === 'set' ? atom.alone : atom.text;
    } else if (c === '[') {
      i += 1;
      out += readClass();
    } else if (c === '(') {
      i += 1;
      if (source[i] !== '?') {
        out += '(';
      } else if (source.startsWith('?:', i)) {
        out += '(?:';
        i += 2;
      } else if (source.startsWith('?=', i) || source.startsWith('?!', i)) {
        fail('uses a lookahead, which RE2 cannot run in linear time');
      } else if (source.startsWith('?<=', i) || source.startsWith('?<!', i)) {
        fail('uses a lookbehind, which RE2 cannot run in linear time');
      } else if (source.startsWith('?<', i)) {
        // Only whether the pattern matches counts, so a named group is any group.
        i = source.indexOf('>', i) + 1;
        out += '(';
      } else {
        fail('uses an inline modifier such as (?i:…), which is not supported');
      }
    } else if (c === '.') {
      i += 1;
      out += DOT;
    } else if ('^$|)*+?{},0123456789'.includes(c)) {
      // Structure and quantifiers: the same in both syntaxes (RE2 refuses counts > 1000).
      i += 1;
      out += c;
    } else {
      out += hex(readCodePoint());
    }
  }
  return out;
}
