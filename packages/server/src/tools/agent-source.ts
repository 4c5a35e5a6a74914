import type { AgentToolSource, Task, Tool, ToolCall, ToolResult } from '@orchestra/protocol';
import { isTerminalState } from '@orchestra/protocol';
import type { Principal } from '../platform/auth.ts';
import type { TaskService } from '../tasks/index.ts';
import { ToolFailure } from './tool-error.ts';

/**
 * What the executor needs of the tasks module: submit, wait and cancel (agent tools), and
 * whether the task a call was made for has ended (approvals).
 */
export type AgentTaskRunner = Pick<
  TaskService,
  'create' | 'waitForEnd' | 'cancel' | 'stateOf' | 'instanceOf'
>;

/** A task's output as a tool result: an MCP-shaped `{ content }` passes through as it is. */
function resultOf(task: Task): ToolResult {
  const output = task.result as Record<string, unknown> | null | undefined;
  if (output !== null && typeof output === 'object' && Array.isArray(output.content)) {
    return {
      content: output.content as ToolResult['content'],
      ...(output.structured_content !== undefined
        ? { structured_content: output.structured_content }
        : {}),
      is_error: output.is_error === true,
    };
  }
  const result: ToolResult = {
    content: [{ type: 'text', text: JSON.stringify(output ?? null) }],
    is_error: false,
  };
  if (output !== null && typeof output === 'object' && !Array.isArray(output)) {
    result.structured_content = output;
  }
  return result;
}

/**
 * Calls an agent tool: submits a task (the arguments as its input, the call's id as its
 * idempotency key, one attempt per call attempt) and waits for it to end within the
 * tool's timeout. The task goes through the pool like any other, so leases, cancellation
 * and failover apply. A task that fails is a tool-level error with its reason; one that
 * does not end in time is cancelled, and the call times out.
 */
export async function callAgentTool(options: {
  tasks: AgentTaskRunner;
  principal: Principal;
  tool: Tool;
  source: AgentToolSource;
  args: Record<string, unknown>;
  call: ToolCall;
  signal: AbortSignal;
}): Promise<ToolResult> {
  const { tasks, principal, tool, source, call, signal } = options;
  const { task } = await tasks.create(principal, {
    ...(source.template !== undefined ? { template: source.template } : {}),
    ...(source.capabilities !== undefined ? { capabilities: source.capabilities } : {}),
    input: options.args,
    labels: { 'orchestra/tool': tool.name },
    idempotency_key: `${call.id}:${call.attempts}`,
    max_attempts: 1,
    timeout_ms: Math.max(1000, tool.timeout_ms),
    ...(call.caller.session_id !== null ? { session_id: call.caller.session_id } : {}),
  });
  const ended = await tasks.waitForEnd(principal, task.id, tool.timeout_ms, signal);
  if (!isTerminalState(ended.state)) {
    await tasks.cancel(principal, task.id).catch(() => {});
    if (signal.aborted) throw signal.reason;
    throw new ToolFailure(
      'timeout',
      `No agent finished task ${task.id} within ${tool.timeout_ms} ms`,
      {
        retryable: false,
      },
    );
  }
  if (ended.state === 'succeeded') return resultOf(ended);
  return {
    content: [
      {
        type: 'text',
        text: `Task ${task.id} ${ended.state}${ended.error ? `: ${ended.error.message}` : ''}`,
      },
    ],
    is_error: true,
  };
}
