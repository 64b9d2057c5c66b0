import { test } from 'node:test';
import assert from 'node:assert/strict';
import { route } from '../src/routes.js';

const call = (method, url, body = '') =>
  route({ method, url, body: new TextEncoder().encode(body), tenantId: 't1' });

test('hello greets the tenant', () => {
  const reply = call('GET', '/hello?x=1');
  assert.equal(reply.status, 200);
  assert.equal(reply.body.tenantId, 't1');
  assert.equal(typeof reply.body.message, 'string');
});

test('echo returns the JSON body', () => {
  assert.deepEqual(call('POST', '/echo', '{"a":1}'), { status: 200, body: { echo: { a: 1 } } });
  assert.equal(call('POST', '/echo', 'not json').status, 400);
});

test('other routes are not found', () => {
  assert.equal(call('GET', '/nope').status, 404);
});
