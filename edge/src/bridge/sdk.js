// Annex extension iframe SDK, child side (Alga's @alga-psa/extension-iframe-sdk;
// docs/design/alga-compatibility.md, "ext-proxy and the bridge"). Served by the edge at /ext-bridge/sdk.js. Usage inside the UI:
//   const bridge = AnnexSdk.createBridge();   // parent origin from ?parentOrigin=
//   bridge.ready();
//   const data = await AnnexSdk.callHandlerJson(bridge, '/hello');
//   bridge.subscribeTheme(tokens => AnnexSdk.applyTheme(tokens));
//   const token = await bridge.getToken();   // from the host's `bootstrap`
//   bridge.navigate('/settings');            // the host rewrites ?path=
// Theme tokens from `bootstrap` and `theme_tokens` are applied to :root as
// they arrive; `on(listener)` sees every host message.
(function (global) {
  'use strict';
  var TIMEOUT_MS = 15000;

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
  function uuid() {
    if (global.crypto && global.crypto.randomUUID) return global.crypto.randomUUID();
    return 'r' + Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  function createBridge(opts) {
    opts = opts || {};
    var params = new URLSearchParams(global.location.search);
    var parentOrigin = opts.expectedParentOrigin || params.get('parentOrigin') || global.location.origin;
    var wildcard = !!opts.devAllowWildcard || !!global.__ALGA_DEV__;
    var pending = {};
    var themeListeners = [];
    var listeners = [];
    var sessionToken = null;
    var themeTokens = {};

    function emitToHost(type, payload, requestId) {
      var msg = { alga: true, version: '1', type: type, payload: payload || {} };
      if (requestId) msg.request_id = requestId;
      global.parent.postMessage(msg, wildcard ? '*' : parentOrigin);
    }

    global.addEventListener('message', function (ev) {
      if (ev.source !== global.parent) return;
      if (!wildcard && ev.origin !== parentOrigin) return;
      var msg = ev.data;
      if (!msg || msg.alga !== true || msg.version !== '1' || typeof msg.type !== 'string') return;
      if (msg.type === 'apiproxy_response' && msg.request_id && pending[msg.request_id]) {
        var p = pending[msg.request_id];
        delete pending[msg.request_id];
        clearTimeout(p.timer);
        var payload = msg.payload || {};
        if (typeof payload.error === 'string') p.reject(new Error(payload.error));
        else p.resolve(typeof payload.body === 'string' ? fromBase64(payload.body) : new Uint8Array(0));
      } else if (msg.type === 'theme') {
        themeListeners.forEach(function (cb) { try { cb(msg.payload || {}); } catch (e) { /* listener error */ } });
      } else if (msg.type === 'bootstrap' || msg.type === 'theme_tokens') {
        var p2 = msg.payload || {};
        if (p2.theme_tokens && typeof p2.theme_tokens === 'object') {
          themeTokens = p2.theme_tokens;
          applyTheme(themeTokens);
        }
        if (msg.type === 'bootstrap' && p2.session && typeof p2.session.token === 'string') {
          sessionToken = p2.session.token;
        }
      }
      listeners.forEach(function (cb) { try { cb(msg); } catch (e) { /* listener error */ } });
    });

    var bridge = {
      parentOrigin: parentOrigin,
      ready: function (requestId) { emitToHost('ready', {}, requestId); },
      emitToHost: emitToHost,
      resize: function (height) { emitToHost('resize', { height: height }); },
      callProxy: function (route, payload, options) {
        var method = ((options && options.method) || 'POST').toUpperCase();
        if (method === 'GET' && payload && payload.length) {
          return Promise.reject(new Error('GET requests cannot carry a body'));
        }
        var requestId = uuid();
        return new Promise(function (resolve, reject) {
          var timer = setTimeout(function () {
            delete pending[requestId];
            reject(new Error('apiproxy timed out'));
          }, TIMEOUT_MS);
          pending[requestId] = { resolve: resolve, reject: reject, timer: timer };
          var body = { route: route, method: method };
          if (payload && payload.length) body.body = toBase64(payload);
          emitToHost('apiproxy', body, requestId);
        });
      },
      on: function (cb) {
        listeners.push(cb);
        return function () { listeners = listeners.filter(function (x) { return x !== cb; }); };
      },
      getSessionToken: function () { return sessionToken; },
      getThemeTokens: function () { return themeTokens; },
      // The session token of the host's `bootstrap`, once there is one.
      getToken: function () {
        if (sessionToken) return Promise.resolve(sessionToken);
        var self = this;
        return new Promise(function (resolve) {
          var off = self.on(function (m) {
            if (m.type === 'bootstrap' && sessionToken) { off(); resolve(sessionToken); }
          });
        });
      },
      navigate: function (path) { emitToHost('navigate', { path: String(path) }); },
      subscribeTheme: function (cb) {
        themeListeners.push(cb);
        return function () { themeListeners = themeListeners.filter(function (x) { return x !== cb; }); };
      },
    };
    // Alga's SDK shape: `bridge.uiProxy.callRoute(route, payload, {method})`.
    bridge.uiProxy = { callRoute: bridge.callProxy, call: bridge.callProxy };
    return bridge;
  }

  // JSON in and out through the proxy; null for an empty body.
  function callHandlerJson(bridge, path, options) {
    options = options || {};
    var method = (options.method || 'GET').toUpperCase();
    if (method === 'GET' && options.body !== undefined) {
      return Promise.reject(new Error('GET requests cannot carry a body'));
    }
    var payload = options.body === undefined ? undefined : new TextEncoder().encode(JSON.stringify(options.body));
    return bridge.callProxy(path, payload, { method: method }).then(function (bytes) {
      if (!bytes || !bytes.length) return null;
      return JSON.parse(new TextDecoder().decode(bytes));
    });
  }

  function applyTheme(tokens) {
    var root = global.document.documentElement;
    Object.keys(tokens || {}).forEach(function (k) {
      if (k.indexOf('--') === 0) root.style.setProperty(k, String(tokens[k]));
    });
  }

  global.AnnexSdk = { createBridge: createBridge, callHandlerJson: callHandlerJson, applyTheme: applyTheme };
})(window);
