// {{title}}: the component's entry point. `jco componentize` exports `handler` as the WIT
// world's `handler` function. esbuild strips the types and bundles this file with its
// imports; `alga:extension/*` imports are the host's interfaces (wit/alga-extension.wit).
import { logInfo } from 'alga:extension/logging';
import { route } from './routes.js';
import type { ExecuteRequest, ExecuteResponse } from './types.js';

export function handler(request: ExecuteRequest): ExecuteResponse {
  const { context, http } = request;
  // Needs `cap:log.emit` (every install has it); `annex logs` shows the line.
  logInfo(`${http.method} ${http.url}`);
  const reply = route({
    method: http.method,
    url: http.url,
    body: http.body ?? new Uint8Array(),
    tenantId: context.tenantId,
  });
  return {
    status: reply.status,
    headers: [{ name: 'content-type', value: 'application/json' }],
    body: new TextEncoder().encode(JSON.stringify(reply.body)),
  };
}
