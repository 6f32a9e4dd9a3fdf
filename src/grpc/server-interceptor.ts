import {
  Metadata,
  type Responder,
  ServerInterceptingCall,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  type ServerListener,
  type ServerMethodDefinition,
  status,
} from '@grpc/grpc-js';
import type { IdempotencyCodec, IdempotencyErrorPolicy } from '../core/codec.js';
import { IdempotencyError, isIdempotencyError } from '../core/errors.js';
import { computeFingerprint } from '../core/fingerprint.js';
import { validateKey } from '../core/key.js';
import type { IdempotencyOutcome } from '../core/service.js';
import { describeTransactionFailure } from '../core/transaction.js';
import {
  decodeGrpcResponse,
  encodeGrpcResponse,
  type IdempotencyGrpcRecordedResponse,
  idempotencyGrpcResponseCodec,
} from './envelope.js';
import { type IdempotencyGrpcErrorCode, IdempotencyGrpcErrorStatus } from './error-status.js';
import { IdempotencyGrpcMetadata } from './metadata.js';
import {
  type IdempotencyGrpcCallContext,
  type IdempotencyGrpcOptions,
  type ResolvedMethod,
  type ResolvedOptions,
  resolveOptions,
} from './options.js';
import { replayableInfo, replayMessage } from './replayable-service.js';
import { decodeSharedError, encodeSharedError } from './shared-errors.js';
import { statusName } from './status-policy.js';
import { openTransaction } from './transaction.js';

type SendStatus = NonNullable<Responder['sendStatus']>;
type StatusToSend = Parameters<SendStatus>[0];
// biome-ignore lint/suspicious/noExplicitAny: grpc-js types method descriptors with any
type MethodDescriptor = ServerMethodDefinition<any, any>;

/**
 * Server interceptor for `@grpc/grpc-js` that makes unary and server-streaming methods idempotent: the first
 * call with a key runs the handler and stores its response; retries with the same key get that response
 * replayed (headers, messages, status and trailers as the first call sent them, plus `idempotent-replayed:
 * true`) and the handler does not run. See README.md, "Semantics", for the lifecycle.
 *
 * Register the services with {@link replayableService} so replays can send the stored protobuf bytes
 * unchanged. Put authentication interceptors before this one in the array (they see the call first), and
 * derive `scope` from what they established.
 *
 * Call types: unary and server streaming are supported. Client-streaming and bidi calls that carry a key are
 * refused with `UNIMPLEMENTED` (`idempotency-error: STREAMING_NOT_SUPPORTED`): their handler starts before
 * the request is known, so it cannot be fingerprinted or held back. Without a key they pass through untouched.
 *
 * Timeline of a keyed unary call:
 *
 * ```text
 * metadata ─► validate key ─► message ─► scope, fingerprint ─► claim
 *                                                          ├─ won ─► handler ─► sendStatus (held) ─► store ─► status to client
 *                                                          ├─ finished record ─► replay stored response (handler skipped)
 *                                                          └─ running elsewhere ─► ABORTED + grpc-retry-pushback-ms
 * client cancels / deadline passes while the handler runs ─► release (a retry runs again)
 * ```
 *
 * Transactional mode (per method, `methods: { [path]: { transaction: true } }`, unary only): the claim is
 * committed first, then the handler runs inside a store transaction and reads its client with
 * `idempotencyTransaction(call)`; its writes and the record's completion commit together, and its status is
 * held until the commit. A failed transaction turns the handler's answer into `ABORTED`
 * (`idempotency-error: TRANSACTION_FAILED`), a lost lease into `ABORTED` (`IN_PROGRESS`): the client never
 * sees success for writes that were rolled back.
 *
 * @example
 * ```ts
 * import * as grpc from '@grpc/grpc-js';
 * import { createIdempotencyService, createMemoryStore } from 'rpc-idempotency';
 * import { idempotencyInterceptor, replayableService } from 'rpc-idempotency/grpc';
 *
 * const service = createIdempotencyService({ store: createMemoryStore() });
 * const server = new grpc.Server({
 *   interceptors: [authInterceptor, idempotencyInterceptor({ service, scope: ({ metadata }) => tenantOf(metadata) })],
 * });
 * server.addService(replayableService(Payments.service), { createPayment, listRefunds });
 * ```
 */
export function idempotencyInterceptor(options: IdempotencyGrpcOptions): ServerInterceptor {
  const config = resolveOptions(options);
  const plans = new Map<string, MethodPlan | null>();
  return (descriptor, call) => {
    let plan = plans.get(descriptor.path);
    if (plan === undefined) {
      const method = config.methodFor(descriptor.path);
      plan = method ? createPlan(method) : null;
      plans.set(descriptor.path, plan);
    }
    if (plan === null) return new ServerInterceptingCall(call);
    return interceptCall(config, plan, descriptor, call);
  };
}

/** The recorded response of one run, plus why it cannot be stored (too large, unserializable). */
interface Captured {
  readonly response: IdempotencyGrpcRecordedResponse;
  readonly notStorable: Error | undefined;
  /** The response message objects (for shared results: `fromResponse` reads the first). */
  readonly objects: readonly unknown[];
}

/** A handler run that ended with a non-OK status, or a call that was cancelled under it. */
class HandlerFailure {
  constructor(
    readonly captured: Captured,
    /** The client cancelled or its deadline passed: the response never completed; always released. */
    readonly cancelled: boolean,
  ) {}
}

/** A stored value of a shared-result method, to send as `toResponse(value)`. */
interface SharedValue {
  readonly shared: true;
  readonly value: unknown;
}

type RunValue = Captured | SharedValue;

/** Per-method codec and error policy, built once. */
interface MethodPlan {
  readonly method: ResolvedMethod;
  readonly codec: IdempotencyCodec<RunValue>;
  readonly errors: IdempotencyErrorPolicy;
}

function createPlan(method: ResolvedMethod): MethodPlan {
  const shared = method.result;
  const codec: IdempotencyCodec<RunValue> = shared
    ? {
        name: shared.codec.name,
        encode(value) {
          if ('shared' in value) return shared.codec.encode(value.value);
          if (value.notStorable) throw value.notStorable;
          return shared.codec.encode(shared.fromResponse(value.objects[0]));
        },
        decode: (bytes) => ({ shared: true, value: shared.codec.decode(bytes) }),
      }
    : {
        name: idempotencyGrpcResponseCodec.name,
        encode(value) {
          if ('shared' in value) throw new TypeError('unreachable: a shared value under the gRPC response codec');
          if (value.notStorable) throw value.notStorable;
          return encodeGrpcResponse(value.response);
        },
        decode: (bytes) => ({ response: decodeGrpcResponse(bytes), notStorable: undefined, objects: [] }),
      };
  const errors: IdempotencyErrorPolicy = {
    isFinal: (error) =>
      error instanceof HandlerFailure &&
      !error.cancelled &&
      method.classify(error.captured.response.status.code) === 'final',
    encode(error) {
      const failure = error as HandlerFailure;
      if (shared) return encodeSharedError(failure.captured.response);
      if (failure.captured.notStorable) throw failure.captured.notStorable;
      return {
        code: statusName(failure.captured.response.status.code),
        bytes: encodeGrpcResponse(failure.captured.response),
      };
    },
    decode: (code, bytes) =>
      new HandlerFailure(
        {
          response: shared ? decodeSharedError(code, bytes) : decodeGrpcResponse(bytes),
          notStorable: undefined,
          objects: [],
        },
        false,
      ),
  };
  return { method, codec, errors };
}

function interceptCall(
  config: ResolvedOptions,
  plan: MethodPlan,
  descriptor: MethodDescriptor,
  call: ServerInterceptingCallInterface,
): ServerInterceptingCall {
  const { method } = plan;
  const replay = replayableInfo(descriptor.responseSerialize);

  let keyed = false;
  /** A call without a key to a transactional method: it still runs in a transaction. */
  let transactionalKeyless = false;
  /** Closes the handler's access to the call's transaction (idempotencyTransaction) once it ended. */
  let closeTransaction: (() => void) | undefined;
  let key = '';
  let requestMetadata = new Metadata();
  let messageSeen = false;
  let cancelled = false;
  /** Set while the handler runs under our claim: what it sent so far. */
  let capture:
    | {
        headers: Metadata | null;
        messages: Buffer[];
        objects: unknown[];
        bytes: number;
        notStorable: Error | undefined;
      }
    | undefined;
  /** Settles the run promise the core awaits; cleared once settled. */
  let settle: ((result: { ok: true; value: Captured } | { ok: false; error: HandlerFailure }) => void) | undefined;
  /** The handler's final status, held back until the record is written. */
  let held: { status: StatusToSend; next: (status: StatusToSend) => void } | undefined;

  const context: IdempotencyGrpcCallContext = {
    path: descriptor.path,
    get metadata() {
      return requestMetadata;
    },
    get peer() {
      return call.getPeer();
    },
    get authContext() {
      return call.getAuthContext();
    },
    call,
  };

  const refusal = (
    code: IdempotencyGrpcErrorCode,
    details: string,
    extra: { pushbackMs?: number | undefined; replayed?: boolean } = {},
  ): StatusToSend => {
    const trailers = new Metadata();
    trailers.set(IdempotencyGrpcMetadata.ERROR, code);
    if (extra.pushbackMs !== undefined) {
      trailers.set(IdempotencyGrpcMetadata.RETRY_PUSHBACK_MS, String(Math.max(1, Math.round(extra.pushbackMs))));
    }
    if (extra.replayed) trailers.set(IdempotencyGrpcMetadata.REPLAYED, 'true');
    return { code: IdempotencyGrpcErrorStatus[code], details, metadata: trailers };
  };

  const refuse = (
    code: IdempotencyGrpcErrorCode,
    details: string,
    extra: { pushbackMs?: number | undefined; replayed?: boolean } = {},
  ) => {
    // Trailers-only (no sendMetadata first): grpc-js clients only retry calls that received no headers.
    call.sendStatus(refusal(code, details, extra));
  };

  /**
   * Transactional mode: the handler answered, but its transaction did not commit. Send an error in place of the
   * held status (after the handler's headers, so it is not trailers-only), or refuse if nothing was sent yet.
   */
  const failTransactional = (code: IdempotencyGrpcErrorCode, details: string, pushbackMs?: number) => {
    const pending = held;
    held = undefined;
    const status = refusal(code, details, { pushbackMs });
    if (pending) pending.next(status);
    else call.sendStatus(status);
  };

  const refuseWith = (error: unknown, origin: 'service' | 'option', replayed = false) => {
    if (isIdempotencyError(error)) {
      refuse(error.code, error.message, {
        pushbackMs: error.code === 'IN_PROGRESS' ? (error.retryAfterMs ?? 1_000) : undefined,
        replayed,
      });
      return;
    }
    const statusError = asStatusError(error);
    if (origin === 'option' && statusError) {
      call.sendStatus(statusError);
      return;
    }
    reportError(config, descriptor.path, error);
    const details =
      origin === 'option'
        ? `rpc-idempotency: the scope or fingerprint option failed for ${descriptor.path}; the handler did not run. The server logged the error.`
        : // The message may carry server-side values (a scope, a stored record's bytes): it goes to onError only.
          `rpc-idempotency: the idempotency layer failed for ${descriptor.path}; the handler did not run. The server logged the error.`;
    call.sendStatus({ code: status.INTERNAL, details, metadata: null });
  };

  const sendReplay = (response: IdempotencyGrpcRecordedResponse) => {
    const trailers = response.status.trailers;
    trailers.set(IdempotencyGrpcMetadata.REPLAYED, 'true');
    const final: StatusToSend = { code: response.status.code, details: response.status.details, metadata: trailers };
    if (!response.headers) {
      call.sendStatus(final);
      return;
    }
    if (!replay) throw new TypeError('unreachable: replaying bytes without a replayable serializer');
    const replayInfo = replay;
    response.headers.set(IdempotencyGrpcMetadata.REPLAYED, 'true');
    call.sendMetadata(response.headers);
    let index = 0;
    // Each send waits for the previous write's callback, like a handler writing a stream with backpressure.
    const sendNext = () => {
      if (cancelled) return;
      const bytes = response.messages[index++];
      if (bytes === undefined) call.sendStatus(final);
      else call.sendMessage(replayMessage(bytes, replayInfo), sendNext);
    };
    sendNext();
  };

  const sendSharedReplay = (value: unknown) => {
    const shared = method.result;
    if (!shared) throw new TypeError('unreachable: a shared value without a shared result mapping');
    const headers = new Metadata();
    headers.set(IdempotencyGrpcMetadata.REPLAYED, 'true');
    const trailers = new Metadata();
    trailers.set(IdempotencyGrpcMetadata.REPLAYED, 'true');
    const message = shared.toResponse(value);
    call.sendMetadata(headers);
    call.sendMessage(message, () => {
      call.sendStatus({ code: status.OK, details: 'OK', metadata: trailers });
    });
  };

  const flushHeld = () => {
    const pending = held;
    held = undefined;
    pending?.next(pending.status);
  };

  const finishOutcome = (outcome: IdempotencyOutcome<RunValue>) => {
    if (outcome.source !== 'replayed') {
      if (method.transaction !== undefined && !outcome.ok && !(outcome.error instanceof HandlerFailure)) {
        // The handler succeeded (or never started), but the transaction failed: its writes are gone.
        const details = describeTransactionFailure(
          method.procedure,
          keyed ? key : undefined,
          outcome.error,
          held !== undefined,
        );
        failTransactional('TRANSACTION_FAILED', details);
        return;
      }
      flushHeld();
      return;
    }
    if (outcome.ok) {
      const value = outcome.value;
      if ('shared' in value) sendSharedReplay(value.value);
      else sendReplay(value.response);
      return;
    }
    if (outcome.error instanceof HandlerFailure) {
      sendReplay(outcome.error.captured.response);
      return;
    }
    // RESULT_NOT_STORABLE: derived from the stored record, so it is marked as a replay too.
    refuseWith(outcome.error, 'service', true);
  };

  const run = (message: unknown, next: (message: unknown) => void, transaction: unknown): Promise<RunValue> => {
    if (cancelled) return Promise.reject(cancelledFailure(call));
    return new Promise<RunValue>((resolve, reject) => {
      capture = { headers: null, messages: [], objects: [], bytes: 0, notStorable: undefined };
      settle = (result) => {
        settle = undefined;
        if (result.ok) resolve(result.value);
        else reject(result.error);
      };
      if (method.transaction !== undefined) {
        // The handler finds the transaction through the objects grpc-js hands it unchanged (see transaction.ts).
        closeTransaction = openTransaction(transaction, descriptor.path, [requestMetadata, message]);
      }
      // The handler starts once the message (and the half-close grpc-js held back meanwhile) pass on.
      next(message);
    });
  };

  // A keyed call, or a call without a key to a transactional method (then it runs in a transaction, unrecorded).
  const handleClaimedMessage = async (message: unknown, next: (message: unknown) => void) => {
    let scope = '';
    let fingerprint = '';
    if (keyed) {
      try {
        scope = await config.scope(context);
        fingerprint = computeFingerprint(method.procedure, method.fingerprint(message, context));
      } catch (error) {
        refuseWith(error, 'option');
        return;
      }
    }
    if (cancelled) return;
    try {
      const outcome = await config.service.execute<RunValue>({
        procedure: method.procedure,
        key: keyed ? key : undefined,
        scope,
        fingerprint,
        required: method.required,
        codec: plan.codec,
        errors: plan.errors,
        ttlMs: method.ttlMs,
        leaseMs: method.leaseMs,
        inFlight: method.inFlight,
        maxResultBytes: method.maxResultBytesOption,
        transaction: method.transaction,
        run: ({ transaction }) => run(message, next, transaction),
      });
      closeTransaction?.();
      finishOutcome(outcome);
    } catch (error) {
      closeTransaction?.();
      if (held && method.transaction !== undefined) {
        // The handler answered, but its transaction rolled back (a lost lease): never report it as a success.
        if (isIdempotencyError(error)) {
          failTransactional(error.code, error.message, error.retryAfterMs ?? 1_000);
        } else {
          reportError(config, descriptor.path, error);
          failTransactional(
            'TRANSACTION_FAILED',
            describeTransactionFailure(method.procedure, keyed ? key : undefined, error, true),
          );
        }
      } else if (held) {
        // The handler finished and its answer is real: deliver it whatever went wrong around it.
        reportError(config, descriptor.path, error);
        flushHeld();
      } else if (capture) {
        // The handler is running and will send its own status; stop capturing.
        reportError(config, descriptor.path, error);
        settle = undefined;
      } else {
        refuseWith(error, 'service');
      }
    }
  };

  const listener: ServerListener = {
    onReceiveMetadata(metadata, next) {
      requestMetadata = metadata;
      if (method.transaction !== undefined && (descriptor.requestStream || descriptor.responseStream)) {
        const kind = descriptor.requestStream
          ? descriptor.responseStream
            ? 'bidirectional-streaming'
            : 'client-streaming'
          : 'server-streaming';
        const details = `rpc-idempotency: ${descriptor.path} is configured with transaction, but it is a ${kind} method; transactional mode supports unary methods only (streamed messages would reach the client before the commit). Remove transaction for this method; nothing ran.`;
        reportError(config, descriptor.path, new TypeError(details));
        call.sendStatus({ code: status.INTERNAL, details, metadata: null });
        return;
      }
      let raw: string | undefined;
      try {
        raw = readKey(metadata, config.metadataKey, method.procedure);
      } catch (error) {
        refuseWith(error, 'service');
        return;
      }
      if (descriptor.requestStream) {
        if (raw === undefined && !method.required) {
          next(metadata);
          return;
        }
        refuse(
          'STREAMING_NOT_SUPPORTED',
          `${descriptor.path} is a ${descriptor.responseStream ? 'bidirectional' : 'client'}-streaming method; idempotency keys are supported for unary and server-streaming methods only (the handler starts before the request is known, so it cannot be fingerprinted or replayed). Send this call without the ${config.metadataKey} metadata, or make the operation a unary method.`,
        );
        return;
      }
      let validated: string | undefined;
      try {
        validated = validateKey(raw, method.procedure, method.required);
      } catch (error) {
        refuseWith(error, 'service');
        return;
      }
      if (validated === undefined) {
        transactionalKeyless = method.transaction !== undefined;
        next(metadata);
        return;
      }
      if (!replay && !method.result) {
        refuse(
          'SERVICE_NOT_REPLAYABLE',
          `rpc-idempotency: ${descriptor.path} carries an idempotency key, but its service was registered without replayableService(), so a stored response could not be replayed; nothing ran. Register it with server.addService(replayableService(Service.service), implementation).`,
        );
        return;
      }
      keyed = true;
      key = validated;
      next(metadata);
    },
    onReceiveMessage(message, next) {
      if ((!keyed && !transactionalKeyless) || messageSeen) {
        // A second message on a unary call: grpc-js itself answers UNIMPLEMENTED.
        next(message);
        return;
      }
      messageSeen = true;
      void handleClaimedMessage(message, next);
    },
    onCancel() {
      cancelled = true;
      settle?.({ ok: false, error: cancelledFailure(call) });
    },
  };

  const responder: Responder = {
    start(next) {
      next(listener);
    },
    sendMetadata(metadata, next) {
      if (capture && settle) capture.headers = metadata.clone();
      next(metadata);
    },
    sendMessage(message, next) {
      if (capture && settle) record(capture, message);
      next(message);
    },
    sendStatus(sent, next) {
      if (!capture || !settle) {
        next(sent);
        return;
      }
      const captured: Captured = {
        response: {
          headers: capture.headers,
          messages: capture.messages,
          status: { code: sent.code, details: sent.details, trailers: sent.metadata?.clone() ?? new Metadata() },
        },
        notStorable: capture.notStorable,
        objects: capture.objects,
      };
      held = { status: sent, next };
      if (sent.code === status.OK) settle({ ok: true, value: captured });
      else settle({ ok: false, error: new HandlerFailure(captured, false) });
    },
  };

  const record = (into: NonNullable<typeof capture>, message: unknown) => {
    if (method.result && into.objects.length === 0) into.objects.push(message);
    if (into.notStorable) return;
    let bytes: Buffer;
    try {
      bytes = descriptor.responseSerialize(message);
    } catch (error) {
      into.notStorable = new TypeError(
        `the response message could not be serialized (${error instanceof Error ? error.message : String(error)})`,
      );
      into.messages = [];
      return;
    }
    into.bytes += bytes.byteLength;
    if (into.bytes > method.maxResultBytes) {
      // Stop buffering: the stream goes on to its caller, but it can no longer be replayed.
      into.notStorable = new RangeError(
        `the response messages exceed maxResultBytes (${method.maxResultBytes} bytes) after ${into.messages.length + 1} messages; raise maxResultBytes for ${descriptor.path} or send less`,
      );
      into.messages = [];
      return;
    }
    into.messages.push(bytes);
  };

  return new ServerInterceptingCall(call, responder);
}

/**
 * Read the key from request metadata. Returns `undefined` when absent; throws `KEY_INVALID` for shapes the
 * core's validation cannot see: a binary (`-bin`) key, or several values.
 */
function readKey(metadata: Metadata, name: string, procedure: string): string | undefined {
  if (metadata.get(`${name}-bin`).length > 0) {
    throw new IdempotencyError(
      'KEY_INVALID',
      `The idempotency key sent to ${procedure} is invalid: expected text metadata "${name}", received binary metadata "${name}-bin". Send the key as text (printable ASCII, e.g. a UUID) under "${name}".`,
      { procedure },
    );
  }
  const values = metadata.get(name);
  if (values.length === 0) return undefined;
  const value = values[0] as string | Buffer;
  // Node's HTTP/2 joins repeated header values with ", ", so two keys arrive as one value with a comma.
  if (values.length > 1 || (typeof value === 'string' && value.includes(','))) {
    throw new IdempotencyError(
      'KEY_INVALID',
      `The idempotency key sent to ${procedure} is invalid: expected exactly one "${name}" value without commas, received ${values.length > 1 ? `${values.length} values` : JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value)} (HTTP/2 joins repeated values with ", "). Send one key per call.`,
      { procedure },
    );
  }
  return typeof value === 'string' ? value : undefined;
}

function cancelledFailure(call: ServerInterceptingCallInterface): HandlerFailure {
  const deadline = call.getDeadline();
  const expired = deadline instanceof Date ? deadline.getTime() <= Date.now() : deadline <= Date.now();
  const code = expired ? status.DEADLINE_EXCEEDED : status.CANCELLED;
  return new HandlerFailure(
    {
      response: {
        headers: null,
        messages: [],
        status: {
          code,
          details: expired
            ? 'Deadline exceeded while the handler ran'
            : 'Cancelled by the client while the handler ran',
          trailers: new Metadata(),
        },
      },
      notStorable: undefined,
      objects: [],
    },
    true,
  );
}

/** A gRPC status thrown by a `scope` or `fingerprint` option, e.g. `{ code: status.UNAUTHENTICATED }`. */
function asStatusError(error: unknown): StatusToSend | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const { code, details, message, metadata } = error as {
    code?: unknown;
    details?: unknown;
    message?: unknown;
    metadata?: unknown;
  };
  if (typeof code !== 'number' || !Number.isInteger(code) || code <= 0 || code > 16) return undefined;
  return {
    code,
    details: typeof details === 'string' ? details : typeof message === 'string' ? message : statusName(code),
    metadata: metadata instanceof Metadata ? metadata : null,
  };
}

function reportError(config: ResolvedOptions, path: string, error: unknown): void {
  try {
    config.onError(error, { path });
  } catch {
    // A broken error hook must not keep the call from getting its status.
  }
}
