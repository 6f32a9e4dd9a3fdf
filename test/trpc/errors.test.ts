import { TRPCError } from '@trpc/server';
import { getHTTPStatusCodeFromError } from '@trpc/server/http';
import { TRPC_ERROR_CODES_BY_KEY } from '@trpc/server/rpc';
import { describe, expect, it } from 'vitest';
import { IdempotencyError, IdempotencyErrorCode, isIdempotencyError } from '../../src/index.js';
import { createTrpcErrorPolicy } from '../../src/trpc/errors.js';
import {
  idempotencyErrorData,
  idempotencyTrpcErrorCodes,
  isFinalByDefault,
  toTRPCError,
  trpcErrorFinality,
} from '../../src/trpc/index.js';

describe('idempotencyTrpcErrorCodes (the README mapping table)', () => {
  it('maps every idempotency code exactly as the README table says', () => {
    expect(idempotencyTrpcErrorCodes).toEqual({
      KEY_MISSING: 'BAD_REQUEST',
      KEY_INVALID: 'BAD_REQUEST',
      IN_PROGRESS: 'CONFLICT',
      FINGERPRINT_MISMATCH: 'UNPROCESSABLE_CONTENT',
      RESULT_NOT_STORABLE: 'INTERNAL_SERVER_ERROR',
      STORE_UNAVAILABLE: 'SERVICE_UNAVAILABLE',
    });
    expect(Object.keys(idempotencyTrpcErrorCodes).sort()).toEqual(Object.values(IdempotencyErrorCode).sort());
    expect(Object.isFrozen(idempotencyTrpcErrorCodes)).toBe(true);
  });

  it.each([
    ['KEY_MISSING', 400],
    ['KEY_INVALID', 400],
    ['IN_PROGRESS', 409],
    ['FINGERPRINT_MISMATCH', 422],
    ['RESULT_NOT_STORABLE', 500],
    ['STORE_UNAVAILABLE', 503],
  ] as const)('turns %s into HTTP %i, keeping the message and the IdempotencyError as cause', (code, status) => {
    const original = new IdempotencyError(code, `message for ${code}`, { procedure: 'p', key: 'k' });

    const error = toTRPCError(original);

    expect(error).toBeInstanceOf(TRPCError);
    expect(getHTTPStatusCodeFromError(error)).toBe(status);
    expect(error.message).toBe(`message for ${code}`);
    expect(error.cause).toBe(original);
    expect(isIdempotencyError(error.cause)).toBe(true);
  });
});

describe('trpcErrorFinality (which procedure errors are stored and replayed)', () => {
  it('decides every tRPC error code', () => {
    expect(Object.keys(trpcErrorFinality).sort()).toEqual(Object.keys(TRPC_ERROR_CODES_BY_KEY).sort());
  });

  it('stores input and state errors; releases auth, conflict, server and transient errors', () => {
    const final = Object.entries(trpcErrorFinality)
      .filter(([, finality]) => finality === 'final')
      .map(([code]) => code)
      .sort();
    expect(final).toEqual(
      [
        'BAD_REQUEST',
        'METHOD_NOT_SUPPORTED',
        'NOT_FOUND',
        'PARSE_ERROR',
        'PAYLOAD_TOO_LARGE',
        'PAYMENT_REQUIRED',
        'PRECONDITION_FAILED',
        'UNPROCESSABLE_CONTENT',
        'UNSUPPORTED_MEDIA_TYPE',
      ].sort(),
    );
    for (const code of ['UNAUTHORIZED', 'FORBIDDEN', 'CONFLICT', 'INTERNAL_SERVER_ERROR', 'TIMEOUT'] as const) {
      expect(isFinalByDefault(new TRPCError({ code }))).toBe(false);
    }
    expect(isFinalByDefault(new TRPCError({ code: 'NOT_FOUND' }))).toBe(true);
  });
});

describe('the stored form of a final error', () => {
  const policy = createTrpcErrorPolicy(isFinalByDefault);

  it('replays as a TRPCError with the same code and message, without the cause', () => {
    const original = new TRPCError({ code: 'NOT_FOUND', message: 'no account 42', cause: new Error('SELECT …') });

    const { code, bytes } = policy.encode(original);
    const replayed = policy.decode(code, bytes) as TRPCError;

    expect(code).toBe('NOT_FOUND');
    expect(replayed).toBeInstanceOf(TRPCError);
    expect(replayed.code).toBe('NOT_FOUND');
    expect(replayed.message).toBe('no account 42');
    expect(replayed.cause).toBeUndefined();
    expect(new TextDecoder().decode(bytes)).not.toContain('SELECT');
  });

  it('treats only TRPCErrors (also from another copy of tRPC) as candidates for storing', () => {
    const foreign = Object.assign(new Error('bad'), { name: 'TRPCError', code: 'BAD_REQUEST' });
    expect(policy.isFinal(foreign)).toBe(true);
    expect(policy.isFinal(new Error('plain'))).toBe(false);
    expect(policy.isFinal({ code: 'BAD_REQUEST' })).toBe(false);
  });

  it('replays a record with an unknown code or damaged bytes as an error rather than crashing', () => {
    const unknown = policy.decode('TEAPOT', new TextEncoder().encode('{"message":"short and stout"}')) as TRPCError;
    expect(unknown.code).toBe('INTERNAL_SERVER_ERROR');
    expect(unknown.message).toContain('TEAPOT');

    const damaged = policy.decode('BAD_REQUEST', new Uint8Array([0xff, 0xfe])) as TRPCError;
    expect(damaged.code).toBe('BAD_REQUEST');
  });
});

describe('idempotencyErrorData (for error formatters)', () => {
  it('exposes the idempotency code and retry hint of an idempotency error', () => {
    const inProgress = new IdempotencyError('IN_PROGRESS', 'busy', { retryAfterMs: 1_500 });

    expect(idempotencyErrorData(toTRPCError(inProgress))).toEqual({ code: 'IN_PROGRESS', retryAfterMs: 1_500 });
    expect(idempotencyErrorData(new IdempotencyError('KEY_MISSING', 'no key'))).toEqual({ code: 'KEY_MISSING' });
  });

  it('is null for every other error', () => {
    expect(idempotencyErrorData(new TRPCError({ code: 'BAD_REQUEST' }))).toBeNull();
    expect(idempotencyErrorData(new TRPCError({ code: 'BAD_REQUEST', cause: new Error('x') }))).toBeNull();
    expect(idempotencyErrorData(null)).toBeNull();
  });
});
