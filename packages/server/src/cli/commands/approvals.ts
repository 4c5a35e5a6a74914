import { TOOL_APPROVAL_STATUSES } from '@orchestra/protocol/constants';
import type { ToolApproval, ToolApprovalDecision } from '@orchestra/sdk';
import {
  CLIENT_OPTIONS,
  choice,
  client,
  confirm,
  noArguments,
  oneArgument,
  print,
} from '../common.ts';
import { command, group as defineGroup, oneOf } from '../spec.ts';
import { formatTable } from '../table.ts';
import { APPROVAL_HEADER, approvalRow, describeApproval, resultText } from '../tool-format.ts';

const REASON = {
  type: 'string',
  value: 'TEXT',
  description: 'Why, recorded with the decision (at most 1000 characters)',
} as const;

/** What deciding did, for a person: the decision, then how the call ended and its result. */
function decisionText(verb: string, { approval, call, result }: ToolApprovalDecision): string {
  const outcome =
    call.error !== null
      ? `${call.status}: ${call.error.message} (${call.error.code})`
      : call.is_error
        ? `${call.status}, the tool reported an error`
        : call.status;
  const text = result === null ? '' : resultText(result);
  return [
    `${verb} ${approval.id}: call ${call.id} ${outcome}.`,
    ...(text !== '' ? [text] : []),
  ].join('\n');
}

const list = command({
  name: 'ls',
  aliases: ['list'],
  description: 'Lists approvals of tool calls, newest first: by default those still pending.',
  options: {
    status: {
      type: 'string',
      value: 'STATUS',
      default: 'pending',
      description: `Only approvals in this status: ${oneOf(TOOL_APPROVAL_STATUSES)}, or all`,
    },
    tool: { type: 'string', value: 'NAME', description: 'Only approvals of calls to this tool' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    noArguments(invocation);
    const status =
      values.status === 'all'
        ? undefined
        : choice('--status', values.status, TOOL_APPROVAL_STATUSES);
    const approvals: ToolApproval[] = [];
    for await (const approval of client(values).approvals.listAll({
      limit: 200,
      ...(status !== undefined ? { status } : {}),
      ...(values.tool !== undefined ? { tool: values.tool } : {}),
    })) {
      approvals.push(approval);
    }
    print(values.json, approvals, () => formatTable(APPROVAL_HEADER, approvals.map(approvalRow)));
    return 0;
  },
});

const get = command({
  name: 'get',
  args: 'ID',
  description:
    'Shows an approval: the tool, the policy, the caller, the exact arguments and their hash.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const approval = await client(values).approvals.get(oneArgument(invocation, 'approval id'));
    print(values.json, approval, () => describeApproval(approval));
    return 0;
  },
});

const approve = command({
  name: 'approve',
  args: 'ID',
  description:
    'Shows the call waiting for the approval (tool, caller, the exact arguments and their hash), asks, then approves those arguments by their hash: the call runs now, and its outcome and result are printed. Exit code 0 once approved, whatever the call’s outcome; 1 when not approved.',
  options: {
    reason: REASON,
    yes: { type: 'boolean', short: 'y', description: 'Does not ask' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const id = oneArgument(invocation, 'approval id');
    const api = client(values).approvals;
    const approval = await api.get(id);
    process.stderr.write(`${describeApproval(approval)}\n`);
    if (approval.status !== 'pending') {
      process.stderr.write(`error: approval ${id} is ${approval.status}, not pending\n`);
      return 1;
    }
    if (!values.yes && !(await confirm(`Run ${approval.tool} with these arguments?`))) {
      process.stderr.write('Not approved.\n');
      return 1;
    }
    const decision = await api.approve(id, approval.arguments_hash, values.reason);
    print(values.json, decision, () => decisionText('Approved', decision));
    return 0;
  },
});

const reject = command({
  name: 'reject',
  args: 'ID',
  description: 'Rejects the call waiting for the approval: it ends rejected, without running.',
  options: { reason: REASON },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const decision = await client(values).approvals.reject(
      oneArgument(invocation, 'approval id'),
      values.reason,
    );
    print(values.json, decision, () => decisionText('Rejected', decision));
    return 0;
  },
});

export const group = defineGroup({
  name: 'approvals',
  summary: 'Approve or reject tool calls that a policy makes wait for an operator',
  notes:
    'Needs an admin or operator credential. An approval is bound to the exact arguments: approve sends the hash of the arguments it showed, and the server refuses it if they differ. --json prints the API’s answer (the approval, or the decision with the call and its result).',
  subcommands: [list, get, approve, reject],
});
