// npm start: the demo's payments service, staying up so you can call it by hand.
//
//   npm start                      # tRPC on http://127.0.0.1:4000, gRPC on 127.0.0.1:50051
//   PORT=4100 GRPC_PORT=50151 npm start
//
// It uses the same SQLite file as the demo (.data/demo.db) and prints every idempotency decision.
import { fileURLToPath } from 'node:url';
import { GRPC_METHOD, openDatabase, readLedger, startPaymentsService } from './payments-service.js';

const file = process.env.DEMO_DB ?? fileURLToPath(new URL('../../.data/demo.db', import.meta.url));
const httpPort = Number(process.env.PORT ?? 4000);
const grpcPort = Number(process.env.GRPC_PORT ?? 50051);

const prisma = await openDatabase(file);
const service = await startPaymentsService({
  prisma,
  idempotency: true,
  httpPort,
  grpcPort,
  onCharge: (row, key) =>
    console.log(`charge   ${row.orderId} ${row.amountCents} ${row.currency} (key ${key || 'none'})`),
  onEvent: (event) => {
    const transport = event.procedure === GRPC_METHOD ? 'grpc' : 'trpc';
    console.log(`${event.type.padEnd(8)} ${transport} key=${event.key} ${event.durationMs} ms`);
  },
});

console.log(`payments service up: tRPC ${service.trpcUrl}, gRPC ${service.grpcAddress} (SQLite ${file})

Call it twice with the same key; the second answer is a replay (header Idempotent-Replayed: true):

  curl -si -X POST ${service.trpcUrl}/createPayment \\
    -H 'content-type: application/json' -H 'Idempotency-Key: order-1001' \\
    -d '{"json":{"orderId":"order-1001","amountCents":1250,"currency":"EUR"}}'

gRPC, with the small client in this folder (same key twice: one charge, one replay):

  node --import tsx examples/demo/call-grpc.ts ${service.grpcAddress} order-2001 4990

Ctrl-C prints the ledger and stops.`);

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  const ledger = await readLedger(prisma);
  console.log(`\nledger: ${ledger.length} charges`);
  for (const row of ledger)
    console.log(`  ${row.paymentId} ${row.orderId} ${row.amountCents} ${row.currency} via ${row.transport}`);
  await service.close();
  await prisma.$disconnect();
  process.exit(0);
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
