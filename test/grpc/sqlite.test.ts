import { randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPrismaStore } from '../../src/stores/prisma/index.js';
import { createTestDatabase, describeWithDatabase } from '../support/databases.js';
import { runGrpcSuite } from './suite.js';

describeWithDatabase('sqlite', 'gRPC adapter on the Prisma store', () => {
  runGrpcSuite({
    name: 'sqlite',
    async open() {
      const db = await createTestDatabase('sqlite');
      return { store: createPrismaStore(db.prisma), close: () => db.drop() };
    },
    async openUnreachable() {
      // A database file in a directory that does not exist: every statement fails to open it.
      const [{ PrismaBetterSqlite3 }, { PrismaClient }] = await Promise.all([
        import('@prisma/adapter-better-sqlite3'),
        import('../../prisma/generated/sqlite/client.js'),
      ]);
      const url = join(tmpdir(), `missing-${randomUUID()}`, 'gone.db');
      const prisma = new PrismaClient({ adapter: new PrismaBetterSqlite3({ url, timeout: 1_000 }) });
      return { store: createPrismaStore(prisma), close: () => prisma.$disconnect().catch(() => undefined) };
    },
  });
});
