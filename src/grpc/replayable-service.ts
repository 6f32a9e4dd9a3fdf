import type { ServiceDefinition } from '@grpc/grpc-js';
import { describeValue } from '../core/errors.js';

// Why a wrapped service definition: grpc-js serializes every message a server sends with the method's
// `responseSerialize`, and the interceptor only sees that serializer (no `responseDeserialize`). To replay
// the stored protobuf bytes exactly as the first call sent them, the serializer must let stored bytes through
// untouched. The wrapper does that for one branded carrier, never for ordinary values, so handlers are
// unaffected. Symbols come from the global registry so two copies of this package recognise each other.
const REPLAY_BYTES: unique symbol = Symbol.for('rpc-idempotency.grpc.replay-bytes') as never;
const REPLAYABLE: unique symbol = Symbol.for('rpc-idempotency.grpc.replayable') as never;

type Serialize = (value: unknown) => Buffer;
type Deserialize = (bytes: Buffer) => unknown;

interface ReplayableInfo {
  readonly deserialize: Deserialize | undefined;
}

/**
 * Wrap a service definition so the idempotency interceptor can replay stored responses byte for byte.
 * Register the wrapped definition on the server (`server.addService(replayableService(Def), impl)`); clients
 * keep using the original.
 *
 * Each method's `responseSerialize` is wrapped: messages from handlers are serialized exactly as before; only
 * the interceptor's replay carriers pass through as the stored bytes. A replayed message is also decoded with
 * the method's `responseDeserialize`, so interceptors closer to the network than ours see a normal message
 * object on replays too.
 *
 * Wrapping twice is harmless. The interceptor refuses keyed calls (INTERNAL, `SERVICE_NOT_REPLAYABLE`) to
 * methods of a service that was registered unwrapped, before anything runs, so a forgotten wrapper shows up
 * on the first test call, not as a silently unprotected method.
 *
 * @example
 * ```ts
 * const { Payments } = (grpc.loadPackageDefinition(definition) as any).payments.v1;
 * const server = new grpc.Server({ interceptors: [idempotencyInterceptor({ service })] });
 * server.addService(replayableService(Payments.service), implementation);
 * ```
 */
export function replayableService<T extends ServiceDefinition>(definition: T): T {
  if (typeof definition !== 'object' || definition === null) {
    throw new TypeError(
      `replayableService: expected a gRPC service definition (e.g. PaymentsService.service from loadPackageDefinition), received ${describeValue(definition)}.`,
    );
  }
  const wrapped: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(definition)) {
    if (typeof method !== 'object' || method === null || typeof method.responseSerialize !== 'function') {
      throw new TypeError(
        `replayableService: expected method ${JSON.stringify(name)} to be a method definition with responseSerialize, received ${describeValue(method)}. Pass the service definition (Client.service), not the client constructor or the package.`,
      );
    }
    wrapped[name] = {
      ...method,
      responseSerialize: wrapSerializer(
        method.responseSerialize as Serialize,
        typeof method.responseDeserialize === 'function' ? (method.responseDeserialize as Deserialize) : undefined,
      ),
    };
  }
  return wrapped as T;
}

function wrapSerializer(serialize: Serialize, deserialize: Deserialize | undefined): Serialize {
  if (replayableInfo(serialize)) return serialize;
  const replayable: Serialize = (value) => {
    if (typeof value === 'object' && value !== null) {
      const bytes = (value as { [REPLAY_BYTES]?: unknown })[REPLAY_BYTES];
      if (Buffer.isBuffer(bytes)) return bytes;
    }
    return serialize(value);
  };
  const info: ReplayableInfo = { deserialize };
  Object.defineProperty(replayable, REPLAYABLE, { value: info });
  return replayable;
}

/**
 * The replay information of a serializer wrapped by {@link replayableService}, or `undefined`.
 *
 * @example
 * ```ts
 * if (!replayableInfo(descriptor.responseSerialize)) refuse('SERVICE_NOT_REPLAYABLE');
 * ```
 */
export function replayableInfo(serialize: unknown): ReplayableInfo | undefined {
  if (typeof serialize !== 'function') return undefined;
  const info = (serialize as { [REPLAYABLE]?: unknown })[REPLAYABLE];
  return typeof info === 'object' && info !== null ? (info as ReplayableInfo) : undefined;
}

/**
 * A message to send on replay: the decoded message (when the definition has a deserializer) carrying the
 * stored bytes under a non-enumerable symbol, which the wrapped serializer sends unchanged.
 *
 * @example
 * ```ts
 * call.sendMessage(replayMessage(storedBytes, info), next);
 * ```
 */
export function replayMessage(bytes: Buffer, info: ReplayableInfo): object {
  let message: unknown;
  try {
    message = info.deserialize?.(bytes);
  } catch {
    message = undefined;
  }
  if (typeof message === 'object' && message !== null && Object.isExtensible(message)) {
    Object.defineProperty(message, REPLAY_BYTES, { value: bytes });
    return message;
  }
  return { [REPLAY_BYTES]: bytes };
}
