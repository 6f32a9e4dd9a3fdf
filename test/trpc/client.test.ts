import { webcrypto } from 'node:crypto';
import { createTRPCUntypedClient, type Operation, retryLink, TRPCClientError, type TRPCLink } from '@trpc/client';
import type { AnyTRPCRouter } from '@trpc/server';
import { observable } from '@trpc/server/observable';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  getIdempotencyErrorCode,
  getIdempotencyErrorData,
  getIdempotencyKey,
  idempotencyHeaders,
  idempotencyLink,
} from '../../src/trpc/client.js';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** A terminating link that records each operation it receives and fails the first `failures` of them. */
function recordingLink(failures = 0) {
  const seen: Operation[] = [];
  const link: TRPCLink<AnyTRPCRouter> =
    () =>
    ({ op }) =>
      observable((observer) => {
        seen.push(op);
        if (seen.length <= failures) {
          observer.error(TRPCClientError.from(new Error(`attempt ${seen.length} failed`)));
          return;
        }
        observer.next({ result: { type: 'data', data: getIdempotencyKey(op) ?? null } });
        observer.complete();
      });
  return { seen, link };
}

const op = (context: Record<string, unknown>, type: Operation['type'] = 'mutation'): Operation => ({
  id: 1,
  type,
  input: undefined,
  path: 'payments.create',
  context,
  signal: null,
});

describe('idempotencyLink', () => {
  it('gives each mutation a fresh UUID v4 and leaves queries alone', async () => {
    const { seen, link } = recordingLink();
    const client = createTRPCUntypedClient<AnyTRPCRouter>({ links: [idempotencyLink(), link] });

    await client.mutation('a', undefined);
    await client.mutation('a', undefined);
    await client.query('b', undefined);

    const [first, second, query] = seen.map(getIdempotencyKey);
    expect(first).toMatch(UUID_V4);
    expect(second).toMatch(UUID_V4);
    expect(second).not.toBe(first);
    expect(query).toBeUndefined();
  });

  it("keeps the caller's key from the operation context", async () => {
    const { seen, link } = recordingLink();
    const client = createTRPCUntypedClient<AnyTRPCRouter>({ links: [idempotencyLink(), link] });

    await client.mutation('a', undefined, { context: { idempotencyKey: 'order-42' } });

    expect(getIdempotencyKey(seen[0]!)).toBe('order-42');
  });

  it('sends one key on every attempt when placed before retryLink', async () => {
    const { seen, link } = recordingLink(2);
    const client = createTRPCUntypedClient<AnyTRPCRouter>({
      links: [idempotencyLink(), retryLink({ retry: ({ attempts }) => attempts < 3 }), link],
    });

    const result = await client.mutation('a', undefined);

    expect(seen).toHaveLength(3);
    expect(new Set(seen.map(getIdempotencyKey)).size).toBe(1);
    expect(result).toBe(getIdempotencyKey(seen[0]!));
  });

  it('still sends one key on every attempt when placed after retryLink (the same operation object)', async () => {
    const { seen, link } = recordingLink(1);
    const client = createTRPCUntypedClient<AnyTRPCRouter>({
      links: [retryLink({ retry: ({ attempts }) => attempts < 2 }), idempotencyLink(), link],
    });

    await client.mutation('a', undefined);

    expect(seen).toHaveLength(2);
    expect(getIdempotencyKey(seen[0]!)).toMatch(UUID_V4);
    expect(getIdempotencyKey(seen[1]!)).toBe(getIdempotencyKey(seen[0]!));
  });

  it('honours filter and generateKey', async () => {
    const { seen, link } = recordingLink();
    let n = 0;
    const client = createTRPCUntypedClient<AnyTRPCRouter>({
      links: [idempotencyLink({ filter: (o) => o.path !== 'skip', generateKey: () => `key-${++n}` }), link],
    });

    await client.mutation('keep', undefined);
    await client.mutation('skip', undefined);
    await client.query('keep', undefined);

    expect(seen.map(getIdempotencyKey)).toEqual(['key-1', undefined, 'key-2']);
  });

  it('fails the call with a clear error when generateKey throws or returns a non-string', async () => {
    const { seen, link } = recordingLink();
    const throwing = createTRPCUntypedClient<AnyTRPCRouter>({
      links: [
        idempotencyLink({
          generateKey: () => {
            throw new Error('no entropy');
          },
        }),
        link,
      ],
    });
    const numeric = createTRPCUntypedClient<AnyTRPCRouter>({
      links: [idempotencyLink({ generateKey: () => 7 as unknown as string }), link],
    });

    await expect(throwing.mutation('a', undefined)).rejects.toThrow('no entropy');
    await expect(numeric.mutation('a', undefined)).rejects.toThrow(/generateKey returned number 7/);
    expect(seen).toHaveLength(0);
  });

  describe('without crypto.randomUUID (browser pages over plain HTTP)', () => {
    afterEach(() => {
      vi.unstubAllGlobals();
    });

    it('makes UUID v4 keys from crypto.getRandomValues', async () => {
      vi.stubGlobal('crypto', { getRandomValues: (array: Uint8Array) => webcrypto.getRandomValues(array) });
      const { seen, link } = recordingLink();
      const client = createTRPCUntypedClient<AnyTRPCRouter>({ links: [idempotencyLink(), link] });

      await client.mutation('a', undefined);
      await client.mutation('a', undefined);

      expect(getIdempotencyKey(seen[0]!)).toMatch(UUID_V4);
      expect(getIdempotencyKey(seen[1]!)).not.toBe(getIdempotencyKey(seen[0]!));
    });

    it('asks for generateKey when there is no Web Crypto at all', async () => {
      vi.stubGlobal('crypto', undefined);
      const { link } = recordingLink();
      const client = createTRPCUntypedClient<AnyTRPCRouter>({ links: [idempotencyLink(), link] });

      await expect(client.mutation('a', undefined)).rejects.toThrow(/no Web Crypto API.*Pass generateKey/);
    });
  });
});

describe('idempotencyHeaders', () => {
  it('sends the key of a single operation as Idempotency-Key', () => {
    expect(idempotencyHeaders({ op: op({ idempotencyKey: 'k' }) })).toEqual({ 'Idempotency-Key': 'k' });
    expect(idempotencyHeaders({ op: op({}) })).toEqual({});
    expect(idempotencyHeaders({ op: op({ idempotencyKey: 'k' }) }, { headerName: 'X-Idempotency-Key' })).toEqual({
      'X-Idempotency-Key': 'k',
    });
  });

  it('sends the keys of a batch as a JSON array in batch order, null where an operation has none', () => {
    const opList = [op({ idempotencyKey: 'k0' }), op({}, 'query'), op({ idempotencyKey: 'k2' })];

    expect(idempotencyHeaders({ opList })).toEqual({ 'Idempotency-Keys': '["k0",null,"k2"]' });
    expect(idempotencyHeaders({ opList }, { batchHeaderName: 'X-Keys' })).toEqual({ 'X-Keys': '["k0",null,"k2"]' });
    expect(idempotencyHeaders({ opList: [op({}), op({})] })).toEqual({});
  });
});

describe('getIdempotencyErrorData', () => {
  it('reads what idempotencyErrorData put into the error shape', () => {
    const error = { data: { code: 'CONFLICT', idempotency: { code: 'IN_PROGRESS', retryAfterMs: 1_000 } } };

    expect(getIdempotencyErrorData(error)).toEqual({ code: 'IN_PROGRESS', retryAfterMs: 1_000 });
    expect(getIdempotencyErrorCode(error)).toBe('IN_PROGRESS');
    expect(getIdempotencyErrorCode({ shape: { data: { idempotency: { code: 'KEY_MISSING' } } } })).toBe('KEY_MISSING');
  });

  it('is undefined for other errors and unknown codes', () => {
    expect(getIdempotencyErrorCode({ data: { idempotency: null } })).toBeUndefined();
    expect(getIdempotencyErrorCode({ data: { idempotency: { code: 'SOMETHING_ELSE' } } })).toBeUndefined();
    expect(getIdempotencyErrorCode(new Error('x'))).toBeUndefined();
    expect(getIdempotencyErrorCode(undefined)).toBeUndefined();
  });
});
