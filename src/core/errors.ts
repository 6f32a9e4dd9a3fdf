/**
 * The codes of {@link IdempotencyError}, as the README's error table names them.
 *
 * @example
 * ```ts
 * if (isIdempotencyError(err) && err.code === IdempotencyErrorCode.IN_PROGRESS) retryLater();
 * ```
 */
export const IdempotencyErrorCode = {
  /** The procedure requires a key and none was sent. Final: fix the client. */
  KEY_MISSING: 'KEY_MISSING',
  /** The key is empty, too long or has characters outside printable ASCII. Final: fix the client. */
  KEY_INVALID: 'KEY_INVALID',
  /** The same key is still running elsewhere. Retryable: retry after a short wait. */
  IN_PROGRESS: 'IN_PROGRESS',
  /** The key was used before with another input or procedure. Final: use a new key for a new request. */
  FINGERPRINT_MISMATCH: 'FINGERPRINT_MISMATCH',
  /** The first run's result could not be stored, so it cannot be replayed. Final for this key. */
  RESULT_NOT_STORABLE: 'RESULT_NOT_STORABLE',
  /** The record store could not be reached; nothing ran. Retryable. */
  STORE_UNAVAILABLE: 'STORE_UNAVAILABLE',
} as const;

/** One of the values of {@link IdempotencyErrorCode}. */
export type IdempotencyErrorCode = (typeof IdempotencyErrorCode)[keyof typeof IdempotencyErrorCode];

const ERROR_BRAND = Symbol.for('rpc-idempotency.IdempotencyError');

/** Codes after which the same request with the same key may succeed when retried. */
const RETRYABLE_CODES: ReadonlySet<IdempotencyErrorCode> = new Set(['IN_PROGRESS', 'STORE_UNAVAILABLE']);

/** Options of {@link IdempotencyError}. */
export interface IdempotencyErrorOptions {
  /** The procedure the key was sent to. */
  procedure?: string | undefined;
  /** The idempotency key (never the scope: scopes may identify tenants). */
  key?: string | undefined;
  /** For `IN_PROGRESS`: how long the client should wait before retrying, in milliseconds. */
  retryAfterMs?: number | undefined;
  /** The underlying error, e.g. the store's driver error for `STORE_UNAVAILABLE`. */
  cause?: unknown;
}

/**
 * The one error class of this library. Each transport maps `code` to its own status in one table.
 *
 * Use {@link isIdempotencyError} rather than `instanceof`: it also recognises errors from another copy of
 * this package.
 *
 * @example
 * ```ts
 * throw new IdempotencyError('KEY_MISSING', 'createPayment requires an Idempotency-Key header', {
 *   procedure: 'createPayment',
 * });
 * ```
 */
export class IdempotencyError extends Error {
  /** What went wrong; see {@link IdempotencyErrorCode}. */
  readonly code: IdempotencyErrorCode;
  /** The procedure the key was sent to, when known. */
  readonly procedure: string | undefined;
  /** The idempotency key, when it was valid (an invalid key is not echoed back). */
  readonly key: string | undefined;
  /** For `IN_PROGRESS`: how long to wait before retrying, in milliseconds. */
  readonly retryAfterMs: number | undefined;
  /** Whether retrying the same request with the same key can succeed. */
  readonly retryable: boolean;
  readonly [ERROR_BRAND] = true;

  constructor(code: IdempotencyErrorCode, message: string, options: IdempotencyErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'IdempotencyError';
    this.code = code;
    this.procedure = options.procedure;
    this.key = options.key;
    this.retryAfterMs = options.retryAfterMs;
    this.retryable = RETRYABLE_CODES.has(code);
  }
}

/**
 * Whether `value` is an {@link IdempotencyError}, from this or any other loaded copy of the package.
 *
 * @example
 * ```ts
 * try { await service.execute(call); } catch (err) { if (isIdempotencyError(err)) log(err.code); }
 * ```
 */
export function isIdempotencyError(value: unknown): value is IdempotencyError {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as Record<PropertyKey, unknown>)[ERROR_BRAND] === true &&
    typeof (value as { code?: unknown }).code === 'string'
  );
}

/** Describe a value for an error message: its type and a short rendering. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'string') {
    const shown = value.length > 40 ? `${value.slice(0, 40)}…` : value;
    return `string ${JSON.stringify(shown)} (length ${value.length})`;
  }
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') {
    return `${typeof value} ${String(value)}`;
  }
  if (Array.isArray(value)) return `array of length ${value.length}`;
  if (value instanceof Uint8Array) return `${value.constructor.name} of ${value.byteLength} bytes`;
  if (typeof value === 'function') return 'function';
  return `object ${Object.prototype.toString.call(value)}`;
}
