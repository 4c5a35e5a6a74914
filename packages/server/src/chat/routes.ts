import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ChatCompletion, CreateChatCompletion, errorResponses } from '@orchestra/protocol';
import Type from 'typebox';
import { sendStream } from '../events/index.ts';
import { WRITE_ROLES } from '../platform/auth.ts';
import { principalOf } from '../platform/http.ts';
import { answerText, type ChatItem, type ChatService } from './chat-service.ts';

/** `POST /v1/chat/completions`: OpenAI's Chat Completions API, answered by a hosted agent. */
export const chatRoutes: FastifyPluginAsyncTypebox<{
  chat: ChatService;
  shutdown: AbortSignal;
}> = async (app, { chat, shutdown }) => {
  app.addSchema(ChatCompletion);

  app.post(
    '/v1/chat/completions',
    {
      schema: {
        tags: ['chat'],
        operationId: 'createChatCompletion',
        summary: 'Ask a hosted agent, as OpenAI’s Chat Completions API asks a model',
        description:
          'Any OpenAI client can use a hosted agent (a template of kind `llm`) by its name as `model`, with its tools, limits and audit. The call is a task like any other (`id` is its id, also in `X-Orchestra-Task-Id`): visible, cancellable, in a session when `metadata.session_id` is given. With `stream: true` the answer streams as `chat.completion.chunk` server-sent events, ending with `data: [DONE]`; a run that fails sends `{"error": …}` and ends. Without, the answer comes when the task ends; a task that does not succeed answers 502 `AGENT_RUN_FAILED` with the task’s error.',
        body: CreateChatCompletion,
        response: {
          200: Type.Union([
            Type.Ref('ChatCompletion'),
            Type.String({
              description:
                'With `stream: true`: `text/event-stream` of `chat.completion.chunk` objects, then `[DONE]`.',
            }),
          ]),
          ...errorResponses,
        },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      const principal = principalOf(request);
      const task = await chat.submit(principal, request.body);
      reply.header('x-orchestra-task-id', task.id);
      const model = request.body.model;
      const created = Math.floor(Date.parse(task.created_at) / 1000);
      if (request.body.stream !== true) {
        const controller = new AbortController();
        const onClose = () => {
          if (!reply.raw.writableEnded) controller.abort();
        };
        request.raw.once('close', onClose);
        try {
          for await (const item of chat.follow(
            principal,
            task,
            AbortSignal.any([controller.signal, shutdown]),
          )) {
            if (item.kind !== 'end') continue;
            if (item.task.state !== 'succeeded') throw chat.failure(item.task);
            return {
              id: task.id,
              object: 'chat.completion' as const,
              created,
              model,
              choices: [
                {
                  index: 0,
                  message: {
                    role: 'assistant' as const,
                    content: answerText(item.task.result),
                    refusal: null,
                  },
                  finish_reason: 'stop' as const,
                  logprobs: null,
                },
              ],
              usage: item.usage,
            };
          }
        } finally {
          request.raw.off('close', onClose);
        }
        // The client went away or the server is stopping: nobody reads this.
        throw new Error('the chat completion ended before its task');
      }
      const includeUsage = request.body.stream_options?.include_usage === true;
      const chunk = (delta: Record<string, unknown>, finish: string | null, extra = {}) =>
        `data: ${JSON.stringify({
          id: task.id,
          object: 'chat.completion.chunk',
          created,
          model,
          choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
          ...extra,
        })}\n\n`;
      async function* chunks(signal: AbortSignal): AsyncIterable<string> {
        yield chunk({ role: 'assistant', content: '' }, null);
        let streamed = '';
        for await (const item of chat.follow(principal, task, signal) as AsyncIterable<ChatItem>) {
          if (item.kind === 'delta') {
            streamed += item.text;
            yield chunk({ content: item.text }, null);
            continue;
          }
          if (item.task.state !== 'succeeded') {
            const error = chat.failure(item.task);
            yield `data: ${JSON.stringify({ error: { message: error.message, type: 'agent_run_failed', code: error.code, param: null, details: error.details } })}\n\n`;
            return;
          }
          // A structured answer streams nothing as text: it comes whole at the end.
          const answer = answerText(item.task.result);
          if (streamed === '' && answer !== '') yield chunk({ content: answer }, null);
          yield chunk({}, 'stop');
          if (includeUsage) {
            yield `data: ${JSON.stringify({ id: task.id, object: 'chat.completion.chunk', created, model, choices: [], usage: item.usage })}\n\n`;
          }
          yield 'data: [DONE]\n\n';
        }
      }
      await sendStream(request, reply, chunks, {
        format: 'sse',
        stop: shutdown,
        encode: (text: string) => text,
        endEvent: false,
      });
      return reply;
    },
  );
};
