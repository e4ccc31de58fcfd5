import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  MIGRATION_TABLE_HEADER,
  migrationTableRows,
  renderMigrationTable,
} from '../src/codemod/migration-table.js';
import {
  DIRECTION_MEMBERS,
  LEGACY_FUNCTIONS,
  RuleTable,
  type LegacyFunction,
} from '../src/codemod/rules.js';
import { migrateSource, migrateWithRules } from '../src/codemod/transform.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const GUIDE = path.join(ROOT, 'docs/migration.md');
const HEADING = '## What it rewrites';

/** A Markdown table row's cells, trimmed: alignment padding does not count. */
function cellsOf(line: string): string[] {
  return line
    .trim()
    .replace(/^\||\|$/g, '')
    .split(/(?<!\\)\|/)
    .map((cell) => cell.trim());
}

/** The rows of a Markdown table (header first), without the `---` separator row. */
function tableRows(lines: readonly string[]): string[][] {
  return lines.map(cellsOf).filter((cells) => !cells.every((cell) => /^:?-+:?$/.test(cell)));
}

/** The table under the guide's "What it rewrites" heading. */
function guideTable(): string[][] {
  const lines = readFileSync(GUIDE, 'utf8').split('\n');
  const heading = lines.indexOf(HEADING);
  expect(heading, `docs/migration.md has no '${HEADING}' section`).toBeGreaterThan(-1);
  const start = lines.findIndex((line, index) => index > heading && line.startsWith('|'));
  let end = start;
  while (end < lines.length && (lines[end] as string).startsWith('|')) end++;
  return tableRows(lines.slice(start, end));
}

/** A code span's text, `\|` unescaped. */
function codeOf(cell: string): string {
  const match = /^`(.*)`$/.exec(cell);
  if (match === null) throw new Error(`not a code span: ${cell}`);
  return (match[1] as string).replaceAll('\\|', '|');
}

/** The last statement of a migrated text: the rewritten call. */
function lastStatement(text: string): string {
  const lines = text.trimEnd().split('\n');
  return (lines[lines.length - 1] as string).replace(/;$/, '');
}

/** A call of a row written with its parameter names: the length as `buf.length`, a direction as `attrs`. */
function callOf(row: LegacyFunction, direction = 'attrs'): string {
  const names = Object.entries(row.parameters);
  const args = names.map(([name, role], index) => {
    if (role === 'length') return `${(names[index - 1] as [string, string])[0]}.length`;
    if (role === 'direction') return direction;
    return name;
  });
  return `${row.name}(${args.join(', ')})`;
}

function migrateCall(row: LegacyFunction, direction?: string, preserve = false) {
  return migrateSource(
    `import { ${row.name}, DMADirection } from 'dma-attrs/legacy';\n${callOf(row, direction)};\n`,
    { fileName: 'row.ts', preserveFullBarriers: preserve },
  );
}

const RANK: Record<string, number> = { none: 0, acquire: 1, release: 1, full: 2 };

/** The strength a "barrier now" cell gives for a direction (`READ`, `WRITE`), as its first word. */
function strengthNow(cell: string, bit: string): string {
  const parts = cell.split(' / ');
  const part = parts.find((text) => text.endsWith(`(${bit})`)) ?? parts[0];
  return (/^\w+/.exec(part ?? '') as RegExpExecArray)[0];
}

describe('the rule table and the migration guide', () => {
  it("docs/migration.md's 'What it rewrites' table is the one rendered from src/codemod/rules.ts", () => {
    const rendered = tableRows(renderMigrationTable().split('\n'));
    expect(rendered[0]).toEqual([...MIGRATION_TABLE_HEADER]);
    expect(
      guideTable(),
      'docs/migration.md disagrees with the rule table: run `node scripts/migration-table.mjs`',
    ).toEqual(rendered);
  });

  it('has one row per legacy function, in the order of the rule table', () => {
    const legacy = migrationTableRows().map((cells) => cells[0] as string);
    const functions = legacy.filter((cell) => /^`\w+\(/.test(cell));
    expect(functions.map((cell) => /^`(\w+)/.exec(cell)?.[1])).toEqual(
      LEGACY_FUNCTIONS.map((row) => row.name),
    );
  });

  it("each row's 'becomes' is what the codemod makes of the call in its 'legacy' column", () => {
    const rows = migrationTableRows().slice(2);
    LEGACY_FUNCTIONS.forEach((row, index) => {
      const cells = rows[index] as string[];
      const result = migrateCall(row);
      expect(result.review, row.name).toEqual([]);
      if (row.becomes.kind === 'attributes') {
        // "the constant, or `dir` itself"
        expect(lastStatement(result.text), row.name).toBe('attrs');
        for (const { member, attribute } of DIRECTION_MEMBERS) {
          const constant = migrateCall(row, `DMADirection.${member}`);
          expect(lastStatement(constant.text), `${row.name} ${member}`).toBe(
            `DMAAttributes.${attribute}`,
          );
        }
        return;
      }
      expect(lastStatement(result.text), row.name).toBe(codeOf(cells[2] as string));
    });
  });

  it("each row's barrier columns are what the report and --preserve-full-barriers say", () => {
    const rows = migrationTableRows().slice(2);
    let weakened = 0;
    let strengthened = 0;
    LEGACY_FUNCTIONS.forEach((row, index) => {
      const [, thenCell, , nowCell] = rows[index] as string[];
      if (thenCell === '—') return;
      const then = (/^\w+/.exec(thenCell as string) as RegExpExecArray)[0];
      const hasDirection = Object.values(row.parameters).includes('direction');
      const cases: { label: string; argument: string | undefined; bits: string[] }[] = hasDirection
        ? [
            ...DIRECTION_MEMBERS.map(({ member, attribute }) => ({
              label: member,
              argument: `DMADirection.${member}`,
              bits: [attribute],
            })),
            { label: 'dynamic', argument: 'attrs', bits: ['READ', 'WRITE'] },
          ]
        : [{ label: 'fixed', argument: undefined, bits: [row.direction ?? 'READ'] }];
      for (const { label, argument, bits } of cases) {
        const strengths = [...new Set(bits.map((bit) => strengthNow(nowCell as string, bit)))];
        const to = strengths.join('-or-');
        const result = migrateCall(row, argument);
        const site = `${row.name} ${label}`;
        const weaker = strengths.some((strength) => (RANK[strength] ?? 0) < (RANK[then] ?? 0));
        const stronger = strengths.some((strength) => (RANK[strength] ?? 0) > (RANK[then] ?? 0));
        expect(
          result.weakened.map((entry) => `${entry.from}→${entry.to}`),
          site,
        ).toEqual(weaker ? [`${then}→${to}`] : []);
        expect(
          result.strengthened.map((entry) => `${entry.from}→${entry.to}`),
          site,
        ).toEqual(!weaker && stronger ? [`${then}→${to}`] : []);
        weakened += result.weakened.length;
        strengthened += result.strengthened.length;
        // --preserve-full-barriers puts back the 2012 full barrier of every weakened call.
        const preserved = migrateCall(row, argument, true);
        expect(preserved.weakened, site).toEqual([]);
        expect(lastStatement(preserved.text).startsWith("dma.barrier('full'); "), site).toBe(
          weaker && thenCell === 'full, before',
        );
      }
    });
    expect(weakened).toBeGreaterThan(0);
    expect(strengthened).toBeGreaterThan(0);
  });
});

describe('a new legacy function', () => {
  const copyIn: LegacyFunction = {
    name: 'dmaMemoryCopyIn',
    parameters: { dma: 'context', addr: 'kept', buf: 'kept' },
    becomes: { kind: 'method', method: 'read', attributes: 'optional' },
    direction: 'READ',
    then: { strength: 'full', side: 'before' },
    now: { strength: 'acquire', side: 'after' },
  };
  const rules = new RuleTable([...LEGACY_FUNCTIONS, copyIn]);
  const source =
    "import { dmaMemoryCopyIn as copyIn } from 'dma-attrs/legacy';\nfunction f(dma, buf) {\n  copyIn(dma, 0x40, buf);\n}\n";

  it('is migrated, reported and documented from its row alone', () => {
    const result = migrateWithRules(source, { fileName: 'new.ts' }, rules);
    expect(result.text).toBe('function f(dma, buf) {\n  dma.read(0x40, buf);\n}\n');
    expect(result.weakened).toEqual([
      { file: 'new.ts', line: 3, column: 3, from: 'full', to: 'acquire' },
    ]);
    const preserved = migrateWithRules(
      source,
      { fileName: 'new.ts', preserveFullBarriers: true },
      rules,
    );
    expect(preserved.text).toContain(
      "dma.barrier('full'); dma.read(0x40, buf, DMAAttributes.RELAXED);",
    );
    expect(migrationTableRows([copyIn]).at(-1)).toEqual([
      '`dmaMemoryCopyIn(dma, addr, buf)`',
      'full, before',
      '`dma.read(addr, buf)`',
      'acquire, after',
    ]);
    // Without its row, the name is no legacy export: the import stays, the call too.
    expect(migrateSource(source, { fileName: 'new.ts' }).text).toBe(source);
  });

  it('is refused when its row is malformed, naming the row and the problem', () => {
    expect(
      () =>
        new RuleTable([{ ...copyIn, parameters: { dma: 'context', addr: 'kept', buf: 'buffer' } }]),
    ).toThrow(/dmaMemoryCopyIn: buffer buf is not followed by its length/);
    expect(() => new RuleTable([copyIn, copyIn])).toThrow(/dmaMemoryCopyIn: the name repeats/);
    expect(
      () =>
        new RuleTable([
          { ...copyIn, then: { strength: 'release', side: 'before' }, now: { strength: 'none' } },
        ]),
    ).toThrow(/dmaMemoryCopyIn: only a full barrier before the access can weaken/);
  });
});
