import { createPrismaStore } from '../../src/stores/prisma/index.js';
import { createTestDatabase, describeWithDatabase } from '../support/databases.js';
import { runTrpcEndToEndSuite } from './support/e2e-suite.js';

runTrpcEndToEndSuite({
  name: 'prisma:postgresql',
  describe: (name, fn) => describeWithDatabase('postgresql', name, fn),
  createBackend: async () => {
    const db = await createTestDatabase('postgresql');
    return { store: createPrismaStore(db.prisma), cleanup: () => db.drop() };
  },
});
