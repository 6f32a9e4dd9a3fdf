/**
 * Prisma CLI configuration for this repository (not shipped in the package).
 *
 * There are three schemas, one per provider (`prisma/<provider>/schema.prisma`); pick one with `--schema`.
 * `npm run generate` (scripts/generate.mjs) generates all three clients.
 *
 * Why the schema-engine stub: `prisma generate` refuses to run until it finds Prisma's schema-engine binary,
 * although it never executes it, and downloads it from Prisma's binary host when missing. Where that host is
 * unreachable, generate fails. When `PRISMA_SCHEMA_ENGINE_BINARY` is unset and no real engine is installed, we
 * point it at `scripts/schema-engine-stub.sh`, an executable that exits 1 with an explanation: generate
 * finishes, and commands that really need the engine (`migrate deploy`, `db push`) fail with a clear message.
 * Set `PRISMA_SCHEMA_ENGINE_BINARY` yourself to use a real engine.
 *
 * `DATABASE_URL`, when set, is the datasource for `prisma migrate deploy --schema prisma/<provider>/schema.prisma`.
 *
 * @example
 * ```sh
 * npx prisma generate --schema prisma/postgresql/schema.prisma
 * DATABASE_URL=postgresql://postgres@127.0.0.1/test npx prisma migrate deploy --schema prisma/postgresql/schema.prisma
 * ```
 */
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'prisma/config';

const root = dirname(fileURLToPath(import.meta.url));

function realSchemaEngineInstalled(): boolean {
  const enginesDir = join(root, 'node_modules', '@prisma', 'engines');
  if (!existsSync(enginesDir)) return false;
  return readdirSync(enginesDir).some((name) => name.startsWith('schema-engine'));
}

if (process.env.PRISMA_SCHEMA_ENGINE_BINARY === undefined && !realSchemaEngineInstalled()) {
  process.env.PRISMA_SCHEMA_ENGINE_BINARY = join(root, 'scripts', 'schema-engine-stub.sh');
}

const url = process.env.DATABASE_URL;

export default defineConfig(url === undefined ? {} : { datasource: { url } });
