import { describeValue } from '../../core/errors.js';

/**
 * The databases the Prisma store supports, named as in the `provider` of a `schema.prisma` datasource. MariaDB
 * is `mysql`.
 *
 * @example
 * ```ts
 * const store = createPrismaStore(prisma, { provider: 'postgresql' });
 * ```
 */
export type IdempotencyPrismaProvider = 'sqlite' | 'postgresql' | 'mysql';

/**
 * All values of {@link IdempotencyPrismaProvider}.
 *
 * @example
 * ```ts
 * IDEMPOTENCY_PRISMA_PROVIDERS.includes(provider);
 * ```
 */
export const IDEMPOTENCY_PRISMA_PROVIDERS: readonly IdempotencyPrismaProvider[] = Object.freeze([
  'sqlite',
  'postgresql',
  'mysql',
]);

/**
 * The part of a Prisma client the store uses: raw SQL with positional parameters. Any generated Prisma 7
 * client (`new PrismaClient({ adapter })`) fits, and so does the transaction client `tx` of
 * `prisma.$transaction(async (tx) => ...)`, so a store can run inside the caller's transaction.
 *
 * @example
 * ```ts
 * import { PrismaClient } from './generated/prisma/client.js';
 * const queryable: IdempotencyPrismaQueryable = new PrismaClient({ adapter });
 * ```
 */
export interface IdempotencyPrismaQueryable {
  $queryRawUnsafe<T = unknown>(query: string, ...values: unknown[]): PromiseLike<T>;
  $executeRawUnsafe(query: string, ...values: unknown[]): PromiseLike<number>;
}

/** Options of an interactive Prisma transaction, as {@link IdempotencyPrismaClient.$transaction} takes them. */
export interface IdempotencyPrismaTransactionOptions {
  /** How long to wait for a connection, in milliseconds (Prisma's default: 2,000). */
  maxWait?: number;
  /** How long the transaction may run, in milliseconds (Prisma's default: 5,000). */
  timeout?: number;
  /** Prisma's isolation level name, e.g. `'ReadCommitted'` or `'Serializable'` (SQLite: only `'Serializable'`). */
  isolationLevel?: string;
}

/**
 * A whole Prisma client: raw SQL plus interactive transactions. {@link applyIdempotencyMigrations} needs
 * this; the store itself only needs {@link IdempotencyPrismaQueryable}.
 *
 * @example
 * ```ts
 * const prisma: IdempotencyPrismaClient = new PrismaClient({ adapter: new PrismaPg({ connectionString }) });
 * ```
 */
export interface IdempotencyPrismaClient extends IdempotencyPrismaQueryable {
  $transaction<R>(
    fn: (tx: IdempotencyPrismaQueryable) => PromiseLike<R>,
    options?: IdempotencyPrismaTransactionOptions,
  ): PromiseLike<R>;
}

/**
 * Read the provider from a Prisma 7 client, or `undefined` when the value does not say.
 *
 * Prisma exposes no public accessor. A generated client keeps the schema's provider in `_activeProvider`, and
 * its driver adapter factory (in `_engineConfig.adapter`) has a public `provider` field (`'postgres'` for
 * PostgreSQL). Both are read defensively: a client wrapped in a proxy or built by `$extends` forwards them,
 * and anything else yields `undefined`.
 *
 * @example
 * ```ts
 * detectPrismaProvider(new PrismaClient({ adapter: new PrismaPg({ connectionString }) })); // 'postgresql'
 * ```
 */
export function detectPrismaProvider(client: unknown): string | undefined {
  if ((typeof client !== 'object' && typeof client !== 'function') || client === null) return undefined;
  const target = client as { _activeProvider?: unknown; _engineConfig?: { adapter?: { provider?: unknown } } };
  let active: unknown;
  let adapterProvider: unknown;
  try {
    active = target._activeProvider;
    adapterProvider = target._engineConfig?.adapter?.provider;
  } catch {
    return undefined;
  }
  if (typeof active === 'string') return active;
  if (adapterProvider === 'postgres') return 'postgresql';
  if (typeof adapterProvider === 'string') return adapterProvider;
  return undefined;
}

function isSupportedProvider(value: unknown): value is IdempotencyPrismaProvider {
  return typeof value === 'string' && (IDEMPOTENCY_PRISMA_PROVIDERS as readonly string[]).includes(value);
}

/**
 * Check that `client` has the raw-SQL methods the store calls, and settle its provider: the explicit
 * `provider` option when given (it must agree with what the client says about itself), else the detected one.
 * Throws an Error that says what was expected, what arrived and how to fix it.
 *
 * @example
 * ```ts
 * const provider = resolvePrismaProvider(prisma, options.provider, 'createPrismaStore');
 * ```
 */
export function resolvePrismaProvider(client: unknown, explicit: unknown, caller: string): IdempotencyPrismaProvider {
  const candidate = client as Partial<IdempotencyPrismaQueryable> | null | undefined;
  if (
    candidate === null ||
    candidate === undefined ||
    typeof candidate.$queryRawUnsafe !== 'function' ||
    typeof candidate.$executeRawUnsafe !== 'function'
  ) {
    throw new TypeError(
      `${caller}: expected a Prisma 7 client (an object with $queryRawUnsafe and $executeRawUnsafe), got ` +
        `${describeValue(client)}. Pass the PrismaClient you created with a driver adapter, e.g. ` +
        '`new PrismaClient({ adapter: new PrismaPg({ connectionString }) })`.',
    );
  }
  if (explicit !== undefined && !isSupportedProvider(explicit)) {
    throw new TypeError(
      `${caller}: option \`provider\` must be one of ${IDEMPOTENCY_PRISMA_PROVIDERS.map((p) => `'${p}'`).join(', ')}, ` +
        `got ${describeValue(explicit)}. Use the provider of your schema.prisma datasource (MariaDB is 'mysql').`,
    );
  }
  const detected = detectPrismaProvider(client);
  if (explicit !== undefined) {
    if (detected !== undefined && detected !== explicit) {
      throw new TypeError(
        `${caller}: option \`provider\` is '${explicit}' but the Prisma client was generated for '${detected}'. ` +
          'Remove the option to use the detected provider, or pass the client that matches it.',
      );
    }
    return explicit;
  }
  if (detected === undefined) {
    throw new TypeError(
      `${caller}: could not detect the database provider of this Prisma client (it exposes neither ` +
        "`_activeProvider` nor a driver adapter's `provider`). Pass it explicitly: " +
        `{ provider: ${IDEMPOTENCY_PRISMA_PROVIDERS.map((p) => `'${p}'`).join(' | ')} }.`,
    );
  }
  if (!isSupportedProvider(detected)) {
    throw new TypeError(
      `${caller}: the Prisma client uses provider '${detected}', which the idempotency store does not support. ` +
        `Supported: ${IDEMPOTENCY_PRISMA_PROVIDERS.join(', ')}.`,
    );
  }
  return detected;
}

/**
 * The longest table name we accept: the index name `<table>_expires_at_idx` must fit PostgreSQL's 63 bytes.
 *
 * @example
 * ```ts
 * tableName.length <= MAX_TABLE_NAME_LENGTH;
 * ```
 */
export const MAX_TABLE_NAME_LENGTH = 48;

/**
 * The default name of the record table, as the shipped migrations create it.
 *
 * @example
 * ```ts
 * createPrismaStore(prisma, { tableName: DEFAULT_TABLE_NAME });
 * ```
 */
export const DEFAULT_TABLE_NAME = 'idempotency_records';

/**
 * The migration runner's own bookkeeping table (never the host app's `_prisma_migrations`).
 *
 * @example
 * ```ts
 * await prisma.$queryRawUnsafe(`SELECT * FROM ${MIGRATIONS_TABLE_NAME}`);
 * ```
 */
export const MIGRATIONS_TABLE_NAME = 'rpc_idempotency_migrations';

/**
 * Validate a table name as a plain SQL identifier (it is spliced into SQL text, so nothing else may pass).
 *
 * @example
 * ```ts
 * validateTableName('billing_records', 'createPrismaStore'); // 'billing_records'
 * ```
 */
export function validateTableName(tableName: unknown, caller: string): string {
  if (
    typeof tableName !== 'string' ||
    !/^[A-Za-z_][A-Za-z0-9_]*$/.test(tableName) ||
    tableName.length > MAX_TABLE_NAME_LENGTH
  ) {
    throw new TypeError(
      `${caller}: option \`tableName\` must be a plain identifier (a letter or underscore, then letters, digits ` +
        `or underscores; at most ${MAX_TABLE_NAME_LENGTH} characters), got ${describeValue(tableName)}. ` +
        `Omit it to use '${DEFAULT_TABLE_NAME}'.`,
    );
  }
  if (tableName.toLowerCase() === MIGRATIONS_TABLE_NAME) {
    throw new TypeError(
      `${caller}: option \`tableName\` cannot be '${MIGRATIONS_TABLE_NAME}', the migration runner's own table. ` +
        'Choose another name.',
    );
  }
  return tableName;
}

/**
 * Quote an identifier that {@link validateTableName} (or our own constants) already vetted.
 *
 * @example
 * ```ts
 * quoteIdentifier('mysql', 'key'); // '`key`'
 * ```
 */
export function quoteIdentifier(provider: IdempotencyPrismaProvider, identifier: string): string {
  return provider === 'mysql' ? `\`${identifier}\`` : `"${identifier}"`;
}
