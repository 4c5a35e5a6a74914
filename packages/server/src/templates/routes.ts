import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  CreateTemplate,
  errorResponses,
  LabelSelectors,
  MAX_VERSION,
  parseLabelSelectors,
  Rollback,
  Template,
  TemplateRef,
  TemplateVersionSummary,
  UpdateTemplate,
} from '@orchestra/protocol';
import type { FastifyReply } from 'fastify';
import Type from 'typebox';
import { READ_ROLES, WRITE_ROLES } from '../platform/auth.ts';
import { ifMatchVersion, principalOf } from '../platform/http.ts';
import { Page, PageQuery, responseBudget } from '../platform/pagination.ts';
import type { TemplateService } from './template-service.ts';

/** The ETag of a template response names the version `latest` pointed to when it was read. */
function withEtag(reply: FastifyReply, template: Template): Template {
  reply.header('etag', `"${template.latest_version}"`);
  return template;
}

/** `/v1/templates`: versioned agent templates. */
export const templateRoutes: FastifyPluginAsyncTypebox<{ templates: TemplateService }> = async (
  app,
  { templates },
) => {
  app.addSchema(Template);

  app.post(
    '/v1/templates',
    {
      schema: {
        tags: ['templates'],
        operationId: 'createTemplate',
        summary: 'Create a template (version 1)',
        body: CreateTemplate,
        response: { 201: Type.Ref('Template'), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      reply.status(201);
      return withEtag(reply, await templates.create(principalOf(request), request.body));
    },
  );

  app.get(
    '/v1/templates',
    {
      schema: {
        tags: ['templates'],
        operationId: 'listTemplates',
        summary: 'List templates, at the version `latest` points to',
        querystring: Type.Object(
          {
            ...PageQuery,
            name_prefix: Type.Optional(Type.String({ maxLength: 100 })),
            label: Type.Optional(LabelSelectors),
          },
          { additionalProperties: false },
        ),
        response: { 200: Page(Type.Ref('Template')), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => {
      const { label, ...rest } = request.query;
      return templates.list(principalOf(request), {
        ...rest,
        labels: parseLabelSelectors(label),
        maxBytes: responseBudget(request),
      });
    },
  );

  app.get(
    '/v1/templates/:template',
    {
      schema: {
        tags: ['templates'],
        operationId: 'getTemplate',
        summary: 'Get a template at the version `latest` points to',
        params: TemplateRef,
        response: { 200: Type.Ref('Template'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request, reply) =>
      withEtag(reply, await templates.get(principalOf(request), request.params.template)),
  );

  app.put(
    '/v1/templates/:template',
    {
      schema: {
        tags: ['templates'],
        operationId: 'updateTemplate',
        summary: 'Replace the definition: creates a new version and points `latest` at it',
        description:
          'Send `If-Match` with the ETag of the version you edited to refuse (412) the update if someone else changed the template in between.',
        params: TemplateRef,
        headers: Type.Object({ 'if-match': Type.Optional(Type.String({ maxLength: 64 })) }),
        body: UpdateTemplate,
        response: { 200: Type.Ref('Template'), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      const ifMatch = ifMatchVersion(request.headers['if-match']);
      return withEtag(
        reply,
        await templates.update(
          principalOf(request),
          request.params.template,
          request.body,
          ifMatch,
        ),
      );
    },
  );

  app.delete(
    '/v1/templates/:template',
    {
      schema: {
        tags: ['templates'],
        operationId: 'deleteTemplate',
        summary: 'Delete a template and all its versions',
        params: TemplateRef,
        response: { 204: Type.Null(), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      await templates.delete(principalOf(request), request.params.template);
      reply.status(204);
      return null;
    },
  );

  app.get(
    '/v1/templates/:template/versions',
    {
      schema: {
        tags: ['templates'],
        operationId: 'listTemplateVersions',
        summary: 'List the versions of a template, newest first',
        params: TemplateRef,
        querystring: Type.Object(PageQuery, { additionalProperties: false }),
        response: { 200: Page(TemplateVersionSummary), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) =>
      templates.versions(principalOf(request), request.params.template, {
        ...request.query,
        maxBytes: responseBudget(request),
      }),
  );

  app.get(
    '/v1/templates/:template/versions/:version',
    {
      schema: {
        tags: ['templates'],
        operationId: 'getTemplateVersion',
        summary: 'Get a template at one version',
        params: Type.Object({
          ...TemplateRef.properties,
          version: Type.Integer({ minimum: 1, maximum: MAX_VERSION }),
        }),
        response: { 200: Type.Ref('Template'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) =>
      templates.get(principalOf(request), request.params.template, request.params.version),
  );

  app.post(
    '/v1/templates/:template/rollback',
    {
      schema: {
        tags: ['templates'],
        operationId: 'rollbackTemplate',
        summary: 'Point `latest` at an earlier version',
        description:
          'Creates no version. Tasks that do not pin a version use this one from now on; the next update still gets a new, higher number.',
        params: TemplateRef,
        body: Rollback,
        response: { 200: Type.Ref('Template'), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) =>
      withEtag(
        reply,
        await templates.rollback(
          principalOf(request),
          request.params.template,
          request.body.version,
        ),
      ),
  );
};
