import type { ContentItem, HttpToolSource, ToolResult } from '@orchestra/protocol';
import { ToolFailure } from './tool-error.ts';

/** Expands `${secret:NAME}` references of a tenant; see the secrets module. */
export type SecretExpander = (
  tenantId: string,
  text: string,
) => Promise<{ text: string; values: string[] }>;

const SECRET_REFERENCE = /\$\{secret:[A-Za-z_][A-Za-z0-9_]*\}/;

/** Whether a text refers to a secret. */
export function refersToSecret(text: string): boolean {
  return SECRET_REFERENCE.test(text);
}

async function readCapped(response: Response, maxBytes: number): Promise<Buffer> {
  const declared = Number(response.headers.get('content-length') ?? Number.NaN);
  if (declared > maxBytes) {
    await response.body?.cancel();
    throw new ToolFailure(
      'too_large',
      `The response (${declared} bytes) is larger than ${maxBytes} bytes`,
      {
        retryable: false,
      },
    );
  }
  const chunks: Buffer[] = [];
  let size = 0;
  if (response.body === null) return Buffer.alloc(0);
  for await (const chunk of response.body) {
    size += (chunk as Uint8Array).byteLength;
    if (size > maxBytes) {
      await response.body.cancel().catch(() => {});
      throw new ToolFailure('too_large', `The response is larger than ${maxBytes} bytes`, {
        retryable: false,
      });
    }
    chunks.push(Buffer.from(chunk as Uint8Array));
  }
  return Buffer.concat(chunks);
}

/** The part of a JSON value a JSON Pointer names, or undefined. */
function atPointer(value: unknown, pointer: string): unknown {
  if (pointer === '') return value;
  let at: unknown = value;
  for (const raw of pointer.slice(1).split('/')) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (at === null || typeof at !== 'object') return undefined;
    at = (at as Record<string, unknown>)[key];
  }
  return at;
}

/**
 * Calls an HTTP tool: fills the URL template from the arguments, sends the rest as a JSON
 * body or a query string, with its headers (secrets expanded), and maps the response to a
 * result in MCP's content format. A non-2xx answer is a tool-level error (`is_error`);
 * a network failure, timeout or oversized answer is a `ToolFailure`. `secretValues`
 * collects what was expanded, for the caller to redact.
 */
export async function callHttpTool(options: {
  tenantId: string;
  source: HttpToolSource;
  args: Record<string, unknown>;
  signal: AbortSignal;
  maxResultBytes: number;
  expand: SecretExpander;
  secretValues: string[];
}): Promise<ToolResult> {
  const { source, signal } = options;
  const rest: Record<string, unknown> = { ...options.args };
  let urlText = source.url.replace(/\{([A-Za-z0-9_.-]+)\}/g, (_, name: string) => {
    const value = rest[name];
    delete rest[name];
    return encodeURIComponent(
      value === undefined || value === null
        ? ''
        : typeof value === 'string'
          ? value
          : JSON.stringify(value),
    );
  });
  const expand = async (text: string): Promise<string> => {
    if (!refersToSecret(text)) return text;
    const expanded = await options.expand(options.tenantId, text);
    options.secretValues.push(...expanded.values);
    return expanded.text;
  };
  urlText = await expand(urlText);
  const headers: Record<string, string> = { accept: 'application/json, text/*;q=0.9, */*;q=0.5' };
  for (const [name, value] of Object.entries(source.headers ?? {}))
    headers[name] = await expand(value);
  const bodyMode =
    source.body ?? (source.method === 'GET' || source.method === 'DELETE' ? 'none' : 'arguments');
  const url = new URL(urlText);
  let body: string | undefined;
  if (bodyMode === 'arguments') {
    body = JSON.stringify(rest);
    headers['content-type'] = 'application/json';
  } else {
    for (const [key, value] of Object.entries(rest)) {
      url.searchParams.append(key, typeof value === 'string' ? value : JSON.stringify(value));
    }
  }
  let response: Response;
  try {
    // No redirects: a redirect would carry the headers (and their secrets) to another host.
    response = await fetch(url, {
      method: source.method,
      headers,
      body,
      signal,
      redirect: 'manual',
    });
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    throw new ToolFailure(
      'unavailable',
      `The request to ${url.host} failed: ${(err as Error).cause ? String((err as Error & { cause: Error }).cause.message ?? (err as Error).cause) : (err as Error).message}`,
      { cause: err },
    );
  }
  const raw = await readCapped(response, options.maxResultBytes);
  const type = (response.headers.get('content-type') ?? '').toLowerCase();
  if (response.status >= 500 || response.status === 429) {
    throw new ToolFailure(
      'unavailable',
      `${url.host} answered HTTP ${response.status}: ${raw.toString('utf8').slice(0, 500)}`,
      {
        retryable: true,
      },
    );
  }
  if (response.status < 200 || response.status >= 300) {
    return {
      content: [
        { type: 'text', text: `HTTP ${response.status}: ${raw.toString('utf8').slice(0, 2000)}` },
      ],
      is_error: true,
    };
  }
  if (type.startsWith('image/') || type.startsWith('audio/')) {
    const item: ContentItem = {
      type: type.startsWith('image/') ? 'image' : 'audio',
      data: raw.toString('base64'),
      mimeType: type.split(';')[0] ?? type,
    };
    return { content: [item], is_error: false };
  }
  const text = raw.toString('utf8');
  if (type.includes('json')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new ToolFailure('protocol', `${url.host} answered invalid JSON`, {
        retryable: false,
        cause: err,
      });
    }
    const value =
      source.result_pointer === undefined ? parsed : atPointer(parsed, source.result_pointer);
    const result: ToolResult = {
      content: [{ type: 'text', text: JSON.stringify(value ?? null) }],
      is_error: false,
    };
    if (value !== null && typeof value === 'object' && !Array.isArray(value))
      result.structured_content = value;
    return result;
  }
  return { content: [{ type: 'text', text }], is_error: false };
}
