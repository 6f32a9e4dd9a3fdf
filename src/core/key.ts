import { describeValue, IdempotencyError } from './errors.js';
import { MAX_KEY_LENGTH } from './record.js';

const PRINTABLE_ASCII = /^[\x20-\x7e]+$/;

/**
 * Validate a key as received from request metadata. Returns `undefined` when no key was sent and none is
 * required; throws `KEY_MISSING` / `KEY_INVALID` otherwise.
 *
 * A key is 1..255 printable ASCII characters (0x20-0x7E), without leading or trailing spaces (HTTP and gRPC
 * metadata trim them, so such a key would not arrive as sent).
 *
 * @example
 * ```ts
 * validateKey('3b1f0f9e-6a47-4d3e-9d42-2f6f0e1c7a10', 'payments.create', true); // returns the key
 * validateKey(undefined, 'payments.create', false); // undefined: run without idempotency
 * ```
 */
export function validateKey(value: unknown, procedure: string, required: boolean): string | undefined {
  if (value === undefined || value === null) {
    if (!required) return undefined;
    throw new IdempotencyError(
      'KEY_MISSING',
      `${procedure} requires an idempotency key, but the request carried none. Generate one key (e.g. a UUID) per logical request and send it with every retry.`,
      { procedure },
    );
  }
  const problem = keyProblem(value);
  if (problem === undefined) return value as string;
  throw new IdempotencyError(
    'KEY_INVALID',
    `The idempotency key sent to ${procedure} is invalid: expected 1 to ${MAX_KEY_LENGTH} printable ASCII characters without leading or trailing spaces, received ${describeValue(value)} (${problem}). Send a UUID or another short ASCII token.`,
    { procedure, key: typeof value === 'string' && problem === undefined ? value : undefined },
  );
}

function keyProblem(value: unknown): string | undefined {
  if (typeof value !== 'string') return 'not a string';
  if (value.length === 0) return 'empty';
  if (value.length > MAX_KEY_LENGTH) return `${value.length} characters`;
  if (!PRINTABLE_ASCII.test(value)) return 'contains a character outside printable ASCII';
  if (value.startsWith(' ') || value.endsWith(' ')) return 'leading or trailing space';
  return undefined;
}

/**
 * Validate a scope derived by the server. A bad scope is a programming error in the `scope` option, so it is
 * a `TypeError`, not a client error.
 *
 * @example
 * ```ts
 * validateScope('tenant-42', 'payments.create'); // 'tenant-42'
 * ```
 */
export function validateScope(value: unknown, procedure: string): string {
  if (typeof value === 'string' && value.length <= MAX_KEY_LENGTH) return value;
  throw new TypeError(
    `rpc-idempotency: the scope for ${procedure} must be a string of at most ${MAX_KEY_LENGTH} characters, received ${describeValue(value)}. Check the scope option: derive it from the tenant or user id, or hash longer values.`,
  );
}
