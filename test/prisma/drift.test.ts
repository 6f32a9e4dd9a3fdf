/**
 * Drift guard: the three schema.prisma models, the shipped migration SQL and the store's column list must
 * describe the same table. Each schema is parsed here; each migration is applied to a real database and the
 * resulting table introspected (columns, types, nullability, primary key, indexes, MySQL collations).
 */
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IDEMPOTENCY_COLUMN_LIMITS, IDEMPOTENCY_RECORD_COLUMNS } from '../../src/stores/prisma/store.js';
import {
  createTestDatabase,
  describeWithDatabase,
  TEST_PROVIDERS,
  type TestDatabase,
  type TestProvider,
} from '../support/databases.js';

interface SchemaField {
  name: string;
  type: string;
  optional: boolean;
  column: string;
  /** `@db.X(args)` as `X(args)`, or null. */
  native: string | null;
}

interface SchemaModel {
  table: string;
  fields: SchemaField[];
  primaryKey: string[];
  /** Each `@@index`, as column names. */
  indexes: string[][];
}

/**
 * A deliberately small parser for our one model. It refuses attributes it does not know, so adding one to
 * a schema (a default, a unique) fails here until the comparison below learns it.
 */
function parseModel(source: string, modelName: string): SchemaModel {
  const text = source.replace(/\/\/.*$/gm, '');
  const match = new RegExp(`model\\s+${modelName}\\s*\\{([^}]*)\\}`).exec(text);
  if (!match?.[1]) throw new Error(`model ${modelName} not found`);
  const fields: SchemaField[] = [];
  const block: string[] = [];
  for (const raw of match[1].split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    if (line.startsWith('@@')) {
      block.push(line);
      continue;
    }
    const field = /^(\w+)\s+(\w+)(\?)?\s*(.*)$/.exec(line);
    if (!field) throw new Error(`cannot parse field line: ${line}`);
    const [, name = '', type = '', optional, rest = ''] = field;
    let column = name;
    let native: string | null = null;
    for (const attribute of rest.match(/@[\w.]+(\([^)]*\))?/g) ?? []) {
      const map = /^@map\("(\w+)"\)$/.exec(attribute);
      const db = /^@db\.(\w+(?:\([^)]*\))?)$/.exec(attribute);
      if (map?.[1]) column = map[1];
      else if (db?.[1]) native = db[1];
      else throw new Error(`unsupported attribute ${attribute} on ${name}: teach drift.test.ts about it`);
    }
    fields.push({ name, type, optional: optional === '?', column, native });
  }
  const columnOf = (names: string) =>
    names.split(',').map((name) => {
      const field = fields.find((f) => f.name === name.trim());
      if (!field) throw new Error(`unknown field ${name} in a block attribute`);
      return field.column;
    });
  let table = modelName;
  let primaryKey: string[] = [];
  const indexes: string[][] = [];
  for (const line of block) {
    const id = /^@@id\(\[([^\]]*)\]\)$/.exec(line);
    const index = /^@@index\(\[([^\]]*)\]\)$/.exec(line);
    const map = /^@@map\("(\w+)"\)$/.exec(line);
    if (id?.[1]) primaryKey = columnOf(id[1]);
    else if (index?.[1]) indexes.push(columnOf(index[1]));
    else if (map?.[1]) table = map[1];
    else throw new Error(`unsupported block attribute ${line}: teach drift.test.ts about it`);
  }
  return { table, fields, primaryKey, indexes };
}

async function loadModel(provider: TestProvider): Promise<SchemaModel> {
  const source = await readFile(new URL(`../../prisma/${provider}/schema.prisma`, import.meta.url), 'utf8');
  return parseModel(source, 'IdempotencyRecord');
}

/** The column type Prisma's migrations create for a field, as the database reports it back. */
function expectedType(provider: TestProvider, field: SchemaField): string {
  const native = field.native;
  switch (provider) {
    case 'sqlite':
      if (native !== null) throw new Error('SQLite has no native type attributes');
      return { String: 'TEXT', DateTime: 'DATETIME', Bytes: 'BLOB' }[field.type] ?? `unmapped ${field.type}`;
    case 'postgresql': {
      if (native === null) {
        return (
          { String: 'text', DateTime: 'timestamp(3) without time zone', Bytes: 'bytea' }[field.type] ??
          `unmapped ${field.type}`
        );
      }
      const varchar = /^VarChar\((\d+)\)$/.exec(native);
      const timestamp = /^Timestamp\((\d+)\)$/.exec(native);
      if (varchar) return `character varying(${varchar[1]})`;
      if (timestamp) return `timestamp(${timestamp[1]}) without time zone`;
      if (native === 'Text') return 'text';
      throw new Error(`unmapped PostgreSQL native type ${native}`);
    }
    case 'mysql': {
      if (native === null) {
        return (
          { String: 'varchar(191)', DateTime: 'datetime(3)', Bytes: 'longblob' }[field.type] ?? `unmapped ${field.type}`
        );
      }
      return native.toLowerCase();
    }
  }
}

interface ActualColumn {
  name: string;
  type: string;
  nullable: boolean;
  collation: string | null;
}

interface ActualTable {
  columns: ActualColumn[];
  primaryKey: string[];
  /** Secondary indexes by name, as column lists. */
  indexes: Record<string, string[]>;
}

async function introspect(db: TestDatabase, table: string): Promise<ActualTable> {
  const query = <T>(sql: string, ...values: unknown[]) => db.prisma.$queryRawUnsafe<T[]>(sql, ...values);
  const byIndex = (rows: Array<{ index_name: string; column_name: string }>) => {
    const indexes: Record<string, string[]> = {};
    for (const row of rows) {
      indexes[row.index_name] = [...(indexes[row.index_name] ?? []), row.column_name];
    }
    return indexes;
  };
  switch (db.provider) {
    case 'sqlite': {
      const columns = await query<{ name: string; type: string; notnull: unknown; pk: unknown }>(
        'SELECT name, type, "notnull", pk FROM pragma_table_info(?) ORDER BY cid',
        table,
      );
      const indexes = await query<{ index_name: string; column_name: string; origin: string }>(
        'SELECT l.name AS index_name, i.name AS column_name, l.origin AS origin FROM pragma_index_list(?) AS l ' +
          'JOIN pragma_index_info(l.name) AS i ORDER BY l.name, i.seqno',
        table,
      );
      return {
        columns: columns.map((c) => ({
          name: c.name,
          type: c.type,
          nullable: Number(c.notnull) === 0,
          collation: null,
        })),
        primaryKey: columns
          .filter((c) => Number(c.pk) > 0)
          .sort((a, b) => Number(a.pk) - Number(b.pk))
          .map((c) => c.name),
        indexes: byIndex(indexes.filter((i) => i.origin === 'c')),
      };
    }
    case 'postgresql': {
      const columns = await query<{ name: string; type: string; nullable: boolean }>(
        'SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, NOT a.attnotnull AS nullable ' +
          'FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ' +
          'ORDER BY a.attnum',
        table,
      );
      const indexes = await query<{ index_name: string; column_name: string; primary: boolean }>(
        'SELECT i.relname AS index_name, a.attname AS column_name, x.indisprimary AS primary ' +
          'FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid ' +
          'CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, position) ' +
          'JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum ' +
          'WHERE x.indrelid = to_regclass($1) ORDER BY i.relname, k.position',
        table,
      );
      return {
        columns: columns.map((c) => ({ ...c, collation: null })),
        primaryKey: indexes.filter((i) => i.primary).map((i) => i.column_name),
        indexes: byIndex(indexes.filter((i) => !i.primary)),
      };
    }
    case 'mysql': {
      const columns = await query<{ name: string; type: string; nullable: string; collation: string | null }>(
        'SELECT COLUMN_NAME AS name, COLUMN_TYPE AS type, IS_NULLABLE AS nullable, COLLATION_NAME AS collation ' +
          'FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION',
        table,
      );
      const indexes = await query<{ index_name: string; column_name: string }>(
        'SELECT INDEX_NAME AS index_name, COLUMN_NAME AS column_name FROM information_schema.STATISTICS ' +
          'WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY INDEX_NAME, SEQ_IN_INDEX',
        table,
      );
      const { PRIMARY: primaryKey = [], ...secondary } = byIndex(indexes);
      return {
        columns: columns.map((c) => ({ ...c, nullable: c.nullable === 'YES' })),
        primaryKey,
        indexes: secondary,
      };
    }
  }
}

describe('schema.prisma models', () => {
  it('declare the same fields, keys and indexes for all three providers', async () => {
    const [sqlite, postgresql, mysql] = await Promise.all(TEST_PROVIDERS.map(loadModel));
    const portable = (model: SchemaModel | undefined) => ({
      ...model,
      fields: model?.fields.map(({ native: _native, ...field }) => field),
    });
    expect(portable(postgresql)).toEqual(portable(sqlite));
    expect(portable(mysql)).toEqual(portable(sqlite));
  });

  it("match the store's column list, in order", async () => {
    const model = await loadModel('sqlite');
    expect(model.fields.map((field) => field.column)).toEqual([...IDEMPOTENCY_RECORD_COLUMNS]);
    expect(model.table).toBe('idempotency_records');
  });

  it("size MySQL's text columns exactly as the store validates them", async () => {
    const model = await loadModel('mysql');
    for (const field of model.fields.filter((f) => f.type === 'String')) {
      const limit = (IDEMPOTENCY_COLUMN_LIMITS as Record<string, number>)[field.column];
      if (field.column === 'status') continue; // written by the store itself, never by callers
      expect(field.native, field.column).toBe(`VarChar(${limit})`);
    }
  });

  it('refuses schema attributes it cannot compare', () => {
    expect(() => parseModel('model M {\n  id String @default("x")\n}', 'M')).toThrow(/unsupported attribute @default/);
  });
});

for (const provider of TEST_PROVIDERS) {
  describeWithDatabase(provider, 'migration SQL against schema.prisma', () => {
    let db: TestDatabase;
    let model: SchemaModel;
    let actual: ActualTable;

    beforeAll(async () => {
      db = await createTestDatabase(provider);
      model = await loadModel(provider);
      actual = await introspect(db, model.table);
    });
    afterAll(() => db?.drop());

    it('creates exactly the model fields as columns, with their types and nullability', () => {
      expect(actual.columns.map(({ collation: _collation, ...column }) => column)).toEqual(
        model.fields.map((field) => ({
          name: field.column,
          type: expectedType(provider, field),
          nullable: field.optional,
        })),
      );
    });

    it("creates the model's primary key and indexes, named as Prisma names them", () => {
      expect(actual.primaryKey).toEqual(model.primaryKey);
      expect(actual.indexes).toEqual(
        Object.fromEntries(model.indexes.map((columns) => [`${model.table}_${columns.join('_')}_idx`, columns])),
      );
    });

    it.runIf(provider === 'mysql')('gives scope, key and owner_token a binary NO PAD collation', () => {
      for (const name of ['scope', 'key', 'owner_token']) {
        const column = actual.columns.find((c) => c.name === name);
        expect(['utf8mb4_nopad_bin', 'utf8mb4_0900_bin'], name).toContain(column?.collation);
      }
    });
  });
}
