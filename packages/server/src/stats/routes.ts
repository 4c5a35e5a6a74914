import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { errorResponses, MAX_STATS_MINUTES, Stats } from '@orchestra/protocol';
import Type from 'typebox';
import { READ_ROLES } from '../platform/auth.ts';
import { principalOf } from '../platform/http.ts';
import { LATENCY_SAMPLES_PER_MINUTE, type StatsService } from './stats-service.ts';

/** `GET /v1/stats`: the tenant's agents and tasks at a glance (the console's overview). */
export const statsRoutes: FastifyPluginAsyncTypebox<{ stats: StatsService }> = async (
  app,
  { stats },
) => {
  app.addSchema(Stats);

  app.get(
    '/v1/stats',
    {
      schema: {
        tags: ['tasks'],
        operationId: 'getStats',
        summary: 'Agents and tasks at a glance',
        description: `For the caller's tenant: agents by status, with their task slots and the tasks they hold; tasks queued, assigned and running now; and, over the last \`minutes\` (1 to ${MAX_STATS_MINUTES}, default 15, whole minutes ending with the current one), the tasks submitted and finished per minute and their latency. \`latency_ms\` is from submission to success, \`queue_wait_ms\` from submission to the start of the last attempt, both of the tasks that succeeded in the window, from at most ${LATENCY_SAMPLES_PER_MINUTE.toLocaleString('en')} tasks per minute (the latest of each). With \`template\` (id or name of an existing template; 404 TEMPLATE_NOT_FOUND otherwise), task figures count only that template's tasks; agent figures are unchanged. Latency and queue wait run from the task's submission, or from its last retry asked for by hand (\`POST /v1/tasks/{id}/retry\`); the automatic retries of failed attempts are part of one submission.`,
        querystring: Type.Object(
          {
            minutes: Type.Optional(
              Type.Integer({ minimum: 1, maximum: MAX_STATS_MINUTES, default: 15 }),
            ),
            template: Type.Optional(
              Type.String({ minLength: 1, maxLength: 120, description: 'Template id or name.' }),
            ),
          },
          { additionalProperties: false },
        ),
        response: { 200: Type.Ref('Stats'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) =>
      stats.stats(principalOf(request), {
        minutes: request.query.minutes ?? 15,
        template: request.query.template,
      }),
  );
};
