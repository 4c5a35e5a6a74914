import type {
  CreateTemplateInput,
  Template,
  TemplateDefinition,
  TemplateVersionSummary,
} from '@orchestra/sdk';
import {
  CLIENT_OPTIONS,
  client,
  JSON_FILE_OPTION,
  labelFlags,
  labelsText,
  positiveInteger,
  print,
  readJsonObject as readJsonObjectOf,
  UsageError,
} from '../common.ts';
import { command, group as defineGroup } from '../spec.ts';
import { formatTable } from '../table.ts';

/** Fields of `templates get --json` output that the server sets; an update does not send them. */
const TEMPLATE_READ_ONLY_FIELDS = [
  'id',
  'tenant_id',
  'name',
  'version',
  'latest_version',
  'highest_version',
  'created_at',
  'updated_at',
  'version_created_at',
  'version_created_by',
] as const;

const TEMPLATE_SCHEMA_FIELDS = ['input_schema', 'output_schema', 'config_schema'] as const;

const sourceName = (file: string) => (file === '-' ? 'standard input' : file);

const readJsonObject = (file: string) => readJsonObjectOf(file, '{"name": "my-template"}');

/**
 * The definition in a template file, without what the server sets, so that the output of
 * `templates get --json` can be edited and sent back. A null schema there means "none".
 */
function templateDefinition(document: Record<string, unknown>): TemplateDefinition {
  const definition: Record<string, unknown> = { ...document };
  for (const field of TEMPLATE_READ_ONLY_FIELDS) delete definition[field];
  for (const field of TEMPLATE_SCHEMA_FIELDS) {
    if (definition[field] === null) delete definition[field];
  }
  // Anything else, typos included, goes to the server, which names unknown fields.
  return definition as TemplateDefinition;
}

function describeTemplate(t: Template): string {
  const schema = (value: Record<string, unknown> | null) =>
    value === null ? ' (none)' : `\n${JSON.stringify(value, null, 2)}`;
  const rows: [string, string][] = [
    ['Name', t.name],
    ['ID', t.id],
    ['Version', `${t.version} (latest ${t.latest_version}, highest ${t.highest_version})`],
    ['Description', t.description || '-'],
    ['Capabilities', t.capabilities.length > 0 ? t.capabilities.join(', ') : '-'],
    ['Labels', labelsText(t.labels)],
    [
      'Defaults',
      `timeout ${t.default_timeout_ms} ms, max attempts ${t.default_max_attempts}, priority ${t.default_priority}`,
    ],
    ['Strategy', t.strategy],
    ['Created', t.created_at],
    ['Updated', t.updated_at],
    [`Version ${t.version}`, `created ${t.version_created_at} by ${t.version_created_by}`],
  ];
  const width = Math.max(...rows.map(([label]) => label.length)) + 2;
  return [
    ...rows.map(([label, value]) => `${`${label}:`.padEnd(width)}${value}`),
    '',
    `Input schema:${schema(t.input_schema)}`,
    `Output schema:${schema(t.output_schema)}`,
    `Config schema:${schema(t.config_schema)}`,
    `Config:${Object.keys(t.config).length > 0 ? `\n${JSON.stringify(t.config, null, 2)}` : ' (none)'}`,
  ].join('\n');
}

/** The NAME|ID argument of the subcommands that take one. */
function templateRef({ positionals, path }: { positionals: string[]; path: string }): string {
  const value = positionals[0];
  if (value === undefined) throw new UsageError(`${path} needs a template name or id`);
  return value;
}

const create = command({
  name: 'create',
  description:
    'Creates a template (version 1) from a JSON file: an object with its "name" and definition (description, labels, capabilities, input_schema, output_schema, config_schema, config, default_timeout_ms, default_max_attempts, default_priority, strategy).',
  options: { file: JSON_FILE_OPTION },
  common: CLIENT_OPTIONS,
  async run({ values }) {
    const document = readJsonObject(values.file);
    if (typeof document.name !== 'string') {
      throw new UsageError(`${sourceName(values.file)} needs a "name" string`);
    }
    const input: CreateTemplateInput = { ...templateDefinition(document), name: document.name };
    const template = await client(values).templates.create(input);
    print(
      values.json,
      template,
      () => `Created template ${template.name} (${template.id}), version ${template.version}.`,
    );
    return 0;
  },
});

const list = command({
  name: 'list',
  description: 'Lists templates at their latest version.',
  options: {
    'name-prefix': {
      type: 'string',
      value: 'PREFIX',
      description: 'Only the templates whose name starts with PREFIX',
    },
    label: {
      type: 'string',
      value: 'KEY=VALUE',
      multiple: true,
      description: 'Only the templates with this label; with several, all must match',
    },
  },
  common: CLIENT_OPTIONS,
  async run({ values }) {
    const labels = labelFlags(values.label);
    const templates: Template[] = [];
    for await (const template of client(values).templates.listAll({
      limit: 200,
      labels,
      ...(values['name-prefix'] ? { name_prefix: values['name-prefix'] } : {}),
    })) {
      templates.push(template);
    }
    print(values.json, templates, () =>
      formatTable(
        ['NAME', 'ID', 'LATEST', 'HIGHEST', 'CAPABILITIES', 'LABELS', 'UPDATED'],
        templates.map((t) => [
          t.name,
          t.id,
          String(t.latest_version),
          String(t.highest_version),
          t.capabilities.length > 0 ? t.capabilities.join(',') : '-',
          labelsText(t.labels),
          t.updated_at,
        ]),
      ),
    );
    return 0;
  },
});

const get = command({
  name: 'get',
  args: 'NAME|ID',
  description: 'Shows a template at its latest version, or at version N.',
  options: {
    version: { type: 'string', value: 'N', description: 'The version to show' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const name = templateRef(invocation);
    const version =
      values.version === undefined ? undefined : positiveInteger('--version', values.version);
    const template = await client(values).templates.get(
      name,
      version === undefined ? {} : { version },
    );
    print(values.json, template, () => describeTemplate(template));
    return 0;
  },
});

const update = command({
  name: 'update',
  args: 'NAME|ID',
  description:
    'Replaces the whole definition with the one in FILE, as a new version that becomes the latest; fields left out go back to their defaults. FILE may be the output of "templates get --json": its id, name, versions and timestamps are not sent.',
  options: {
    file: JSON_FILE_OPTION,
    'if-version': {
      type: 'string',
      value: 'N',
      description: 'Refuses (PRECONDITION_FAILED) unless N is still the latest version',
    },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const name = templateRef(invocation);
    const ifVersion =
      values['if-version'] === undefined
        ? undefined
        : positiveInteger('--if-version', values['if-version']);
    const document = readJsonObject(values.file);
    if (typeof document.name === 'string' && !name.startsWith('tpl_') && document.name !== name) {
      throw new UsageError(
        `${sourceName(values.file)} is for template "${document.name}", not "${name}"; templates cannot be renamed`,
      );
    }
    const template = await client(values).templates.update(
      name,
      templateDefinition(document),
      ifVersion === undefined ? {} : { ifVersion },
    );
    print(
      values.json,
      template,
      () =>
        `Updated template ${template.name} (${template.id}): version ${template.version} is the latest.`,
    );
    return 0;
  },
});

const versions = command({
  name: 'versions',
  args: 'NAME|ID',
  description: 'Lists the versions of a template, newest first; * marks the latest.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const name = templateRef(invocation);
    const items: TemplateVersionSummary[] = [];
    for await (const version of client(values).templates.versionsAll(name, { limit: 200 })) {
      items.push(version);
    }
    print(values.json, items, () =>
      formatTable(
        ['VERSION', 'LATEST', 'CREATED', 'CREATED BY'],
        items.map((v) => [String(v.version), v.latest ? '*' : '', v.created_at, v.created_by]),
      ),
    );
    return 0;
  },
});

const rollback = command({
  name: 'rollback',
  args: 'NAME|ID',
  description: 'Makes version N the latest again. Creates no version.',
  options: {
    to: {
      type: 'string',
      value: 'N',
      required: 'the version to make the latest',
      description: 'The version to make the latest',
    },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const name = templateRef(invocation);
    const template = await client(values).templates.rollback(
      name,
      positiveInteger('--to', values.to),
    );
    print(
      values.json,
      template,
      () =>
        `Rolled back template ${template.name} (${template.id}): version ${template.latest_version} is the latest (highest ${template.highest_version}).`,
    );
    return 0;
  },
});

const remove = command({
  name: 'delete',
  aliases: ['rm'],
  args: 'NAME|ID',
  description: 'Deletes the template and all its versions.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const name = templateRef(invocation);
    await client(values).templates.delete(name);
    print(values.json, { deleted: name }, () => `Deleted template ${name}.`);
    return 0;
  },
});

export const group = defineGroup({
  name: 'templates',
  summary: 'Manage versioned agent templates',
  notes: 'Creating, updating, rolling back and deleting need an admin or operator credential.',
  subcommands: [create, list, get, update, versions, rollback, remove],
});
