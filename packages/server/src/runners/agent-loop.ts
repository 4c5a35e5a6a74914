import type {
  LlmLimits,
  LlmSpec,
  ModelRef,
  TaskWaitingForApproval,
  Tool,
  ToolInvocation,
  ToolResult,
} from '@orchestra/protocol';
import type {
  ChatMessage,
  ModelCallResult,
  ModelRequest,
  ModelTool,
  ModelToolCall,
} from '../providers/index.ts';
import { ModelCallError } from '../providers/index.ts';
import type { AssignedTask } from '../tasks/index.ts';
import type { RunHandle, RunOutcome } from './hosted-runner.ts';

// One run of a hosted agent: model call → tool calls (in parallel) → model → … until a final
// answer, a limit, a cancellation or a failure. Every completed model call and tool call is
// journaled in the task's stream (custom events `llm.model_call`, `llm.tool_call` when a call
// starts, `llm.tool_result`) before the next step starts; a run that resumes after a crash
// replays them instead of repeating them. A tool call that waits for an approval ends the
// attempt: the task waits in `awaiting_approval`, holding no runner, and a later attempt
// (on any node) takes the call's outcome from the approval.

export const DEFAULT_LIMITS = { max_turns: 10, max_tool_calls: 50 };

/** A run's limits, with the defaults filled in. */
type RunLimits = LlmLimits & { max_turns: number; max_tool_calls: number };
/** Earlier turns a `token_window` memory looks at, at most. */
const MEMORY_MAX_TURNS = 200;
const DEFAULT_MEMORY_TOKENS = 8000;
/** The `summary` memory: turns kept as they were, and the summary's length. */
const DEFAULT_SUMMARY_TURNS = 6;
const DEFAULT_SUMMARY_TOKENS = 1000;
/** Streamed text is journaled in pieces at most this far apart. */
const OUTPUT_FLUSH_MS = 100;
/** Most characters of one tool result the model is given. */
const TOOL_RESULT_MAX_CHARS = 100_000;

/** Names of the journal's events. */
export const JOURNAL = {
  modelCall: 'llm.model_call',
  toolCall: 'llm.tool_call',
  toolResult: 'llm.tool_result',
  /** The run asked the model again because its answer did not match the output schema. */
  outputRetry: 'llm.output_retry',
  /** A tool call waits for an operator's approval; the task waits with it (awaiting_approval). */
  approvalWait: 'llm.approval_wait',
  /** The run goes on after waiting for approvals; the wait does not count as wall time. */
  resumed: 'llm.resumed',
  /** The run's user message, as the model got it: what later tasks of a session remember. */
  user: 'llm.user',
  /** A summary of the session's turns up to task `through`, which the run got instead of them. */
  summary: 'llm.summary',
  /** The workspace of the task's instance was checkpointed after a turn's tool calls. */
  checkpoint: 'llm.checkpoint',
} as const;

/** A journal entry as stored: a custom event of the task's stream. */
export interface JournalEntry {
  name: string;
  data: Record<string, unknown>;
  time: string;
}

export interface ModelCallRecord {
  turn: number;
  provider: string;
  model: string;
  text: string;
  tool_calls: ModelToolCall[];
  finish: string;
  usage: { input_tokens: number; output_tokens: number; cached_input_tokens: number };
  cost_usd: number | null;
  duration_ms: number;
  attempts: ModelCallResult['attempts'];
}

export interface ToolResultRecord {
  turn: number;
  id: string;
  name: string;
  /** The call's record (`GET /v1/tool-calls/{id}`), when the executor made one. */
  call_id: string | null;
  status: string;
  is_error: boolean;
  content: string;
  duration_ms: number;
}

/** The parts of a hosted template a run needs. */
export interface HostedTemplate {
  llm: LlmSpec;
  /** The template's output schema, or null. */
  outputSchema: Record<string, unknown> | null;
  /** Checks an output against it: a problem, or undefined. Undefined: no schema. */
  checkOutput: ((value: unknown) => string | undefined) | undefined;
}

/** What the loop needs of other modules. */
export interface AgentLoopDeps {
  models: {
    call(
      tenantId: string,
      chain: readonly ModelRef[],
      request: Omit<ModelRequest, 'model'>,
      options: { signal?: AbortSignal; onText?: (delta: string) => void },
    ): Promise<ModelCallResult>;
    chainFor(
      tenantId: string,
      primary: ModelRef,
      fallbacks: readonly ModelRef[],
    ): Promise<ModelRef[]>;
  };
  /** The `llm` spec and output check of the task's template version. */
  template(tenantId: string, task: AssignedTask): Promise<HostedTemplate | undefined>;
  /** The tools of the tenant that match `patterns` and that the run may call. */
  tools(
    tenantId: string,
    agentId: string,
    task: AssignedTask,
    patterns: readonly string[],
  ): Promise<Tool[]>;
  invoke(
    tenantId: string,
    agentId: string,
    task: AssignedTask,
    name: string,
    args: Record<string, unknown>,
    options: { signal: AbortSignal; waitMs: number },
  ): Promise<ToolInvocation>;
  /**
   * The outcome of a call that awaited approval `approvalId` (approved and run, rejected,
   * expired); undefined while nobody decided. Waits while an approved call runs; rejects
   * when `signal` aborts.
   */
  approvalOutcome(
    tenantId: string,
    approvalId: string,
    signal: AbortSignal,
  ): Promise<ToolInvocation | undefined>;
  /**
   * Records a completed model call in the usage accounting, once: recording the same turn
   * of the task again changes nothing (a resumed run records its replayed turns again).
   */
  recordUsage(tenantId: string, task: AssignedTask, call: ModelCallRecord): Promise<void>;
  /**
   * The tenant's monthly quota that `tokens` more would pass (given its usage so far this
   * month), or undefined when none would.
   */
  quota(tenantId: string, tokens: number): Promise<QuotaReached | undefined>;
  /**
   * The tasks of session `sessionId` that succeeded before task `beforeId`, newest first, at
   * most `limit`.
   */
  sessionHistory(
    tenantId: string,
    sessionId: string,
    beforeId: string,
    limit: number,
  ): Promise<{ id: string; input: unknown; result: unknown }[]>;
  /** The journal entries of the task so far, every attempt, in order. */
  journal(tenantId: string, taskId: string): Promise<JournalEntry[]>;
  /**
   * Checkpoints the instance a task works in after turn `turn` (its tool calls done); does
   * nothing for a task without one, and never rejects (a checkpoint not taken is logged).
   */
  checkpoint(
    tenantId: string,
    task: AssignedTask,
    turn: number,
    signal: AbortSignal,
  ): Promise<string | undefined>;
}

/** A tenant's monthly quota that a run stopped at. */
export interface QuotaReached {
  limit: 'monthly_tokens' | 'monthly_cost_cents';
  value: number;
  used: number;
}

/** Tool calls of the run wait for approvals: the attempt ends, the task waits for them. */
class AwaitingApproval extends Error {
  readonly approvals: TaskWaitingForApproval['approvals'];
  constructor(approvals: TaskWaitingForApproval['approvals']) {
    super('the run waits for approvals');
    this.approvals = approvals;
  }
}

/** What a task that waits for `approvals` says it waits for. */
function waitingFor(approvals: TaskWaitingForApproval['approvals']): TaskWaitingForApproval {
  const one = approvals[0];
  return {
    reason: 'approval',
    message:
      approvals.length === 1 && one !== undefined
        ? `waits for approval ${one.id} of tool ${one.tool}`
        : `waits for ${approvals.length} approvals: ${approvals.map((a) => `${a.id} (${a.tool})`).join(', ')}`,
    approvals,
  };
}

class BudgetExceeded extends Error {
  readonly limit: keyof LlmLimits | QuotaReached['limit'];
  readonly value: number;
  readonly used: number;
  constructor(limit: BudgetExceeded['limit'], value: number, used: number) {
    super(
      limit.startsWith('monthly_')
        ? `the tenant's monthly quota ${limit} (${value}; used ${used}) is used up`
        : `the run reached its limit ${limit} (${value}; used ${used})`,
    );
    this.limit = limit;
    this.value = value;
    this.used = used;
  }
}

/** `{{input}}` and `{{input.a.b}}` in `text`, from the task input. */
export function renderPrompt(text: string, input: unknown): string {
  return text.replace(/\{\{\s*input((?:\.[A-Za-z0-9_-]+)*)\s*\}\}/g, (_all, path: string) => {
    let value: unknown = input;
    for (const key of path.split('.').slice(1)) {
      value =
        value !== null && typeof value === 'object' && !Array.isArray(value)
          ? (value as Record<string, unknown>)[key]
          : undefined;
    }
    if (value === undefined || value === null) return '';
    return typeof value === 'string' ? value : JSON.stringify(value);
  });
}

/**
 * A conversation given as the task input (`{"messages": […]}`, what the OpenAI-compatible
 * endpoint submits), in the run's form; undefined when the input is not one. Text only: a
 * `tool` message (the client's own tools) becomes text of a user message.
 */
export function inputConversation(input: unknown): ChatMessage[] | undefined {
  const messages = (input as { messages?: unknown } | null)?.messages;
  if (!Array.isArray(messages) || messages.length === 0) return undefined;
  const out: ChatMessage[] = [];
  for (const m of messages as { role?: unknown; content?: unknown; name?: unknown }[]) {
    const content = Array.isArray(m.content)
      ? (m.content as { text?: unknown }[])
          .map((p) => (typeof p.text === 'string' ? p.text : ''))
          .join('')
      : typeof m.content === 'string'
        ? m.content
        : '';
    switch (m.role) {
      case 'system':
      case 'developer':
        out.push({ role: 'system', content });
        break;
      case 'assistant':
        out.push({ role: 'assistant', content });
        break;
      case 'tool':
        out.push({
          role: 'user',
          content: `Tool result${typeof m.name === 'string' ? ` (${m.name})` : ''}: ${content}`,
        });
        break;
      default:
        out.push({ role: 'user', content });
    }
  }
  return out;
}

/** The user message of the run. */
function userMessage(llm: LlmSpec, input: unknown): string {
  if (llm.prompt !== undefined) return renderPrompt(llm.prompt, input);
  const prompt = (input as { prompt?: unknown } | null)?.prompt;
  return typeof prompt === 'string' ? prompt : JSON.stringify(input ?? null);
}

/** A tool's name as models accept it (`^[A-Za-z0-9_-]{1,64}$`), unique among the run's. */
function modelToolNames(tools: readonly Tool[]): Map<string, Tool> {
  const byName = new Map<string, Tool>();
  for (const tool of tools) {
    const base = tool.name.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 60);
    let name = base;
    for (let n = 2; byName.has(name); n++) name = `${base}_${n}`;
    byName.set(name, tool);
  }
  return byName;
}

/** A tool result as text for the model. */
function resultText(result: ToolResult | null, invocation: ToolInvocation): string {
  if (result === null) {
    const error = invocation.call.error;
    return `The call was not made: ${error?.message ?? invocation.call.status}`;
  }
  const parts = result.content.map((item) =>
    item.type === 'text' ? item.text : JSON.stringify(item),
  );
  if (parts.length === 0 && result.structured_content !== undefined) {
    parts.push(JSON.stringify(result.structured_content));
  }
  const text = parts.join('\n');
  return text.length > TOOL_RESULT_MAX_CHARS ? `${text.slice(0, TOOL_RESULT_MAX_CHARS)}…` : text;
}

function estimateTokens(messages: readonly ChatMessage[]): number {
  let chars = 0;
  for (const m of messages) {
    chars += m.content.length;
    if (m.role === 'assistant') for (const c of m.tool_calls ?? []) chars += c.arguments.length;
  }
  return Math.ceil(chars / 4);
}

function isRetrySafe(tool: Tool | undefined): boolean {
  return tool?.annotations.readOnlyHint === true || tool?.annotations.idempotentHint === true;
}

/** A tool call of a model answer, with the turn it belongs to (registry names). */
interface PlannedCall {
  id: string;
  name: string;
  arguments: string;
  turn: number;
}

/** What the journal says happened: the turns, their tool results, what they used. */
interface Replayed {
  turns: { call: ModelCallRecord; results: Map<string, ToolResultRecord> }[];
  /** Ids of tool calls journaled as started. */
  started: Set<string>;
  /** Tool calls (by id) journaled as waiting for an approval: the approval and call record. */
  approvals: Map<string, PendingApproval>;
  /** The user message journaled at the run's first step. */
  user: string | undefined;
  /** The session summary journaled at the run's first step. */
  summary: { content: string; through: string } | undefined;
  /** Messages the run added for the model besides its turns (a retry of a bad output). */
  retries: { afterTurn: number; message: string }[];
  startedAt: number | undefined;
  /** When the newest entry was journaled. */
  lastAt: number | undefined;
  /** Time spent waiting for approvals so far, which wall time does not count. */
  pausedMs: number;
}

/** A tool call waiting for an approval. */
interface PendingApproval {
  /** The approval's id. */
  id: string;
  tool: string;
  /** The call's record. */
  call_id: string;
}

function replay(entries: readonly JournalEntry[]): Replayed {
  const state: Replayed = {
    turns: [],
    started: new Set(),
    approvals: new Map(),
    user: undefined,
    summary: undefined,
    retries: [],
    startedAt: undefined,
    lastAt: undefined,
    pausedMs: 0,
  };
  for (const e of entries) {
    state.startedAt ??= Date.parse(e.time);
    state.lastAt = Date.parse(e.time);
    if (e.name === JOURNAL.modelCall) {
      const call = e.data as unknown as ModelCallRecord;
      // A turn journaled twice (its write was retried) counts once.
      if (call.turn !== state.turns.length + 1) continue;
      state.turns.push({ call, results: new Map() });
    } else if (e.name === JOURNAL.toolCall) {
      state.started.add(String(e.data.id));
    } else if (e.name === JOURNAL.toolResult) {
      const result = e.data as unknown as ToolResultRecord;
      state.turns[result.turn - 1]?.results.set(result.id, result);
    } else if (e.name === JOURNAL.user) {
      state.user ??= String(e.data.content ?? '');
    } else if (e.name === JOURNAL.summary) {
      state.summary ??= {
        content: String(e.data.content ?? ''),
        through: String(e.data.through ?? ''),
      };
    } else if (e.name === JOURNAL.approvalWait) {
      state.approvals.set(String(e.data.id), {
        id: String(e.data.approval_id),
        tool: String(e.data.name),
        call_id: String(e.data.call_id),
      });
    } else if (e.name === JOURNAL.resumed) {
      state.pausedMs += Number(e.data.waited_ms) || 0;
    } else if (e.name === JOURNAL.outputRetry) {
      state.retries.push({ afterTurn: state.turns.length, message: String(e.data.message ?? '') });
    }
  }
  return state;
}

/** One attempt of one hosted task. */
class HostedRun {
  readonly #deps: AgentLoopDeps;
  readonly #task: AssignedTask;
  readonly #run: RunHandle;
  readonly #llm: LlmSpec;
  readonly #checkOutput: ((value: unknown) => string | undefined) | undefined;
  readonly #outputSchema: Record<string, unknown> | null;
  readonly #limits: RunLimits;
  readonly #messages: ChatMessage[] = [];
  /** The run's tools by the name the model knows them by, and back. */
  #offered = new Map<string, Tool>();
  #modelName = new Map<string, string>();
  #modelTools: ModelTool[] = [];
  #chain: ModelRef[] = [];
  #turns = 0;
  #toolCalls = 0;
  #used = { input: 0, output: 0, cost: 0 };
  #outputRetried = false;
  #partial = '';
  #signal: AbortSignal;

  constructor(
    deps: AgentLoopDeps,
    task: AssignedTask,
    run: RunHandle,
    template: HostedTemplate,
    signal: AbortSignal,
  ) {
    this.#deps = deps;
    this.#task = task;
    this.#run = run;
    this.#llm = template.llm;
    this.#checkOutput = template.checkOutput;
    this.#outputSchema = template.outputSchema;
    this.#limits = { ...DEFAULT_LIMITS, ...template.llm.limits };
    this.#signal = signal;
  }

  get partialOutput(): string {
    return this.#partial;
  }

  get limits(): RunLimits {
    return this.#limits;
  }

  /** Resolves the chain and the tools, and the conversation so far from the journal. */
  async prepare(state: Replayed): Promise<void> {
    const { tenantId, agentId } = this.#run;
    this.#chain = await this.#deps.models.chainFor(
      tenantId,
      this.#llm.model,
      this.#llm.fallbacks ?? [],
    );
    const tools =
      this.#llm.tools && this.#llm.tools.length > 0
        ? await this.#deps.tools(tenantId, agentId, this.#task, this.#llm.tools)
        : [];
    this.#offered = modelToolNames(tools);
    this.#modelName = new Map([...this.#offered].map(([model, tool]) => [tool.name, model]));
    this.#modelTools = [...this.#offered].map(([name, tool]) => ({
      name,
      description: tool.description,
      parameters: tool.input_schema,
    }));
    if (this.#llm.system_prompt !== undefined && this.#llm.system_prompt !== '') {
      this.#messages.push({
        role: 'system',
        content: renderPrompt(this.#llm.system_prompt, this.#task.input),
      });
    }
    const conversation = inputConversation(this.#task.input);
    if (conversation !== undefined) {
      this.#messages.push(...conversation);
    } else {
      this.#messages.push(...(await this.#memory(state)));
      const content = userMessage(this.#llm, this.#task.input);
      if (state.user === undefined) {
        await this.#run.journal([{ type: 'custom', name: JOURNAL.user, data: { content } }]);
      }
      this.#messages.push({ role: 'user', content });
    }
    for (const [i, turn] of state.turns.entries()) {
      // Recorded again in case the last attempt ended between its journal and its usage.
      await this.#deps.recordUsage(tenantId, this.#task, turn.call);
      this.#addTurn(turn.call);
      for (const c of turn.call.tool_calls) {
        const result = turn.results.get(c.id);
        if (result !== undefined) this.#addResult(result);
      }
      for (const retry of state.retries.filter((r) => r.afterTurn === i + 1)) {
        this.#outputRetried = true;
        this.#messages.push({ role: 'user', content: retry.message });
      }
    }
  }

  /**
   * What the run remembers of its session: earlier tasks' turns (user message, tool calls
   * with their results, answer) that the memory policy keeps, oldest first.
   */
  async #memory(state: Replayed): Promise<ChatMessage[]> {
    const memory = this.#llm.memory ?? { strategy: 'last_turns' as const };
    const sessionId = this.#task.session_id;
    if (memory.strategy === 'none' || sessionId === null) return [];
    const { tenantId } = this.#run;
    if (memory.strategy === 'summary') return this.#summarised(state, sessionId, memory);
    const limit = memory.strategy === 'last_turns' ? (memory.turns ?? 20) : MEMORY_MAX_TURNS;
    let budget =
      memory.strategy === 'token_window'
        ? (memory.max_tokens ?? DEFAULT_MEMORY_TOKENS)
        : Number.POSITIVE_INFINITY;
    const history = await this.#deps.sessionHistory(tenantId, sessionId, this.#task.id, limit);
    const turns: ChatMessage[][] = [];
    for (const prior of history) {
      const messages = this.#priorTurn(prior, replay(await this.#deps.journal(tenantId, prior.id)));
      const cost = estimateTokens(messages);
      // A turn is kept whole or not at all: a tool call never without its result.
      if (cost > budget) break;
      budget -= cost;
      turns.push(messages);
    }
    return turns.reverse().flat();
  }

  /**
   * The `summary` memory: the last `turns` turns as they were, after a summary of everything
   * before them. The summary is journaled (`llm.summary`, with the last task it covers): a
   * resumed run reuses its own, and the next task of the session brings it up to date with
   * the turns that fell out of the window since, instead of summarising from the start.
   */
  async #summarised(
    state: Replayed,
    sessionId: string,
    memory: NonNullable<LlmSpec['memory']>,
  ): Promise<ChatMessage[]> {
    const { tenantId } = this.#run;
    const keep = memory.turns ?? DEFAULT_SUMMARY_TURNS;
    const history = await this.#deps.sessionHistory(
      tenantId,
      sessionId,
      this.#task.id,
      MEMORY_MAX_TURNS,
    );
    const journals = new Map<string, Replayed>();
    const journalOf = async (id: string) => {
      let journal = journals.get(id);
      if (journal === undefined) {
        journal = replay(await this.#deps.journal(tenantId, id));
        journals.set(id, journal);
      }
      return journal;
    };
    const recent: ChatMessage[][] = [];
    for (const prior of history.slice(0, keep)) {
      recent.push(this.#priorTurn(prior, await journalOf(prior.id)));
    }
    const older = history.slice(keep);
    let summary = state.summary;
    if (summary === undefined && older.length > 0) {
      // The newest summary an earlier task made, and the turns after what it covers.
      let previous: { content: string; through: string } | undefined;
      const uncovered: typeof older = [];
      for (const prior of history) {
        const made = (await journalOf(prior.id)).summary;
        if (made !== undefined) {
          previous = made;
          break;
        }
      }
      for (const prior of older) {
        if (previous !== undefined && prior.id <= previous.through) break;
        uncovered.push(prior);
      }
      const through = older[0]?.id ?? '';
      if (uncovered.length === 0 && previous !== undefined) {
        summary = { content: previous.content, through: previous.through };
      } else {
        const transcript: string[] = [];
        for (const prior of uncovered.reverse()) {
          for (const m of this.#priorTurn(prior, await journalOf(prior.id))) {
            const who = m.role === 'tool' ? `tool ${m.name}` : m.role;
            const calls =
              m.role === 'assistant' && m.tool_calls
                ? m.tool_calls.map((c) => ` [calls ${c.name} ${c.arguments}]`).join('')
                : '';
            transcript.push(`${who}: ${m.content}${calls}`);
          }
        }
        summary = {
          content: await this.#summarise(previous?.content, transcript.join('\n'), memory),
          through,
        };
      }
      await this.#run.journal([{ type: 'custom', name: JOURNAL.summary, data: summary }]);
    }
    const messages: ChatMessage[] = [];
    if (summary !== undefined && summary.content !== '') {
      messages.push({
        role: 'system',
        content: `A summary of the conversation before the last turns:\n${summary.content}`,
      });
    }
    return [...messages, ...recent.reverse().flat()];
  }

  /** Has a model summarise `transcript` (after `previous`, the summary so far). */
  async #summarise(
    previous: string | undefined,
    transcript: string,
    memory: NonNullable<LlmSpec['memory']>,
  ): Promise<string> {
    const { tenantId } = this.#run;
    const chain = memory.summary_model
      ? await this.#deps.models.chainFor(tenantId, memory.summary_model, [])
      : this.#chain;
    const answer = await this.#deps.models.call(
      tenantId,
      chain,
      {
        messages: [
          {
            role: 'system',
            content:
              'Summarise the conversation for whoever continues it: the facts, names, numbers, decisions, tool results that matter and open questions, concisely. Answer with the summary only.',
          },
          {
            role: 'user',
            content: `${previous ? `The summary so far:\n${previous}\n\n` : ''}The conversation since:\n${transcript}`,
          },
        ],
        max_tokens: memory.max_summary_tokens ?? DEFAULT_SUMMARY_TOKENS,
      },
      { signal: this.#signal },
    );
    // Counted like any model call of the run (turn 0: the summary).
    await this.#deps.recordUsage(tenantId, this.#task, {
      turn: 0,
      provider: answer.provider,
      model: answer.model,
      text: answer.text,
      tool_calls: [],
      finish: answer.finish,
      usage: answer.usage,
      cost_usd: answer.cost_usd,
      duration_ms: answer.duration_ms,
      attempts: answer.attempts,
    });
    return answer.text;
  }

  /** One earlier task of the session as messages. */
  #priorTurn(prior: { input: unknown; result: unknown }, journal: Replayed): ChatMessage[] {
    const given = inputConversation(prior.input);
    const user =
      journal.user ??
      (given !== undefined
        ? ([...given].reverse().find((m) => m.role === 'user')?.content ?? '')
        : userMessage(this.#llm, prior.input));
    const messages: ChatMessage[] = [{ role: 'user', content: user }];
    for (const turn of journal.turns) {
      const calls = turn.call.tool_calls;
      const complete = calls.every((c) => turn.results.has(c.id));
      if (calls.length > 0 && complete) {
        messages.push({
          role: 'assistant',
          content: turn.call.text,
          tool_calls: calls.map((c) => ({ ...c, name: this.#forModel(c.name) })),
        });
        for (const c of calls) {
          const r = turn.results.get(c.id) as ToolResultRecord;
          messages.push({
            role: 'tool',
            tool_call_id: c.id,
            name: this.#forModel(c.name),
            content: r.content,
            ...(r.is_error ? { is_error: true } : {}),
          });
        }
      } else if (calls.length === 0) {
        messages.push({ role: 'assistant', content: turn.call.text });
      }
    }
    const last = messages[messages.length - 1];
    if (last?.role !== 'assistant' || (last.tool_calls?.length ?? 0) > 0) {
      messages.push({
        role: 'assistant',
        content: typeof prior.result === 'string' ? prior.result : JSON.stringify(prior.result),
      });
    }
    return messages;
  }

  /** The tool names of a journaled call as the model knows them. */
  #forModel(name: string): string {
    return this.#modelName.get(name) ?? name.replace(/[^A-Za-z0-9_-]/g, '_');
  }

  #addTurn(call: ModelCallRecord): void {
    this.#turns = call.turn;
    this.#used.input += call.usage.input_tokens;
    this.#used.output += call.usage.output_tokens;
    this.#used.cost += call.cost_usd ?? 0;
    this.#toolCalls += call.tool_calls.length;
    this.#partial = call.text;
    this.#messages.push({
      role: 'assistant',
      content: call.text,
      ...(call.tool_calls.length > 0
        ? { tool_calls: call.tool_calls.map((c) => ({ ...c, name: this.#forModel(c.name) })) }
        : {}),
    });
  }

  #addResult(result: ToolResultRecord): void {
    this.#messages.push({
      role: 'tool',
      tool_call_id: result.id,
      name: this.#forModel(result.name),
      content: result.content,
      ...(result.is_error ? { is_error: true } : {}),
    });
  }

  /** Runs from where the journal left off to the end. */
  async run(state: Replayed): Promise<RunOutcome> {
    const last = state.turns[state.turns.length - 1];
    if (last !== undefined) {
      // Calls of the last turn without a result run now, or stop the run.
      const missing = last.call.tool_calls.filter((c) => !last.results.has(c.id));
      if (last.call.tool_calls.length === 0) {
        const done = await this.#finish(last.call.text);
        if (done !== undefined) return done;
      } else if (missing.length > 0) {
        // A call waiting for an approval did not run: the approval decides, on any node.
        const risky = missing.filter(
          (c) =>
            state.started.has(c.id) &&
            !state.approvals.has(c.id) &&
            !isRetrySafe(this.#toolNamed(c.name)),
        );
        if (risky.length > 0) {
          return {
            failure: {
              code: 'TOOL_CALL_INTERRUPTED',
              message: `the run stopped while ${risky.map((c) => `"${c.name}"`).join(', ')} ran; it is not marked idempotent or read-only, so it is not called again`,
              retryable: false,
              details: {
                tool_calls: risky.map((c) => ({ id: c.id, tool: c.name })),
                partial_output: this.#partial,
              },
            },
          };
        }
        await this.#callTools(
          missing.map((c) => ({ ...c, turn: last.call.turn })),
          state.approvals,
        );
        await this.#checkpoint(last.call.turn);
      }
    }
    for (;;) {
      this.#checkBefore();
      await this.#checkQuota(estimateTokens(this.#messages));
      const answer = await this.#modelCall();
      this.#checkAfter();
      await this.#checkQuota(0);
      if (answer.tool_calls.length === 0) {
        const done = await this.#finish(answer.text);
        if (done !== undefined) return done;
        continue;
      }
      await this.#callTools(answer.tool_calls.map((c) => ({ ...c, turn: this.#turns })));
      await this.#checkpoint(this.#turns);
    }
  }

  /**
   * After a turn's tool calls, for a task that works in an instance: a checkpoint a user can
   * go back to, named in the journal. (A turn without tool calls changes no file.)
   */
  async #checkpoint(turn: number): Promise<void> {
    if (this.#task.instance_id === null) return;
    const id = await this.#deps.checkpoint(this.#run.tenantId, this.#task, turn, this.#signal);
    // A run cancelled while its checkpoint was taken ends here, as after any step.
    this.#signal.throwIfAborted();
    if (id === undefined) return;
    await this.#run.journal([
      { type: 'custom', name: JOURNAL.checkpoint, data: { checkpoint_id: id, turn } },
    ]);
  }

  #toolNamed(name: string): Tool | undefined {
    const modelName = this.#modelName.get(name);
    return modelName === undefined ? undefined : this.#offered.get(modelName);
  }

  #checkBefore(): void {
    const limits = this.#limits;
    if (this.#turns >= limits.max_turns) {
      throw new BudgetExceeded('max_turns', limits.max_turns, this.#turns);
    }
    if (limits.max_input_tokens !== undefined) {
      const next = this.#used.input + estimateTokens(this.#messages);
      if (next > limits.max_input_tokens) {
        throw new BudgetExceeded('max_input_tokens', limits.max_input_tokens, next);
      }
    }
    this.#checkAfter();
  }

  #checkAfter(): void {
    const limits = this.#limits;
    if (limits.max_input_tokens !== undefined && this.#used.input > limits.max_input_tokens) {
      throw new BudgetExceeded('max_input_tokens', limits.max_input_tokens, this.#used.input);
    }
    if (limits.max_output_tokens !== undefined && this.#used.output > limits.max_output_tokens) {
      throw new BudgetExceeded('max_output_tokens', limits.max_output_tokens, this.#used.output);
    }
    if (limits.max_cost_usd !== undefined && this.#used.cost > limits.max_cost_usd) {
      throw new BudgetExceeded('max_cost_usd', limits.max_cost_usd, this.#used.cost);
    }
  }

  /** Checked with an estimate before a call, and with what was used after it. */
  async #checkQuota(tokens: number): Promise<void> {
    const reached = await this.#deps.quota(this.#run.tenantId, tokens);
    if (reached !== undefined) throw new BudgetExceeded(reached.limit, reached.value, reached.used);
  }

  /** The answer as the task's output; undefined after asking the model once to fix it. */
  async #finish(text: string): Promise<RunOutcome | undefined> {
    if (this.#checkOutput === undefined) return { output: text };
    let output: unknown;
    let problem: string | undefined;
    try {
      output = JSON.parse(text);
      problem = this.#checkOutput(output);
    } catch {
      problem = 'the answer is not JSON';
    }
    if (problem === undefined) return { output };
    if (this.#outputRetried) {
      return {
        failure: {
          code: 'OUTPUT_INVALID',
          message: `the answer does not match the template's output schema: ${problem}`,
          retryable: false,
          details: { partial_output: text },
        },
      };
    }
    this.#outputRetried = true;
    const message = `Your answer does not match the required JSON schema: ${problem}. Answer again with JSON only.`;
    await this.#run.journal([{ type: 'custom', name: JOURNAL.outputRetry, data: { message } }]);
    this.#messages.push({ role: 'user', content: message });
    return undefined;
  }

  async #modelCall(): Promise<{ text: string; tool_calls: ModelToolCall[] }> {
    let buffered = '';
    let timer: NodeJS.Timeout | undefined;
    let writes = Promise.resolve();
    const flush = () => {
      timer = undefined;
      if (buffered === '') return;
      const data = buffered;
      buffered = '';
      writes = writes.then(() => this.#run.journal([{ type: 'output', data }]));
    };
    const llm = this.#llm;
    let answer: ModelCallResult;
    try {
      answer = await this.#deps.models.call(
        this.#run.tenantId,
        this.#chain,
        {
          messages: this.#messages,
          ...(this.#modelTools.length > 0 ? { tools: this.#modelTools } : {}),
          ...(llm.temperature !== undefined ? { temperature: llm.temperature } : {}),
          ...(llm.top_p !== undefined ? { top_p: llm.top_p } : {}),
          ...(llm.max_tokens !== undefined ? { max_tokens: llm.max_tokens } : {}),
          ...(this.#outputSchema !== null
            ? { response_schema: { name: 'output', schema: this.#outputSchema } }
            : {}),
        },
        {
          signal: this.#signal,
          onText: (delta) => {
            buffered += delta;
            timer ??= setTimeout(flush, OUTPUT_FLUSH_MS);
          },
        },
      );
    } finally {
      if (timer !== undefined) clearTimeout(timer);
      flush();
      await writes;
    }
    const record: ModelCallRecord = {
      turn: this.#turns + 1,
      provider: answer.provider,
      model: answer.model,
      text: answer.text,
      // The registry's names, for whoever reads the journal; the model's are derived again.
      tool_calls: answer.tool_calls.map((c) => ({
        ...c,
        name: this.#offered.get(c.name)?.name ?? c.name,
      })),
      finish: answer.finish,
      usage: answer.usage,
      cost_usd: answer.cost_usd,
      duration_ms: answer.duration_ms,
      attempts: answer.attempts,
    };
    // Journaled before anything acts on it: a crash from here on replays this answer.
    await this.#run.journal([{ type: 'custom', name: JOURNAL.modelCall, data: record }]);
    await this.#deps.recordUsage(this.#run.tenantId, this.#task, record);
    this.#addTurn(record);
    return record;
  }

  /**
   * Runs tool calls in parallel, each journaled when it starts and when it ends. `approvals`:
   * calls of an earlier attempt that wait for an approval (their approval's id): the run
   * waits for its outcome instead of calling again.
   */
  async #callTools(
    calls: PlannedCall[],
    approvals = new Map<string, PendingApproval>(),
  ): Promise<void> {
    if (this.#toolCalls > this.#limits.max_tool_calls) {
      throw new BudgetExceeded('max_tool_calls', this.#limits.max_tool_calls, this.#toolCalls);
    }
    const fresh = calls.filter((c) => !approvals.has(c.id));
    if (fresh.length > 0) {
      await this.#run.journal(
        fresh.map((c) => ({
          type: 'custom',
          name: JOURNAL.toolCall,
          data: { turn: c.turn, id: c.id, name: c.name, arguments: c.arguments },
        })),
      );
    }
    const results = await Promise.all(calls.map((c) => this.#callTool(c, approvals.get(c.id))));
    // The others' results are journaled; the run goes on once the approvals are decided.
    const pending = results.filter((r): r is PendingApproval => !('content' in r));
    if (pending.length > 0) throw new AwaitingApproval(pending);
    // The assistant message of these calls is the last one: the results follow it, in order.
    for (const r of results) if ('content' in r) this.#addResult(r);
  }

  /** Makes one call and journals its result; or, while it waits for approval, says so. */
  async #callTool(
    c: PlannedCall,
    pendingApproval: PendingApproval | undefined,
  ): Promise<ToolResultRecord | PendingApproval> {
    const started = Date.now();
    const record = (callId: string | null, status: string, isError: boolean, content: string) => ({
      turn: c.turn,
      id: c.id,
      name: c.name,
      call_id: callId,
      status,
      is_error: isError,
      content,
      duration_ms: Date.now() - started,
    });
    let result: ToolResultRecord | undefined;
    const args = parseArguments(c.arguments);
    if (pendingApproval !== undefined) {
      // The approval decides, whether or not the tool is still offered.
      let invocation: ToolInvocation | undefined;
      try {
        invocation = await this.#deps.approvalOutcome(
          this.#run.tenantId,
          pendingApproval.id,
          this.#signal,
        );
      } catch (err) {
        if (this.#signal.aborted) throw err;
        const message = err instanceof Error ? err.message : String(err);
        invocation = undefined;
        result = record(
          pendingApproval.call_id,
          'refused',
          true,
          `The call was not made: ${message}`,
        );
      }
      if (invocation !== undefined) {
        result = record(
          invocation.call.id,
          invocation.call.status,
          invocation.result === null || invocation.result.is_error,
          resultText(invocation.result, invocation),
        );
      } else if (result === undefined) {
        return pendingApproval;
      }
    } else if (this.#toolNamed(c.name) === undefined) {
      result = record(null, 'refused', true, `There is no tool named "${c.name}" in this run.`);
    } else if (args === undefined) {
      result = record(
        null,
        'refused',
        true,
        'The arguments were not a JSON object; call the tool again with a JSON object.',
      );
    } else {
      try {
        const { tenantId } = this.#run;
        const invocation = await this.#deps.invoke(
          tenantId,
          this.#run.agentId,
          this.#task,
          c.name,
          args,
          { signal: this.#signal, waitMs: 0 },
        );
        const approvalId = invocation.call.approval_id;
        if (
          invocation.result === null &&
          invocation.call.status === 'awaiting_approval' &&
          approvalId !== null
        ) {
          // Journaled before the task waits: from here on, the approval decides, not a new call.
          await this.#run.journal([
            {
              type: 'custom',
              name: JOURNAL.approvalWait,
              data: {
                turn: c.turn,
                id: c.id,
                name: c.name,
                call_id: invocation.call.id,
                approval_id: approvalId,
              },
            },
          ]);
          return { id: approvalId, tool: c.name, call_id: invocation.call.id };
        }
        result = record(
          invocation.call.id,
          invocation.call.status,
          invocation.result === null || invocation.result.is_error,
          resultText(invocation.result, invocation),
        );
      } catch (err) {
        if (this.#signal.aborted) throw err;
        // A refused call (a policy, the arguments, a limit): the model is told why, and goes on.
        const message = err instanceof Error ? err.message : String(err);
        const details = (err as { details?: { call?: { id?: unknown } } }).details;
        const callId = typeof details?.call?.id === 'string' ? details.call.id : null;
        result = record(callId, 'refused', true, `The call was refused: ${message}`);
      }
    }
    await this.#run.journal([{ type: 'custom', name: JOURNAL.toolResult, data: result }]);
    return result;
  }
}

/** The approvals the journal's last turn still waits for (calls without a result). */
function waitingApprovals(state: Replayed): PendingApproval[] {
  const last = state.turns[state.turns.length - 1];
  if (last === undefined) return [];
  return last.call.tool_calls.flatMap((c) => {
    const pending = last.results.has(c.id) ? undefined : state.approvals.get(c.id);
    return pending === undefined ? [] : [pending];
  });
}

function parseArguments(text: string): Record<string, unknown> | undefined {
  try {
    const parsed: unknown = JSON.parse(text === '' ? '{}' : text);
    if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) {
      return parsed as Record<string, unknown>;
    }
  } catch {
    // Not JSON: the model is told.
  }
  return undefined;
}

/**
 * Runs one attempt of a hosted task: resumes from the journal, then loops to an answer.
 * Resolves to the task's output or failure; rejects only when the run was aborted (the
 * runner reports that) or the task was lost.
 */
export async function runHostedAgent(
  deps: AgentLoopDeps,
  task: AssignedTask,
  run: RunHandle,
): Promise<RunOutcome> {
  const template = await deps.template(run.tenantId, task);
  if (template === undefined) {
    return {
      failure: {
        code: 'TEMPLATE_NOT_HOSTED',
        message: 'the task’s template version is not a hosted (llm) template, or no longer exists',
        retryable: false,
      },
    };
  }
  const state = replay(await deps.journal(run.tenantId, task.id));
  const limits = { ...DEFAULT_LIMITS, ...template.llm.limits };
  const waits = waitingApprovals(state);
  if (waits.length > 0 && state.lastAt !== undefined) {
    // Back after waiting for approvals: the time since the last step was a wait.
    const waited = Math.max(0, Date.now() - state.lastAt);
    await run.journal([
      {
        type: 'custom',
        name: JOURNAL.resumed,
        data: { approvals: waits.map((a) => a.id), waited_ms: waited },
      },
    ]);
    state.pausedMs += waited;
  }
  // The wall-time limit counts from the run's first journaled step, across restarts, less
  // the waits for approvals.
  const startedAt = state.startedAt ?? Date.now();
  const elapsed = () => Date.now() - startedAt - state.pausedMs;
  const wall = new AbortController();
  let wallTimer: NodeJS.Timeout | undefined;
  if (limits.max_wall_time_ms !== undefined) {
    const left = limits.max_wall_time_ms - elapsed();
    wallTimer = setTimeout(() => wall.abort(), Math.max(0, left));
  }
  const hosted = new HostedRun(
    deps,
    task,
    run,
    template,
    AbortSignal.any([run.signal, wall.signal]),
  );
  const budget = (err: BudgetExceeded): RunOutcome => ({
    failure: {
      code: 'BUDGET_EXCEEDED',
      message: err.message,
      retryable: false,
      details: {
        limit: err.limit,
        value: err.value,
        used: err.used,
        partial_output: hosted.partialOutput,
      },
    },
  });
  try {
    await hosted.prepare(state);
    return await hosted.run(state);
  } catch (err) {
    if (wall.signal.aborted && !run.signal.aborted) {
      return budget(
        new BudgetExceeded('max_wall_time_ms', limits.max_wall_time_ms ?? 0, elapsed()),
      );
    }
    if (err instanceof AwaitingApproval) return { suspend: waitingFor(err.approvals) };
    if (err instanceof BudgetExceeded) return budget(err);
    if (err instanceof ModelCallError && err.kind !== 'cancelled') {
      const transient = !['refused', 'not_configured'].includes(err.kind);
      return {
        failure: {
          code: 'MODEL_CALL_FAILED',
          message: err.message,
          retryable: transient,
          details: {
            kind: err.kind,
            provider: err.provider,
            model: err.model,
            status: err.status,
            partial_output: hosted.partialOutput,
          },
        },
      };
    }
    throw err;
  } finally {
    if (wallTimer !== undefined) clearTimeout(wallTimer);
  }
}
