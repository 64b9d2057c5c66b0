// The UI talks to its own handler through the host page: AnnexSdk posts an `apiproxy`
// message, the host calls /api/ext-proxy/<extension>/<route> with the user's session, and
// the answer comes back here. `annex dev --watch` serves a host page that does exactly that.
const bridge = AnnexSdk.createBridge();
bridge.subscribeTheme(AnnexSdk.applyTheme);
bridge.ready();

const greeting = document.getElementById('greeting');
const answer = document.getElementById('answer');

AnnexSdk.callHandlerJson(bridge, '/hello', { method: 'GET' })
  .then((reply) => { greeting.textContent = reply.message; })
  .catch((err) => { greeting.textContent = 'The handler did not answer: ' + err.message; });

document.getElementById('echo').addEventListener('submit', (event) => {
  event.preventDefault();
  const text = new FormData(event.target).get('text');
  AnnexSdk.callHandlerJson(bridge, '/echo', { method: 'POST', body: { text } })
    .then((reply) => { answer.textContent = JSON.stringify(reply, null, 2); })
    .catch((err) => { answer.textContent = 'Error: ' + err.message; });
});

// Tell the host how tall the content is, so the iframe fits it.
new ResizeObserver(() => bridge.resize(document.documentElement.scrollHeight))
  .observe(document.body);
