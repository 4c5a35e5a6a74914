import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { errorResponses, UsageQuery, UsageReport } from '@orchestra/protocol';
import Type from 'typebox';
import { READ_ROLES } from '../platform/auth.ts';
import { principalOf } from '../platform/http.ts';
import type { UsageService } from './usage-service.ts';

/** `/v1/usage`: what the tenant's hosted agents used. */
export const usageRoutes: FastifyPluginAsyncTypebox<{ usage: UsageService }> = async (
  app,
  { usage },
) => {
  app.addSchema(UsageReport);

  app.get(
    '/v1/usage',
    {
      schema: {
        tags: ['usage'],
        operationId: 'getUsage',
        summary: 'Tokens, cost, model and tool calls of hosted agents, grouped, over a time range',
        description:
          'One row per group (`group_by`, default `day`), from the completed model calls of hosted runs (each counted once, however often its run resumed). Times are UTC. `format=csv` answers `text/csv`.',
        querystring: Type.Object(UsageQuery, { additionalProperties: false }),
        response: {
          200: Type.Union([
            Type.Ref('UsageReport'),
            Type.String({
              description: 'With `format=csv`: the rows as CSV, a header line first.',
            }),
          ]),
          ...errorResponses,
        },
      },
      config: { auth: READ_ROLES },
    },
    async (request, reply) => {
      const report = await usage.report(principalOf(request), request.query);
      if (request.query.format !== 'csv') return report;
      reply.header('content-type', 'text/csv; charset=utf-8');
      reply.header(
        'content-disposition',
        `attachment; filename="usage-${report.group_by}-${report.from.slice(0, 10)}.csv"`,
      );
      return usage.csv(report);
    },
  );
};
