import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ConfigEnvironment, errorResponses } from '@orchestra/protocol';
import Type from 'typebox';
import { principalOf } from '../platform/http.ts';
import {
  DEFAULT_PAGE_LIMIT,
  decodeCursor,
  encodeCursor,
  Page,
  PageQuery,
} from '../platform/pagination.ts';
import type { ConfigService } from './config-service.ts';
import { ENV_PATTERN } from './keys.ts';
import { CONFIG_READ_ROLES } from './routes.ts';

const ENV = new RegExp(ENV_PATTERN);

/**
 * `/v1/config-environments`: which environments hold keys. Not under `/v1/config/`, where
 * every path names a key.
 */
export const configEnvironmentRoutes: FastifyPluginAsyncTypebox<{ config: ConfigService }> = async (
  app,
  { config },
) => {
  app.get(
    '/v1/config-environments',
    {
      schema: {
        tags: ['config'],
        operationId: 'listConfigEnvironments',
        summary: 'List the environments that hold keys',
        description:
          'Each environment with at least one key, and how many keys it holds now. An environment exists only through its keys: one whose last key is deleted is no longer listed. Environments come in the byte order of `<env>/` (so `prod-eu` comes before `prod`), at most `limit` (1 to 200, default 50) per page; `next_cursor` continues the list.',
        querystring: Type.Object({ ...PageQuery }, { additionalProperties: false }),
        response: { 200: Page(ConfigEnvironment), ...errorResponses },
      },
      config: { auth: CONFIG_READ_ROLES },
    },
    async (request) => {
      const limit = request.query.limit ?? DEFAULT_PAGE_LIMIT;
      const after = decodeCursor(request.query.cursor, (env) => ENV.test(env));
      const page = await config.environments(principalOf(request).tenant.id, {
        limit,
        ...(after !== undefined ? { after } : {}),
      });
      const last = page.items[page.items.length - 1];
      return { items: page.items, next_cursor: page.more && last ? encodeCursor(last.env) : null };
    },
  );
};
