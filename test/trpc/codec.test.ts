import { randomUUID } from 'node:crypto';
import superjson, { SuperJSON } from 'superjson';
import { describe, expect, it } from 'vitest';
import {
  computeFingerprint,
  createIdempotencyService,
  createMemoryStore,
  isIdempotencyError,
} from '../../src/index.js';
import { createTrpcResultCodec } from '../../src/trpc/index.js';

const typed = () => ({
  at: new Date('2025-12-03T12:00:00.123Z'),
  amount: 12_345_678_901_234_567_890n,
  tags: new Set(['a', 'b']),
  ledger: new Map<string, unknown>([['debit', { cents: 1 }]]),
  missing: undefined,
  nan: Number.NaN,
});

describe('createTrpcResultCodec', () => {
  it('stores results through the transformer, so Date, bigint, Map, Set and undefined come back as such', () => {
    const codec = createTrpcResultCodec(superjson);

    const replayed = codec.decode(codec.encode(typed())) as ReturnType<typeof typed>;

    expect(replayed).toEqual(typed());
    expect(replayed.at).toBeInstanceOf(Date);
    expect(typeof replayed.amount).toBe('bigint');
    expect(replayed.tags).toBeInstanceOf(Set);
    expect(replayed.ledger).toBeInstanceOf(Map);
    expect(codec.decode(codec.encode(undefined))).toBeUndefined();
  });

  it('names the codec after the transformer, the same for t._config.transformer ({ input, output })', () => {
    expect(createTrpcResultCodec(superjson).name).toBe('trpc:SuperJSON');
    expect(createTrpcResultCodec({ input: superjson, output: superjson }).name).toBe('trpc:SuperJSON');
    expect(createTrpcResultCodec(new SuperJSON()).name).toBe('trpc:SuperJSON');
    expect(createTrpcResultCodec(new SuperJSON(), 'superjson-with-money').name).toBe('trpc:superjson-with-money');
  });

  it('falls back to core jsonCodec without a transformer, refusing what JSON would change', () => {
    const codec = createTrpcResultCodec(undefined);
    expect(codec.name).toBe('json');
    expect(codec.decode(codec.encode({ id: 1 }))).toEqual({ id: 1 });
    expect(() => codec.encode({ at: new Date() })).toThrow(/use a transformer such as superjson/);
  });

  it('asks for a name when the transformer is a plain object, and validates what it gets', () => {
    const plain = { serialize: (v: unknown) => v, deserialize: (v: unknown) => v };
    expect(() => createTrpcResultCodec(plain)).toThrow(/Pass transformerName/);
    expect(createTrpcResultCodec(plain, 'identity').name).toBe('trpc:identity');
    expect(() => createTrpcResultCodec(plain, 'has space')).toThrow(/expected transformerName to be 1 to 64/);
    expect(() => createTrpcResultCodec(undefined, 'x')).toThrow(/without a transformer/);
    expect(() => createTrpcResultCodec({ serialize: 1 } as never)).toThrow(
      /expected transformer to be a tRPC data transformer/,
    );
  });

  it('never lets a router with another transformer decode the stored bytes', async () => {
    const service = createIdempotencyService({ store: createMemoryStore() });
    const key = randomUUID();
    const call = {
      procedure: 'payments.create',
      key,
      fingerprint: computeFingerprint('payments.create', { amount: 1 }),
      run: async () => ({ at: new Date(0) }),
    };
    await service.execute({ ...call, codec: createTrpcResultCodec(superjson) });

    const error = await service.execute({ ...call, codec: createTrpcResultCodec(undefined) }).then(
      () => undefined,
      (cause: unknown) => cause,
    );

    expect(isIdempotencyError(error) && error.code).toBe('FINGERPRINT_MISMATCH');
    expect((error as Error).message).toContain('codec "trpc:SuperJSON"');
  });
});
