import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';

/**
 * One HTTP request, its answer read whole as text. No deadline but `signal`: unlike fetch,
 * whose 300 s header timeout would end a call that legitimately waits longer (a command
 * running on another node, a create that clones for minutes).
 */
export function requestText(
  url: string | URL,
  options: {
    method: string;
    headers?: Record<string, string>;
    body?: string | Buffer | undefined;
    signal?: AbortSignal | undefined;
  },
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const target = typeof url === 'string' ? new URL(url) : url;
    const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
    const body = options.body;
    const req = send(target, {
      method: options.method,
      headers: {
        ...options.headers,
        ...(body === undefined ? {} : { 'content-length': String(Buffer.byteLength(body)) }),
      },
      ...(options.signal !== undefined ? { signal: options.signal } : {}),
    });
    req.once('error', reject);
    req.once('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.once('error', reject);
      res.once('end', () =>
        resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
      );
    });
    req.end(body);
  });
}
