import { status } from '@grpc/grpc-js';

/**
 * The name of a gRPC status code other than `OK`.
 *
 * @example
 * ```ts
 * const name: IdempotencyGrpcStatusName = 'NOT_FOUND';
 * ```
 */
export type IdempotencyGrpcStatusName = Exclude<keyof typeof status, 'OK'>;

/**
 * What happens to a call's record when the handler ends with a status:
 *
 * - `'final'`: the status is the deterministic answer to this request (the caller's fault). It is stored and
 *   every retry with the same key replays it.
 * - `'retryable'`: the status is transient or the server's fault. The record is released, so a retry with
 *   the same key runs the handler again.
 *
 * @example
 * ```ts
 * const kind: IdempotencyGrpcStatusClass = IdempotencyGrpcStatusPolicy.UNAVAILABLE; // 'retryable'
 * ```
 */
export type IdempotencyGrpcStatusClass = 'final' | 'retryable';

/**
 * Overrides of {@link IdempotencyGrpcStatusPolicy}, by status name. Only the names you list change.
 *
 * @example
 * ```ts
 * idempotencyInterceptor({ service, statusPolicy: { NOT_FOUND: 'retryable' } });
 * ```
 */
export type IdempotencyGrpcStatusOverrides = Readonly<
  Partial<Record<IdempotencyGrpcStatusName, IdempotencyGrpcStatusClass>>
>;

/**
 * The default split of gRPC status codes into final (stored and replayed) and retryable (released), after
 * the meanings in gRPC's status code guide. `OK` is always stored; codes outside 1..16 are retryable.
 *
 * | status | class | why |
 * |---|---|---|
 * | `INVALID_ARGUMENT`, `OUT_OF_RANGE` | final | the request itself is wrong; running it again gives the same answer |
 * | `NOT_FOUND`, `ALREADY_EXISTS`, `FAILED_PRECONDITION` | final | decided from the state the request saw; replaying keeps "what happened to this request" stable |
 * | `UNIMPLEMENTED` | final | the method is not there for this request |
 * | `UNAUTHENTICATED`, `PERMISSION_DENIED` | retryable | they depend on credentials, not on the request: a client that refreshes its token and retries with the same key must not get the old denial for 24 h. Nothing ran, so releasing costs nothing. |
 * | `CANCELLED`, `DEADLINE_EXCEEDED` | retryable | the caller gave up; the answer was never delivered |
 * | `UNKNOWN`, `INTERNAL`, `DATA_LOSS` | retryable | a server fault or an unexpected throw (grpc-js sends `UNKNOWN` for a plain `Error`) |
 * | `RESOURCE_EXHAUSTED`, `ABORTED`, `UNAVAILABLE` | retryable | transient: quota, concurrency conflict, overload |
 *
 * Cancellation of the call itself (the client cancelled or its deadline passed) always releases, whatever
 * the policy says: the response never completed, so there is nothing to store.
 *
 * @example
 * ```ts
 * IdempotencyGrpcStatusPolicy.NOT_FOUND; // 'final'
 * ```
 */
export const IdempotencyGrpcStatusPolicy = Object.freeze({
  CANCELLED: 'retryable',
  UNKNOWN: 'retryable',
  INVALID_ARGUMENT: 'final',
  DEADLINE_EXCEEDED: 'retryable',
  NOT_FOUND: 'final',
  ALREADY_EXISTS: 'final',
  PERMISSION_DENIED: 'retryable',
  RESOURCE_EXHAUSTED: 'retryable',
  FAILED_PRECONDITION: 'final',
  ABORTED: 'retryable',
  OUT_OF_RANGE: 'final',
  UNIMPLEMENTED: 'final',
  INTERNAL: 'retryable',
  UNAVAILABLE: 'retryable',
  DATA_LOSS: 'retryable',
  UNAUTHENTICATED: 'retryable',
} as const satisfies Record<IdempotencyGrpcStatusName, IdempotencyGrpcStatusClass>);

const STATUS_NAMES = new Set<string>(Object.keys(IdempotencyGrpcStatusPolicy));

/**
 * The name of a status code; `STATUS_<n>` for codes gRPC does not define.
 *
 * @example
 * ```ts
 * statusName(5); // 'NOT_FOUND'
 * statusName(42); // 'STATUS_42'
 * ```
 */
export function statusName(code: number): string {
  const name = (status as unknown as Record<number, string | undefined>)[code];
  return typeof name === 'string' ? name : `STATUS_${code}`;
}

/**
 * Check an overrides object from the options; throws a `TypeError` that names the bad entry.
 *
 * @example
 * ```ts
 * validateStatusOverrides({ NOT_FOUND: 'retryable' }, 'idempotencyInterceptor'); // { NOT_FOUND: 'retryable' }
 * ```
 */
export function validateStatusOverrides(value: unknown, where: string): IdempotencyGrpcStatusOverrides {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TypeError(
      `${where}: expected statusPolicy to be an object such as { NOT_FOUND: 'retryable' }, received ${Array.isArray(value) ? 'an array' : String(value)}.`,
    );
  }
  for (const [name, kind] of Object.entries(value)) {
    if (!STATUS_NAMES.has(name)) {
      throw new TypeError(
        `${where}: statusPolicy has an unknown status name ${JSON.stringify(name)}. Expected one of ${[...STATUS_NAMES].join(', ')} (OK is always stored).`,
      );
    }
    if (kind !== 'final' && kind !== 'retryable') {
      throw new TypeError(
        `${where}: statusPolicy.${name} must be 'final' or 'retryable', received ${JSON.stringify(kind)}.`,
      );
    }
  }
  return Object.freeze({ ...(value as IdempotencyGrpcStatusOverrides) });
}

/**
 * Build the classifier for one method: the default table, then the global overrides, then the method's.
 * Codes the table does not name (outside 1..16) are retryable.
 *
 * @example
 * ```ts
 * const classify = createStatusClassifier({ NOT_FOUND: 'retryable' });
 * classify(status.NOT_FOUND); // 'retryable'
 * ```
 */
export function createStatusClassifier(
  ...overrides: readonly IdempotencyGrpcStatusOverrides[]
): (code: number) => IdempotencyGrpcStatusClass {
  const table: Record<string, IdempotencyGrpcStatusClass> = { ...IdempotencyGrpcStatusPolicy };
  for (const layer of overrides) Object.assign(table, layer);
  return (code) => {
    const name = (status as unknown as Record<number, string | undefined>)[code];
    return (name !== undefined && table[name]) || 'retryable';
  };
}
