// Call the demo's gRPC CreatePayment by hand (grpcurl is not needed):
//
//   node --import tsx examples/demo/call-grpc.ts <address> <idempotency-key> <amountCents> [orderId]
//
// Prints the payment, the idempotent-replayed header, and the status.
import * as grpc from '@grpc/grpc-js';
import { createPaymentsClient } from './payments-service.js';

const [address = '127.0.0.1:50051', key = `order-${Date.now()}`, amount = '1250', orderId = key] =
  process.argv.slice(2);
const client = createPaymentsClient(address);
const metadata = new grpc.Metadata();
metadata.set('idempotency-key', key);
const call = client.createPayment(
  { amount, currency: 'EUR', metadata: { order_id: orderId, processing_ms: '0' } },
  metadata,
  (error, payment) => {
    if (error) {
      console.error(`status ${grpc.status[error.code]}: ${error.details}`);
      const code = error.metadata.get('idempotency-error')[0];
      if (code) console.error(`idempotency-error: ${String(code)}`);
      process.exitCode = 1;
    } else {
      console.log(`payment ${payment?.id}: ${payment?.amount} ${payment?.currency}`);
    }
    client.close();
  },
);
call.on('metadata', (headers) =>
  console.log(`idempotent-replayed: ${headers.get('idempotent-replayed')[0] ?? 'false'}`),
);
