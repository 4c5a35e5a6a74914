import { parseArgs } from 'node:util';

// The CLI's command framework: each command declares its options once, and both the parser
// (node:util parseArgs) and the help text come from that declaration, so they cannot drift.
// It loads nothing but node:util: `orchestra version` pays for no more than this.

/** A usage mistake: printed with the command's help hint, exit code 2. */
export class UsageError extends Error {}

/** One flag of a command, for the parser and the help alike. */
export interface OptionSpec {
  readonly type: 'string' | 'boolean';
  /** The value's placeholder in the help, such as NAME (string options). */
  readonly value?: string;
  /** One or more sentences; the help wraps them. */
  readonly description: string;
  /** Repeatable: the values come as an array. */
  readonly multiple?: boolean;
  readonly short?: string;
  readonly default?: string | boolean;
  /**
   * Checked before the command runs: missing, it is a usage error ("keys create needs
   * --name NAME"). A string is added to that message in parentheses.
   */
  readonly required?: true | string;
  /**
   * The value may be left out (`--wait` or `--wait 30s`), which parseArgs cannot express:
   * the next argument is the value when this says it looks like one. Left out, the value is
   * the empty string.
   */
  readonly optionalValue?: (next: string) => boolean;
}

export type OptionSpecs = Readonly<Record<string, OptionSpec>>;

type OptionValue<S extends OptionSpec> = S['type'] extends 'boolean'
  ? S extends { multiple: true }
    ? boolean[]
    : boolean
  : S extends { multiple: true }
    ? string[]
    : string;

/** Always set: booleans (false when absent), options with a default, required ones. */
type AlwaysSet<S extends OptionSpec> = S extends { multiple: true }
  ? S extends { default: unknown }
    ? true
    : false
  : S['type'] extends 'boolean'
    ? true
    : S extends { default: unknown }
      ? true
      : S extends { required: true | string }
        ? true
        : false;

/** The parsed values of `O`, typed from the spec. */
export type Values<O extends OptionSpecs> = {
  -readonly [K in keyof O as AlwaysSet<O[K]> extends true ? K : never]: OptionValue<O[K]>;
} & {
  -readonly [K in keyof O as AlwaysSet<O[K]> extends true ? never : K]?:
    | OptionValue<O[K]>
    | undefined;
};

/** What a command's `run` gets. */
export interface Invocation<O extends OptionSpecs> {
  values: Values<O>;
  positionals: string[];
  /** The arguments after `--` (also the last of `positionals`); undefined without `--`. */
  rest?: string[] | undefined;
  /** The command as typed, for messages: `keys create`, `task ls`. */
  path: string;
}

/** Every command has -h/--help; the framework answers it. */
const HELP_OPTION = {
  help: { type: 'boolean', short: 'h', description: 'Show this help' },
} as const satisfies OptionSpecs;

export interface CommandSpec<O extends OptionSpecs, C extends OptionSpecs> {
  readonly name: string;
  readonly aliases?: readonly string[];
  /** The positional arguments as the usage line shows them: `ID`, `[TEMPLATE]`, `TOPIC...`. */
  readonly args?: string;
  /** Paragraphs separated by newlines; a line that starts with a space is kept as it is. */
  readonly description: string;
  readonly options?: O;
  /** Options every command of the group shares (the client's), listed once in the help. */
  readonly common?: C;
  /** Resolves to the exit code (undefined: 0). */
  run(invocation: Invocation<O & C>): Promise<number | undefined> | number | undefined;
}

/** A command with its spec, ready to parse arguments and run. */
export interface Command {
  readonly name: string;
  readonly aliases: readonly string[];
  readonly args: string | undefined;
  readonly description: string;
  readonly options: OptionSpecs;
  readonly common: OptionSpecs;
  /**
   * Parses `args` (after the command's name) against the spec and runs the command; with
   * --help, prints `help()` instead. `path` names the command in messages (`keys create`).
   */
  run(args: readonly string[], path: string, help: () => string): Promise<number>;
}

/** No options. */
type None = Record<never, OptionSpec>;

export function command<const O extends OptionSpecs = None, const C extends OptionSpecs = None>(
  spec: CommandSpec<O, C>,
): Command {
  const options: OptionSpecs = spec.options ?? {};
  const common: OptionSpecs = spec.common ?? {};
  const all: OptionSpecs = { ...common, ...options, ...HELP_OPTION };
  return {
    name: spec.name,
    aliases: spec.aliases ?? [],
    args: spec.args,
    description: spec.description,
    options,
    common,
    async run(args, path, help) {
      const { values, positionals } = parseWith(all, args);
      if (values.help === true) {
        process.stdout.write(`${help()}\n`);
        return 0;
      }
      for (const [flag, option] of Object.entries(all)) {
        if (option.required === undefined || (values[flag] ?? '') !== '') continue;
        const why = option.required === true ? '' : ` (${option.required})`;
        throw new UsageError(`${path} needs ${flagText(flag, option)}${why}`);
      }
      const dash = args.indexOf('--');
      const rest = dash === -1 ? undefined : args.slice(dash + 1);
      return (await spec.run({ values: values as Values<O & C>, positionals, rest, path })) ?? 0;
    },
  };
}

/** Parses `args` against `specs`; a flag the spec does not know is a usage error. */
function parseWith(
  specs: OptionSpecs,
  args: readonly string[],
): { values: Record<string, unknown>; positionals: string[] } {
  const parserOptions: Record<
    string,
    { type: 'string' | 'boolean'; short?: string; multiple?: boolean; default?: string | boolean }
  > = {};
  for (const [flag, option] of Object.entries(specs)) {
    parserOptions[flag] = {
      type: option.type,
      ...(option.short !== undefined ? { short: option.short } : {}),
      ...(option.multiple ? { multiple: true } : {}),
      ...(option.default !== undefined
        ? { default: option.default }
        : option.type === 'boolean' && !option.multiple
          ? { default: false }
          : {}),
    };
  }
  try {
    const parsed = parseArgs({
      args: withOptionalValues(specs, args),
      options: parserOptions,
      allowPositionals: true,
      strict: true,
    });
    return { values: parsed.values, positionals: parsed.positionals };
  } catch (err) {
    throw new UsageError((err as Error).message, { cause: err });
  }
}

/** Rewrites `--flag [value]` of the options whose value may be left out as `--flag=value`. */
function withOptionalValues(specs: OptionSpecs, args: readonly string[]): string[] {
  const optional = Object.entries(specs).filter(([, o]) => o.optionalValue !== undefined);
  if (optional.length === 0) return [...args];
  const out: string[] = [];
  for (let i = 0; i < args.length; i += 1) {
    const arg = args[i] ?? '';
    if (arg === '--') {
      out.push(...args.slice(i));
      break;
    }
    const match = optional.find(([flag]) => arg === `--${flag}`);
    if (match === undefined) {
      out.push(arg);
      continue;
    }
    const next = args[i + 1];
    if (next !== undefined && match[1].optionalValue?.(next) === true) {
      out.push(`${arg}=${next}`);
      i += 1;
    } else {
      out.push(`${arg}=`);
    }
  }
  return out;
}

/** Prints `value` as JSON with `json`, else the text `human` makes. */
export function print(json: boolean, value: unknown, human: () => string): void {
  process.stdout.write(`${json ? JSON.stringify(value, null, 2) : human()}\n`);
}

// ---------------------------------------------------------------------------------------
// Groups: what `orchestra <group>` dispatches to

/** A top-level command of `orchestra`: what main.ts loads and the global help lists. */
export interface Group {
  readonly name: string;
  /** One line for `orchestra --help`. */
  readonly summary: string;
  /** The subcommands' names for `orchestra --help` (`create|list|revoke`), if any. */
  readonly subcommandNames: string | undefined;
  /** The commands, each declared with its spec. */
  readonly commands?: readonly Command[];
  help(args?: readonly string[]): string;
  /** Runs `orchestra <group> <args>`; resolves to the exit code. */
  run(args: readonly string[]): Promise<number>;
}

export interface GroupSpec {
  readonly name: string;
  readonly summary: string;
  /** Paragraphs after the subcommands (what they share, who may run them). */
  readonly notes?: string;
}

/** A group of subcommands, such as `keys create|list|revoke`. */
export function group(spec: GroupSpec & { subcommands: readonly Command[] }): Group {
  const names = spec.subcommands.map((c) => c.name);
  const find = (name: string) =>
    spec.subcommands.find((c) => c.name === name || c.aliases.includes(name));
  const common = spec.subcommands[0]?.common ?? {};
  const render = (only?: Command) => {
    if (only !== undefined) return commandHelp(`orchestra ${spec.name}`, only, spec.notes);
    const sections = spec.subcommands.map((c) =>
      [
        `  ${synopsis(spec.name, c)}`,
        wrap(aliasText(c) + c.description, 6),
        ...(Object.keys(c.options).length > 0 ? ['', optionTable(c.options, 8)] : []),
      ].join('\n'),
    );
    return [
      `Usage: orchestra ${spec.name} <${names.join('|')}> [options]`,
      '',
      sections.join('\n\n'),
      ...(spec.notes !== undefined ? ['', wrap(spec.notes, 0)] : []),
      '',
      'Common options:',
      optionTable({ ...common, ...HELP_OPTION }, 2),
    ].join('\n');
  };
  return {
    name: spec.name,
    summary: spec.summary,
    subcommandNames: names.join('|'),
    commands: spec.subcommands,
    help: (args = []) => {
      const sub = args[0] === undefined ? undefined : find(args[0]);
      return render(sub);
    },
    async run(given) {
      const args = subcommandFirst(given, spec.subcommands);
      // Only options: no subcommand was given.
      const [first, ...others] = args;
      const sub =
        first?.startsWith('-') && first !== '--help' && first !== '-h' ? undefined : first;
      const rest = sub === undefined ? [] : others;
      if (sub === undefined || sub === '--help' || sub === '-h') {
        process.stdout.write(`${render()}\n`);
        if (sub === undefined) {
          throw new UsageError(`${spec.name} needs a subcommand: ${oneOf(names)}`);
        }
        return 0;
      }
      const found = find(sub);
      if (found === undefined) {
        throw new UsageError(`unknown ${spec.name} subcommand "${sub}"; use ${oneOf(names)}`);
      }
      return found.run(rest, `${spec.name} ${sub}`, () => render(found));
    },
  };
}

/**
 * Options may come before the subcommand (`config --env prod get k`): moves the first word
 * that is neither a flag nor a string flag's value to the front. A leading --help stays.
 */
function subcommandFirst(args: readonly string[], commands: readonly Command[]): string[] {
  const takesValue = new Set<string>();
  for (const c of commands) {
    for (const [flag, option] of Object.entries({ ...c.common, ...c.options })) {
      if (option.type === 'string' && option.optionalValue === undefined) {
        takesValue.add(`--${flag}`);
        if (option.short !== undefined) takesValue.add(`-${option.short}`);
      }
    }
  }
  for (let i = 0; i < args.length; i += 1) {
    const arg = args[i] ?? '';
    if (arg === '--help' || arg === '-h') return [...args];
    if (arg === '--') return [...args];
    if (!arg.startsWith('-')) {
      return i === 0 ? [...args] : [arg, ...args.slice(0, i), ...args.slice(i + 1)];
    }
    if (takesValue.has(arg)) i += 1; // its value, not the subcommand
  }
  return [...args];
}

/** A top-level command without subcommands, such as `whoami`. */
export function single(spec: GroupSpec & { command: Command }): Group {
  const c = spec.command;
  const render = () => commandHelp('orchestra', c, spec.notes);
  return {
    name: spec.name,
    summary: spec.summary,
    subcommandNames: undefined,
    commands: [c],
    help: render,
    run: (args) => c.run(args, spec.name, render),
  };
}

// ---------------------------------------------------------------------------------------
// Help text

/** Help lines are wrapped to this many columns. */
const WIDTH = 90;

/** `a`, `a or b`, `a, b or c`. */
export function oneOf(words: readonly string[]): string {
  return words.length <= 1
    ? (words[0] ?? '')
    : `${words.slice(0, -1).join(', ')} or ${words.at(-1)}`;
}

function flagText(flag: string, option: OptionSpec): string {
  if (option.type === 'boolean') return `--${flag}`;
  const value = option.value ?? 'VALUE';
  return option.optionalValue !== undefined ? `--${flag} [${value}]` : `--${flag} ${value}`;
}

function aliasText(c: Command): string {
  return c.aliases.length > 0 ? `(alias: ${c.aliases.join(', ')}) ` : '';
}

/** `keys create --name NAME --role ROLE [options]`: arguments and required options. */
function synopsis(prefix: string, c: Command): string {
  const entries = Object.entries(c.options);
  const required = entries.filter(([, o]) => o.required !== undefined);
  return [
    prefix,
    c.name,
    ...(c.args !== undefined ? [c.args] : []),
    ...required.map(([flag, o]) => flagText(flag, o)),
    ...(entries.length > required.length || Object.keys(c.common).length > 0 ? ['[options]'] : []),
  ].join(' ');
}

/** The options as a two-column table, descriptions wrapped, indented by `indent`. */
export function optionTable(options: OptionSpecs, indent: number): string {
  const rows = Object.entries(options).map(([flag, o]) => {
    const names = `${o.short !== undefined ? `-${o.short}, ` : ''}${flagText(flag, o)}`;
    const extra = [
      ...(o.multiple ? ['repeatable'] : []),
      ...(o.required !== undefined ? ['required'] : []),
    ];
    const description = extra.length > 0 ? `${o.description} (${extra.join('; ')})` : o.description;
    return { names, description };
  });
  const column = Math.max(...rows.map((r) => r.names.length)) + 2;
  return rows
    .map(({ names, description }) => {
      const lines = wrapLines(description, WIDTH - indent - column);
      return lines
        .map((line, i) =>
          `${' '.repeat(indent)}${(i === 0 ? names : '').padEnd(column)}${line}`.trimEnd(),
        )
        .join('\n');
    })
    .join('\n');
}

/** The help of one command: usage, description, every option it takes. */
function commandHelp(prefix: string, c: Command, notes: string | undefined): string {
  return [
    `Usage: ${synopsis(prefix, c)}`,
    '',
    wrap(aliasText(c) + c.description, 0),
    ...(notes !== undefined ? ['', wrap(notes, 0)] : []),
    '',
    'Options:',
    optionTable({ ...c.options, ...c.common, ...HELP_OPTION }, 2),
  ].join('\n');
}

/** Wraps paragraphs (one a line) to WIDTH, indented; lines that start with a space stay. */
export function wrap(text: string, indent: number): string {
  const pad = ' '.repeat(indent);
  return text
    .split('\n')
    .flatMap((paragraph) =>
      paragraph.startsWith(' ') || paragraph === ''
        ? [paragraph]
        : wrapLines(paragraph, WIDTH - indent),
    )
    .map((line) => (line === '' ? '' : `${pad}${line}`))
    .join('\n');
}

function wrapLines(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/).filter((w) => w !== '')) {
    if (line !== '' && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line === '' ? word : `${line} ${word}`;
    }
  }
  if (line !== '') lines.push(line);
  return lines.length > 0 ? lines : [''];
}
