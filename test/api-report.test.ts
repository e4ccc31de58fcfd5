/**
 * The API report check (scripts/api-check.mjs, `npm run api:check` / `npm run api:update`):
 * run in-process against reports in a temporary folder, so that it can be shown to fail
 * without touching etc/api/. Needs the built dist/*.d.ts, which `npm test` builds first.
 */
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkApi, publicEntries, typesConditionMismatches } from '../scripts/api-check.mjs';

const scratch = mkdtempSync(join(tmpdir(), 'dma-attrs-api-'));
const baseline = join(scratch, 'baseline');
let folders = 0;

/** Runs the check (or the update) on `reportFolder`, collecting what it prints. */
function run(reportFolder: string, update = false) {
  const lines: string[] = [];
  const outcome = checkApi({
    update,
    reportFolder,
    tempFolder: join(scratch, 'temp'),
    log: (line: string) => lines.push(line),
  });
  return { ...outcome, output: lines.join('\n') };
}

/** A fresh copy of the baseline reports. */
function copyOfBaseline(): string {
  const folder = join(scratch, `reports-${++folders}`);
  mkdirSync(folder);
  for (const file of readdirSync(baseline)) copyFileSync(join(baseline, file), join(folder, file));
  return folder;
}

function statusOf(outcome: ReturnType<typeof run>, name: string): string | undefined {
  return outcome.results.find((result) => result.name === name)?.status;
}

beforeAll(() => {
  const created = run(baseline, true);
  expect(created.ok, created.output).toBe(true);
});

afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

describe('API reports', () => {
  it('covers every public entry of package.json exports, one report each', () => {
    const names = publicEntries().map((entry) => entry.name);
    expect(names).toEqual(
      expect.arrayContaining([
        'dma-attrs',
        'dma-attrs/legacy',
        'dma-attrs/virtio',
        'dma-attrs/codemod',
      ]),
    );
    expect(readdirSync(baseline).sort()).toEqual(
      publicEntries()
        .map((entry) => `${entry.reportName}.api.md`)
        .sort(),
    );
    const virtio = readFileSync(join(baseline, 'dma-attrs-virtio.api.md'), 'utf8');
    expect(virtio).toContain('export class SplitVirtqueue');
  });

  it('passes on reports that api:update just wrote', () => {
    const outcome = run(copyOfBaseline());
    expect(outcome.ok, outcome.output).toBe(true);
    expect(new Set(outcome.results.map((result) => result.status))).toEqual(new Set(['unchanged']));
  });

  it('fails for the one entry whose report lost a line, shows the line and says how to update', () => {
    const folder = copyOfBaseline();
    const file = join(folder, 'dma-attrs-virtio.api.md');
    const lines = readFileSync(file, 'utf8').split('\n');
    const index = lines.findIndex((line) => /^\s+\w+\(.*\): /.test(line));
    expect(index).toBeGreaterThan(0);
    const [removed] = lines.splice(index, 1);
    writeFileSync(file, lines.join('\n'));

    const outcome = run(folder);
    expect(outcome.ok).toBe(false);
    expect(statusOf(outcome, 'dma-attrs/virtio')).toBe('changed');
    for (const name of ['dma-attrs', 'dma-attrs/legacy', 'dma-attrs/codemod']) {
      expect(statusOf(outcome, name), name).toBe('unchanged');
    }
    expect(outcome.output).toContain('dma-attrs/virtio: FAIL: the public API differs');
    expect(outcome.output).toContain(`+${String(removed)}`);
    expect(outcome.output).toContain('npm run api:update');

    const updated = run(folder, true);
    expect(statusOf(updated, 'dma-attrs/virtio')).toBe('updated');
    expect(readFileSync(file, 'utf8')).toBe(
      readFileSync(join(baseline, 'dma-attrs-virtio.api.md'), 'utf8'),
    );
    expect(run(folder).ok).toBe(true);
  });

  it('fails when a report is missing or belongs to no public entry; api:update fixes both', () => {
    const folder = copyOfBaseline();
    rmSync(join(folder, 'dma-attrs-legacy.api.md'));
    writeFileSync(join(folder, 'dma-attrs-gone.api.md'), 'an entry that was removed\n');

    const outcome = run(folder);
    expect(outcome.ok).toBe(false);
    expect(statusOf(outcome, 'dma-attrs/legacy')).toBe('missing');
    expect(outcome.orphans.map((orphan) => orphan.replace(/^.*\//, ''))).toEqual([
      'dma-attrs-gone.api.md',
    ]);
    expect(outcome.output).toMatch(
      /API check failed for dma-attrs\/legacy, dma-attrs-gone\.api\.md/,
    );

    const updated = run(folder, true);
    expect(statusOf(updated, 'dma-attrs/legacy')).toBe('created');
    expect(existsSync(join(folder, 'dma-attrs-gone.api.md'))).toBe(false);
    expect(run(folder).ok).toBe(true);
  });

  it('reports require types that declare something else than the import types', () => {
    const folder = join(scratch, 'types');
    mkdirSync(folder);
    const esm = join(folder, 'entry.d.ts');
    const cjs = join(folder, 'entry.d.cts');
    writeFileSync(join(folder, 'chunk-ABCD1234.d.ts'), 'export declare const a: number;\n');
    writeFileSync(join(folder, 'chunk-ABCD1234.d.cts'), 'export declare const a: number;\n');
    writeFileSync(esm, "export { a } from './chunk-ABCD1234.js';\n");
    writeFileSync(cjs, "export { a } from './chunk-ABCD1234.cjs';\n");
    expect(typesConditionMismatches({ requireTypes: cjs })).toEqual([]);

    writeFileSync(join(folder, 'chunk-ABCD1234.d.cts'), 'export declare const a: string;\n');
    expect(typesConditionMismatches({ requireTypes: cjs })).toEqual([
      expect.stringMatching(/chunk-ABCD1234\.d\.cts differs from .*chunk-ABCD1234\.d\.ts$/),
    ]);
  });
});
