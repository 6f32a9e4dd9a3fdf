import type { TRPCCombinedDataTransformer, TRPCDataTransformer } from '@trpc/server';
import { type IdempotencyCodec, jsonCodec } from '../core/codec.js';
import { describeValue } from '../core/errors.js';

/**
 * A tRPC data transformer as `initTRPC.create({ transformer })` takes it: one for both directions (such as
 * `superjson`), or `{ input, output }`. Only the output half is used, to store and rebuild results.
 *
 * @example
 * ```ts
 * import superjson from 'superjson';
 * const transformer: IdempotencyTrpcTransformer = superjson;
 * ```
 */
export type IdempotencyTrpcTransformer = TRPCDataTransformer | TRPCCombinedDataTransformer;

/**
 * Make the codec that stores a procedure's results: the router's output transformer, then JSON (the same path
 * tRPC takes to put a result on the wire, so whatever tRPC can send, this can store and replay as the same
 * types). Without a transformer, core's `jsonCodec`, which refuses values JSON would change (`Date`, `bigint`,
 * `Map`, `Set`, ...) so they end as `RESULT_NOT_STORABLE` rather than replaying as something else.
 *
 * The codec's name is stored with each record and includes the transformer's identity (`trpc:SuperJSON`), so
 * two routers with different transformers on one store never decode each other's bytes (a replay through the
 * wrong one is refused). The identity must be stable across processes and deploys, so it is a name: the
 * transformer's class or function name, or `name` when it has none (a plain object). Two instances of one
 * class share a name: give `name` when they differ (e.g. a `new SuperJSON()` with registered classes).
 *
 * @default transformer none: `jsonCodec` (name `json`)
 * @example
 * ```ts
 * createTrpcResultCodec(superjson).name; // 'trpc:SuperJSON'
 * createTrpcResultCodec({ serialize, deserialize }, 'devalue').name; // 'trpc:devalue'
 * ```
 */
export function createTrpcResultCodec(
  transformer: IdempotencyTrpcTransformer | undefined,
  name?: string,
): IdempotencyCodec<unknown> {
  if (name !== undefined && (typeof name !== 'string' || !/^[\x21-\x7e]{1,64}$/.test(name))) {
    throw new TypeError(
      `idempotencyMiddleware: expected transformerName to be 1 to 64 printable ASCII characters without spaces, received ${describeValue(name)}.`,
    );
  }
  if (transformer === undefined) {
    if (name !== undefined) {
      throw new TypeError(
        `idempotencyMiddleware: transformerName "${name}" was given without a transformer. Pass the transformer your initTRPC uses (e.g. transformer: superjson), or drop transformerName.`,
      );
    }
    return jsonCodec;
  }
  const output = outputHalf(transformer);
  const identity = name ?? identityOf(output);
  return Object.freeze({
    name: `trpc:${identity}`,
    encode: (value: unknown) => jsonCodec.encode(output.serialize(value)),
    decode: (bytes: Uint8Array) => output.deserialize(jsonCodec.decode(bytes)),
  });
}

function outputHalf(transformer: IdempotencyTrpcTransformer): TRPCDataTransformer {
  const candidate =
    typeof transformer === 'object' && transformer !== null && 'output' in transformer
      ? transformer.output
      : transformer;
  if (
    (typeof candidate !== 'object' && typeof candidate !== 'function') ||
    candidate === null ||
    typeof (candidate as TRPCDataTransformer).serialize !== 'function' ||
    typeof (candidate as TRPCDataTransformer).deserialize !== 'function'
  ) {
    throw new TypeError(
      `idempotencyMiddleware: expected transformer to be a tRPC data transformer ({ serialize, deserialize } or { input, output }), the same one initTRPC.create() gets, received ${describeValue(transformer)}.`,
    );
  }
  return candidate as TRPCDataTransformer;
}

function identityOf(output: TRPCDataTransformer): string {
  if (typeof output === 'function' && /^[\x21-\x7e]{1,64}$/.test((output as { name?: string }).name ?? '')) {
    return (output as { name: string }).name;
  }
  const ctor = (Object.getPrototypeOf(output) as { constructor?: { name?: unknown } } | null)?.constructor;
  if (ctor && ctor !== Object && typeof ctor.name === 'string' && /^[\x21-\x7e]{1,64}$/.test(ctor.name)) {
    return ctor.name;
  }
  throw new TypeError(
    'idempotencyMiddleware: cannot name this transformer: it is a plain object, and the name stored with each record must stay the same across processes and deploys. Pass transformerName (e.g. transformerName: "devalue").',
  );
}
