import { describeValue, IdempotencyError, type IdempotencyErrorCode } from '../core/errors.js';

// The wire protocol between `idempotencyHeaders` (client) and `idempotencyMiddleware` (server). This file is
// imported by the client entry, so it must stay free of Node built-ins.

/**
 * The default request header for the key of a non-batched call (the IETF draft's name).
 *
 * @default 'Idempotency-Key'
 * @example
 * ```ts
 * fetch(url, { headers: { [DEFAULT_KEY_HEADER]: crypto.randomUUID() } });
 * ```
 */
export const DEFAULT_KEY_HEADER = 'Idempotency-Key';

/**
 * The default request header for the keys of a batched request: a JSON array with one entry per batch index,
 * each a key or `null`, e.g. `["4f0c…","9a1e…"]` or `[null,"9a1e…"]`.
 *
 * One HTTP request of `httpBatchLink` carries several calls but one set of headers, so a single
 * `Idempotency-Key` cannot say which call it belongs to. The list is positional: entry `i` belongs to the call
 * the server sees with `batchIndex === i`, which is the `i`-th operation of the link's `opList`.
 *
 * @default 'Idempotency-Keys'
 * @example
 * ```ts
 * headers: { [DEFAULT_BATCH_KEYS_HEADER]: JSON.stringify(['key-for-call-0', null, 'key-for-call-2']) }
 * ```
 */
export const DEFAULT_BATCH_KEYS_HEADER = 'Idempotency-Keys';

/**
 * The response header that marks a non-batched response as a replay of a stored outcome.
 *
 * @example
 * ```ts
 * if (response.headers.get(REPLAYED_HEADER) === 'true') console.log('served from the idempotency record');
 * ```
 */
export const REPLAYED_HEADER = 'Idempotent-Replayed';

/**
 * The response header that lists, for a batched response, the batch indexes whose outcome was replayed
 * (comma-separated, ascending, e.g. `0,2`). A batched response has one set of headers for several calls, so
 * `Idempotent-Replayed: true` would be wrong for the calls that ran.
 *
 * @example
 * ```ts
 * const replayed = (response.headers.get(REPLAYED_INDEXES_HEADER) ?? '').split(',').filter(Boolean).map(Number);
 * ```
 */
export const REPLAYED_INDEXES_HEADER = 'Idempotent-Replayed-Indexes';

/**
 * The `op.context` property that carries an operation's key from `idempotencyLink` to `idempotencyHeaders`.
 * Set it yourself to choose the key: `trpc.pay.mutate(input, { context: { idempotencyKey } })`.
 *
 * @example
 * ```ts
 * await trpc.payments.create.mutate(input, { context: { [IDEMPOTENCY_KEY_CONTEXT]: orderId } });
 * ```
 */
export const IDEMPOTENCY_KEY_CONTEXT = 'idempotencyKey';

/**
 * What `idempotencyErrorData` adds to an error shape (`shape.data.idempotency`): the idempotency code, and for
 * `IN_PROGRESS` how long to wait before retrying. Clients read it with `getIdempotencyErrorData`.
 *
 * @example
 * ```ts
 * const data: IdempotencyTrpcErrorData = { code: 'IN_PROGRESS', retryAfterMs: 1_000 };
 * ```
 */
export interface IdempotencyTrpcErrorData {
  /** The idempotency error code, e.g. `IN_PROGRESS`. */
  readonly code: IdempotencyErrorCode;
  /** For `IN_PROGRESS`: retry after this many milliseconds (also sent as `Retry-After`, in whole seconds). */
  readonly retryAfterMs?: number;
}

/**
 * Render the batch keys header value: a JSON array, `null` where a call has no key. Characters outside printable
 * ASCII are `\u`-escaped so the header is always sendable (the server then rejects such a key as `KEY_INVALID`,
 * instead of `fetch` throwing on the client).
 *
 * @example
 * ```ts
 * formatBatchKeys(['a', null]); // '["a",null]'
 * ```
 */
export function formatBatchKeys(keys: readonly (string | null)[]): string {
  return JSON.stringify(keys).replace(
    /[^\x20-\x7e]/g,
    (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/**
 * Parse the batch keys header. Throws `KEY_INVALID` (HTTP 400) when the value is not a JSON array of strings
 * and `null`s, or lists one key twice: a malformed list must never be guessed at, or a key could be given to
 * the wrong call. The keys themselves are validated later, per call, like any key.
 *
 * @example
 * ```ts
 * parseBatchKeys('["a",null]', 'Idempotency-Keys', 'payments.create'); // ['a', null]
 * ```
 */
export function parseBatchKeys(value: string, headerName: string, procedure: string): (string | null)[] {
  const malformed = (problem: string) =>
    new IdempotencyError(
      'KEY_INVALID',
      `The ${headerName} header of this batched request to ${procedure} is malformed: expected a JSON array with one idempotency key or null per batch index, such as ["key-0",null,"key-2"], received ${describeValue(value)} (${problem}). This call did not run. Send the header with idempotencyHeaders() from rpc-idempotency/trpc/client.`,
      { procedure },
    );
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch (error) {
    throw malformed(`not JSON: ${error instanceof Error ? error.message : String(error)}`);
  }
  if (!Array.isArray(parsed)) throw malformed(`a JSON ${parsed === null ? 'null' : typeof parsed}, not an array`);
  const seen = new Map<string, number>();
  parsed.forEach((entry: unknown, index) => {
    if (entry === null) return;
    if (typeof entry !== 'string') throw malformed(`entry ${index} is ${describeValue(entry)}, not a string or null`);
    const first = seen.get(entry);
    if (first !== undefined)
      throw malformed(`entries ${first} and ${index} carry the same key; each call needs its own`);
    seen.set(entry, index);
  });
  return parsed as (string | null)[];
}
