import { createHash } from 'node:crypto';

/**
 * Render `value` as canonical JSON: object keys sorted, `undefined` object members dropped, so two inputs that
 * are equal as data give the same text. Values JSON cannot express are written as tagged objects so they never
 * collide with plain data: `bigint` (`{"$bigint":"12"}`), `Date`, `Uint8Array`/`Buffer` (base64), `Map`, `Set`,
 * non-finite numbers. Cycles and functions are rejected with a clear error.
 *
 * @example
 * ```ts
 * canonicalJson({ b: 1, a: [true, null] }); // '{"a":[true,null],"b":1}'
 * ```
 */
export function canonicalJson(value: unknown): string {
  return render(value, new Set());
}

function render(value: unknown, seen: Set<object>): string {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (Number.isFinite(value)) return Object.is(value, -0) ? '0' : JSON.stringify(value);
      return `{"$number":${JSON.stringify(String(value))}}`;
    case 'bigint':
      return `{"$bigint":${JSON.stringify(value.toString())}}`;
    case 'undefined':
      return 'null';
    case 'function':
    case 'symbol':
      throw new TypeError(
        `canonicalJson: expected JSON-like data, received a ${typeof value}. Remove it from the input or pass a custom fingerprint.`,
      );
  }
  if (value === null) return 'null';
  const object = value as object;
  if (seen.has(object)) {
    throw new TypeError(
      'canonicalJson: expected acyclic data, received an object that contains itself. Pass a custom fingerprint for this procedure.',
    );
  }
  seen.add(object);
  try {
    if (Array.isArray(object)) return `[${object.map((item) => render(item, seen)).join(',')}]`;
    if (object instanceof Date) {
      return `{"$date":${JSON.stringify(Number.isNaN(object.getTime()) ? 'invalid' : object.toISOString())}}`;
    }
    if (object instanceof Uint8Array) {
      return `{"$bytes":${JSON.stringify(Buffer.from(object.buffer, object.byteOffset, object.byteLength).toString('base64'))}}`;
    }
    if (object instanceof Map) {
      const entries = [...object.entries()].map(([k, v]) => [render(k, seen), render(v, seen)] as const);
      entries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
      return `{"$map":[${entries.map(([k, v]) => `[${k},${v}]`).join(',')}]}`;
    }
    if (object instanceof Set) {
      const items = [...object].map((item) => render(item, seen)).sort();
      return `{"$set":[${items.join(',')}]}`;
    }
    const toJSON = (object as { toJSON?: unknown }).toJSON;
    if (typeof toJSON === 'function') return render(toJSON.call(object), seen);
    const keys = Object.keys(object).sort();
    const members: string[] = [];
    for (const key of keys) {
      const member = (object as Record<string, unknown>)[key];
      if (member === undefined) continue;
      members.push(`${JSON.stringify(key)}:${render(member, seen)}`);
    }
    return `{${members.join(',')}}`;
  } finally {
    seen.delete(object);
  }
}

/**
 * The default request fingerprint: SHA-256 (hex) over the procedure's identity and the canonical JSON of its
 * input. Two calls with the same key must have the same fingerprint, or the second gets
 * `FINGERPRINT_MISMATCH`.
 *
 * @example
 * ```ts
 * computeFingerprint('payments.create', { amount: 100, currency: 'EUR' });
 * // '3f1c…' (64 hex characters)
 * ```
 */
export function computeFingerprint(procedure: string, input: unknown): string {
  return createHash('sha256').update(procedure).update('\u0000').update(canonicalJson(input)).digest('hex');
}
