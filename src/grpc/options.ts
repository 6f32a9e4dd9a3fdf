import type { Metadata, ServerInterceptingCallInterface } from '@grpc/grpc-js';
import type { IdempotencyCodec } from '../core/codec.js';
import { describeValue } from '../core/errors.js';
import type { IdempotencyInFlightPolicy, IdempotencyService } from '../core/service.js';
import { validateTransactionOption } from '../core/transaction.js';
import { type IdempotencyTransactionOptions, isTransactionalStore } from '../stores/contract.js';
import { IdempotencyGrpcMetadata, validateMetadataKeyName } from './metadata.js';
import {
  createStatusClassifier,
  type IdempotencyGrpcStatusClass,
  type IdempotencyGrpcStatusOverrides,
  validateStatusOverrides,
} from './status-policy.js';

/**
 * The connection's authentication context, as grpc-js reports it (TLS peer certificate).
 *
 * @example
 * ```ts
 * scope: ({ authContext }) => authContext.sslPeerCertificate?.subject.CN ?? '',
 * ```
 */
export type IdempotencyGrpcAuthContext = ReturnType<ServerInterceptingCallInterface['getAuthContext']>;

/**
 * What the `scope` and `fingerprint` options are told about a call. `peer` and `authContext` are read from
 * the call when you access them.
 *
 * @example
 * ```ts
 * scope: ({ metadata, path }) => `${metadata.get('x-tenant-id')[0]}:${path.split('/')[1]}`,
 * ```
 */
export interface IdempotencyGrpcCallContext {
  /** The method path, e.g. `/payments.v1.Payments/CreatePayment`. */
  readonly path: string;
  /** The request metadata (after interceptors placed before this one, e.g. auth, have seen it). */
  readonly metadata: Metadata;
  /** The client's address, e.g. `127.0.0.1:53211`. */
  readonly peer: string;
  /** The TLS authentication context (`{}` on insecure connections). */
  readonly authContext: IdempotencyGrpcAuthContext;
  /** The underlying call, for anything else (host, deadline, connection info). */
  readonly call: ServerInterceptingCallInterface;
}

/**
 * Derive the scope (who owns the key) from a call. Throw an object with a gRPC `code` (and `details`) to
 * refuse the call with that status, e.g. `UNAUTHENTICATED` when the tenant is unknown.
 *
 * @default () => '' (one global key space)
 * @example
 * ```ts
 * const scope: IdempotencyGrpcScope = ({ metadata }) => {
 *   const tenant = metadata.get('x-tenant-id')[0];
 *   if (typeof tenant !== 'string') throw { code: status.UNAUTHENTICATED, details: 'x-tenant-id is missing' };
 *   return tenant;
 * };
 * ```
 */
export type IdempotencyGrpcScope = (context: IdempotencyGrpcCallContext) => string | Promise<string>;

/**
 * Return the data a request's fingerprint is computed from (hashed with SHA-256 together with the method's
 * procedure identity). Return a projection to ignore fields that may differ between retries.
 *
 * @default the decoded request
 * @example
 * ```ts
 * const fingerprint: IdempotencyGrpcFingerprint = (request) => ({ ...(request as object), sentAt: undefined });
 * ```
 */
export type IdempotencyGrpcFingerprint = (request: unknown, context: IdempotencyGrpcCallContext) => unknown;

/**
 * Store a unary method's result in a transport-neutral form, so the same procedure exposed on tRPC and gRPC
 * shares one record per key: the gRPC call stores `fromResponse(message)` with `codec`, and replays a record
 * (whichever transport wrote it) as the message `toResponse(value)`.
 *
 * In this mode only the message is stored, not response headers or trailers. Final errors are stored in a
 * transport-neutral form (an HTTP-style code name such as `BAD_REQUEST` or `NOT_FOUND`, plus the message),
 * the form `rpc-idempotency/trpc` stores its errors in, and replayed as the matching gRPC status, whichever
 * transport wrote them.
 *
 * @example
 * ```ts
 * const result: IdempotencyGrpcSharedResult<Payment> = {
 *   codec: jsonCodec, // the tRPC router's codec (no transformer)
 *   fromResponse: (message) => toDomain(message as PaymentMessage),
 *   toResponse: (payment) => toMessage(payment),
 * };
 * ```
 */
export interface IdempotencyGrpcSharedResult<T = unknown> {
  /** The codec both transports store the value with, e.g. `jsonCodec`. */
  readonly codec: IdempotencyCodec<T>;
  /** The value to store, from the handler's response message. */
  fromResponse(message: unknown): T;
  /** The response message to send when replaying a stored value. */
  toResponse(value: T): unknown;
}

/**
 * Options that can be set for all methods and overridden per method.
 *
 * @example
 * ```ts
 * const policy: IdempotencyGrpcPolicyOptions = { required: true, ttlMs: 3_600_000, statusPolicy: { NOT_FOUND: 'retryable' } };
 * ```
 */
export interface IdempotencyGrpcPolicyOptions {
  /**
   * Refuse calls without a key (`INVALID_ARGUMENT`, `idempotency-error: KEY_MISSING`).
   * @default false (a call without a key runs normally)
   */
  readonly required?: boolean;
  /**
   * The data a request's fingerprint is computed from.
   * @default the decoded request (objects with a `toObject()` method, such as google-protobuf messages,
   * through `toObject()`), rendered as canonical JSON
   */
  readonly fingerprint?: IdempotencyGrpcFingerprint;
  /**
   * Which handler statuses are stored (final) or released (retryable), over the defaults in
   * `IdempotencyGrpcStatusPolicy`. Method overrides apply over global ones.
   * @default {} (the table as documented)
   */
  readonly statusPolicy?: IdempotencyGrpcStatusOverrides;
  /** How long a record counts, in ms. @default the service's `ttlMs` */
  readonly ttlMs?: number;
  /** How long a claim holds the key without renewal, in ms. @default the service's `leaseMs` */
  readonly leaseMs?: number;
  /** What a call does when it finds its key still running elsewhere. @default the service's `inFlight` */
  readonly inFlight?: IdempotencyInFlightPolicy;
  /**
   * The largest stored response (encoded headers, messages, status and trailers), in bytes. A server stream
   * that sends more stops being buffered at this size; its first caller still gets every message and retries
   * get `RESULT_NOT_STORABLE`.
   * @default the service's `maxResultBytes`
   */
  readonly maxResultBytes?: number;
}

/**
 * Per-method options, keyed by method path in {@link IdempotencyGrpcOptions.methods}.
 *
 * @example
 * ```ts
 * methods: { '/payments.v1.Payments/CreatePayment': { required: true, maxResultBytes: 65_536 } }
 * ```
 */
export interface IdempotencyGrpcMethodOptions extends IdempotencyGrpcPolicyOptions {
  /**
   * The procedure identity stored in the record and hashed into the fingerprint. Set the same identity on the
   * tRPC procedure (and `result`) to share one key space between both transports.
   * @default the method path, e.g. `/payments.v1.Payments/CreatePayment`
   */
  readonly procedure?: string;
  /**
   * Store the result in a transport-neutral form (unary methods only). See
   * {@link IdempotencyGrpcSharedResult}.
   * @default undefined (store the exact gRPC response)
   */
  // biome-ignore lint/suspicious/noExplicitAny: each method's value type is its own; the shape is checked at runtime
  readonly result?: IdempotencyGrpcSharedResult<any>;
  /**
   * Transactional mode (unary methods only): run the handler inside one store transaction and commit the
   * idempotency record with it. The handler gets the transaction client with `idempotencyTransaction(call)` and
   * writes through it before it answers; those writes and the record commit together or not at all, and the
   * handler's status reaches the client only after the commit. `true` uses the database's defaults; an object
   * passes `isolationLevel`, `timeoutMs` and `maxWaitMs`. Calls without a key run in a transaction too.
   *
   * A final error status rolls the handler's writes back and is stored outside the transaction (retries replay
   * it). If the transaction fails after the handler answered (timeout, commit error), the client gets `ABORTED`
   * with `idempotency-error: TRANSACTION_FAILED` instead of the handler's answer, and the key is released.
   *
   * Per method only (a server-wide default would also hit streaming methods, whose messages leave before any
   * commit): a streaming method configured so is refused with `INTERNAL` at its first call. Requires a
   * transactional store (`createPrismaStore`): any other is refused when the interceptor is created.
   * @default false
   * @example { '/payments.v1.Payments/CreatePayment': { transaction: { isolationLevel: 'Serializable' } } }
   */
  readonly transaction?: boolean | IdempotencyTransactionOptions;
}

/**
 * Options of {@link idempotencyInterceptor}.
 *
 * @example
 * ```ts
 * idempotencyInterceptor({
 *   service,
 *   scope: ({ metadata }) => String(metadata.get('x-tenant-id')[0] ?? ''),
 *   methods: {
 *     '/payments.v1.Payments/CreatePayment': { required: true },
 *     '/payments.v1.Payments/GetPayment': false,
 *   },
 * });
 * ```
 */
export interface IdempotencyGrpcOptions extends IdempotencyGrpcPolicyOptions {
  /** The core service (store, TTL, lease, in-flight policy). */
  readonly service: IdempotencyService;
  /** The request metadata that carries the key. @default 'idempotency-key' */
  readonly metadataKey?: string;
  /**
   * Who owns the key. Records are unique per (scope, key).
   * @default () => '' (one global key space: unsafe for multi-tenant services, where one tenant could replay
   * another's response by guessing its key)
   */
  readonly scope?: IdempotencyGrpcScope;
  /**
   * Per-method options by method path (`/package.Service/Method`); `false` turns idempotency off for that
   * method (its keys are ignored).
   * @default {}
   */
  readonly methods?: Readonly<Record<string, IdempotencyGrpcMethodOptions | false>>;
  /**
   * Whether methods missing from `methods` are handled (`'apply'`: every unary and server-streaming method
   * whose call carries a key) or left alone (`'ignore'`).
   * @default 'apply'
   */
  readonly unlistedMethods?: 'apply' | 'ignore';
  /**
   * Called when the interceptor itself fails (a `scope` or `fingerprint` option threw, a stored record could
   * not be decoded); the client gets `INTERNAL` and the handler does not run.
   * @default logs with console.error
   */
  readonly onError?: (error: unknown, context: { readonly path: string }) => void;
}

/** Everything a call of one method needs, resolved once per method path (internal). */
export interface ResolvedMethod {
  readonly path: string;
  readonly procedure: string;
  readonly required: boolean;
  readonly fingerprint: IdempotencyGrpcFingerprint;
  readonly classify: (code: number) => IdempotencyGrpcStatusClass;
  readonly ttlMs: number | undefined;
  readonly leaseMs: number | undefined;
  readonly inFlight: IdempotencyInFlightPolicy | undefined;
  /** The buffer cap: the option, or the service's default. */
  readonly maxResultBytes: number;
  /** Whether the option was set (then it is passed to the service per call). */
  readonly maxResultBytesOption: number | undefined;
  // biome-ignore lint/suspicious/noExplicitAny: see IdempotencyGrpcMethodOptions.result
  readonly result: IdempotencyGrpcSharedResult<any> | undefined;
  /** `undefined` when not transactional; `true` or the transaction options otherwise. */
  readonly transaction: true | IdempotencyTransactionOptions | undefined;
}

/** The validated options (internal). */
export interface ResolvedOptions {
  readonly service: IdempotencyService;
  readonly metadataKey: string;
  readonly scope: IdempotencyGrpcScope;
  readonly onError: (error: unknown, context: { readonly path: string }) => void;
  /** The method's resolved options, or `null` when idempotency is off for it. */
  methodFor(path: string): ResolvedMethod | null;
}

const WHERE = 'idempotencyInterceptor';
const METHOD_PATH = /^\/[^/\s]+\/[^/\s]+$/;
const POLICY_KEYS = ['required', 'fingerprint', 'statusPolicy', 'ttlMs', 'leaseMs', 'inFlight', 'maxResultBytes'];
const METHOD_KEYS = new Set([...POLICY_KEYS, 'procedure', 'result', 'transaction']);
const GLOBAL_KEYS = new Set([
  ...POLICY_KEYS,
  'service',
  'metadataKey',
  'scope',
  'methods',
  'unlistedMethods',
  'onError',
]);

/**
 * The default fingerprint input: the decoded request as it is (google-protobuf messages through `toObject()`).
 *
 * @example
 * ```ts
 * computeFingerprint(path, defaultFingerprint(request, context));
 * ```
 */
export const defaultFingerprint: IdempotencyGrpcFingerprint = (request) => {
  if (typeof request === 'object' && request !== null && Object.getPrototypeOf(request) !== Object.prototype) {
    const toObject = (request as { toObject?: unknown }).toObject;
    // google-protobuf's generated classes keep fields in internal arrays; toObject() is their data.
    if (typeof toObject === 'function') return toObject.call(request);
  }
  return request;
};

const defaultScope: IdempotencyGrpcScope = () => '';

const defaultOnError = (error: unknown, context: { readonly path: string }) => {
  console.error(`rpc-idempotency/grpc: the idempotency interceptor failed for ${context.path}:`, error);
};

/**
 * Validate the interceptor's options once, at construction, with errors that say what to change.
 *
 * @example
 * ```ts
 * const config = resolveOptions({ service });
 * config.methodFor('/payments.v1.Payments/CreatePayment')?.required; // false
 * ```
 */
export function resolveOptions(options: IdempotencyGrpcOptions): ResolvedOptions {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(
      `${WHERE}: expected an options object with a service, received ${describeValue(options)}. Pass { service: createIdempotencyService({ store }) }.`,
    );
  }
  if (Object.hasOwn(options, 'transaction')) {
    throw new TypeError(
      `${WHERE}: transaction is a per-method option (transactional mode is for unary methods only), received it for all methods. Set it for each unary method: methods: { '/payments.v1.Payments/CreatePayment': { transaction: true } }.`,
    );
  }
  checkKeys(options, GLOBAL_KEYS, `${WHERE}`);
  const service = options.service;
  if (typeof service !== 'object' || service === null || typeof service.execute !== 'function') {
    throw new TypeError(
      `${WHERE}: expected options.service to be an IdempotencyService, received ${describeValue(service)}. Create one with createIdempotencyService({ store }).`,
    );
  }
  const metadataKey =
    options.metadataKey === undefined
      ? IdempotencyGrpcMetadata.KEY
      : validateMetadataKeyName(options.metadataKey, WHERE);
  const scope = optionalFunction(options.scope, 'scope', WHERE) ?? defaultScope;
  const onError = optionalFunction(options.onError, 'onError', WHERE) ?? defaultOnError;
  const unlisted = options.unlistedMethods ?? 'apply';
  if (unlisted !== 'apply' && unlisted !== 'ignore') {
    throw new TypeError(
      `${WHERE}: expected unlistedMethods to be 'apply' or 'ignore', received ${describeValue(unlisted)}.`,
    );
  }
  const global = validatePolicy(options, WHERE);
  const table = options.methods ?? {};
  if (typeof table !== 'object' || table === null || Array.isArray(table)) {
    throw new TypeError(
      `${WHERE}: expected methods to be an object keyed by method path, such as { '/payments.v1.Payments/CreatePayment': { required: true } }, received ${describeValue(table)}.`,
    );
  }
  const listed = new Map<string, IdempotencyGrpcMethodOptions | false>();
  for (const [path, value] of Object.entries(table)) {
    if (!METHOD_PATH.test(path)) {
      throw new TypeError(
        `${WHERE}: methods has the key ${JSON.stringify(path)}, expected a method path such as '/payments.v1.Payments/CreatePayment' (leading slash, fully qualified service, method name as in the .proto).`,
      );
    }
    if (value === false) {
      listed.set(path, false);
      continue;
    }
    const where = `${WHERE}: methods[${JSON.stringify(path)}]`;
    if (typeof value !== 'object' || value === null) {
      throw new TypeError(`${where}: expected an options object or false, received ${describeValue(value)}.`);
    }
    checkKeys(value, METHOD_KEYS, where);
    validatePolicy(value, where);
    if (value.procedure !== undefined && (typeof value.procedure !== 'string' || value.procedure.length === 0)) {
      throw new TypeError(
        `${where}: expected procedure to be a non-empty string, received ${describeValue(value.procedure)}.`,
      );
    }
    if (value.result !== undefined) validateSharedResult(value.result, where);
    if (validateTransactionOption(value.transaction, where) && !isTransactionalStore(service.store)) {
      throw new TypeError(
        `${where}: transactional mode needs a store that can run transactions, but the service's store "${service.store.name}" cannot. Create the service with createPrismaStore(prisma) (SQLite, PostgreSQL, MySQL/MariaDB), or remove transaction.`,
      );
    }
    listed.set(path, value);
  }

  const resolved = new Map<string, ResolvedMethod | null>();
  const methodFor = (path: string): ResolvedMethod | null => {
    const cached = resolved.get(path);
    if (cached !== undefined) return cached;
    const own = listed.get(path);
    let method: ResolvedMethod | null;
    if (own === false || (own === undefined && unlisted === 'ignore')) {
      method = null;
    } else {
      const local = own ?? {};
      const maxResultBytesOption = local.maxResultBytes ?? global.maxResultBytes;
      method = Object.freeze({
        path,
        procedure: local.procedure ?? path,
        required: local.required ?? global.required ?? false,
        fingerprint: local.fingerprint ?? global.fingerprint ?? defaultFingerprint,
        classify: createStatusClassifier(global.statusPolicy, validateStatusOverrides(local.statusPolicy, WHERE)),
        ttlMs: local.ttlMs ?? global.ttlMs,
        leaseMs: local.leaseMs ?? global.leaseMs,
        inFlight: local.inFlight ?? global.inFlight,
        maxResultBytes: maxResultBytesOption ?? service.maxResultBytes ?? 1_048_576,
        maxResultBytesOption,
        result: local.result,
        transaction:
          local.transaction === true || typeof local.transaction === 'object' ? local.transaction : undefined,
      });
    }
    // Paths come from registered handlers only (grpc-js answers unknown paths itself), so this stays small.
    resolved.set(path, method);
    return method;
  };

  return Object.freeze({ service, metadataKey, scope, onError, methodFor });
}

interface ValidatedPolicy {
  readonly required: boolean | undefined;
  readonly fingerprint: IdempotencyGrpcFingerprint | undefined;
  readonly statusPolicy: IdempotencyGrpcStatusOverrides;
  readonly ttlMs: number | undefined;
  readonly leaseMs: number | undefined;
  readonly inFlight: IdempotencyInFlightPolicy | undefined;
  readonly maxResultBytes: number | undefined;
}

function validatePolicy(value: IdempotencyGrpcPolicyOptions, where: string): ValidatedPolicy {
  if (value.required !== undefined && typeof value.required !== 'boolean') {
    throw new TypeError(`${where}: expected required to be a boolean, received ${describeValue(value.required)}.`);
  }
  const inFlight = value.inFlight;
  if (
    inFlight !== undefined &&
    inFlight !== 'reject' &&
    !(typeof inFlight === 'object' && inFlight !== null && inFlight.wait === true)
  ) {
    throw new TypeError(
      `${where}: expected inFlight to be 'reject' or { wait: true, timeoutMs?, pollIntervalMs? }, received ${describeValue(inFlight)}.`,
    );
  }
  return {
    required: value.required,
    fingerprint: optionalFunction(value.fingerprint, 'fingerprint', where),
    statusPolicy: validateStatusOverrides(value.statusPolicy, where),
    ttlMs: positiveInteger(value.ttlMs, 'ttlMs', where),
    leaseMs: positiveInteger(value.leaseMs, 'leaseMs', where),
    inFlight,
    maxResultBytes: positiveInteger(value.maxResultBytes, 'maxResultBytes', where),
  };
}

function validateSharedResult(value: unknown, where: string): void {
  const result = value as Partial<IdempotencyGrpcSharedResult> | null;
  if (
    typeof result !== 'object' ||
    result === null ||
    typeof result.fromResponse !== 'function' ||
    typeof result.toResponse !== 'function' ||
    typeof result.codec !== 'object' ||
    result.codec === null ||
    typeof result.codec.encode !== 'function' ||
    typeof result.codec.decode !== 'function' ||
    typeof result.codec.name !== 'string'
  ) {
    throw new TypeError(
      `${where}: expected result to be { codec, fromResponse(message), toResponse(value) }, received ${describeValue(value)}. Example: { codec: jsonCodec, fromResponse: (m) => m, toResponse: (v) => v }.`,
    );
  }
}

function checkKeys(value: object, allowed: ReadonlySet<string>, where: string): void {
  for (const key of Object.keys(value)) {
    if (!allowed.has(key)) {
      throw new TypeError(
        `${where}: unknown option ${JSON.stringify(key)}. Expected one of ${[...allowed].join(', ')}. Check for a typo.`,
      );
    }
  }
}

function optionalFunction<F>(value: F | undefined, name: string, where: string): F | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'function') {
    throw new TypeError(`${where}: expected ${name} to be a function, received ${describeValue(value)}.`);
  }
  return value;
}

function positiveInteger(value: number | undefined, name: string, where: string): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new TypeError(
      `${where}: expected ${name} to be a positive integer (milliseconds or bytes), received ${describeValue(value)}.`,
    );
  }
  return value;
}
