import type {
  CreateModelProvider,
  ModelProvider,
  ModelProviderTest,
  ProviderModel,
  UpdateModelProvider,
} from '@orchestra/sdk';
import type { DurationFormat } from '../../platform/duration.ts';
import {
  CLIENT_OPTIONS,
  choice,
  client,
  countFlag,
  dash,
  durationFlag,
  fileOrFlags,
  nameFromArgumentOrFile,
  noArguments,
  oneArgument,
  print,
  readJsonObject,
  UsageError,
  without,
} from '../common.ts';
import { command, group as defineGroup, type OptionSpecs } from '../spec.ts';
import { formatTable } from '../table.ts';

const KINDS = ['openai', 'anthropic'] as const;
const TIMEOUT: DurationFormat = { units: ['ms', 's', 'm', 'h'], maxDigits: 9, maxMs: 3_600_000 };
const IDLE_TIMEOUT: DurationFormat = { units: ['ms', 's', 'm'], maxDigits: 9, maxMs: 600_000 };

/** Fields of `providers get --json` output that the server sets; an update does not send them. */
const READ_ONLY_FIELDS = [
  'id',
  'tenant_id',
  'name',
  'header_names',
  'version',
  'created_at',
  'updated_at',
] as const;

const PROVIDER_OPTIONS = {
  file: {
    type: 'string',
    value: 'FILE',
    description:
      'Take the settings from a JSON file (- reads standard input) instead of the flags below, such as the output of "providers get --json"',
  },
  kind: {
    type: 'string',
    value: 'KIND',
    description:
      'openai (Chat Completions: OpenAI, Azure OpenAI v1, vLLM, Ollama, llama.cpp, LM Studio, OpenRouter…) or anthropic (Messages)',
  },
  // Not --url: that is the Orchestra server's, for every command.
  'base-url': {
    type: 'string',
    value: 'URL',
    description:
      'The API’s base URL as its official client takes it, such as https://api.openai.com/v1, http://127.0.0.1:11434/v1 (Ollama) or https://api.anthropic.com',
  },
  'api-key-secret': {
    type: 'string',
    value: 'SECRET',
    description:
      'The secret that holds the API key (see "secrets set"); none for servers without keys',
  },
  model: {
    type: 'string',
    value: 'NAME',
    multiple: true,
    description: 'A model templates may use; repeat it for each (at least one)',
  },
  price: {
    type: 'string',
    value: 'MODEL=IN/OUT[/CACHED]',
    multiple: true,
    description:
      'A model’s price in US dollars per million input, output and (optionally) cached input tokens, such as gpt-4.1-mini=0.4/1.6/0.1',
  },
  header: {
    type: 'string',
    value: 'NAME=VALUE',
    multiple: true,
    description:
      // biome-ignore lint/suspicious/noTemplateCurlyInString: the secret reference syntax
      'A header sent with every request; the value may refer to a secret as ${secret:NAME}. Values are never shown again, only names',
  },
  'max-concurrency': {
    type: 'string',
    value: 'N',
    description: 'Most requests in flight from one node (default 32)',
  },
  'requests-per-minute': {
    type: 'string',
    value: 'N',
    description: 'Most requests a minute from one node (default: no limit)',
  },
  timeout: {
    type: 'string',
    value: 'DURATION',
    description: 'Longest a request may take, whole answer included (default 2m)',
  },
  'idle-timeout': {
    type: 'string',
    value: 'DURATION',
    description: 'Longest silence in a streamed answer before it counts as stalled (default 30s)',
  },
  'max-retries': {
    type: 'string',
    value: 'N',
    description: 'Retries of 408, 409, 429 and 5xx answers, honouring Retry-After (default 2)',
  },
  fallback: {
    type: 'string',
    value: 'PROVIDER/MODEL',
    multiple: true,
    description: 'Where calls go when this provider fails them; repeat it, in order',
  },
  description: { type: 'string', value: 'TEXT', description: 'What the provider is for' },
  disabled: {
    type: 'boolean',
    default: false,
    description: 'Register it disabled: calls to it fail until it is enabled again',
  },
} as const satisfies OptionSpecs;

type ProviderFlags = {
  file?: string | undefined;
  kind?: string | undefined;
  'base-url'?: string | undefined;
  'api-key-secret'?: string | undefined;
  model?: string[] | undefined;
  price?: string[] | undefined;
  header?: string[] | undefined;
  'max-concurrency'?: string | undefined;
  'requests-per-minute'?: string | undefined;
  timeout?: string | undefined;
  'idle-timeout'?: string | undefined;
  'max-retries'?: string | undefined;
  fallback?: string[] | undefined;
  description?: string | undefined;
  disabled: boolean;
};

function priceOf(flag: string): [string, NonNullable<ProviderModel['price']>] {
  const at = flag.lastIndexOf('=');
  const parts = at < 1 ? [] : flag.slice(at + 1).split('/');
  const numbers = parts.map((p) => (/^\d+(\.\d+)?$/.test(p) ? Number(p) : Number.NaN));
  if (numbers.length < 2 || numbers.length > 3 || numbers.some(Number.isNaN)) {
    throw new UsageError(`--price must be MODEL=IN/OUT[/CACHED] in dollars, got "${flag}"`);
  }
  const [input, output, cached] = numbers as [number, number, number | undefined];
  return [
    flag.slice(0, at),
    { input, output, ...(cached !== undefined ? { cached_input: cached } : {}) },
  ];
}

function settingsFromFlags(values: ProviderFlags, path: string): UpdateModelProvider {
  if (values.kind === undefined || values['base-url'] === undefined) {
    throw new UsageError(`${path} needs --kind, --base-url and --model, or --file FILE`);
  }
  const names = values.model ?? [];
  if (names.length === 0) throw new UsageError(`${path} needs at least one --model NAME`);
  const prices = new Map((values.price ?? []).map(priceOf));
  for (const name of prices.keys()) {
    if (!names.includes(name)) {
      throw new UsageError(`--price names model "${name}", which no --model gives`);
    }
  }
  const headers: Record<string, string> = {};
  for (const pair of values.header ?? []) {
    const at = pair.indexOf('=');
    // The value is not echoed: it may be a secret typed on the command line.
    if (at < 1) throw new UsageError('--header must be NAME=VALUE (got one without "=" or name)');
    headers[pair.slice(0, at)] = pair.slice(at + 1);
  }
  const fallbacks = (values.fallback ?? []).map((text) => {
    const at = text.indexOf('/');
    if (at < 1 || at === text.length - 1) {
      throw new UsageError(`--fallback must be PROVIDER/MODEL, got "${text}"`);
    }
    return { provider: text.slice(0, at), model: text.slice(at + 1) };
  });
  const count = (flag: keyof ProviderFlags, max: number) => {
    const text = values[flag];
    return typeof text === 'string' ? countFlag(`--${flag}`, text, max) : undefined;
  };
  const retries = values['max-retries'];
  if (retries !== undefined && !/^(?:10|\d)$/.test(retries)) {
    throw new UsageError(`--max-retries must be a number from 0 to 10, got "${retries}"`);
  }
  const settings: UpdateModelProvider = {
    kind: choice('--kind', values.kind, KINDS),
    base_url: values['base-url'],
    models: names.map((name) => {
      const price = prices.get(name);
      return price === undefined ? { name } : { name, price };
    }),
  };
  if (values['api-key-secret'] !== undefined) settings.api_key_secret = values['api-key-secret'];
  if (Object.keys(headers).length > 0) settings.headers = headers;
  const concurrency = count('max-concurrency', 10_000);
  if (concurrency !== undefined) settings.max_concurrency = concurrency;
  const perMinute = count('requests-per-minute', 1_000_000);
  if (perMinute !== undefined) settings.requests_per_minute = perMinute;
  if (values.timeout !== undefined) {
    settings.timeout_ms = durationFlag('--timeout', values.timeout, TIMEOUT, '2m');
  }
  if (values['idle-timeout'] !== undefined) {
    settings.idle_timeout_ms = durationFlag(
      '--idle-timeout',
      values['idle-timeout'],
      IDLE_TIMEOUT,
      '30s',
    );
  }
  if (retries !== undefined) settings.max_retries = Number(retries);
  if (fallbacks.length > 0) settings.fallbacks = fallbacks;
  if (values.description !== undefined) settings.description = values.description;
  if (values.disabled) settings.enabled = false;
  return settings;
}

function settings(values: ProviderFlags, path: string) {
  if (values.file === undefined) {
    return { name: undefined, definition: settingsFromFlags(values, path) };
  }
  fileOrFlags(values, PROVIDER_OPTIONS, path, 'the settings');
  const document = readJsonObject(
    values.file,
    '{"name": "openai", "kind": "openai", "base_url": "https://api.openai.com/v1", "models": [{"name": "gpt-4.1-mini"}]}',
  );
  const listed = document.header_names;
  if (Array.isArray(listed) && listed.length > 0 && document.headers === undefined) {
    // `get --json` shows only the names: sending it back would drop the values.
    throw new UsageError(
      `${values.file === '-' ? 'standard input' : values.file} names headers ${listed.join(', ')} but holds no values (they are never shown); add "headers": {"NAME": "value"} to the file`,
    );
  }
  return {
    name: document.name,
    definition: without(document, READ_ONLY_FIELDS) as UpdateModelProvider,
  };
}

function describeProvider(p: ModelProvider): string {
  const models = p.models.map((m) => {
    const price = m.price
      ? ` ($${m.price.input} in, $${m.price.output} out${m.price.cached_input !== undefined ? `, $${m.price.cached_input} cached` : ''} per million tokens)`
      : '';
    return `  ${m.name}${price}`;
  });
  return [
    `Name:          ${p.name} (${p.id})`,
    `Kind:          ${p.kind}`,
    `Base URL:      ${p.base_url}`,
    `API key:       ${p.api_key_secret === null ? '-' : `secret ${p.api_key_secret}`}`,
    `Headers:       ${p.header_names.join(', ') || '-'}`,
    `Enabled:       ${p.enabled ? 'yes' : 'no'}`,
    `Limits:        ${p.max_concurrency} in flight, ${p.requests_per_minute ?? 'no limit on'} requests a minute (per node)`,
    `Timeouts:      ${p.timeout_ms} ms a request, ${p.idle_timeout_ms} ms of silence in a stream`,
    `Retries:       ${p.max_retries}`,
    `Fallbacks:     ${p.fallbacks.map((f) => `${f.provider}/${f.model}`).join(', ') || '-'}`,
    `Description:   ${p.description || '-'}`,
    `Version:       ${p.version} (updated ${p.updated_at})`,
    'Models:',
    ...models,
  ].join('\n');
}

function testText(name: string, t: ModelProviderTest): string {
  const lines = [`${name}: ${t.ok ? 'ok' : 'FAILED'} in ${t.latency_ms} ms`];
  if (t.listed_models !== null) lines.push(`Lists ${t.listed_models.length} models.`);
  if (t.unlisted_models.length > 0) {
    lines.push(`Not listed by the provider: ${t.unlisted_models.join(', ')}`);
  }
  if (t.answer !== null) lines.push(`Answer: ${t.answer}`);
  if (t.error !== null) {
    lines.push(
      `Error (${t.error.code}${t.error.status !== null ? `, HTTP ${t.error.status}` : ''}): ${t.error.message}`,
    );
  }
  return lines.join('\n');
}

const list = command({
  name: 'ls',
  aliases: ['list'],
  description: 'Lists the tenant’s model providers.',
  options: {
    kind: { type: 'string', value: 'KIND', description: 'Only providers of this kind' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    noArguments(invocation);
    const kind = values.kind === undefined ? undefined : choice('--kind', values.kind, KINDS);
    const items: ModelProvider[] = [];
    for await (const p of client(values).modelProviders.listAll({
      limit: 200,
      ...(kind !== undefined ? { kind } : {}),
    })) {
      items.push(p);
    }
    print(values.json, items, () =>
      formatTable(
        ['NAME', 'KIND', 'BASE URL', 'MODELS', 'FALLBACKS', 'ENABLED'],
        items.map((p) => [
          p.name,
          p.kind,
          p.base_url,
          p.models.map((m) => m.name).join(','),
          dash(p.fallbacks.map((f) => `${f.provider}/${f.model}`).join(',') || null),
          p.enabled ? 'yes' : 'no',
        ]),
      ),
    );
    return 0;
  },
});

const get = command({
  name: 'get',
  args: 'NAME|ID',
  description:
    'Shows a provider: where it is, which secret holds its key, the names of its headers (never their values), its limits, fallbacks and models with their prices.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const p = await client(values).modelProviders.get(oneArgument(invocation, 'provider name'));
    print(values.json, p, () => describeProvider(p));
    return 0;
  },
});

const add = command({
  name: 'add',
  aliases: ['create'],
  args: '[NAME]',
  description: [
    'Registers a model provider. Its API key is a secret: set it first. Examples:',
    '  orchestra secrets set OPENAI_API_KEY --from-env OPENAI_API_KEY',
    '  orchestra providers add openai --kind openai --base-url https://api.openai.com/v1 \\',
    '    --api-key-secret OPENAI_API_KEY --model gpt-4.1-mini --price gpt-4.1-mini=0.4/1.6/0.1',
    '  orchestra providers add ollama --kind openai --base-url http://127.0.0.1:11434/v1 \\',
    '    --model llama3.2:3b',
    '  orchestra providers add --file provider.json',
  ].join('\n'),
  options: PROVIDER_OPTIONS,
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const { name: fromFile, definition } = settings(values, invocation.path);
    const name = nameFromArgumentOrFile(invocation, fromFile, 'provider');
    const input: CreateModelProvider = { ...definition, name };
    const p = await client(values).modelProviders.create(input);
    print(
      values.json,
      p,
      () =>
        `Added model provider ${p.name} (${p.id}); check it with "orchestra providers test ${p.name}".`,
    );
    return 0;
  },
});

const update = command({
  name: 'update',
  args: 'NAME|ID',
  description:
    'Replaces all of a provider’s settings, with the flags or with the file (such as the output of "providers get --json"). Settings left out take their defaults, headers included: give their values again, since they are never shown.',
  options: PROVIDER_OPTIONS,
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const ref = oneArgument(invocation, 'provider name');
    const { name: fromFile, definition } = settings(values, invocation.path);
    if (typeof fromFile === 'string' && !ref.startsWith('mpr_') && fromFile !== ref) {
      throw new UsageError(
        `the file is for provider "${fromFile}", not "${ref}"; providers cannot be renamed`,
      );
    }
    const p = await client(values).modelProviders.update(ref, definition);
    print(values.json, p, () => `Updated model provider ${p.name} (version ${p.version}).`);
    return 0;
  },
});

const remove = command({
  name: 'rm',
  aliases: ['delete'],
  args: 'NAME|ID',
  description: 'Removes a provider; refused while another provider falls back to it.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const ref = oneArgument(invocation, 'provider name');
    await client(values).modelProviders.delete(ref);
    print(values.json, { deleted: ref }, () => `Removed model provider ${ref}.`);
    return 0;
  },
});

const test = command({
  name: 'test',
  args: 'NAME|ID',
  description:
    'Checks that a provider answers: lists its models and, with --model, has that model answer a one-line prompt. Exits 0 when it works, 1 when it does not.',
  options: {
    model: { type: 'string', value: 'NAME', description: 'Also prompt this model' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const ref = oneArgument(invocation, 'provider name');
    const result = await client(values).modelProviders.test(
      ref,
      values.model !== undefined ? { model: values.model } : {},
    );
    print(values.json, result, () => testText(ref, result));
    return result.ok ? 0 : 1;
  },
});

export const group = defineGroup({
  name: 'providers',
  summary: 'Manage model providers for hosted agents: add, test, update, remove',
  notes:
    'The API key is the name of a secret, read at each request; header values are never shown. Adding, changing and removing need an admin credential; testing an admin or operator one.',
  subcommands: [list, get, add, update, remove, test],
});
