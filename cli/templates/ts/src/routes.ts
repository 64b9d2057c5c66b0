// What the extension answers. Every route here must also be declared in manifest.json's
// `api.endpoints`: the edge refuses anything else. Plain TypeScript, tested by `npm test`.

export interface Request {
  method: string;
  /** Path and query, e.g. `/hello?name=Ada`. */
  url: string;
  body: Uint8Array;
  tenantId: string;
}

export interface Reply {
  status: number;
  body: unknown;
}

export function route({ method, url, body, tenantId }: Request): Reply {
  const path = url.split('?')[0];
  if (method === 'GET' && path === '/hello') {
    return { status: 200, body: { message: 'Hello from {{name}}!', tenantId } };
  }
  if (method === 'POST' && path === '/echo') {
    try {
      return { status: 200, body: { echo: JSON.parse(new TextDecoder().decode(body)) } };
    } catch {
      return { status: 400, body: { error: 'body_must_be_json' } };
    }
  }
  return { status: 404, body: { error: 'not_found' } };
}
