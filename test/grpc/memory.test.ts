import { createMemoryStore } from '../../src/index.js';
import { runGrpcSuite } from './suite.js';

runGrpcSuite({
  name: 'memory',
  open: async () => ({ store: createMemoryStore(), close: async () => {} }),
});
