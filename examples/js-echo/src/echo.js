// Alga's echo component, the case its runner's `executes_dynamic_component_in_process`
// test checks: answers any request with the ids, method, URL and the raw body bytes
// (docs/design/alga-compatibility.md, "Handler mapping").
export function handler(request) {
  const { context, http } = request;
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
