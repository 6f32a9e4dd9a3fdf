// Loads proto/payments.proto for the gRPC tests, and starts real grpc-js servers and clients on 127.0.0.1:0.
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export const PROTO_PATH = fileURLToPath(new URL('../../proto/payments.proto', import.meta.url));

/**
 * The proto-loader options used by tests, the example and the demo:
 * - `longs: String`: 64-bit integers as decimal strings, exact beyond 2^53 and JSON-safe;
 * - `enums: String`: enum values by name;
 * - `bytes: Buffer`: bytes fields as Buffers;
 * - `defaults: true`: unset fields appear with their defaults, so a decoded request (and its fingerprint)
 *   does not depend on whether the client wrote a default value explicitly;
 * - `oneofs: true`: a virtual field names the oneof member that is set (`method: 'card'`).
 * `google/protobuf/timestamp.proto` resolves from protobufjs's bundled well-known types.
 */
export const LOADER_OPTIONS: protoLoader.Options = {
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
};

export const packageDefinition = protoLoader.loadSync(PROTO_PATH, LOADER_OPTIONS);

type Callback<T> = (error: grpc.ServiceError | null, value?: T) => void;

/** The generated client, typed loosely: the tests use plain objects for messages. */
export interface PaymentsClient extends grpc.Client {
  createPayment(
    request: object,
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    callback: Callback<Record<string, unknown>>,
  ): grpc.ClientUnaryCall;
  listRefunds(
    request: object,
    metadata: grpc.Metadata,
    options?: grpc.CallOptions,
  ): grpc.ClientReadableStream<Record<string, unknown>>;
  uploadReceipt(
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    callback: Callback<Record<string, unknown>>,
  ): grpc.ClientWritableStream<object>;
  negotiateRate(
    metadata: grpc.Metadata,
    options?: grpc.CallOptions,
  ): grpc.ClientDuplexStream<object, Record<string, unknown>>;
}

const loaded = grpc.loadPackageDefinition(packageDefinition) as unknown as {
  payments: { v1: { Payments: grpc.ServiceClientConstructor } };
};

export const PaymentsClientConstructor = loaded.payments.v1.Payments;
export const PaymentsService = PaymentsClientConstructor.service;

export const PATHS = {
  createPayment: '/payments.v1.Payments/CreatePayment',
  listRefunds: '/payments.v1.Payments/ListRefunds',
  uploadReceipt: '/payments.v1.Payments/UploadReceipt',
  negotiateRate: '/payments.v1.Payments/NegotiateRate',
} as const;

/** Start a server on an ephemeral port; resolves to the address clients connect to. */
export async function startServer(
  options: grpc.ServerOptions,
  service: grpc.ServiceDefinition,
  implementation: grpc.UntypedServiceImplementation,
): Promise<{ server: grpc.Server; address: string }> {
  const server = new grpc.Server(options);
  server.addService(service, implementation);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    );
  });
  return { server, address: `127.0.0.1:${port}` };
}

export function createClient(address: string, options: grpc.ClientOptions = {}): PaymentsClient {
  return new PaymentsClientConstructor(
    address,
    grpc.credentials.createInsecure(),
    options,
  ) as unknown as PaymentsClient;
}

/** Close a server: graceful first, forced if calls still hang (e.g. a handler held on purpose). */
export async function stopServer(server: grpc.Server): Promise<void> {
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, 200);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
