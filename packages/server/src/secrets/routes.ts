import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  errorResponses,
  ListSecretsQuery,
  PutSecret,
  Secret,
  SecretRef,
} from '@orchestra/protocol';
import Type from 'typebox';
import { READ_ROLES, WRITE_ROLES } from '../platform/auth.ts';
import { principalOf } from '../platform/http.ts';
import { Page, PageQuery, responseBudget } from '../platform/pagination.ts';
import type { SecretService } from './secret-service.ts';

const WRITE_ONLY =
  'Secrets are write-only: no route returns a value, only names, versions and timestamps.';

/** `/v1/secrets`: named secrets of the tenant, encrypted at rest, write-only. */
export const secretRoutes: FastifyPluginAsyncTypebox<{ secrets: SecretService }> = async (
  app,
  { secrets },
) => {
  app.addSchema(Secret);

  app.put(
    '/v1/secrets/:name',
    {
      schema: {
        tags: ['secrets'],
        operationId: 'putSecret',
        summary: 'Create a secret (version 1) or replace its value (next version)',
        description: `Only the current value is kept. ${WRITE_ONLY}`,
        params: SecretRef,
        body: PutSecret,
        response: { 200: Type.Ref('Secret'), 201: Type.Ref('Secret'), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      const { secret, created } = await secrets.put(
        principalOf(request),
        request.params.name,
        request.body,
      );
      reply.status(created ? 201 : 200);
      return secret;
    },
  );

  app.get(
    '/v1/secrets',
    {
      schema: {
        tags: ['secrets'],
        operationId: 'listSecrets',
        summary: 'List the secrets of the tenant (names and versions, never values)',
        querystring: Type.Object(
          { ...PageQuery, ...ListSecretsQuery },
          { additionalProperties: false },
        ),
        response: { 200: Page(Type.Ref('Secret')), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) =>
      secrets.list(principalOf(request), {
        ...request.query,
        maxBytes: responseBudget(request),
      }),
  );

  app.get(
    '/v1/secrets/:name',
    {
      schema: {
        tags: ['secrets'],
        operationId: 'getSecret',
        summary: 'Get a secret’s metadata (never its value)',
        description: WRITE_ONLY,
        params: SecretRef,
        response: { 200: Type.Ref('Secret'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => secrets.get(principalOf(request), request.params.name),
  );

  app.delete(
    '/v1/secrets/:name',
    {
      schema: {
        tags: ['secrets'],
        operationId: 'deleteSecret',
        summary: 'Delete a secret',
        params: SecretRef,
        response: { 204: Type.Null(), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      await secrets.delete(principalOf(request), request.params.name);
      reply.status(204);
      return null;
    },
  );
};
