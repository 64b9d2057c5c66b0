// A standard wasi:http/proxy component written the way JavaScript handlers
// for Spin and `wasmtime serve` are: a `fetch` event handler (StarlingMonkey's
// fetch-event, attached because the world exports wasi:http/incoming-handler).
// Published to Annex with `"runtime": "wasi-http@0.2"`.
//
// - POST /echo: the request as the component saw it, status 201.
// - GET /fetch?url=...: an outgoing fetch() (Annex's egress policy applies).
// - anything else: a small JSON greeting with the path.
addEventListener('fetch', (event) => event.respondWith(handle(event.request)));

async function handle(request) {
  const url = new URL(request.url);
  const path = url.pathname + url.search;
  if (request.method === 'POST' && url.pathname === '/echo') {
    return json(201, {
      method: request.method,
      path,
      tenant: request.headers.get('x-alga-tenant'),
      extension: request.headers.get('x-alga-extension'),
      requestId: request.headers.get('x-request-id'),
      contentType: request.headers.get('content-type'),
      body: await request.text(),
    });
  }
  if (request.method === 'GET' && url.pathname === '/fetch') {
    try {
      const response = await fetch(url.searchParams.get('url'));
      return json(200, { status: response.status, body: await response.text() });
    } catch (error) {
      return json(200, { error: String(error) });
    }
  }
  return json(200, { message: 'hello from javascript', path });
}

function json(status, value) {
  return new Response(JSON.stringify(value), {
    status,
    headers: { 'content-type': 'application/json', 'x-ext-world': 'wasi-http' },
  });
}
