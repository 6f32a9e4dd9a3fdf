#!/usr/bin/env node
// The `rpc-idempotency-purge` executable; everything else lives in ./purge.ts.
import { purgeMain } from './purge.js';

await purgeMain();
