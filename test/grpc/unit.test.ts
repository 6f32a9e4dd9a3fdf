// Store-independent parts of the gRPC adapter: the mapping tables, the record envelope, option validation,
// replayableService and the client-side helpers. The behaviour with real servers is in suite.ts.
import * as grpc from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { idempotencyKeyInterceptor, idempotentRetryServiceConfig } from '../../src/grpc/client.js';
import {
  decodeGrpcResponse,
  encodeGrpcResponse,
  IdempotencyGrpcErrorStatus,
  IdempotencyGrpcMetadata,
  IdempotencyGrpcStatusPolicy,
  idempotencyGrpcResponseCodec,
  idempotencyInterceptor,
  replayableService,
} from '../../src/grpc/index.js';
import { decodeSharedError, encodeSharedError } from '../../src/grpc/shared-errors.js';
import { createStatusClassifier } from '../../src/grpc/status-policy.js';
import { createIdempotencyService, createMemoryStore, IdempotencyErrorCode } from '../../src/index.js';
import { PaymentsService } from './payments.js';

const service = createIdempotencyService({ store: createMemoryStore() });

describe('IdempotencyGrpcErrorStatus (the one error table)', () => {
  it('maps every IdempotencyErrorCode as the README error table says, plus the three gRPC-only refusals', () => {
    expect(IdempotencyGrpcErrorStatus).toEqual({
      KEY_MISSING: grpc.status.INVALID_ARGUMENT,
      KEY_INVALID: grpc.status.INVALID_ARGUMENT,
      IN_PROGRESS: grpc.status.ABORTED,
      FINGERPRINT_MISMATCH: grpc.status.FAILED_PRECONDITION,
      RESULT_NOT_STORABLE: grpc.status.INTERNAL,
      STORE_UNAVAILABLE: grpc.status.UNAVAILABLE,
      STREAMING_NOT_SUPPORTED: grpc.status.UNIMPLEMENTED,
      SERVICE_NOT_REPLAYABLE: grpc.status.INTERNAL,
      TRANSACTION_FAILED: grpc.status.ABORTED,
    });
  });

  it('covers every core code, so a new core code cannot go unmapped', () => {
    for (const code of Object.values(IdempotencyErrorCode)) {
      expect(IdempotencyGrpcErrorStatus[code], code).toBeTypeOf('number');
    }
  });

  it('is frozen', () => {
    expect(Object.isFrozen(IdempotencyGrpcErrorStatus)).toBe(true);
  });
});

describe('IdempotencyGrpcStatusPolicy (final or retryable)', () => {
  it('classifies every status but OK, as documented', () => {
    const names = Object.keys(grpc.status).filter((name) => Number.isNaN(Number(name)) && name !== 'OK');
    expect(Object.keys(IdempotencyGrpcStatusPolicy).sort()).toEqual(names.sort());
    const final = Object.entries(IdempotencyGrpcStatusPolicy)
      .filter(([, kind]) => kind === 'final')
      .map(([name]) => name)
      .sort();
    expect(final).toEqual([
      'ALREADY_EXISTS',
      'FAILED_PRECONDITION',
      'INVALID_ARGUMENT',
      'NOT_FOUND',
      'OUT_OF_RANGE',
      'UNIMPLEMENTED',
    ]);
  });

  it('layers global and method overrides over the table; unknown codes are retryable', () => {
    const classify = createStatusClassifier({ NOT_FOUND: 'retryable', ABORTED: 'final' }, { ABORTED: 'retryable' });
    expect(classify(grpc.status.NOT_FOUND)).toBe('retryable');
    expect(classify(grpc.status.ABORTED)).toBe('retryable');
    expect(classify(grpc.status.INVALID_ARGUMENT)).toBe('final');
    expect(classify(42)).toBe('retryable');
  });
});

describe('the record envelope', () => {
  function sampleResponse() {
    const headers = new grpc.Metadata();
    headers.add('x-region', 'eu');
    headers.add('x-multi', 'one');
    headers.add('x-multi', 'two');
    headers.add('x-trace-bin', Buffer.from([0, 255, 1]));
    headers.add('x-trace-bin', Buffer.alloc(0));
    const trailers = new grpc.Metadata();
    trailers.add('x-ledger', 'L-1');
    trailers.add('x-sig-bin', Buffer.from([0xde, 0xad]));
    return {
      headers,
      messages: [Buffer.from([8, 1]), Buffer.alloc(0), Buffer.alloc(70_000, 7)],
      status: { code: grpc.status.FAILED_PRECONDITION, details: 'voided — ünïcode', trailers },
    };
  }

  it('round-trips headers, messages, status and trailers, keeping repeated keys and -bin Buffers', () => {
    const response = sampleResponse();

    const decoded = decodeGrpcResponse(encodeGrpcResponse(response));

    expect(decoded.headers?.toJSON()).toEqual(response.headers.toJSON());
    expect(decoded.headers?.get('x-trace-bin')[0]).toBeInstanceOf(Buffer);
    expect(decoded.messages).toEqual(response.messages);
    expect(decoded.status.code).toBe(response.status.code);
    expect(decoded.status.details).toBe(response.status.details);
    expect(decoded.status.trailers.toJSON()).toEqual(response.status.trailers.toJSON());
  });

  it('tells a trailers-only response (no headers) from one with empty headers', () => {
    const base = { messages: [], status: { code: 3, details: '', trailers: new grpc.Metadata() } };
    expect(decodeGrpcResponse(encodeGrpcResponse({ ...base, headers: null })).headers).toBeNull();
    expect(decodeGrpcResponse(encodeGrpcResponse({ ...base, headers: new grpc.Metadata() })).headers?.toJSON()).toEqual(
      {},
    );
  });

  it('costs a few bytes per field, not base64', () => {
    const response = {
      headers: null,
      messages: [Buffer.alloc(1_000)],
      status: { code: 0, details: 'OK', trailers: new grpc.Metadata() },
    };
    expect(encodeGrpcResponse(response).byteLength).toBeLessThan(1_030);
  });

  it('refuses damaged or foreign bytes with a message that says what was expected', () => {
    const bytes = encodeGrpcResponse(sampleResponse());
    expect(() => decodeGrpcResponse(bytes.subarray(0, bytes.length - 3))).toThrow(
      /expected .* at offset \d+, but the envelope ends/,
    );
    expect(() => decodeGrpcResponse(new TextEncoder().encode('{"json":true}'))).toThrow(/start with "gr"/);
    const future = Uint8Array.from(bytes);
    future[2] = 9;
    expect(() => decodeGrpcResponse(future)).toThrow(/expected envelope version 1, found 9/);
    expect(() => decodeGrpcResponse(Uint8Array.from([...bytes, 0]))).toThrow(/1 unexpected bytes/);
  });

  it('is the codec the interceptor stores with', () => {
    expect(idempotencyGrpcResponseCodec.name).toBe('grpc-response/v1');
    const response = sampleResponse();
    expect(idempotencyGrpcResponseCodec.decode(idempotencyGrpcResponseCodec.encode(response)).messages).toEqual(
      response.messages,
    );
  });
});

describe('shared-result errors (records shared with another transport)', () => {
  it('stores a final gRPC error as an HTTP-style code and a JSON message, and maps it back', () => {
    const stored = encodeSharedError({
      headers: null,
      messages: [],
      status: { code: grpc.status.FAILED_PRECONDITION, details: 'insufficient funds', trailers: new grpc.Metadata() },
    });
    expect(stored.code).toBe('PRECONDITION_FAILED');
    expect(JSON.parse(new TextDecoder().decode(stored.bytes))).toEqual({ message: 'insufficient funds' });
    expect(decodeSharedError(stored.code, stored.bytes).status).toMatchObject({
      code: grpc.status.FAILED_PRECONDITION,
      details: 'insufficient funds',
    });
  });

  it('replays codes written by the tRPC adapter as the matching gRPC status', () => {
    const bytes = new TextEncoder().encode(JSON.stringify({ message: 'amount must be positive' }));
    expect(decodeSharedError('BAD_REQUEST', bytes).status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(decodeSharedError('UNPROCESSABLE_CONTENT', bytes).status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(decodeSharedError('NOT_FOUND', bytes).status.code).toBe(grpc.status.NOT_FOUND);
    expect(decodeSharedError('PAYMENT_REQUIRED', bytes).status.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(decodeSharedError('DATA_LOSS', bytes).status.code).toBe(grpc.status.DATA_LOSS);
    expect(decodeSharedError('SOMETHING_NEW', new Uint8Array([0xff])).status).toMatchObject({
      code: grpc.status.UNKNOWN,
      details: 'SOMETHING_NEW',
    });
  });
});

describe('idempotencyInterceptor options', () => {
  it.each([
    [undefined, /expected an options object with a service/],
    [{}, /expected options.service to be an IdempotencyService/],
    [{ service, requried: true }, /unknown option "requried"/],
    [{ service, metadataKey: 'Idempotency Key' }, /lowercase gRPC metadata name/],
    [{ service, metadataKey: 'idempotency-key-bin' }, /not ending in '-bin'/],
    [{ service, scope: 'tenant' }, /expected scope to be a function/],
    [{ service, ttlMs: 0 }, /expected ttlMs to be a positive integer/],
    [{ service, inFlight: 'wait' }, /expected inFlight to be 'reject' or \{ wait: true/],
    [{ service, statusPolicy: { NOTFOUND: 'final' } }, /unknown status name "NOTFOUND"/],
    [{ service, statusPolicy: { OK: 'final' } }, /unknown status name "OK"/],
    [{ service, statusPolicy: { NOT_FOUND: 'sometimes' } }, /must be 'final' or 'retryable'/],
    [{ service, unlistedMethods: 'skip' }, /expected unlistedMethods to be 'apply' or 'ignore'/],
    [{ service, methods: { 'payments.v1.Payments/CreatePayment': {} } }, /expected a method path such as/],
    [{ service, methods: { '/payments.v1.Payments/CreatePayment': { scope: () => '' } } }, /unknown option "scope"/],
    [
      { service, methods: { '/payments.v1.Payments/CreatePayment': { required: 'yes' } } },
      /expected required to be a boolean/,
    ],
    [
      { service, methods: { '/payments.v1.Payments/CreatePayment': { result: {} } } },
      /expected result to be \{ codec, fromResponse/,
    ],
  ])('rejects %o at construction', (options, message) => {
    expect(() => idempotencyInterceptor(options as never)).toThrow(message);
  });

  it('accepts a full, valid configuration', () => {
    expect(
      idempotencyInterceptor({
        service,
        metadataKey: 'x-request-id',
        scope: () => 'tenant',
        required: false,
        ttlMs: 60_000,
        inFlight: { wait: true },
        statusPolicy: { NOT_FOUND: 'retryable' },
        unlistedMethods: 'ignore',
        methods: {
          '/payments.v1.Payments/CreatePayment': { required: true, procedure: 'payments.create' },
          '/a.B/C': false,
        },
      }),
    ).toBeTypeOf('function');
  });
});

describe('replayableService', () => {
  it('wraps every method serializer, keeps everything else, and can be applied twice', () => {
    const wrapped = replayableService(PaymentsService);
    const again = replayableService(wrapped);
    for (const name of Object.keys(PaymentsService)) {
      const original = PaymentsService[name] as grpc.MethodDefinition<object, object>;
      const method = wrapped[name] as grpc.MethodDefinition<object, object>;
      expect(method.path).toBe(original.path);
      expect(method.requestDeserialize).toBe(original.requestDeserialize);
      expect(method.responseSerialize).not.toBe(original.responseSerialize);
      expect((again[name] as grpc.MethodDefinition<object, object>).responseSerialize).toBe(method.responseSerialize);
    }
  });

  it('serializes ordinary messages exactly as the original serializer does', () => {
    const original = PaymentsService.CreatePayment as grpc.MethodDefinition<object, object>;
    const wrapped = replayableService(PaymentsService).CreatePayment as grpc.MethodDefinition<object, object>;
    const message = { id: 'pay_1', amount: '12', receipt: Buffer.from([1, 2]), status: 'PAYMENT_STATUS_PENDING' };
    expect(wrapped.responseSerialize(message)).toEqual(original.responseSerialize(message));
  });

  it('explains what it expected when given something else', () => {
    expect(() => replayableService(null as never)).toThrow(/expected a gRPC service definition/);
    expect(() => replayableService({ CreatePayment: {} } as never)).toThrow(
      /method "CreatePayment".*responseSerialize/,
    );
  });
});

describe('idempotencyKeyInterceptor', () => {
  it('validates its options', () => {
    expect(() => idempotencyKeyInterceptor({ header: 'x' } as never)).toThrow(/unknown option "header"/);
    expect(() => idempotencyKeyInterceptor({ metadataKey: 'grpc-key' })).toThrow(/not starting with 'grpc-'/);
    expect(() => idempotencyKeyInterceptor({ methods: ['/a.B/C'] as never })).toThrow(
      /expected methods to be a function/,
    );
  });

  it('uses the metadata name the server reads by default', () => {
    expect(IdempotencyGrpcMetadata.KEY).toBe('idempotency-key');
  });
});

describe('idempotentRetryServiceConfig', () => {
  it('retries UNAVAILABLE and ABORTED with protobuf-JSON durations grpc-js accepts', () => {
    const config = idempotentRetryServiceConfig({
      methods: ['payments.v1.Payments', '/payments.v1.Refunds/Create'],
      maxAttempts: 4,
      initialBackoffMs: 50,
      maxBackoffMs: 1_500,
    });
    expect(config.methodConfig).toEqual([
      {
        name: [{ service: 'payments.v1.Payments' }, { service: 'payments.v1.Refunds', method: 'Create' }],
        retryPolicy: {
          maxAttempts: 4,
          initialBackoff: '0.05s',
          maxBackoff: '1.5s',
          backoffMultiplier: 2,
          retryableStatusCodes: ['UNAVAILABLE', 'ABORTED'],
        },
      },
    ]);
    // grpc-js validates service configs when a channel is created; an invalid one throws here.
    const client = new grpc.Client('127.0.0.1:1', grpc.credentials.createInsecure(), {
      'grpc.service_config': JSON.stringify(config),
    });
    client.close();
  });

  it('applies to every method by default and rejects impossible values', () => {
    expect(idempotentRetryServiceConfig().methodConfig[0]?.name).toEqual([{}]);
    expect(() => idempotentRetryServiceConfig({ maxAttempts: 1 })).toThrow(/at least 2/);
    expect(() => idempotentRetryServiceConfig({ initialBackoffMs: 0.5 })).toThrow(/positive integer of milliseconds/);
    expect(() => idempotentRetryServiceConfig({ initialBackoffMs: 500, maxBackoffMs: 100 })).toThrow(
      /at least initialBackoffMs/,
    );
    expect(() => idempotentRetryServiceConfig({ methods: ['not a name'] })).toThrow(/service name .* or a method path/);
  });
});
