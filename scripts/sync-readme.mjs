// Copy each example file into README.md below its `<!-- example: path -->` marker, so the README's code is
// the code the test suite runs. test/examples/readme.test.ts fails when they differ.
//
//   node scripts/sync-readme.mjs
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const readmePath = `${root}README.md`;
const readme = readFileSync(readmePath, 'utf8');
const synced = readme.replace(
  /(<!-- example: (\S+) -->\n)```ts\n[\s\S]*?```\n/g,
  (_match, marker, path) => `${marker}\`\`\`ts\n${readFileSync(`${root}${path}`, 'utf8').trimEnd()}\n\`\`\`\n`,
);
writeFileSync(readmePath, synced);
console.log(synced === readme ? 'README.md already in sync' : 'README.md updated from the example files');
