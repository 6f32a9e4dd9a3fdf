/**
 * rpc-idempotency/grpc/client: the client side of the gRPC adapter for `@grpc/grpc-js`. It does not import the
 * server code or the core service, so a client bundle stays small.
 *
 * ```ts
 * const client = new Payments(address, credentials, {
 *   interceptors: [idempotencyKeyInterceptor()],
 *   'grpc.service_config': JSON.stringify(idempotentRetryServiceConfig({ methods: ['payments.v1.Payments'] })),
 * });
 * ```
 *
 * @packageDocumentation
 */
import { randomUUID } from 'node:crypto';
import { InterceptingCall, type Interceptor, type ServiceConfig } from '@grpc/grpc-js';
import { IdempotencyGrpcMetadata, validateMetadataKeyName } from './metadata.js';

export { IdempotencyGrpcMetadata } from './metadata.js';

/**
 * The method a client call is for, as {@link IdempotencyKeyInterceptorOptions.methods} sees it.
 *
 * @example
 * ```ts
 * const mutating = (method: IdempotencyGrpcClientMethod) => !/\/(Get|List)\w*$/.test(method.path);
 * ```
 */
export interface IdempotencyGrpcClientMethod {
  /** The method path, e.g. `/payments.v1.Payments/CreatePayment`. */
  readonly path: string;
  readonly requestStream: boolean;
  readonly responseStream: boolean;
}

/**
 * Options of {@link idempotencyKeyInterceptor}.
 *
 * @example
 * ```ts
 * idempotencyKeyInterceptor({ generateKey: () => ulid(), methods: (m) => m.path.endsWith('/CreatePayment') });
 * ```
 */
export interface IdempotencyKeyInterceptorOptions {
  /** The metadata the key is sent in; must match the server's. @default 'idempotency-key' */
  readonly metadataKey?: string;
  /** Makes a key for a call that has none. @default crypto.randomUUID */
  readonly generateKey?: () => string;
  /**
   * Which calls get a key. Client-streaming and bidi calls never do (the server refuses keys on them).
   * @default every unary and server-streaming call
   * @example (method) => /\/(Create|Refund)\w*$/.test(method.path)
   */
  readonly methods?: (method: IdempotencyGrpcClientMethod) => boolean;
}

/**
 * A client interceptor that gives every call one idempotency key: `crypto.randomUUID()` unless the caller put
 * one in the call's metadata (to retry a logical request across process restarts, store the key and pass it
 * yourself). The interceptor runs once per logical call, so grpc-js's built-in retries (a `retryPolicy` in the
 * service config, see {@link idempotentRetryServiceConfig}) resend the same key, and the server replays or
 * runs the request exactly once.
 *
 * The caller's `Metadata` object is never modified (a copy carries the key), so a metadata object reused for
 * many calls does not make them share a key.
 *
 * Per-call `interceptors` in grpc-js replace the client's list rather than extend it: include this
 * interceptor there too if you pass any.
 *
 * @example
 * ```ts
 * const client = new Payments('localhost:50051', grpc.credentials.createInsecure(), {
 *   interceptors: [idempotencyKeyInterceptor()],
 * });
 * // An explicit key, e.g. one stored with the order so a restarted worker retries with it:
 * const metadata = new grpc.Metadata();
 * metadata.set('idempotency-key', order.paymentKey);
 * client.createPayment(request, metadata, callback);
 * ```
 */
export function idempotencyKeyInterceptor(options: IdempotencyKeyInterceptorOptions = {}): Interceptor {
  const where = 'idempotencyKeyInterceptor';
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(`${where}: expected an options object or nothing, received ${String(options)}.`);
  }
  for (const name of Object.keys(options)) {
    if (name !== 'metadataKey' && name !== 'generateKey' && name !== 'methods') {
      throw new TypeError(
        `${where}: unknown option ${JSON.stringify(name)}. Expected metadataKey, generateKey or methods. Check for a typo.`,
      );
    }
  }
  const metadataKey =
    options.metadataKey === undefined
      ? IdempotencyGrpcMetadata.KEY
      : validateMetadataKeyName(options.metadataKey, where);
  const generateKey = options.generateKey ?? randomUUID;
  if (typeof generateKey !== 'function') {
    throw new TypeError(
      `${where}: expected generateKey to be a function returning a string, received ${typeof generateKey}.`,
    );
  }
  const methods = options.methods;
  if (methods !== undefined && typeof methods !== 'function') {
    throw new TypeError(`${where}: expected methods to be a function (method) => boolean, received ${typeof methods}.`);
  }

  return (callOptions, nextCall) => {
    const definition = callOptions.method_definition;
    const method: IdempotencyGrpcClientMethod = {
      path: definition.path,
      requestStream: definition.requestStream,
      responseStream: definition.responseStream,
    };
    if (method.requestStream || (methods && !methods(method))) return new InterceptingCall(nextCall(callOptions));
    return new InterceptingCall(nextCall(callOptions), {
      start(metadata, listener, next) {
        if (metadata.get(metadataKey).length > 0) {
          next(metadata, listener);
          return;
        }
        const key = generateKey();
        if (typeof key !== 'string' || key.length === 0) {
          throw new TypeError(`${where}: generateKey returned ${JSON.stringify(key)}; expected a non-empty string.`);
        }
        const withKey = metadata.clone();
        withKey.set(metadataKey, key);
        next(withKey, listener);
      },
    });
  };
}

/**
 * Options of {@link idempotentRetryServiceConfig}. All durations are milliseconds.
 *
 * @example
 * ```ts
 * idempotentRetryServiceConfig({ methods: ['payments.v1.Payments'], maxAttempts: 4, initialBackoffMs: 50 });
 * ```
 */
export interface IdempotentRetryServiceConfigOptions {
  /**
   * What the retry policy applies to: fully qualified service names (`'payments.v1.Payments'`) or method
   * paths (`'/payments.v1.Payments/CreatePayment'`).
   * @default every method of every service on the channel
   */
  readonly methods?: readonly string[];
  /** Attempts including the first; grpc-js caps this at 5 unless `grpc-node.retry_max_attempts_limit` is raised. @default 5 */
  readonly maxAttempts?: number;
  /** Backoff before the first retry (randomized by grpc-js between 0 and this value). @default 100 */
  readonly initialBackoffMs?: number;
  /** Upper bound of the backoff. @default 2_000 */
  readonly maxBackoffMs?: number;
  /** Growth of the backoff per attempt. @default 2 */
  readonly backoffMultiplier?: number;
}

const METHOD_PATH = /^\/([^/\s]+)\/([^/\s]+)$/;
const SERVICE_NAME = /^[A-Za-z_][\w.]*$/;

/**
 * A grpc-js service config whose `retryPolicy` retries `UNAVAILABLE` and `ABORTED`: the two statuses after
 * which retrying a keyed call is both safe and useful.
 *
 * - `UNAVAILABLE`: the server was unreachable, or its idempotency store was down (`STORE_UNAVAILABLE`);
 *   nothing ran, and the retry carries the same key.
 * - `ABORTED`: the same key is still running (`IN_PROGRESS`); the server sends `grpc-retry-pushback-ms`, and
 *   grpc-js waits that long, so the retry usually finds the finished record and gets it replayed.
 *
 * With {@link idempotencyKeyInterceptor} every attempt sends the same key, so even a retry of a request that
 * did run gets the stored response instead of running twice. Other codes are left alone: final errors replay
 * the same answer anyway, and `DEADLINE_EXCEEDED` ends the whole call in grpc-js. grpc-js retries only while
 * no response headers arrived, which is why the server sends these statuses trailers-only.
 *
 * Pass it as the channel option `grpc.service_config` (a JSON string).
 *
 * @example
 * ```ts
 * const client = new Payments(address, credentials, {
 *   interceptors: [idempotencyKeyInterceptor()],
 *   'grpc.service_config': JSON.stringify(idempotentRetryServiceConfig({ methods: ['payments.v1.Payments'] })),
 * });
 * ```
 */
export function idempotentRetryServiceConfig(options: IdempotentRetryServiceConfigOptions = {}): ServiceConfig {
  const where = 'idempotentRetryServiceConfig';
  const maxAttempts = options.maxAttempts ?? 5;
  if (!Number.isSafeInteger(maxAttempts) || maxAttempts < 2) {
    throw new TypeError(
      `${where}: expected maxAttempts to be an integer of at least 2, received ${String(maxAttempts)}.`,
    );
  }
  const initialBackoffMs = positiveInteger(options.initialBackoffMs ?? 100, 'initialBackoffMs', where);
  const maxBackoffMs = positiveInteger(options.maxBackoffMs ?? 2_000, 'maxBackoffMs', where);
  const backoffMultiplier = options.backoffMultiplier ?? 2;
  if (typeof backoffMultiplier !== 'number' || !Number.isFinite(backoffMultiplier) || backoffMultiplier <= 0) {
    throw new TypeError(
      `${where}: expected backoffMultiplier to be a positive number, received ${String(backoffMultiplier)}.`,
    );
  }
  if (maxBackoffMs < initialBackoffMs) {
    throw new TypeError(
      `${where}: expected maxBackoffMs (${maxBackoffMs}) to be at least initialBackoffMs (${initialBackoffMs}).`,
    );
  }
  const methods = options.methods;
  if (methods !== undefined && !Array.isArray(methods)) {
    throw new TypeError(`${where}: expected methods to be an array of service names or method paths.`);
  }
  const names =
    methods === undefined
      ? [{}]
      : methods.map((target) => {
          const match = typeof target === 'string' ? METHOD_PATH.exec(target) : null;
          if (match) return { service: match[1] as string, method: match[2] as string };
          if (typeof target === 'string' && SERVICE_NAME.test(target)) return { service: target };
          throw new TypeError(
            `${where}: expected each entry of methods to be a service name ('payments.v1.Payments') or a method path ('/payments.v1.Payments/CreatePayment'), received ${JSON.stringify(target)}.`,
          );
        });
  return {
    loadBalancingConfig: [],
    methodConfig: [
      {
        name: names,
        retryPolicy: {
          maxAttempts,
          initialBackoff: seconds(initialBackoffMs),
          maxBackoff: seconds(maxBackoffMs),
          backoffMultiplier,
          retryableStatusCodes: ['UNAVAILABLE', 'ABORTED'],
        },
      },
    ],
  };
}

function positiveInteger(value: number, name: string, where: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new TypeError(
      `${where}: expected ${name} to be a positive integer of milliseconds, received ${String(value)}.`,
    );
  }
  return value;
}

/** A protobuf JSON duration, which grpc-js requires for backoffs: whole milliseconds as decimal seconds. */
function seconds(ms: number): string {
  return `${ms / 1_000}s`;
}
