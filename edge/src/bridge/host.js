// Annex extension iframe bridge, host side (Alga's postMessage envelope and host
// bridges; docs/design/alga-compatibility.md, "ext-proxy and the bridge").
// Served by the edge at /ext-bridge/host.js. Usage:
//   const cleanup = AnnexBridge.bootstrapIframe({ iframe, extensionId, src,
//       allowedOrigin, minHeight: 100, maxHeight: 4000, proxyBase: '',
//       theme: {...}, session: { token, expires_at }, onNavigate: function (path) {...} });
// Embeds with a safe sandbox, accepts messages only from the iframe's window
// and origin, and speaks Alga's whole message set: `bootstrap` (session,
// theme tokens, navigation path) on load and on `ready`, `theme` (the flat
// token map) on `ready`, `theme_tokens` and `theme` again whenever the host
// page's theme changes, `apiproxy` answered through /api/ext-proxy, `resize`
// clamped, and `navigate` (the iframe's `?path=` rewritten, or `onNavigate`
// called). `theme` and `session` may be functions, read each time they are sent.
(function (global) {
  'use strict';
  var METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'];
  var HASH = /^sha256:[0-9a-f]{64}$/i;
  // Per-extension UI origins: the edge fills in its ANNEX_EDGE_UI_HOST_PATTERN
  // (e.g. "{extension}.ext.example.com") when it serves this script.
  var UI_HOST_PATTERN = /*ANNEX_UI_HOST_PATTERN*/null;

  function toBase64(bytes) {
    var s = '';
    for (var i = 0; i < bytes.length; i += 0x8000) {
      s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(s);
  }
  function fromBase64(b64) {
    var s = atob(b64);
    var out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  function originOf(url) {
    try { return new URL(url, global.location.href).origin; } catch (e) { return null; }
  }

  // The origin an extension's UI is served from: its own host when the edge
  // has per-extension UI origins (extensionId is then the registry id), else
  // `base`.
  function uiBase(base, extensionId) {
    base = String(base || '').replace(/\/+$/, '');
    if (!UI_HOST_PATTERN) return base;
    var scheme = /^http:/i.test(base) ? 'http:' : 'https:';
    return scheme + '//' + UI_HOST_PATTERN.replace('{extension}', String(extensionId).toLowerCase());
  }

  // The /ext-ui URL of an extension's UI (Alga's buildExtUiSrc, plus parentOrigin).
  function buildSrc(base, extensionId, contentHash, opts) {
    opts = opts || {};
    if (!HASH.test(contentHash)) throw new Error('invalid content hash');
    var q = new URLSearchParams();
    q.set('path', opts.path || '/');
    if (opts.tenantId) q.set('tenant', opts.tenantId);
    q.set('extensionId', extensionId);
    q.set('parentOrigin', global.location.origin);
    return uiBase(base, extensionId) + '/ext-ui/' + encodeURIComponent(extensionId) +
      '/' + encodeURIComponent(contentHash) + '/index.html?' + q.toString();
  }

  function bootstrapIframe(opts) {
    var iframe = opts.iframe;
    var extensionId = opts.extensionId;
    var minH = opts.minHeight || 100;
    var maxH = opts.maxHeight || 4000;
    var proxyBase = String(opts.proxyBase || '').replace(/\/+$/, '');
    // Pass `src` to have the bridge navigate the iframe after its sandbox is
    // set (sandbox flags apply from the next navigation on).
    var src = opts.src || iframe.getAttribute('src') || '';
    var srcOrigin = originOf(src);
    var sameOrigin = srcOrigin === global.location.origin;
    if (!iframe.hasAttribute('sandbox')) {
      // A same-origin frame with both allow-scripts and allow-same-origin could
      // lift its own sandbox, so it gets an opaque origin instead.
      iframe.setAttribute('sandbox', sameOrigin
        ? 'allow-scripts allow-forms allow-popups'
        : 'allow-scripts allow-forms allow-popups allow-same-origin');
    }
    var opaque = (' ' + iframe.getAttribute('sandbox') + ' ').indexOf(' allow-same-origin ') < 0;
    var allowedOrigin = opts.allowedOrigin || srcOrigin;

    function post(type, payload, requestId) {
      var win = iframe.contentWindow;
      if (!win) return;
      var msg = { alga: true, version: '1', type: type, payload: payload };
      if (requestId) msg.request_id = requestId;
      win.postMessage(msg, opaque ? '*' : allowedOrigin);
    }

    function value(v) { return typeof v === 'function' ? v() : v; }

    function theme() {
      if (opts.theme) return value(opts.theme) || {};
      var out = {};
      var style = global.getComputedStyle(global.document.documentElement);
      for (var i = 0; i < style.length; i++) {
        var name = style[i];
        if (name.indexOf('--alga-') === 0) out[name] = style.getPropertyValue(name).trim();
      }
      return out;
    }

    // The path the UI shows: the `path` query of the iframe's current URL.
    function currentPath() {
      try {
        return new URL(iframe.getAttribute('src') || src, global.location.href).searchParams.get('path') || '/';
      } catch (e) { return '/'; }
    }

    function bootstrap() {
      // A session token goes only to a UI whose origin is known: a frame
      // with an opaque origin is posted to with '*', and could by then show
      // another page.
      var session = opaque ? {} : (value(opts.session) || {});
      post('bootstrap', {
        session: { token: session.token || null, expires_at: session.expires_at || null },
        theme_tokens: theme(),
        navigation: { path: currentPath() },
      });
    }

    // A path inside the UI: absolute, no scheme or authority, bounded.
    function validPath(p) {
      return typeof p === 'string' && p.length <= 2048 && p.charAt(0) === '/' &&
        p.charAt(1) !== '/' && p.indexOf('\\') < 0 && !/[\u0000-\u001f\u007f]/.test(p);
    }

    function navigate(msg) {
      var path = msg.payload && msg.payload.path;
      if (!validPath(path)) return;
      if (typeof opts.onNavigate === 'function') {
        opts.onNavigate(path);
        return;
      }
      try {
        var url = new URL(iframe.getAttribute('src') || src, global.location.href);
        if (url.searchParams.get('path') === path) return;
        url.searchParams.set('path', path);
        iframe.setAttribute('src', url.toString());
      } catch (e) { /* no URL to rewrite */ }
    }

    function apiproxy(msg) {
      var p = msg.payload || {};
      if (typeof p.route !== 'string' || !msg.request_id) return;
      var method = (p.method ? String(p.method) : 'POST').toUpperCase();
      if (METHODS.indexOf(method) < 0) return;
      var route = p.route.charAt(0) === '/' ? p.route : '/' + p.route;
      var init = { method: method, credentials: 'include', headers: {} };
      if (method !== 'GET' && typeof p.body === 'string') {
        init.body = fromBase64(p.body);
        init.headers['content-type'] = 'application/octet-stream';
      }
      fetch(proxyBase + '/api/ext-proxy/' + encodeURIComponent(extensionId) + route, init)
        .then(function (res) {
          if (!res.ok) {
            return res.text().then(function (t) {
              post('apiproxy_response', { error: 'Proxy error ' + res.status + ': ' + t }, msg.request_id);
            });
          }
          return res.arrayBuffer().then(function (buf) {
            post('apiproxy_response', { body: toBase64(new Uint8Array(buf)) }, msg.request_id);
          });
        })
        .catch(function (e) {
          post('apiproxy_response', { error: String((e && e.message) || e) }, msg.request_id);
        });
    }

    function onMessage(ev) {
      if (ev.source !== iframe.contentWindow) return;
      if (opaque ? ev.origin !== 'null' : ev.origin !== allowedOrigin) return;
      var msg = ev.data;
      if (!msg || msg.alga !== true || msg.version !== '1' || typeof msg.type !== 'string') return;
      switch (msg.type) {
        case 'ready':
          bootstrap();
          post('theme', theme());
          break;
        case 'navigate':
          navigate(msg);
          break;
        case 'resize': {
          var h = Number(msg.payload && msg.payload.height);
          if (isFinite(h)) iframe.style.height = Math.min(maxH, Math.max(minH, h)) + 'px';
          break;
        }
        case 'apiproxy':
          apiproxy(msg);
          break;
        default:
          break;
      }
    }

    // The host page's theme changed (class, style or data-theme on its
    // root): tell the UI, in both shapes Alga's bridges use.
    var lastTheme = null;
    function themeChanged() {
      var tokens = theme();
      var text = JSON.stringify(tokens);
      if (text === lastTheme) return;
      lastTheme = text;
      post('theme_tokens', { theme_tokens: tokens });
      post('theme', tokens);
    }
    var observer = null;
    if (global.MutationObserver) {
      observer = new global.MutationObserver(themeChanged);
      observer.observe(global.document.documentElement,
        { attributes: true, attributeFilter: ['class', 'style', 'data-theme'] });
    }

    function onLoad() {
      lastTheme = JSON.stringify(theme());
      bootstrap();
    }

    global.addEventListener('message', onMessage);
    iframe.addEventListener('load', onLoad);
    if (opts.src) iframe.setAttribute('src', opts.src);
    return function cleanup() {
      global.removeEventListener('message', onMessage);
      iframe.removeEventListener('load', onLoad);
      if (observer) observer.disconnect();
    };
  }

  global.AnnexBridge = { bootstrapIframe: bootstrapIframe, buildSrc: buildSrc };
})(window);
