import { createMemoryStore } from '../../src/index.js';
import { runTrpcEndToEndSuite } from './support/e2e-suite.js';

runTrpcEndToEndSuite({
  name: 'memory',
  createBackend: async () => ({ store: createMemoryStore() }),
});
