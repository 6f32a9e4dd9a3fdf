import { createPrismaStore } from '../../src/stores/prisma/index.js';
import { createTestDatabase, describeWithDatabase } from '../support/databases.js';
import { runGrpcSuite } from './suite.js';

describeWithDatabase('postgresql', 'gRPC adapter on the Prisma store', () => {
  runGrpcSuite({
    name: 'postgresql',
    async open() {
      const db = await createTestDatabase('postgresql');
      return { store: createPrismaStore(db.prisma), close: () => db.drop() };
    },
    async openUnreachable() {
      // Port 1 on loopback: nothing listens there, so every connection attempt is refused at once.
      const [{ PrismaPg }, { PrismaClient }] = await Promise.all([
        import('@prisma/adapter-pg'),
        import('../../prisma/generated/postgresql/client.js'),
      ]);
      const adapter = new PrismaPg({
        connectionString: 'postgresql://postgres@127.0.0.1:1/test',
        connectionTimeoutMillis: 1_000,
      });
      const prisma = new PrismaClient({ adapter });
      return { store: createPrismaStore(prisma), close: () => prisma.$disconnect().catch(() => undefined) };
    },
  });
});
