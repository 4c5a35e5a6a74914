import type {
  AgentTool,
  ServerAgentFramePayload,
  Task,
  Tool,
  ToolCall,
  ToolInvocation,
} from '@orchestra/protocol';
import type { Logger } from 'pino';
import type { Principal } from '../platform/auth.ts';
import { ApiError } from '../platform/errors.ts';
import type { AgentDeclaredTool, ListToolsOptions, ToolCallerContext } from '../tools/index.ts';
import type { FrameOf, MessageType } from './protocol.ts';

/**
 * What the agent protocol's tool frames need of other modules, and no more: the tools
 * module's catalogue, executor and call record, and a task's and a session's view through
 * the tasks and sessions modules. `module.ts` fills it in from their interfaces.
 */
export interface AgentToolAccess {
  list(
    tenantId: string,
    options: ListToolsOptions,
  ): Promise<{ items: Tool[]; next_cursor: string | null }>;
  invoke(
    caller: ToolCallerContext,
    ref: string,
    args: Record<string, unknown>,
    options: { signal: AbortSignal; waitMs: number | undefined },
  ): Promise<ToolInvocation>;
  /**
   * What the tenant's policies let `caller` call, read once: whether it may call a tool at
   * all (its arguments aside).
   */
  mayCall(caller: ToolCallerContext): Promise<(tool: Tool) => boolean>;
  /** A call's record; rejects when there is none. */
  call(tenantId: string, id: string): Promise<ToolCall>;
  /** The task as the tasks module shows it; rejects with TASK_NOT_FOUND when there is none. */
  task(principal: Principal, id: string): Promise<Task>;
  /** A session's labels; rejects with SESSION_NOT_FOUND when there is none. */
  sessionLabels(tenantId: string, id: string): Promise<Record<string, string>>;
  /**
   * Registers the tools an agent declared (the `register` frame's `tools`) as agent tools
   * served by `tool:<name>`; resolves to the names it had to skip (taken by another source).
   */
  declare(
    tenantId: string,
    agentId: string,
    tools: readonly AgentDeclaredTool[],
  ): Promise<{ held: string[]; skipped: string[] }>;
}

/** Sends a tool frame to the agent, answering the frame `correlationId` names. */
export type SendToolFrame = <K extends 'tool.result' | 'tool.list.result'>(
  type: MessageType,
  payload: ServerAgentFramePayload<K>,
  correlationId: string,
) => void;

/** Most bytes of tools one `tool.list.result` carries; `next_cursor` pages on. */
const LIST_MAX_BYTES = 512 * 1024;

/** A tool as an agent sees it: how to call it, not where its calls go. */
function agentTool(tool: Tool): AgentTool {
  return {
    name: tool.name,
    version: tool.version,
    description: tool.description,
    input_schema: tool.input_schema,
    output_schema: tool.output_schema,
    annotations: tool.annotations,
    destructive: tool.destructive,
    labels: tool.labels,
    timeout_ms: tool.timeout_ms,
  };
}

/**
 * One agent connection's tool calls (`tool.list`, `tool.call`; docs/protocol.md). Calls run
 * beside the connection's frame loop, never in it: a slow tool, or one waiting for an
 * approval, holds up no frame about a task. At most `maxInFlight` run at once; one more is
 * answered at once with AGENT_TOOL_CALLS_LIMITED and not made. Closing the connection aborts
 * the calls in flight at their source.
 */
export class AgentToolCalls {
  readonly #access: AgentToolAccess;
  readonly #principal: Principal;
  readonly #maxInFlight: number;
  readonly #log: Logger;
  readonly #send: SendToolFrame;
  /** The calls in flight, with the task each is made for. */
  readonly #inFlight = new Set<{ controller: AbortController; taskId: string | undefined }>();
  #closed = false;

  constructor(options: {
    access: AgentToolAccess;
    principal: Principal;
    maxInFlight: number;
    log: Logger;
    send: SendToolFrame;
  }) {
    this.#access = options.access;
    this.#principal = options.principal;
    this.#maxInFlight = options.maxInFlight;
    this.#log = options.log;
    this.#send = options.send;
  }

  /** Calls in flight now. */
  get inFlight(): number {
    return this.#inFlight.size;
  }

  /**
   * Answers `tool.list` with the active tools that match its filters and that the policies
   * let the caller (the agent, for the task it names) call at all, a page at a time: a page
   * may hold fewer tools than `limit`, even none, and still have a `next_cursor`.
   */
  async list(frame: FrameOf<'tool.list'>, agentId: string): Promise<void> {
    const { task_id, q, name_prefix, labels, limit, cursor } = frame.payload;
    const caller = await this.#caller(agentId, task_id);
    const [page, mayCall] = await Promise.all([
      this.#access.list(this.#principal.tenant.id, {
        q,
        name_prefix,
        limit,
        cursor,
        state: 'active',
        // The workspace tools, for a task that works in an instance.
        workspace: caller.instanceId !== undefined,
        ...(labels === undefined ? {} : { labels }),
        maxBytes: LIST_MAX_BYTES,
      }),
      this.#access.mayCall(caller),
    ]);
    this.#send(
      'RESPONSE',
      {
        kind: 'tool.list.result',
        tools: page.items.filter(mayCall).map(agentTool),
        next_cursor: page.next_cursor,
      },
      frame.header.id,
    );
  }

  /**
   * Starts the call of a `tool.call` frame and returns at once; its `tool.result` follows
   * when it ends (never rejects: every failure becomes that frame's `error`).
   */
  call(frame: FrameOf<'tool.call'>, agentId: string): void {
    const { request_id, task_id } = frame.payload;
    if (this.#closed) return;
    if (this.#inFlight.size >= this.#maxInFlight) {
      this.#answerRefused(
        frame,
        new ApiError(
          'AGENT_TOOL_CALLS_LIMITED',
          `This connection has ${this.#maxInFlight} tool calls in flight, as many as it may (ORCHESTRA_AGENT_MAX_TOOL_CALLS); send the call again once one has been answered`,
          { details: { request_id, limit: this.#maxInFlight } },
        ),
        undefined,
      );
      return;
    }
    const entry = { controller: new AbortController(), taskId: task_id };
    this.#inFlight.add(entry);
    void this.#run(frame, agentId, entry.controller.signal).finally(() =>
      this.#inFlight.delete(entry),
    );
  }

  /** Aborts the calls made for a task that is no longer the agent's. */
  abortTask(taskId: string): void {
    for (const entry of this.#inFlight) {
      if (entry.taskId === taskId) entry.controller.abort(new Error('the task ended'));
    }
  }

  /** The connection closed: aborts every call in flight; later frames start none. */
  close(): void {
    this.#closed = true;
    for (const entry of this.#inFlight) {
      entry.controller.abort(new Error('the agent disconnected'));
    }
  }

  async #run(frame: FrameOf<'tool.call'>, agentId: string, signal: AbortSignal): Promise<void> {
    const { request_id, task_id, name, arguments: args, wait_ms } = frame.payload;
    let invocation: ToolInvocation;
    try {
      const caller = await this.#caller(agentId, task_id);
      invocation = await this.#access.invoke(caller, name, args, { signal, waitMs: wait_ms });
    } catch (err) {
      // Aborted by the disconnect: nobody is left to answer.
      if (this.#closed) return;
      let error: ApiError;
      if (err instanceof ApiError) error = err;
      else {
        this.#log.error({ err, tool: name }, 'agent tool call failed');
        error = new ApiError('INTERNAL_ERROR', 'The tool call could not be processed');
      }
      const callId = error.details?.call_id;
      const call =
        typeof callId === 'string'
          ? await this.#access.call(this.#principal.tenant.id, callId).catch(() => undefined)
          : undefined;
      this.#answerRefused(frame, error, call);
      return;
    }
    if (this.#closed) return;
    this.#send(
      'RESPONSE',
      { kind: 'tool.result', request_id, call: invocation.call, result: invocation.result },
      frame.header.id,
    );
  }

  /**
   * Who makes the call, for policies and the record: the agent's credential and id and,
   * for a task it holds, the task, its session, its template's name and the session's
   * labels. A task it does not hold (any more) refuses the call.
   */
  async #caller(agentId: string, taskId: string | undefined): Promise<ToolCallerContext> {
    const caller: ToolCallerContext = { principal: this.#principal, agentId };
    if (taskId === undefined) return caller;
    const notHeld = () =>
      new ApiError(
        'TASK_NOT_ASSIGNED',
        `Task "${taskId}" is not this agent's; a tool call can name only a task the agent holds`,
        { details: { task_id: taskId } },
      );
    let task: Task;
    try {
      task = await this.#access.task(this.#principal, taskId);
    } catch (err) {
      if (err instanceof ApiError && err.code === 'TASK_NOT_FOUND') throw notHeld();
      throw err;
    }
    // The store says who holds the task (decision 0004), not this connection's memory.
    if (task.agent_id !== agentId || (task.state !== 'assigned' && task.state !== 'running')) {
      throw notHeld();
    }
    caller.taskId = task.id;
    caller.template = task.template?.name;
    if (task.instance_id !== null) caller.instanceId = task.instance_id;
    if (task.session_id !== null) {
      caller.sessionId = task.session_id;
      try {
        caller.sessionLabels = await this.#access.sessionLabels(
          this.#principal.tenant.id,
          task.session_id,
        );
      } catch (err) {
        // Deleting a session deletes its tasks (decision 0011): the task is gone with it.
        if (err instanceof ApiError && err.code === 'SESSION_NOT_FOUND') throw notHeld();
        throw err;
      }
    }
    return caller;
  }

  #answerRefused(frame: FrameOf<'tool.call'>, error: ApiError, call: ToolCall | undefined): void {
    if (this.#closed) return;
    this.#send(
      'RESPONSE',
      {
        kind: 'tool.result',
        request_id: frame.payload.request_id,
        ...(call === undefined ? {} : { call }),
        error: {
          code: error.code,
          message: error.message,
          ...(error.details === undefined ? {} : { details: error.details }),
        },
      },
      frame.header.id,
    );
  }
}
