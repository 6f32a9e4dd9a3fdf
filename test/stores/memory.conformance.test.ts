import { createMemoryStore } from '../../src/index.js';
import { runStoreConformanceSuite } from '../../src/testing/index.js';

runStoreConformanceSuite({
  name: 'memory',
  createBackend: async () => ({ store: createMemoryStore() }),
});
