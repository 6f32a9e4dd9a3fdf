import { AsyncLocalStorage } from 'node:async_hooks';
import { describeValue } from '../../core/errors.js';
import { type IdempotencyRecord, IdempotencyStatus, isRecordClaimable, MAX_KEY_LENGTH } from '../../core/record.js';
import type {
  IdempotencyClaimInput,
  IdempotencyClaimResult,
  IdempotencyCompleteInput,
  IdempotencyStore,
  IdempotencyTransactionalStore,
  IdempotencyTransactionOptions,
} from '../contract.js';
import {
  DEFAULT_TABLE_NAME,
  type IdempotencyPrismaClient,
  type IdempotencyPrismaProvider,
  type IdempotencyPrismaQueryable,
  type IdempotencyPrismaTransactionOptions,
  quoteIdentifier,
  resolvePrismaProvider,
  validateTableName,
} from './client.js';

/** Options of {@link createPrismaStore}. */
export interface IdempotencyPrismaStoreOptions {
  /**
   * The database behind the client. Detected from the client when omitted (Prisma 7 clients with a driver
   * adapter say which provider they were generated for); pass it when you wrap the client in something
   * that hides that.
   * @default detected from the client
   * @example { provider: 'postgresql' }
   */
  provider?: IdempotencyPrismaProvider;
  /**
   * The record table. A plain identifier, resolved in the connection's current schema (PostgreSQL
   * `search_path`) or database (MySQL); pass the same name to {@link applyIdempotencyMigrations}.
   * @default 'idempotency_records'
   * @example { tableName: 'billing_idempotency_records' }
   */
  tableName?: string;
}

/**
 * The column names of the record table, in the order of {@link IdempotencyRecord}'s fields. The migrations and
 * every `schema.prisma` declare exactly these (test/prisma/drift.test.ts checks).
 *
 * @example
 * ```ts
 * IDEMPOTENCY_RECORD_COLUMNS.includes('owner_token'); // true
 * ```
 */
export const IDEMPOTENCY_RECORD_COLUMNS = Object.freeze([
  'scope',
  'key',
  'fingerprint',
  'procedure',
  'status',
  'owner_token',
  'locked_until',
  'result',
  'result_code',
  'codec',
  'created_at',
  'expires_at',
] as const);

/**
 * The longest string each text column takes, in UTF-16 code units (JavaScript's `length`, never less than the
 * database's character count). MySQL sizes its VARCHARs to these; the store checks every provider against
 * them so that all three behave alike, and so that MySQL's INSERT IGNORE never truncates silently.
 *
 * @example
 * ```ts
 * if (scope.length > IDEMPOTENCY_COLUMN_LIMITS.scope) scope = sha256Hex(scope);
 * ```
 */
export const IDEMPOTENCY_COLUMN_LIMITS = Object.freeze({
  scope: 255,
  key: MAX_KEY_LENGTH,
  fingerprint: 255,
  procedure: 255,
  owner_token: 255,
  result_code: 255,
  codec: 255,
} as const);

/** The latest instant every provider stores (DATETIME ends at 9999-12-31 23:59:59.999). */
const MAX_TIME_MS = 253_402_300_799_999;

/** How many times a claim re-reads after losing a race to a concurrent release, purge or takeover. */
const MAX_CLAIM_ATTEMPTS = 8;

type Row = Record<string, unknown>;

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function fail(operation: string, message: string): never {
  throw new TypeError(`Prisma idempotency store, ${operation}(): ${message}`);
}

/**
 * Check a text argument against its column. Stores hold no policy (the service validates keys), so only what
 * the database cannot store faithfully is refused: more characters than the column takes, unpaired UTF-16
 * surrogates (they would become U+FFFD on the way, so two different scopes could collapse into one), and on
 * PostgreSQL the NUL character (`text` cannot hold it).
 */
function checkText(
  provider: IdempotencyPrismaProvider,
  operation: string,
  field: string,
  value: unknown,
  maxLength: number,
): string {
  if (typeof value !== 'string') {
    fail(operation, `expected \`${field}\` to be a string, got ${describeValue(value)}.`);
  }
  if (value.length > maxLength) {
    fail(
      operation,
      `expected \`${field}\` to have at most ${maxLength} characters, got ${describeValue(value)}. ` +
        'The service validates keys before they reach the store; shorten the value or hash it.',
    );
  }
  if (LONE_SURROGATE.test(value)) {
    fail(
      operation,
      `\`${field}\` contains an unpaired UTF-16 surrogate, which no database stores faithfully: ` +
        `${describeValue(value)}. Make it a well-formed string (e.g. encode it).`,
    );
  }
  if (provider === 'postgresql' && value.includes('\u0000')) {
    fail(
      operation,
      `\`${field}\` contains a NUL character, which PostgreSQL text columns cannot store: ${describeValue(value)}. ` +
        'Remove it or encode the value.',
    );
  }
  return value;
}

function checkOptionalText(
  provider: IdempotencyPrismaProvider,
  operation: string,
  field: string,
  value: unknown,
  maxLength: number,
): string | null {
  return value === null ? null : checkText(provider, operation, field, value, maxLength);
}

function checkTime(operation: string, field: string, value: unknown): Date {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > MAX_TIME_MS) {
    fail(
      operation,
      `expected \`${field}\` to be epoch milliseconds between 0 and ${MAX_TIME_MS} (year 9999), got ` +
        `${describeValue(value)}. All store times are numbers from Date.now() or the service's clock.`,
    );
  }
  return new Date(Math.trunc(value));
}

function checkBytes(operation: string, value: unknown): Uint8Array | null {
  if (value === null || value instanceof Uint8Array) return value;
  return fail(operation, `expected \`result\` to be a Uint8Array or null, got ${describeValue(value)}.`);
}

function toEpochMs(value: unknown, column: string): number {
  if (value instanceof Date) return value.getTime();
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint') return Number(value);
  if (typeof value === 'string') {
    const parsed = Date.parse(value);
    if (!Number.isNaN(parsed)) return parsed;
  }
  throw new Error(
    `Prisma idempotency store: column ${column} holds ${describeValue(value)}, expected a timestamp. ` +
      'Was the row written by something other than this store?',
  );
}

function toBytes(value: unknown): Uint8Array | null {
  if (value === null || value === undefined) return null;
  if (value instanceof Uint8Array) {
    // A Buffer (a Uint8Array subclass) becomes a plain view of the same memory: callers get one type.
    return value.constructor === Uint8Array ? value : new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  throw new Error(`Prisma idempotency store: column result holds ${describeValue(value)}, expected bytes.`);
}

function toNullableString(value: unknown): string | null {
  return value === null || value === undefined ? null : String(value);
}

const STATUSES: ReadonlySet<string> = new Set(Object.values(IdempotencyStatus));

function toRecord(row: Row): IdempotencyRecord {
  const status = String(row.status);
  if (!STATUSES.has(status)) {
    throw new Error(
      `Prisma idempotency store: record (${String(row.scope)}, ${String(row.key)}) has status ${describeValue(
        row.status,
      )}, expected one of ${[...STATUSES].join(', ')}. Was it written by something other than this store?`,
    );
  }
  return {
    scope: String(row.scope),
    key: String(row.key),
    fingerprint: String(row.fingerprint),
    procedure: String(row.procedure),
    status: status as IdempotencyStatus,
    ownerToken: String(row.owner_token),
    lockedUntil: toEpochMs(row.locked_until, 'locked_until'),
    result: toBytes(row.result),
    resultCode: toNullableString(row.result_code),
    codec: toNullableString(row.codec),
    createdAt: toEpochMs(row.created_at, 'created_at'),
    expiresAt: toEpochMs(row.expires_at, 'expires_at'),
  };
}

/**
 * A statement written once with PostgreSQL's numbered placeholders (`$1`, reusable), and the form the driver
 * gets: unchanged for PostgreSQL, `?` placeholders plus the argument order for SQLite and MySQL.
 */
interface Statement {
  readonly text: string;
  /** For `?` placeholders: the 1-based argument number each `?` takes, in textual order. */
  readonly order: readonly number[] | null;
}

function compile(provider: IdempotencyPrismaProvider, text: string): Statement {
  if (provider === 'postgresql') return { text, order: null };
  const order: number[] = [];
  const rewritten = text.replace(/\$(\d+)/g, (_match, index: string) => {
    order.push(Number(index));
    return '?';
  });
  return { text: rewritten, order };
}

function bind(statement: Statement, values: readonly unknown[]): unknown[] {
  return statement.order === null ? [...values] : statement.order.map((index) => values[index - 1]);
}

interface Statements {
  /**
   * Insert when absent. SQLite, MySQL: affected rows say 1 won, 0 lost. PostgreSQL (`claimInsertReturnsRow`): a
   * query returning one row, `inserted = true` when it won, else the existing record as the statement's
   * snapshot saw it (NULL columns when that snapshot predates the conflicting row).
   */
  readonly claimInsert: Statement;
  readonly claimInsertReturnsRow: boolean;
  /** Take over the record we saw, fenced on its owner token and claimability. */
  readonly claimTakeOver: Statement;
  readonly get: Statement;
  readonly complete: Statement;
  readonly release: Statement;
  readonly renew: Statement;
  readonly purge: Statement;
}

/*
 * Arguments, by statement:
 * - claim statements: $1 scope, $2 key, $3 fingerprint, $4 procedure, $5 owner token, $6 locked until,
 *   $7 now (also the new created_at), $8 expires at; the takeover adds $9, the owner token it read.
 * - get: $1 scope, $2 key. release: $1 scope, $2 key, $3 owner token.
 * - complete: those three, then $4 status, $5 result, $6 result code, $7 codec. renew: $4 locked until.
 * - purge: $1 now, $2 limit.
 */
function buildStatements(provider: IdempotencyPrismaProvider, tableName: string): Statements {
  const q = (id: string) => quoteIdentifier(provider, id);
  const table = q(tableName);
  const columns = IDEMPOTENCY_RECORD_COLUMNS.map(q).join(', ');
  const fenced = `${q('scope')} = $1 AND ${q('key')} = $2 AND ${q('owner_token')} = $3 AND ${q('status')} = 'IN_PROGRESS'`;
  const values = `VALUES ($1, $2, $3, $4, 'IN_PROGRESS', $5, $6, NULL, NULL, NULL, $7, $8)`;
  // isRecordClaimable as SQL over the stored row: expired, or IN_PROGRESS with a lapsed lease.
  const claimable = `(${q('expires_at')} <= $7 OR (${q('status')} = 'IN_PROGRESS' AND ${q('locked_until')} <= $7))`;

  let claimInsert: string;
  let purge: string;
  if (provider === 'postgresql') {
    // ON CONFLICT DO NOTHING: a conflict takes no row lock and assigns no transaction id, so a lost claim
    // writes nothing and commits without a WAL flush (DO UPDATE .. WHERE false would lock the row and pay
    // both). The LEFT JOIN returns the record we collided with, read with this statement's snapshot, so a
    // lost claim is one round trip; its columns are NULL when that row was committed after the snapshot (the
    // store then reads again). Always exactly one row. A claimable record is taken over by the fenced UPDATE
    // below, as on SQLite and MySQL. (This shape plans faster than returning the row through UNION ALL.)
    claimInsert =
      `WITH ins AS (INSERT INTO ${table} (${columns}) ${values} ON CONFLICT (${q('scope')}, ${q('key')}) DO NOTHING ` +
      `RETURNING 1) SELECT EXISTS (SELECT 1 FROM ins) AS inserted, ` +
      `${IDEMPOTENCY_RECORD_COLUMNS.map((column) => `s.${q(column)}`).join(', ')} ` +
      `FROM (SELECT 1) AS one LEFT JOIN ${table} AS s ON s.${q('scope')} = $1 AND s.${q('key')} = $2`;
    // A TID scan over at most $2 rows found through the expires_at index; the outer condition re-checks
    // expiry so a row taken over meanwhile (new version, new ctid) is never deleted.
    purge =
      `DELETE FROM ${table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM ${table} WHERE ${q('expires_at')} <= $1 ` +
      `LIMIT $2)) AND ${q('expires_at')} <= $1`;
  } else {
    // SQLite: ON CONFLICT DO NOTHING ignores only the (scope, key) conflict. MySQL: INSERT IGNORE also turns
    // other errors into warnings (truncation, bad values), which is why every value is validated first.
    // Never ON DUPLICATE KEY UPDATE: its affected-row count cannot tell a winner from a loser.
    claimInsert =
      provider === 'sqlite'
        ? `INSERT INTO ${table} (${columns}) ${values} ON CONFLICT (${q('scope')}, ${q('key')}) DO NOTHING`
        : `INSERT IGNORE INTO ${table} (${columns}) ${values}`;
    purge =
      provider === 'sqlite'
        ? `DELETE FROM ${table} WHERE rowid IN (SELECT rowid FROM ${table} WHERE ${q('expires_at')} <= $1 LIMIT $2)`
        : `DELETE FROM ${table} WHERE ${q('expires_at')} <= $1 ORDER BY ${q('expires_at')} LIMIT $2`;
  }
  // Atomic on every provider: the row changes only if it still has the owner token we saw and is claimable now
  // (PostgreSQL and MySQL re-check the condition on the latest row version; SQLite writes one at a time).
  const claimTakeOver =
    `UPDATE ${table} SET ${q('fingerprint')} = $3, ${q('procedure')} = $4, ${q('status')} = 'IN_PROGRESS', ` +
    `${q('owner_token')} = $5, ${q('locked_until')} = $6, ${q('result')} = NULL, ${q('result_code')} = NULL, ` +
    `${q('codec')} = NULL, ${q('created_at')} = $7, ${q('expires_at')} = $8 ` +
    `WHERE ${q('scope')} = $1 AND ${q('key')} = $2 AND ${q('owner_token')} = $9 AND ${claimable}`;
  const c = (text: string) => compile(provider, text);
  return {
    claimInsert: c(claimInsert),
    claimInsertReturnsRow: provider === 'postgresql',
    claimTakeOver: c(claimTakeOver),
    get: c(`SELECT ${columns} FROM ${table} WHERE ${q('scope')} = $1 AND ${q('key')} = $2`),
    complete: c(
      `UPDATE ${table} SET ${q('status')} = $4, ${q('result')} = $5, ${q('result_code')} = $6, ` +
        `${q('codec')} = $7 WHERE ${fenced}`,
    ),
    release: c(`DELETE FROM ${table} WHERE ${fenced}`),
    renew: c(`UPDATE ${table} SET ${q('locked_until')} = $4 WHERE ${fenced}`),
    purge: c(purge),
  };
}

/**
 * SQLite runs every statement of a PrismaClient on its one connection, so while a transaction is open any
 * other statement of that client lands inside it (and would roll back with it). The store therefore lets its
 * plain operations share a client freely but gives transactions exclusive use of it: an operation waits while
 * a transaction of the same client runs, and a transaction waits for operations in flight to finish.
 */
interface ClientGate {
  shared<T>(fn: () => Promise<T>): Promise<T>;
  exclusive<T>(fn: () => Promise<T>): Promise<T>;
}

const PASS_THROUGH_GATE: ClientGate = { shared: (fn) => fn(), exclusive: (fn) => fn() };

/**
 * Marks the async flow of a running store transaction, so that a store operation started from inside it (a
 * nested idempotent call in a transactional procedure) is refused at once instead of waiting for its own
 * transaction forever. Where the flow is lost (a gRPC handler started from a stream event), the transaction's
 * deadline in `transaction()` ends the wait instead.
 */
const insideTransaction = new AsyncLocalStorage<object>();

function nestedOperationError(): TypeError {
  return new TypeError(
    'Prisma idempotency store (SQLite): a store operation was started inside a store transaction of the same ' +
      'client (e.g. an idempotent call made from a transactional procedure). A SQLite client has one connection, ' +
      'so it would wait for its own transaction forever. Make that call outside the transactional procedure, or ' +
      'write through the transaction client instead.',
  );
}

function createClientGate(): ClientGate {
  let inFlight = 0;
  let exclusiveWaiting = 0;
  let exclusiveTail: Promise<void> = Promise.resolve();
  let onDrained: (() => void) | undefined;
  /** The token of the transaction that holds the client now, if any. */
  let running: object | undefined;
  return {
    async shared(fn) {
      if (running !== undefined && insideTransaction.getStore() === running) throw nestedOperationError();
      while (exclusiveWaiting > 0) await exclusiveTail;
      inFlight++;
      try {
        return await fn();
      } finally {
        inFlight--;
        if (inFlight === 0) onDrained?.();
      }
    },
    async exclusive(fn) {
      exclusiveWaiting++;
      const previous = exclusiveTail;
      let release: () => void = () => undefined;
      exclusiveTail = new Promise<void>((resolve) => {
        release = resolve;
      });
      try {
        await previous;
        while (inFlight > 0) {
          await new Promise<void>((resolve) => {
            onDrained = resolve;
          });
        }
        onDrained = undefined;
        const token = {};
        running = token;
        try {
          return await insideTransaction.run(token, fn);
        } finally {
          running = undefined;
        }
      } finally {
        exclusiveWaiting--;
        release();
      }
    },
  };
}

const sqliteGates = new WeakMap<object, ClientGate>();

function gateFor(provider: IdempotencyPrismaProvider, prisma: object): ClientGate {
  if (provider !== 'sqlite') return PASS_THROUGH_GATE;
  let gate = sqliteGates.get(prisma);
  if (gate === undefined) {
    gate = createClientGate();
    sqliteGates.set(prisma, gate);
  }
  return gate;
}

/**
 * The transaction client of a Prisma client type: the `tx` its interactive `$transaction` passes.
 *
 * @example
 * ```ts
 * type Tx = IdempotencyPrismaTransactionClientOf<PrismaClient>; // Omit<PrismaClient, '$connect' | ...>
 * ```
 */
export type IdempotencyPrismaTransactionClientOf<C> = C extends {
  $transaction(fn: (tx: infer T) => never, ...rest: never[]): unknown;
}
  ? T
  : IdempotencyPrismaQueryable;

/**
 * What {@link createPrismaStore} returns: a transactional store (see `IdempotencyTransactionalStore`) when the
 * client has `$transaction` (every Prisma 7 client does, transaction clients too: theirs nests with a
 * savepoint), else a plain {@link IdempotencyStore}.
 *
 * @example
 * ```ts
 * const store: IdempotencyPrismaStore<typeof prisma> = createPrismaStore(prisma);
 * await store.transaction(async ({ client, complete }) => { ... });
 * ```
 */
export type IdempotencyPrismaStore<C extends IdempotencyPrismaQueryable = IdempotencyPrismaClient> = C extends {
  $transaction: unknown;
}
  ? IdempotencyTransactionalStore<IdempotencyPrismaTransactionClientOf<C>>
  : IdempotencyStore;

/**
 * The isolation levels each provider's interactive transactions accept, by Prisma's names. Checked here because
 * the drivers' own errors do not say what to do (SQLite answers 'ReadCommitted' with "Conversion error: READ
 * COMMITTED").
 */
const ISOLATION_LEVELS: Readonly<Record<IdempotencyPrismaProvider, readonly string[]>> = Object.freeze({
  sqlite: ['Serializable'],
  postgresql: ['ReadUncommitted', 'ReadCommitted', 'RepeatableRead', 'Serializable'],
  mysql: ['ReadUncommitted', 'ReadCommitted', 'RepeatableRead', 'Serializable'],
});

function toPrismaTransactionOptions(
  provider: IdempotencyPrismaProvider,
  options: IdempotencyTransactionOptions | undefined,
): IdempotencyPrismaTransactionOptions {
  if (options === undefined) return {};
  if (typeof options !== 'object' || options === null) {
    fail(
      'transaction',
      `expected transaction options { isolationLevel?, timeoutMs?, maxWaitMs }, got ${describeValue(options)}.`,
    );
  }
  const prismaOptions: IdempotencyPrismaTransactionOptions = {};
  if (options.isolationLevel !== undefined) {
    if (typeof options.isolationLevel !== 'string') {
      fail(
        'transaction',
        `expected \`isolationLevel\` to be a string such as 'Serializable', got ${describeValue(options.isolationLevel)}.`,
      );
    }
    const levels = ISOLATION_LEVELS[provider];
    if (!levels.includes(options.isolationLevel)) {
      fail(
        'transaction',
        `expected \`isolationLevel\` to be one of ${levels.map((level) => `'${level}'`).join(', ')} on ${provider}, got ${describeValue(options.isolationLevel)}.` +
          (provider === 'sqlite'
            ? ' SQLite runs every transaction serializably: remove isolationLevel.'
            : ' Use the Prisma name of the level.'),
      );
    }
    prismaOptions.isolationLevel = options.isolationLevel;
  }
  for (const [ours, theirs] of [
    ['timeoutMs', 'timeout'],
    ['maxWaitMs', 'maxWait'],
  ] as const) {
    const value = options[ours];
    if (value === undefined) continue;
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
      fail('transaction', `expected \`${ours}\` to be a positive number of milliseconds, got ${describeValue(value)}.`);
    }
    prismaOptions[theirs] = value;
  }
  return prismaOptions;
}

/**
 * Create an {@link IdempotencyStore} on your own Prisma 7 client (SQLite, PostgreSQL, MySQL/MariaDB).
 *
 * Every statement is raw SQL through `$queryRawUnsafe` / `$executeRawUnsafe` (several times cheaper per call
 * than Prisma's model API), and every operation but a contested claim is one statement:
 *
 * ```text
 * claim, fresh key      1 statement  SQLite, PostgreSQL: INSERT .. ON CONFLICT DO NOTHING; MySQL: INSERT IGNORE
 *                                    (PostgreSQL: the same statement also returns the existing row on a conflict)
 * claim, key taken      1 (PG) / 2   + SELECT of the existing record (SQLite, MySQL). On PostgreSQL a lost claim
 *                                    takes no row lock and writes nothing: it costs about one read.
 * claim, takeover       2 (PG) / 3   + UPDATE .. WHERE owner_token = <seen> AND <claimable>
 * get, complete, release, renew, purgeExpired: 1 statement each; completions are fenced by owner token.
 * ```
 *
 * Create the table first with {@link applyIdempotencyMigrations} (or the shipped Prisma migrations).
 * Claims run as autocommit statements: build the store on the PrismaClient, not on a transaction client.
 *
 * Transactional mode: when the client has `$transaction`, the store also has `transaction(work, options)`,
 * which runs `work` in one interactive transaction and hands it the transaction client (for the procedure's
 * own writes) and a fenced `complete` on that same transaction, so both commit together or not at all.
 * Options map to Prisma's: `isolationLevel` (e.g. `'Serializable'`), `timeoutMs` (`timeout`, Prisma's default
 * 5,000), `maxWaitMs` (`maxWait`, default 2,000).
 *
 * SQLite: use one PrismaClient per database file per process, created with a busy timeout
 * (`new PrismaBetterSqlite3({ url, timeout: 5000 })`), and switch the file to WAL mode once
 * ({@link configureSqlite}); the rollback journal is about 20 times slower for these writes. A SQLite client
 * has one connection, so while a store transaction is open the store's other operations on that client wait
 * for it (otherwise they would run inside it); keep transactional procedures short there, and do not run
 * queries of your own on the client outside `tx` meanwhile.
 *
 * @param prisma your PrismaClient
 * @param options see {@link IdempotencyPrismaStoreOptions}
 * @example
 * ```ts
 * import { PrismaPg } from '@prisma/adapter-pg';
 * import { PrismaClient } from './generated/prisma/client.js';
 * import { applyIdempotencyMigrations, createPrismaStore } from 'rpc-idempotency/prisma';
 *
 * const prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: process.env.DATABASE_URL }) });
 * await applyIdempotencyMigrations(prisma);
 * const store = createPrismaStore(prisma); // provider detected: 'postgresql'
 * ```
 */
export function createPrismaStore<C extends IdempotencyPrismaQueryable>(
  prisma: C,
  options: IdempotencyPrismaStoreOptions = {},
): IdempotencyPrismaStore<C> {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(`createPrismaStore: expected an options object or nothing, got ${describeValue(options)}.`);
  }
  const provider = resolvePrismaProvider(prisma, options.provider, 'createPrismaStore');
  const tableName = validateTableName(options.tableName ?? DEFAULT_TABLE_NAME, 'createPrismaStore');
  const sql = buildStatements(provider, tableName);
  const limits = IDEMPOTENCY_COLUMN_LIMITS;
  const gate = gateFor(provider, prisma);

  const queryOn = async (client: IdempotencyPrismaQueryable, statement: Statement, values: unknown[]) =>
    client.$queryRawUnsafe<Row[]>(statement.text, ...bind(statement, values));
  const executeOn = async (client: IdempotencyPrismaQueryable, statement: Statement, values: unknown[]) =>
    Number(await client.$executeRawUnsafe(statement.text, ...bind(statement, values)));
  const query = (statement: Statement, ...values: unknown[]) => queryOn(prisma, statement, values);
  const execute = (statement: Statement, ...values: unknown[]) => executeOn(prisma, statement, values);

  const read = async (scope: string, key: string): Promise<IdempotencyRecord | null> => {
    const rows = await query(sql.get, scope, key);
    const row = rows[0];
    return row === undefined ? null : toRecord(row);
  };

  /**
   * Insert when absent: `true` when this claim inserted the record, else the record it collided with, or `null`
   * when the statement did not say (SQLite, MySQL always; PostgreSQL when the row was committed after the
   * statement's snapshot): the caller reads it then.
   */
  const tryInsert = async (values: unknown[]): Promise<true | IdempotencyRecord | null> => {
    if (!sql.claimInsertReturnsRow) return (await executeOn(prisma, sql.claimInsert, values)) > 0 ? true : null;
    const row = (await queryOn(prisma, sql.claimInsert, values))[0];
    if (row?.inserted === true) return true;
    return row === undefined || row.scope === null || row.scope === undefined ? null : toRecord(row);
  };

  // Insert; when the key is taken, return the record unless it is claimable, then take it over with an UPDATE
  // fenced on the owner token we saw. A takeover that finds the row changed, or a record that vanished (released
  // or purged) between two statements, sends the loop round again, a bounded number of times.
  const claimRecord = async (
    input: IdempotencyClaimInput,
    times: { now: number; lockedUntil: Date; createdAt: Date; expiresAt: Date },
  ): Promise<IdempotencyClaimResult> => {
    // The insert and the takeover write the same eight values, in the same order ($1..$8).
    const values = [
      input.scope,
      input.key,
      input.fingerprint,
      input.procedure,
      input.ownerToken,
      times.lockedUntil,
      times.createdAt,
      times.expiresAt,
    ];
    let insert = true;
    for (let attempt = 1; attempt <= MAX_CLAIM_ATTEMPTS; attempt++) {
      let existing: IdempotencyRecord | null = null;
      if (insert) {
        const inserted = await tryInsert(values);
        if (inserted === true) return { claimed: true, takenOver: false };
        existing = inserted;
      }
      existing ??= await read(input.scope, input.key);
      if (existing === null) {
        insert = true; // released or purged between our insert and our read
        continue;
      }
      if (!isRecordClaimable(existing, times.now)) return { claimed: false, existing };
      const tookOver = await execute(sql.claimTakeOver, ...values, existing.ownerToken);
      if (tookOver > 0) return { claimed: true, takenOver: true, previous: existing };
      insert = false; // someone else changed the row first: look again
    }
    return claimDidNotSettle(input);
  };

  const claimDidNotSettle = (input: IdempotencyClaimInput): never => {
    throw new Error(
      `Prisma idempotency store, claim(): the record for key ${JSON.stringify(input.key)} changed under ` +
        `${MAX_CLAIM_ATTEMPTS} consecutive attempts (concurrent releases or takeovers). Retry the request.`,
    );
  };

  const completeOn = async (client: IdempotencyPrismaQueryable, input: IdempotencyCompleteInput): Promise<boolean> => {
    const operation = 'complete';
    if (typeof input !== 'object' || input === null) {
      fail(operation, `expected a completion input object, got ${describeValue(input)}.`);
    }
    checkText(provider, operation, 'scope', input.scope, limits.scope);
    checkText(provider, operation, 'key', input.key, limits.key);
    checkText(provider, operation, 'ownerToken', input.ownerToken, limits.owner_token);
    if (input.status !== IdempotencyStatus.SUCCEEDED && input.status !== IdempotencyStatus.FAILED) {
      fail(operation, `expected \`status\` to be 'SUCCEEDED' or 'FAILED', got ${describeValue(input.status)}.`);
    }
    const result = checkBytes(operation, input.result);
    const resultCode = checkOptionalText(provider, operation, 'resultCode', input.resultCode, limits.result_code);
    const codec = checkOptionalText(provider, operation, 'codec', input.codec, limits.codec);
    const values = [input.scope, input.key, input.ownerToken, input.status, result, resultCode, codec];
    return (await executeOn(client, sql.complete, values)) > 0;
  };

  // Every method is async so that a validation error arrives as a rejection, like a database error.
  const store: IdempotencyStore = {
    name: `prisma:${provider}`,

    async claim(input) {
      const operation = 'claim';
      if (typeof input !== 'object' || input === null) {
        fail(operation, `expected a claim input object, got ${describeValue(input)}.`);
      }
      checkText(provider, operation, 'scope', input.scope, limits.scope);
      checkText(provider, operation, 'key', input.key, limits.key);
      checkText(provider, operation, 'fingerprint', input.fingerprint, limits.fingerprint);
      checkText(provider, operation, 'procedure', input.procedure, limits.procedure);
      checkText(provider, operation, 'ownerToken', input.ownerToken, limits.owner_token);
      const createdAt = checkTime(operation, 'now', input.now);
      const times = {
        now: createdAt.getTime(),
        createdAt,
        lockedUntil: checkTime(operation, 'lockedUntil', input.lockedUntil),
        expiresAt: checkTime(operation, 'expiresAt', input.expiresAt),
      };
      return gate.shared(() => claimRecord(input, times));
    },

    async get(scope, key) {
      checkText(provider, 'get', 'scope', scope, limits.scope);
      checkText(provider, 'get', 'key', key, limits.key);
      return gate.shared(() => read(scope, key));
    },

    async complete(input) {
      return gate.shared(() => completeOn(prisma, input));
    },

    async release(scope, key, ownerToken) {
      checkText(provider, 'release', 'scope', scope, limits.scope);
      checkText(provider, 'release', 'key', key, limits.key);
      checkText(provider, 'release', 'ownerToken', ownerToken, limits.owner_token);
      return gate.shared(async () => (await execute(sql.release, scope, key, ownerToken)) > 0);
    },

    async renew(scope, key, ownerToken, lockedUntil) {
      checkText(provider, 'renew', 'scope', scope, limits.scope);
      checkText(provider, 'renew', 'key', key, limits.key);
      checkText(provider, 'renew', 'ownerToken', ownerToken, limits.owner_token);
      const until = checkTime('renew', 'lockedUntil', lockedUntil);
      return gate.shared(async () => (await execute(sql.renew, scope, key, ownerToken, until)) > 0);
    },

    async purgeExpired(input) {
      const operation = 'purgeExpired';
      if (typeof input !== 'object' || input === null) {
        fail(operation, `expected { now, limit }, got ${describeValue(input)}.`);
      }
      const now = checkTime(operation, 'now', input.now);
      if (!Number.isSafeInteger(input.limit) || input.limit < 1) {
        fail(operation, `expected \`limit\` to be a positive integer, got ${describeValue(input.limit)}.`);
      }
      return gate.shared(() => execute(sql.purge, now, input.limit));
    },
  };

  const client = prisma as Partial<IdempotencyPrismaClient>;
  if (typeof client.$transaction !== 'function') return store as IdempotencyPrismaStore<C>;
  const transactional: IdempotencyTransactionalStore<unknown> = {
    ...store,
    async transaction(work, transactionOptions) {
      const prismaOptions = toPrismaTransactionOptions(provider, transactionOptions);
      const run = () =>
        Promise.resolve(
          (prisma as unknown as IdempotencyPrismaClient).$transaction(
            (tx) => work({ client: tx, complete: (input) => completeOn(tx, input) }),
            prismaOptions,
          ),
        );
      if (provider !== 'sqlite') return run();
      // SQLite: the transaction holds the client's one connection (the gate) until Prisma's $transaction settles,
      // and $transaction waits for the work even after its timeout rolled the transaction back. Work stuck past
      // that point (e.g. waiting on this client) would hold every other operation forever: give the client back.
      const deadlineMs = (prismaOptions.maxWait ?? 2_000) + (prismaOptions.timeout ?? 5_000) + 1_000;
      return gate.exclusive(
        () =>
          new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
              reject(
                new Error(
                  `Prisma idempotency store, transaction(): the work of a SQLite transaction had not returned ` +
                    `${deadlineMs} ms after it started (maxWait + timeout + 1 s), so Prisma has rolled it back; the ` +
                    'client is released for other operations. Make the procedure return within timeoutMs (and ' +
                    'never wait inside it for another operation on the same SQLite client).',
                ),
              );
            }, deadlineMs);
            run()
              .then(resolve, reject)
              .finally(() => clearTimeout(timer));
          }),
      );
    },
  };
  return transactional as IdempotencyPrismaStore<C>;
}

/** Options of {@link configureSqlite}. */
export interface IdempotencySqliteOptions {
  /**
   * How long a statement waits for another connection's write lock before failing with SQLITE_BUSY, in
   * milliseconds. Prefer setting `timeout` on `PrismaBetterSqlite3`, which applies it to every connection.
   * @default 5000
   */
  busyTimeoutMs?: number;
}

/**
 * Prepare a SQLite database for the store: switch it to WAL mode (persistent for the file; readers no longer
 * block the writer and claim writes get about 20 times faster) and set the connection's busy timeout.
 * Call it once after creating the client; harmless to call again.
 *
 * @returns the journal mode now in effect (`'wal'`; `'memory'` for in-memory databases)
 * @example
 * ```ts
 * const prisma = new PrismaClient({ adapter: new PrismaBetterSqlite3({ url: 'file:./idempotency.db', timeout: 5000 }) });
 * await configureSqlite(prisma);
 * ```
 */
export async function configureSqlite(
  prisma: IdempotencyPrismaQueryable,
  options: IdempotencySqliteOptions = {},
): Promise<string> {
  const provider = resolvePrismaProvider(prisma, undefined, 'configureSqlite');
  if (provider !== 'sqlite') {
    throw new TypeError(`configureSqlite: expected a SQLite Prisma client, got one for '${provider}'.`);
  }
  const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
  if (!Number.isSafeInteger(busyTimeoutMs) || busyTimeoutMs < 0) {
    throw new TypeError(
      `configureSqlite: option \`busyTimeoutMs\` must be a non-negative integer, got ${describeValue(busyTimeoutMs)}.`,
    );
  }
  await prisma.$queryRawUnsafe(`PRAGMA busy_timeout = ${busyTimeoutMs}`);
  const rows = await prisma.$queryRawUnsafe<Array<{ journal_mode: string }>>('PRAGMA journal_mode = WAL');
  return String(rows[0]?.journal_mode ?? '');
}
