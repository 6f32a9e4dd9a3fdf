import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  exports: Record<string, string | { types: string; import: string }>;
  peerDependencies: Record<string, string>;
  peerDependenciesMeta: Record<string, { optional?: boolean }>;
  dependencies?: Record<string, string>;
  type: string;
  sideEffects: boolean;
};

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    return entry.isDirectory() ? sourceFiles(path) : entry.name.endsWith('.ts') ? [path] : [];
  });
}

describe('package shape', () => {
  it('is an ESM package without side effects, whose transports and drivers are optional peers', () => {
    expect(pkg.type).toBe('module');
    expect(pkg.sideEffects).toBe(false);
    expect(pkg.dependencies ?? {}).toEqual({});
    for (const name of Object.keys(pkg.peerDependencies)) {
      expect(pkg.peerDependenciesMeta[name]?.optional, `${name} must be an optional peer`).toBe(true);
    }
  });

  it('keeps src/core free of transports and databases', () => {
    const forbidden =
      /from '(@trpc|@grpc|@prisma|\.\.\/trpc|\.\.\/grpc|\.\.\/stores\/prisma|pg|mariadb|better-sqlite3)/;
    for (const file of sourceFiles(join(root, 'src', 'core'))) {
      const text = readFileSync(file, 'utf8');
      const imports = text.split('\n').filter((line) => /^import /.test(line) && !/^import type /.test(line));
      for (const line of imports) expect(line, relative(root, file)).not.toMatch(forbidden);
    }
  });

  it('imports a transport only in its own adapter folder', () => {
    for (const file of sourceFiles(join(root, 'src'))) {
      const rel = relative(root, file);
      const text = readFileSync(file, 'utf8');
      if (!rel.startsWith('src/trpc')) expect(text, rel).not.toMatch(/from '@trpc\//);
      if (!rel.startsWith('src/grpc')) expect(text, rel).not.toMatch(/from '@grpc\//);
    }
  });
});

describe('build', () => {
  let outDir: string;

  beforeAll(async () => {
    outDir = mkdtempSync(join(tmpdir(), 'rpc-idempotency-build-'));
    await run(
      process.execPath,
      [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json', '--outDir', outDir],
      {
        cwd: root,
      },
    );
  }, 120_000);

  afterAll(() => {
    if (outDir) rmSync(outDir, { recursive: true, force: true });
  });

  it('emits JavaScript and declarations for every subpath export', async () => {
    for (const [subpath, target] of Object.entries(pkg.exports)) {
      if (typeof target === 'string') continue;
      for (const file of [target.types, target.import]) {
        const emitted = join(outDir, relative('dist', file));
        expect(existsSync(emitted), `${subpath} -> ${file}`).toBe(true);
      }
    }
  });

  it('exposes the documented API from the root entry of the built package', async () => {
    const root = pkg.exports['.'] as { import: string };
    const mod = (await import(pathToFileURL(join(outDir, relative('dist', root.import))).href)) as Record<
      string,
      unknown
    >;
    for (const name of [
      'createIdempotencyService',
      'createMemoryStore',
      'IdempotencyError',
      'isIdempotencyError',
      'IdempotencyErrorCode',
      'IdempotencyStatus',
      'computeFingerprint',
      'canonicalJson',
      'jsonCodec',
      'systemClock',
    ]) {
      expect(mod[name], name).toBeDefined();
    }
  });
});
