// Alga's echo component, the case its runner's `executes_dynamic_component_in_process`
// test checks: answers any request with the ids, method, URL and the raw body bytes
// (docs/design/alga-compatibility.md, "Handler mapping").
//
// `GET /dynamic/mix?url=U` is the capture-and-replay case (docs/design/replay.md): it reads a
// secret, a stored value, writes one, fetches U, and reads the clock and random numbers.
import { get as getSecret } from 'alga:extension/secrets';
import { get as storageGet, put as storagePut } from 'alga:extension/storage';
import { fetch as hostFetch } from 'alga:extension/http';

const text = (bytes) => (bytes ? new TextDecoder().decode(bytes) : null);

function failure(e) {
  return { err: String(e && e.payload !== undefined ? e.payload : e) };
}

function mix(query) {
  // The secret's length and byte sum, not its value: what the guest answers is recorded as it is.
  let secret;
  try {
    const value = getSecret('api_key');
    let sum = 0;
    for (const b of new TextEncoder().encode(value)) sum += b;
    secret = { len: value.length, sum };
  } catch (e) {
    secret = failure(e);
  }
  let stored;
  try {
    stored = text(storageGet('replay', 'js-key').value);
  } catch (e) {
    stored = failure(e);
  }
  const now = Date.now();
  let written;
  try {
    const entry = storagePut({
      namespace: 'replay',
      key: 'js-key',
      value: new TextEncoder().encode(String(now)),
      revision: undefined,
    });
    written = entry.revision === undefined ? null : String(entry.revision);
  } catch (e) {
    written = failure(e);
  }
  let fetched;
  try {
    const r = hostFetch({ method: 'GET', url: query.url || '', headers: [], body: undefined });
    fetched = { status: r.status, body: text(r.body) };
  } catch (e) {
    fetched = failure(e);
  }
  const random = Array.from(crypto.getRandomValues(new Uint8Array(8)));
  return { secret, stored, written, fetched, now, math: Math.random(), random };
}

function parseQuery(url) {
  const out = {};
  const q = url.split('?')[1] || '';
  for (const part of q.split('&')) {
    if (!part) continue;
    const [k, v = ''] = part.split('=');
    out[decodeURIComponent(k)] = decodeURIComponent(v);
  }
  return out;
}

export function handler(request) {
  const { context, http } = request;
  if (http.url.split('?')[0].endsWith('/mix')) {
    return {
      status: 200,
      headers: [{ name: 'content-type', value: 'application/json' }],
      body: new TextEncoder().encode(JSON.stringify(mix(parseQuery(http.url)))),
    };
  }
  const body = http.body ? Array.from(http.body) : [];
  const payload = {
    ok: true,
    tenantId: context.tenantId,
    extensionId: context.extensionId,
    method: http.method,
    path: http.url,
    echo: body,
  };
  return {
    status: 200,
    headers: [
      { name: 'content-type', value: 'application/json' },
      { name: 'x-generated-by', value: 'js-component' },
    ],
    body: new TextEncoder().encode(JSON.stringify(payload)),
  };
}
