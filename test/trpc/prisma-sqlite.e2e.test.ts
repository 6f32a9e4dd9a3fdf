import { createPrismaStore } from '../../src/stores/prisma/index.js';
import { createTestDatabase, describeWithDatabase } from '../support/databases.js';
import { runTrpcEndToEndSuite } from './support/e2e-suite.js';

runTrpcEndToEndSuite({
  name: 'prisma:sqlite',
  describe: (name, fn) => describeWithDatabase('sqlite', name, fn),
  createBackend: async () => {
    const db = await createTestDatabase('sqlite');
    return { store: createPrismaStore(db.prisma), cleanup: () => db.drop() };
  },
});
