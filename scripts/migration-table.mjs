// Writes the "What it rewrites" table of docs/migration.md from the codemod's rule table
// (src/codemod/rules.ts), aligned by prettier. test/codemod-table.test.ts fails until it is run
// after a change of the rules.
//
//   node scripts/migration-table.mjs
import { Buffer } from 'node:buffer';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { build } from 'esbuild';
import * as prettier from 'prettier';

const ROOT = path.resolve(import.meta.dirname, '..');
const DOC = path.join(ROOT, 'docs/migration.md');
const HEADING = '## What it rewrites';

// The renderer is TypeScript: bundle it in memory and import the result.
const bundle = await build({
  entryPoints: [path.join(ROOT, 'src/codemod/migration-table.ts')],
  bundle: true,
  format: 'esm',
  platform: 'node',
  write: false,
});
const { renderMigrationTable } = await import(
  `data:text/javascript;base64,${Buffer.from(bundle.outputFiles[0].text).toString('base64')}`
);

const options = { ...(await prettier.resolveConfig(DOC)), parser: 'markdown' };
const table = (await prettier.format(renderMigrationTable(), options)).trimEnd();

const doc = readFileSync(DOC, 'utf8');
const lines = doc.split('\n');
const heading = lines.indexOf(HEADING);
if (heading === -1) throw new Error(`${DOC} has no '${HEADING}' section`);
const start = lines.findIndex((line, index) => index > heading && line.startsWith('|'));
if (start === -1) throw new Error(`${DOC} has no table under '${HEADING}'`);
let end = start;
while (end < lines.length && lines[end].startsWith('|')) end++;
lines.splice(start, end - start, ...table.split('\n'));
const updated = lines.join('\n');
if (updated === doc) {
  console.log('docs/migration.md: the table is up to date');
} else {
  writeFileSync(DOC, updated);
  console.log('docs/migration.md: table rewritten from src/codemod/rules.ts');
}
