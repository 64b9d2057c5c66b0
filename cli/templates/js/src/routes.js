// What the extension answers. Every route here must also be declared in manifest.json's
// `api.endpoints`: the edge refuses anything else. Plain JavaScript, tested by `npm test`.

/**
 * @param {{method: string, url: string, body: Uint8Array, tenantId: string}} request
 * @returns {{status: number, body: unknown}}
 */
export function route({ method, url, body, tenantId }) {
  const path = url.split('?')[0];
  if (method === 'GET' && path === '/hello') {
    return reply(200, { message: 'Hello from {{name}}!', tenantId });
  }
  if (method === 'POST' && path === '/echo') {
    try {
      return reply(200, { echo: JSON.parse(new TextDecoder().decode(body)) });
    } catch {
      return reply(400, { error: 'body_must_be_json' });
    }
  }
  return reply(404, { error: 'not_found' });
}

function reply(status, body) {
  return { status, body };
}
