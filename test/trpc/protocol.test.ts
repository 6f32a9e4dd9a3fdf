import { describe, expect, it } from 'vitest';
import { isIdempotencyError } from '../../src/index.js';
import { batchShape, defaultResponseHeaders, readKeyFromContext } from '../../src/trpc/context.js';
import { formatBatchKeys, parseBatchKeys } from '../../src/trpc/protocol.js';

const names = { headerName: 'Idempotency-Key', batchHeaderName: 'Idempotency-Keys', procedure: 'payments.create' };

function keyInvalid(action: () => unknown): string {
  try {
    action();
  } catch (error) {
    expect(isIdempotencyError(error)).toBe(true);
    expect((error as { code: string }).code).toBe('KEY_INVALID');
    return (error as Error).message;
  }
  throw new Error('expected KEY_INVALID, but nothing was thrown');
}

describe('the batch keys header', () => {
  it('round-trips keys and nulls by position', () => {
    const value = formatBatchKeys(['k0', null, 'k "2" \\ ok']);
    expect(parseBatchKeys(value, 'Idempotency-Keys', 'p')).toEqual(['k0', null, 'k "2" \\ ok']);
  });

  it('escapes everything outside printable ASCII so the header can always be sent', () => {
    const value = formatBatchKeys(['tab\there', 'заказ', 'del\u007f']);
    expect(value).toMatch(/^[\x20-\x7e]+$/);
    expect(JSON.parse(value)).toEqual(['tab\there', 'заказ', 'del\u007f']);
  });

  it.each([
    ['not JSON', '["a"', 'not JSON'],
    ['a JSON object', '{"0":"a"}', 'not an array'],
    ['JSON null', 'null', 'a JSON null'],
    ['a number entry', '["a",7]', 'entry 1 is number 7'],
    ['a nested array', '[["a"]]', 'entry 0 is array'],
    ['one key twice', '["a","b","a"]', 'entries 0 and 2 carry the same key'],
  ])('refuses %s with KEY_INVALID, saying what was expected and what arrived', (_, value, problem) => {
    const message = keyInvalid(() => parseBatchKeys(value, 'Idempotency-Keys', 'payments.create'));
    expect(message).toContain('expected a JSON array with one idempotency key or null per batch index');
    expect(message).toContain(problem);
    expect(message).toContain('idempotencyHeaders()');
  });
});

describe('readKeyFromContext: where the default key lookup finds keys', () => {
  const nodeReq = (url: string, headers: Record<string, string | string[]>) => ({ req: { url, headers } });
  const fetchReq = (url: string, headers: Record<string, string>) => ({ req: new Request(url, { headers }) });

  it('reads Idempotency-Key from a node request (standalone, express) and a fetch Request', () => {
    const options = { ...names, batchIndex: 0 };
    expect(readKeyFromContext(nodeReq('/payments.create', { 'idempotency-key': 'k1' }), options)).toBe('k1');
    expect(readKeyFromContext(fetchReq('http://h/trpc/payments.create', { 'Idempotency-Key': 'k2' }), options)).toBe(
      'k2',
    );
    expect(readKeyFromContext({ headers: { 'idempotency-key': 'k3' } }, options)).toBe('k3');
    expect(readKeyFromContext(nodeReq('/payments.create', {}), options)).toBeUndefined();
  });

  it('honours a custom header name, case-insensitively', () => {
    const options = { ...names, headerName: 'X-Idempotency-Key', batchIndex: 0 };
    expect(readKeyFromContext(nodeReq('/p', { 'x-idempotency-key': 'k' }), options)).toBe('k');
    expect(readKeyFromContext(fetchReq('http://h/p', { 'x-IDEMPOTENCY-key': 'k' }), options)).toBe('k');
    expect(readKeyFromContext(nodeReq('/p', { 'idempotency-key': 'other' }), options)).toBeUndefined();
  });

  it('reads entry batchIndex of Idempotency-Keys on a batch, from the URL or from ctx.info', () => {
    const header = { 'idempotency-keys': '["k0",null,"k2"]' };
    const fromUrl = nodeReq('/a,b,c?batch=1', header);
    expect([0, 1, 2].map((batchIndex) => readKeyFromContext(fromUrl, { ...names, batchIndex }))).toEqual([
      'k0',
      undefined,
      'k2',
    ]);
    const fromInfo = { req: { headers: header }, info: { isBatchCall: true, calls: [{}, {}, {}] } };
    expect(readKeyFromContext(fromInfo, { ...names, batchIndex: 2 })).toBe('k2');
    const express = { req: { url: '/a,b,c?batch=1', originalUrl: '/trpc/a,b,c?batch=1', headers: header } };
    expect(readKeyFromContext(express, { ...names, batchIndex: 0 })).toBe('k0');
  });

  it('refuses a single key on a batch, even a batch of one', () => {
    const message = keyInvalid(() =>
      readKeyFromContext(nodeReq('/a?batch=1', { 'idempotency-key': 'k' }), { ...names, batchIndex: 0 }),
    );
    expect(message).toContain('cannot say which call of the batch it belongs to');
  });

  it('refuses a keys list on a non-batched request, and both headers at once', () => {
    keyInvalid(() => readKeyFromContext(nodeReq('/a', { 'idempotency-keys': '["k"]' }), { ...names, batchIndex: 0 }));
    keyInvalid(() =>
      readKeyFromContext(
        { headers: { 'idempotency-key': 'k', 'idempotency-keys': '["k"]' } },
        { ...names, batchIndex: 0 },
      ),
    );
  });

  it('refuses a keys list whose length differs from the batch size, for every call of the batch', () => {
    const ctx = nodeReq('/a,b,c?batch=1', { 'idempotency-keys': '["k0","k1"]' });
    for (const batchIndex of [0, 1, 2]) {
      const message = keyInvalid(() => readKeyFromContext(ctx, { ...names, batchIndex }));
      expect(message).toContain('lists 2 entries, but the batch has 3 calls');
    }
    keyInvalid(() =>
      readKeyFromContext(nodeReq('/a?batch=1', { 'idempotency-keys': '["k0","k1"]' }), { ...names, batchIndex: 0 }),
    );
  });

  it('without URL or info, accepts a single key only for batch index 0', () => {
    const ctx = { headers: { 'idempotency-key': 'k' } };
    expect(readKeyFromContext(ctx, { ...names, batchIndex: 0 })).toBe('k');
    keyInvalid(() => readKeyFromContext(ctx, { ...names, batchIndex: 1 }));
  });

  it('without a batch index from tRPC (older @trpc/server), reads single keys only where the request is not a batch', () => {
    const options = { ...names, batchIndex: undefined };
    expect(readKeyFromContext(nodeReq('/a', { 'idempotency-key': 'k' }), options)).toBe('k');
    expect(() => readKeyFromContext(nodeReq('/a,b?batch=1', { 'idempotency-keys': '["k0","k1"]' }), options)).toThrow(
      /does not pass batchIndex to middlewares.*Upgrade @trpc\/server/,
    );
    expect(() => readKeyFromContext({ headers: { 'idempotency-key': 'k' } }, options)).toThrow(TypeError);
  });

  it('refuses a header sent twice', () => {
    keyInvalid(() => readKeyFromContext(nodeReq('/a', { 'idempotency-key': ['a', 'b'] }), { ...names, batchIndex: 0 }));
  });

  it('throws a TypeError naming the fix when the context carries no request headers', () => {
    expect(() => readKeyFromContext({ user: { id: 1 } }, { ...names, batchIndex: 0 })).toThrow(
      /no request headers in the context of payments\.create.*keys user.*pass getKey/s,
    );
  });
});

describe('batchShape', () => {
  it('reads batch and size from ctx.info before the URL, and says when it cannot tell', () => {
    expect(batchShape({ info: { isBatchCall: true, calls: [1, 2] }, req: { url: '/a' } })).toEqual({
      batch: true,
      size: 2,
    });
    expect(batchShape({ req: { url: '/x.y,z?batch=1&input=%7B%7D' } })).toEqual({ batch: true, size: 2 });
    expect(batchShape({ req: new Request('http://h/trpc/x.y') })).toEqual({ batch: false, size: 1 });
    expect(batchShape({ headers: {} })).toEqual({ batch: undefined, size: undefined });
  });
});

describe('defaultResponseHeaders', () => {
  it('uses the fetch adapter resHeaders as they are', () => {
    const resHeaders = new Headers();
    defaultResponseHeaders({ resHeaders })?.set('Idempotent-Replayed', 'true');
    expect(resHeaders.get('idempotent-replayed')).toBe('true');
  });

  it('sets node response headers until they are sent, then skips silently', () => {
    const set: Record<string, string> = {};
    const res = {
      headersSent: false,
      getHeader: (name: string) => set[name.toLowerCase()],
      setHeader: (name: string, value: string) => {
        if (res.headersSent) throw new Error('ERR_HTTP_HEADERS_SENT');
        set[name.toLowerCase()] = value;
      },
    };
    const headers = defaultResponseHeaders({ res });

    headers?.set('Retry-After', '2');
    res.headersSent = true;
    headers?.set('Idempotent-Replayed', 'true');

    expect(set).toEqual({ 'retry-after': '2' });
    expect(headers?.get('Retry-After')).toBe('2');
  });

  it('is undefined when the context has no response', () => {
    expect(defaultResponseHeaders({ req: {} })).toBeUndefined();
  });
});
