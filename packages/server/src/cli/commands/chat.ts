import type { Orchestra, Task } from '@orchestra/sdk';
import { CLIENT_OPTIONS, client, print, readText, UsageError } from '../common.ts';
import { command, single } from '../spec.ts';

/** One message of the conversation the CLI keeps and sends as the task input. */
interface Message {
  role: 'user' | 'assistant';
  content: string;
}

/** A tool call's name and arguments, as the run journals it. */
interface ToolCallEvent {
  id: string;
  name: string;
  arguments: string;
}

/**
 * Runs one turn: submits the conversation as a task of the hosted agent and streams its
 * answer to standard output, its tool calls to standard error. Resolves to the ended task.
 */
async function turn(
  api: Orchestra,
  template: string,
  messages: Message[],
  sessionId: string | undefined,
  quiet: boolean,
): Promise<Task> {
  // In a session the session remembers (the template's memory policy): send only the new
  // message. Without one, the conversation so far is the input.
  const last = messages[messages.length - 1] as Message;
  const task = (await api.tasks.create({
    template,
    input: sessionId !== undefined ? { prompt: last.content } : { messages },
    ...(sessionId !== undefined ? { session_id: sessionId } : {}),
  })) as Task;
  let streamed = false;
  for await (const item of api.tasks.events(task.id)) {
    if (!('offset' in item)) continue;
    const data = item.data as { name?: string; data?: unknown } | null;
    if (item.type === 'task.output' && typeof data?.data === 'string') {
      if (!quiet) process.stdout.write(data.data);
      streamed = true;
    } else if (item.type === 'task.custom' && !quiet) {
      if (data?.name === 'llm.tool_call') {
        const call = data.data as ToolCallEvent;
        process.stderr.write(`\n[tool ${call.name} ${call.arguments}]\n`);
      } else if (data?.name === 'llm.tool_result') {
        const result = data.data as { name: string; status: string; is_error: boolean };
        process.stderr.write(
          `[tool ${result.name}: ${result.status}${result.is_error ? ', error' : ''}]\n`,
        );
      }
    }
  }
  const ended = await api.tasks.get(task.id);
  if (!quiet && ended.state === 'succeeded') {
    // A structured answer does not stream as text: it comes whole at the end.
    if (!streamed) process.stdout.write(answerOf(ended));
    process.stdout.write('\n');
  }
  return ended;
}

function answerOf(task: Task): string {
  return typeof task.result === 'string' ? task.result : JSON.stringify(task.result);
}

function failureText(task: Task): string {
  const error = task.error;
  return `the run ended ${task.state}${error ? `: ${error.code}: ${error.message}` : ''} (task ${task.id})`;
}

export const group = single({
  name: 'chat',
  summary: 'Talk to a hosted agent: its answer streams, its tool calls show as they run',
  command: command({
    name: 'chat',
    args: 'TEMPLATE',
    description: [
      'Sends a message to a hosted agent (a template of kind llm) and streams its answer to standard output; its tool calls and their outcome go to standard error as they run. Each turn is a task: with --session, in that session, whose memory (the template\'s memory policy) brings the conversation so far, and the message as its input ({"prompt": …}); without, the conversation so far as its input ({"messages": …}). With --message (or a pipe), one turn, then exit: 0 when the run succeeded, 1 when not. At a terminal without either, a conversation: type a message, Enter sends it, Ctrl-D ends. Examples:',
      '  orchestra chat assistant --message "Is the node up? Ask node_health."',
      '  echo "Summarise the open issues" | orchestra chat triage --session ses_0195…',
      '  orchestra chat assistant',
    ].join('\n'),
    options: {
      message: {
        type: 'string',
        value: 'TEXT',
        description: 'The message (one turn); without it, standard input is read',
      },
      session: {
        type: 'string',
        value: 'ID',
        description: 'Run the turns in this session (see "sessions create")',
      },
    },
    common: CLIENT_OPTIONS,
    async run(invocation) {
      const { values, positionals, path } = invocation;
      if (positionals.length !== 1) {
        throw new UsageError(`${path} takes one template name, got ${positionals.length}`);
      }
      const template = positionals[0] as string;
      const api = client(values);
      const sessionId = values.session;
      let message: string | undefined = values.message;
      if (message === undefined && !process.stdin.isTTY) {
        message = readText('-').text.replace(/\r?\n$/, '');
      }
      if (message !== undefined) {
        if (message.trim() === '') throw new UsageError('the message is empty');
        const task = await turn(
          api,
          template,
          [{ role: 'user', content: message }],
          sessionId,
          values.json,
        );
        if (values.json) print(true, task, () => '');
        if (task.state !== 'succeeded') {
          process.stderr.write(`error: ${failureText(task)}\n`);
          return 1;
        }
        return 0;
      }
      const { createInterface } = await import('node:readline/promises');
      const prompt = createInterface({ input: process.stdin, output: process.stderr });
      const messages: Message[] = [];
      process.stderr.write(`Talking to ${template}; Ctrl-D ends.\n`);
      try {
        for (;;) {
          let line: string;
          try {
            line = await prompt.question('> ');
          } catch {
            break; // the input ended
          }
          if (line.trim() === '') continue;
          messages.push({ role: 'user', content: line });
          const task = await turn(api, template, messages, sessionId, false);
          if (task.state === 'succeeded') {
            messages.push({ role: 'assistant', content: answerOf(task) });
          } else {
            messages.pop();
            process.stderr.write(`error: ${failureText(task)}\n`);
          }
        }
      } finally {
        prompt.close();
      }
      return 0;
    },
  }),
});
