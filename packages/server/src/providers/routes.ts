import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  CreateModelProvider,
  errorResponses,
  ListModelProvidersQuery,
  ModelProvider,
  ModelProviderRef,
  ModelProviderTest,
  TestModelProvider,
  UpdateModelProvider,
} from '@orchestra/protocol';
import Type from 'typebox';
import { ADMIN_ROLES, READ_ROLES, WRITE_ROLES } from '../platform/auth.ts';
import { principalOf } from '../platform/http.ts';
import { Page, PageQuery, responseBudget } from '../platform/pagination.ts';
import type { ModelService } from './model-service.ts';
import type { ModelProviderRecords } from './provider-records.ts';

const KEY_NOTE =
  'The API key is a secret’s name (`api_key_secret`), read at each request; extra header values are never returned.';

/** `/v1/model-providers`: the model APIs hosted agents call. */
export const providerRoutes: FastifyPluginAsyncTypebox<{
  records: ModelProviderRecords;
  models: ModelService;
}> = async (app, { records, models }) => {
  app.addSchema(ModelProvider);
  app.addSchema(ModelProviderTest);
  const provider = { params: ModelProviderRef };

  app.post(
    '/v1/model-providers',
    {
      schema: {
        tags: ['providers'],
        operationId: 'createModelProvider',
        summary: 'Register a model provider',
        description: `${KEY_NOTE} \`POST /v1/model-providers/{provider}/test\` checks that it answers.`,
        body: CreateModelProvider,
        response: { 201: Type.Ref('ModelProvider'), ...errorResponses },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request, reply) => {
      reply.status(201);
      return records.view(await records.create(principalOf(request), request.body));
    },
  );

  app.get(
    '/v1/model-providers',
    {
      schema: {
        tags: ['providers'],
        operationId: 'listModelProviders',
        summary: 'List the model providers of the tenant',
        querystring: Type.Object(
          { ...PageQuery, ...ListModelProvidersQuery },
          { additionalProperties: false },
        ),
        response: { 200: Page(Type.Ref('ModelProvider')), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) =>
      records.list(principalOf(request), { ...request.query, maxBytes: responseBudget(request) }),
  );

  app.get(
    '/v1/model-providers/:provider',
    {
      schema: {
        tags: ['providers'],
        operationId: 'getModelProvider',
        summary: 'Get a model provider',
        description: KEY_NOTE,
        ...provider,
        response: { 200: Type.Ref('ModelProvider'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) =>
      records.view(await records.find(principalOf(request).tenant.id, request.params.provider)),
  );

  app.put(
    '/v1/model-providers/:provider',
    {
      schema: {
        tags: ['providers'],
        operationId: 'updateModelProvider',
        summary: 'Replace a model provider’s settings',
        description:
          'Fields left out take their defaults; the name stays. Calls already sent finish with the old settings.',
        ...provider,
        body: UpdateModelProvider,
        response: { 200: Type.Ref('ModelProvider'), ...errorResponses },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request) =>
      records.view(
        await records.update(principalOf(request), request.params.provider, request.body),
      ),
  );

  app.delete(
    '/v1/model-providers/:provider',
    {
      schema: {
        tags: ['providers'],
        operationId: 'deleteModelProvider',
        summary: 'Remove a model provider',
        description:
          'Refused with 409 MODEL_PROVIDER_IN_USE while another provider falls back to it.',
        ...provider,
        response: { 204: Type.Null(), ...errorResponses },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request, reply) => {
      await records.delete(principalOf(request), request.params.provider);
      reply.status(204);
      return null;
    },
  );

  app.post(
    '/v1/model-providers/:provider/test',
    {
      schema: {
        tags: ['providers'],
        operationId: 'testModelProvider',
        summary: 'Check that a provider answers: list its models, and optionally prompt one',
        description:
          'Answers 200 whether the provider works or not: `ok` and `error` say. No retries, 30 s at most. A prompted model’s tokens are not counted as usage of any template.',
        ...provider,
        body: TestModelProvider,
        response: { 200: Type.Ref('ModelProviderTest'), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
      // The body is optional: none means {}.
      preValidation: async (request) => {
        request.body ??= {};
      },
    },
    async (request) => models.test(principalOf(request), request.params.provider, request.body),
  );
};
