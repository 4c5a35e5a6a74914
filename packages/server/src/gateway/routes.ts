import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  ApiKey,
  ApiKeyWithSecret,
  CreateApiKey,
  CreatedTenant,
  CreateTenant,
  errorResponses,
  Tenant,
  TenantId,
  UpdateTenant,
  WhoAmI,
} from '@orchestra/protocol';
import Type from 'typebox';
import { ADMIN_ROLES, ROLES, Role } from '../platform/auth.ts';
import { principalOf } from '../platform/http.ts';
import { Page, PageQuery, responseBudget } from '../platform/pagination.ts';
import type { IdentityService } from './identity-service.ts';

/** `/v1/whoami`, `/v1/api-keys` and `/v1/tenants`. */
export const gatewayRoutes: FastifyPluginAsyncTypebox<{ identity: IdentityService }> = async (
  app,
  { identity },
) => {
  app.addSchema(Tenant);
  app.addSchema(ApiKey);
  app.addSchema(ApiKeyWithSecret);

  app.get(
    '/v1/whoami',
    {
      schema: {
        tags: ['identity'],
        operationId: 'whoami',
        summary: 'Who the credential belongs to',
        response: { 200: WhoAmI, ...errorResponses },
      },
      config: { auth: ROLES },
    },
    async (request) => {
      const p = principalOf(request);
      return {
        tenant: p.tenant,
        role: p.role,
        credential:
          p.type === 'api_key'
            ? {
                type: 'api_key' as const,
                id: p.keyId,
                name: p.keyName,
                prefix: p.prefix,
                expires_at: p.expiresAt,
              }
            : {
                type: 'jwt' as const,
                subject: p.subject,
                issuer: p.issuer,
                expires_at: p.expiresAt,
              },
      };
    },
  );

  app.post(
    '/v1/api-keys',
    {
      schema: {
        tags: ['api-keys'],
        operationId: 'createApiKey',
        summary: 'Create an API key in the caller’s tenant',
        description: 'The response holds the secret; it is never shown again.',
        body: CreateApiKey,
        response: { 201: Type.Ref('ApiKeyWithSecret'), ...errorResponses },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request, reply) => {
      const key = await identity.createApiKey(principalOf(request), request.body);
      reply.status(201);
      return key;
    },
  );

  app.get(
    '/v1/api-keys',
    {
      schema: {
        tags: ['api-keys'],
        operationId: 'listApiKeys',
        summary: 'List the API keys of the caller’s tenant',
        querystring: Type.Object(
          {
            ...PageQuery,
            role: Type.Optional(Role),
            include_revoked: Type.Optional(
              Type.Boolean({ default: false, description: 'Include revoked keys.' }),
            ),
          },
          { additionalProperties: false },
        ),
        response: { 200: Page(Type.Ref('ApiKey')), ...errorResponses },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request) =>
      identity.listApiKeys(principalOf(request), {
        ...request.query,
        maxBytes: responseBudget(request),
      }),
  );

  const KeyParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 100 }) });

  app.get(
    '/v1/api-keys/:id',
    {
      schema: {
        tags: ['api-keys'],
        operationId: 'getApiKey',
        summary: 'Get one API key',
        params: KeyParams,
        response: { 200: Type.Ref('ApiKey'), ...errorResponses },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request) => identity.getApiKey(principalOf(request), request.params.id),
  );

  app.delete(
    '/v1/api-keys/:id',
    {
      schema: {
        tags: ['api-keys'],
        operationId: 'revokeApiKey',
        summary: 'Revoke an API key',
        description:
          'The key stops working at once on the node that revoked it, and on other nodes within ORCHESTRA_AUTH_CACHE_TTL_MS (5 s by default). Revoking a revoked key is a no-op. The last active admin key of a tenant cannot be revoked (409).',
        params: KeyParams,
        response: { 200: Type.Ref('ApiKey'), ...errorResponses },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request) => identity.revokeApiKey(principalOf(request), request.params.id),
  );

  app.post(
    '/v1/tenants',
    {
      schema: {
        tags: ['tenants'],
        operationId: 'createTenant',
        summary: 'Create a tenant and its first admin key',
        description:
          'Only admins of the system tenant may create tenants. The response holds the new tenant’s admin key secret; it is never shown again.',
        body: CreateTenant,
        response: { 201: CreatedTenant, ...errorResponses },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request, reply) => {
      const created = await identity.createTenant(principalOf(request), request.body);
      reply.status(201);
      return created;
    },
  );

  app.get(
    '/v1/tenants',
    {
      schema: {
        tags: ['tenants'],
        operationId: 'listTenants',
        summary: 'List tenants',
        description: 'System admins see every tenant; other admins see their own.',
        querystring: Type.Object(PageQuery, { additionalProperties: false }),
        response: { 200: Page(Type.Ref('Tenant')), ...errorResponses },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request) =>
      identity.listTenants(principalOf(request), {
        ...request.query,
        maxBytes: responseBudget(request),
      }),
  );

  app.get(
    '/v1/tenants/:id',
    {
      schema: {
        tags: ['tenants'],
        operationId: 'getTenant',
        summary: 'Get one tenant',
        params: Type.Object({ id: TenantId }),
        response: { 200: Type.Ref('Tenant'), ...errorResponses },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request) => identity.getTenant(principalOf(request), request.params.id),
  );

  app.patch(
    '/v1/tenants/:id',
    {
      schema: {
        tags: ['tenants'],
        operationId: 'updateTenant',
        summary: 'Rename a tenant or change its limits',
        description:
          "Only admins of the system tenant may change a tenant (others get 403 for their own tenant, 404 for any other). A limit set here overrides the node's setting for this tenant only; `null` removes the override. Limits not named keep their value. The change applies at once on the node that made it, and on other nodes within ORCHESTRA_AUTH_CACHE_TTL_MS (5 s by default). Lowering a count limit below what the tenant holds deletes nothing: only new ones are refused.",
        params: Type.Object({ id: TenantId }),
        body: UpdateTenant,
        response: { 200: Type.Ref('Tenant'), ...errorResponses },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request) => identity.updateTenant(principalOf(request), request.params.id, request.body),
  );
};
