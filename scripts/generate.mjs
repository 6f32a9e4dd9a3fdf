#!/usr/bin/env node
// Generates the three Prisma clients (prisma/<provider>/schema.prisma -> prisma/generated/<provider>), offline.
//
// Run by `npm run generate`, and so by `prepare` and `pretest`. The three `prisma generate` runs are independent
// and each is mostly CLI start-up time, so they run in parallel; output is shown only when one fails.
//
// Offline: `prisma generate` wants the schema-engine binary to exist although it never runs it. When
// PRISMA_SCHEMA_ENGINE_BINARY is unset and no real engine is installed, we point it at
// scripts/schema-engine-stub.sh (prisma.config.ts does the same for direct `npx prisma` calls).
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const providers = ['sqlite', 'postgresql', 'mysql'];

function resolvePrismaCli() {
  const require = createRequire(join(root, 'package.json'));
  try {
    const packageJson = require.resolve('prisma/package.json');
    return join(dirname(packageJson), 'build', 'index.js');
  } catch {
    console.error(
      'generate: the `prisma` package is not installed. Expected it in devDependencies; run `npm install` first.',
    );
    process.exit(1);
  }
}

function realSchemaEngineInstalled() {
  const enginesDir = join(root, 'node_modules', '@prisma', 'engines');
  return existsSync(enginesDir) && readdirSync(enginesDir).some((name) => name.startsWith('schema-engine'));
}

const env = { ...process.env };
if (env.PRISMA_SCHEMA_ENGINE_BINARY === undefined && !realSchemaEngineInstalled()) {
  env.PRISMA_SCHEMA_ENGINE_BINARY = join(root, 'scripts', 'schema-engine-stub.sh');
}
// Keep the CLI from checking for updates or printing hints over the network.
env.PRISMA_HIDE_UPDATE_MESSAGE = '1';
env.CHECKPOINT_DISABLE = '1';

const cli = resolvePrismaCli();

function generate(provider) {
  const schema = join(root, 'prisma', provider, 'schema.prisma');
  const started = performance.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, 'generate', '--schema', schema], {
      cwd: root,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk) => {
      output += chunk;
    });
    child.stderr.on('data', (chunk) => {
      output += chunk;
    });
    child.on('error', (error) => resolve({ provider, ok: false, output: String(error), ms: 0 }));
    child.on('close', (code) => {
      resolve({ provider, ok: code === 0, output, ms: Math.round(performance.now() - started) });
    });
  });
}

const results = await Promise.all(providers.map(generate));
let failed = false;
for (const { provider, ok, output, ms } of results) {
  const target = relative(root, join(root, 'prisma', 'generated', provider));
  if (ok) {
    console.log(`generate: ${provider} client -> ${target} (${ms} ms)`);
  } else {
    failed = true;
    console.error(
      `generate: FAILED for ${provider} (prisma/${provider}/schema.prisma). Prisma said:\n${output.trim()}\n`,
    );
  }
}
if (failed) {
  console.error(
    'generate: fix the error above and run `npm run generate` again. If Prisma tried to download an engine, ' +
      'check that PRISMA_SCHEMA_ENGINE_BINARY is unset or points at an existing executable.',
  );
  process.exit(1);
}
