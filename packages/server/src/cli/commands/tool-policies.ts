import type { CreateToolPolicyInput, ToolPolicy, ToolPolicyDefinition } from '@orchestra/sdk';
import {
  CLIENT_OPTIONS,
  client,
  JSON_FILE_OPTION,
  noArguments,
  oneArgument,
  print,
  readJsonObject,
  UsageError,
  without,
} from '../common.ts';
import { command, group as defineGroup } from '../spec.ts';
import { formatTable } from '../table.ts';
import { describePolicy, POLICY_HEADER, policyRow } from '../tool-format.ts';

/** Fields of `tool-policies get --json` output that the server sets. */
const POLICY_READ_ONLY_FIELDS = ['id', 'tenant_id', 'name', 'created_at', 'updated_at'] as const;
/** Fields `get --json` shows as null when unset, which a definition leaves out instead. */
const POLICY_NULLABLE_FIELDS = ['arguments_schema', 'rate_limit', 'max_concurrency'] as const;

const readPolicyFile = (file: string) =>
  readJsonObject(file, '{"name": "no-deploys", "effect": "deny", "tools": ["ops__*"]}');

/** A policy file without what the server sets, so `get --json` output can be sent back. */
function policyDefinition(document: Record<string, unknown>): ToolPolicyDefinition {
  const definition = without(document, POLICY_READ_ONLY_FIELDS);
  for (const field of POLICY_NULLABLE_FIELDS) {
    if (definition[field] === null) delete definition[field];
  }
  return definition as ToolPolicyDefinition;
}

const fileName = (file: string) => (file === '-' ? 'standard input' : file);

const list = command({
  name: 'ls',
  aliases: ['list'],
  description: 'Lists the tenant’s tool policies by name.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    noArguments(invocation);
    const policies: ToolPolicy[] = [];
    for await (const policy of client(values).toolPolicies.listAll({ limit: 200 })) {
      policies.push(policy);
    }
    print(values.json, policies, () => formatTable(POLICY_HEADER, policies.map(policyRow)));
    return 0;
  },
});

const get = command({
  name: 'get',
  args: 'NAME|ID',
  description: 'Shows a policy: effect, tools, whom it matches, its limits and approval.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const policy = await client(values).toolPolicies.get(
      oneArgument(invocation, 'policy name or id'),
    );
    print(values.json, policy, () => describePolicy(policy));
    return 0;
  },
});

const create = command({
  name: 'create',
  description:
    'Creates a policy from a JSON file: "name", "effect" (allow or deny), "tools" (names; * matches any run of characters), and match, arguments_schema, rate_limit, max_concurrency, approval, approval_timeout_ms, enabled, description.',
  options: { file: JSON_FILE_OPTION },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    noArguments(invocation);
    const document = readPolicyFile(values.file);
    if (typeof document.name !== 'string') {
      throw new UsageError(`${fileName(values.file)} needs a "name" string`);
    }
    const input = { ...policyDefinition(document), name: document.name } as CreateToolPolicyInput;
    const policy = await client(values).toolPolicies.create(input);
    print(values.json, policy, () => `Created tool policy ${policy.name} (${policy.id}).`);
    return 0;
  },
});

const update = command({
  name: 'update',
  args: 'NAME|ID',
  description:
    'Replaces the whole policy with the one in FILE; fields left out take their defaults. FILE may be the output of "tool-policies get --json".',
  options: { file: JSON_FILE_OPTION },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const ref = oneArgument(invocation, 'policy name or id');
    const document = readPolicyFile(values.file);
    if (typeof document.name === 'string' && !ref.startsWith('tpol_') && document.name !== ref) {
      throw new UsageError(
        `${fileName(values.file)} is for policy "${document.name}", not "${ref}"; policies cannot be renamed`,
      );
    }
    const policy = await client(values).toolPolicies.update(ref, policyDefinition(document));
    print(values.json, policy, () => `Updated tool policy ${policy.name} (${policy.id}).`);
    return 0;
  },
});

const remove = command({
  name: 'rm',
  aliases: ['delete'],
  args: 'NAME|ID',
  description: 'Deletes a policy; it no longer applies from the next call.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const ref = oneArgument(invocation, 'policy name or id');
    await client(values).toolPolicies.delete(ref);
    print(values.json, { deleted: ref }, () => `Deleted tool policy ${ref}.`);
    return 0;
  },
});

export const group = defineGroup({
  name: 'tool-policies',
  summary: 'Manage tool policies: who may call which tools, how often, with approval',
  notes:
    'Deny wins over allow; a tool no policy names may be called unless it is destructive (not read-only and not destructiveHint: false), which takes an allow. Creating, updating and deleting need an admin credential.',
  subcommands: [list, get, create, update, remove],
});
