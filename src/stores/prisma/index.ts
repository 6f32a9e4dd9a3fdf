/**
 * `rpc-idempotency/prisma`: the idempotency record store on your own Prisma 7 client (SQLite, PostgreSQL,
 * MySQL/MariaDB), and a migration runner that needs no Prisma engines.
 *
 * @example
 * ```ts
 * import { applyIdempotencyMigrations, createPrismaStore } from 'rpc-idempotency/prisma';
 *
 * await applyIdempotencyMigrations(prisma);
 * const store = createPrismaStore(prisma);
 * ```
 *
 * @packageDocumentation
 */
export type {
  IdempotencyPrismaClient,
  IdempotencyPrismaProvider,
  IdempotencyPrismaQueryable,
  IdempotencyPrismaTransactionOptions,
} from './client.js';
export {
  applyIdempotencyMigrations,
  type IdempotencyMigration,
  type IdempotencyMigrationOptions,
  type IdempotencyMigrationResult,
  type IdempotencyMigrationSourceOptions,
  loadIdempotencyMigrations,
} from './migrate.js';
export {
  configureSqlite,
  createPrismaStore,
  type IdempotencyPrismaStore,
  type IdempotencyPrismaStoreOptions,
  type IdempotencyPrismaTransactionClientOf,
  type IdempotencySqliteOptions,
} from './store.js';
