import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../..', import.meta.url));
const readme = readFileSync(`${root}README.md`, 'utf8');

// The README's tRPC and gRPC examples must be the example files the suite runs (scripts/sync-readme.mjs copies
// them), so a reader never copies code that no test ran.
describe('README.md', () => {
  const blocks = [...readme.matchAll(/<!-- example: (\S+) -->\n```ts\n([\s\S]*?)```\n/g)];

  it('embeds the tRPC and gRPC quickstarts and the transactional examples', () => {
    expect(blocks.map((block) => block[1])).toEqual([
      'examples/trpc-quickstart.ts',
      'examples/grpc-quickstart.ts',
      'examples/transactional-trpc.ts',
      'examples/transactional-grpc.ts',
    ]);
  });

  it.each(blocks.map((block) => [block[1] as string, block[2] as string]))(
    'shows %s exactly as it is run',
    (path, code) => {
      expect(code).toBe(`${readFileSync(`${root}${path}`, 'utf8').trimEnd()}\n`);
    },
  );

  it('keeps the quick start to two commands: the demo and the tests', () => {
    const quickStart = readme.split('## Quick start')[1]?.split('\n## ')[0] ?? '';
    const commands = (quickStart.match(/```sh\n([\s\S]*?)```/)?.[1] ?? '').trim().split('\n');
    expect(commands.map((line) => line.split('#')[0]?.trim())).toEqual(['npm install && npm run demo', 'npm test']);
  });
});
