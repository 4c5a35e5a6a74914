import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fastifyStatic from '@fastify/static';
import { consoleAssetsDir, consoleBuilt } from '@orchestra/console';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

/** Paths that belong to the API and tools: never answered with the console's page. */
const NOT_CONSOLE = /^\/(v1|docs|openapi\.json|metrics|healthz|readyz|assets|share)(\/|$)/;

/**
 * The console uses only the public API; the page may talk to this origin and nothing else,
 * and may not be framed (clickjacking). Style elements need the page's nonce: the
 * terminal (xterm.js) makes `<style>` elements, which the console's own script stamps
 * with it (main.tsx), while a `<style>` smuggled into the page as markup has none.
 */
const policy = (nonce: string) =>
  `default-src 'self'; script-src 'self'; style-src 'self' 'nonce-${nonce}'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'`;

const PAGE_HEADERS = {
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

const NOT_BUILT_PAGE = `<!doctype html><meta charset="utf-8"><title>Orchestra</title>
<h1>The console is not built</h1>
<p>Orchestra is running; its API is at <a href="/docs">/docs</a>. To build the web console, run
<code>npm run build:console</code> (<code>npm install</code> and <code>npm start</code> do it) and
restart the server.</p>`;

/**
 * The web console (packages/console, built by Vite): its hashed assets, cached for good,
 * and its page for `/` and for any other path a browser navigates to (see `consolePage`),
 * so that the console's own routes (`/tasks/…`) survive a reload.
 */
export function webConsole(): {
  routes: (app: FastifyInstance) => Promise<void>;
  /** For the not-found handler: sends the page to a browser navigation; false otherwise. */
  page: (request: FastifyRequest, reply: FastifyReply) => boolean;
} {
  const built = consoleBuilt();
  // Read once: the page is small, and a rebuild needs a restart anyway (new asset names).
  const html = built ? readFileSync(join(consoleAssetsDir, 'index.html'), 'utf8') : NOT_BUILT_PAGE;
  const send = (reply: FastifyReply) => {
    // A new nonce for every page: one an attacker saw in an old page is of no use.
    const nonce = randomBytes(16).toString('base64');
    reply
      .headers({ ...PAGE_HEADERS, 'content-security-policy': policy(nonce) })
      .type('text/html; charset=utf-8');
    if (!built) return reply.status(503).send(html);
    const page = html.replace('<head>', `<head>\n    <meta name="csp-nonce" content="${nonce}" />`);
    return reply.header('cache-control', 'no-cache').send(page);
  };
  return {
    async routes(app) {
      if (built) {
        await app.register(fastifyStatic, {
          root: consoleAssetsDir,
          wildcard: false,
          index: false,
          decorateReply: false,
          // The page is sent by `send`, with its headers; the files here are its assets.
          allowedPath: (path) => path !== '/index.html' && !path.startsWith('/.'),
          setHeaders(reply, path) {
            if (path.startsWith(join(consoleAssetsDir, 'assets'))) {
              reply.header('cache-control', 'public, max-age=31536000, immutable');
            }
            reply.header('x-content-type-options', 'nosniff');
          },
        });
      }
      app.get('/', { schema: { hide: true } }, (_request, reply) => send(reply));
    },
    page(request, reply) {
      if (request.method !== 'GET' && request.method !== 'HEAD') return false;
      if (request.headers.accept?.includes('text/html') !== true) return false;
      const path = request.url.split('?')[0] ?? '';
      if (NOT_CONSOLE.test(path)) return false;
      void send(reply);
      return true;
    },
  };
}
