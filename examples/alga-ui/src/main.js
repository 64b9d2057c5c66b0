// An extension UI written only against Alga's iframe SDK, as Alga's own
// extensions are: the SDK's IframeBridge (origin from ?parentOrigin=),
// getToken from the host's bootstrap, theme tokens, callHandlerJson through
// the apiproxy message, navigate and resize. Bundled by examples/build.sh
// into dist/app.js; the browser test serves it from the extension's bundle.
import {
  IframeBridge,
  callHandlerJson,
  getToken,
  navigate,
  subscribeTheme,
} from '@alga-psa/extension-iframe-sdk';

const bridge = new IframeBridge();
const show = (id, text) => {
  document.getElementById(id).textContent = text;
};

show('path', new URLSearchParams(window.location.search).get('path') || '');
subscribeTheme(bridge);
bridge.on((msg) => {
  if (msg.type === 'bootstrap') {
    show('navigation', (msg.payload.navigation && msg.payload.navigation.path) || '');
  }
});
getToken(bridge).then((token) => show('token', token));

document.getElementById('call').addEventListener('click', async () => {
  show('out', 'calling');
  try {
    const r = await callHandlerJson(bridge, '/hello');
    show('out', `answer: ${r.message} for ${r.tenantId}`);
  } catch (e) {
    show('out', `error: ${e.message}`);
  }
});
document.getElementById('echo').addEventListener('click', async () => {
  try {
    const r = await callHandlerJson(bridge, '/echo', { method: 'POST', body: { n: 42 } });
    show('out', `echo: ${JSON.stringify(r)}`);
  } catch (e) {
    show('out', `error: ${e.message}`);
  }
});
document.getElementById('go').addEventListener('click', () => navigate(bridge, '/settings'));
document.getElementById('grow').addEventListener('click', () =>
  bridge.emitToHost('resize', { height: 9000 }),
);

bridge.ready();
show('out', 'ready');
