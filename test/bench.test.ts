/**
 * `dma-attrs bench --quick --json`, run as users run it (against the built package: `npm test`
 * builds before vitest runs). Checks that the benchmark runs and that its results are
 * well-formed; it asserts nothing about speed, which a shared machine cannot promise.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, spawnCli, type CliRun } from './support/cli.js';

const run = promisify(execFile);

interface MicroResult {
  name: string;
  group: string;
  op: string;
  size: number;
  strength: string;
  policy: string;
  p50: number;
  avg: number;
}

interface Budget {
  name: string;
  issue: number;
  limit: number;
  measured: number | null;
  unit: string;
  comparison: '<=' | '>=';
  met: boolean | null;
  skipped?: string;
}

interface Spread {
  median: number;
  min: number;
  max: number;
}

interface BenchReport {
  mode: string;
  host: { cpu: string; node: string; loadavg: number[]; cores: number };
  elapsedSeconds: number;
  micro: { results: MicroResult[] };
  macro: {
    skipped?: string;
    variants: {
      variant: string;
      runs: unknown[];
      packetsPerSecond: Spread;
      packetsPerCpuSecond: Spread;
    }[];
  };
  allocation: {
    accesses: number;
    kinds: { kind: string; gcEvents: number; expect: string; met: boolean | null }[];
  };
  budgets: Budget[];
  chart: { written: string[] };
}

/** Every number anywhere in a JSON value, with its path. */
function numbers(value: unknown, at = '$'): [string, number][] {
  if (typeof value === 'number') return [[at, value]];
  if (Array.isArray(value)) return value.flatMap((item, index) => numbers(item, `${at}[${index}]`));
  if (typeof value === 'object' && value !== null) {
    return Object.entries(value).flatMap(([key, item]) => numbers(item, `${at}.${key}`));
  }
  return [];
}

describe('dma-attrs bench --quick --json', () => {
  let directory: string;
  let svgPath: string;
  let report: BenchReport;
  let stdout: string;

  beforeAll(async () => {
    directory = mkdtempSync(path.join(tmpdir(), 'dma-attrs-bench-test-'));
    svgPath = path.join(directory, 'chart.svg');
    ({ stdout } = await run(
      process.execPath,
      [CLI, 'bench', '--quick', '--json', '--svg', svgPath],
      { maxBuffer: 1 << 24, timeout: 90_000 },
    ));
    report = JSON.parse(stdout) as BenchReport;
  }, 100_000);

  afterAll(() => {
    rmSync(directory, { recursive: true, force: true });
  });

  it('prints one JSON object with every section', () => {
    expect(stdout.trimStart().startsWith('{')).toBe(true);
    expect(report.mode).toBe('quick');
    for (const section of ['host', 'micro', 'macro', 'allocation', 'budgets', 'chart'] as const) {
      expect(report).toHaveProperty(section);
    }
    expect(report.host.cpu.length).toBeGreaterThan(0);
    expect(report.host.node).toBe(process.version);
    expect(report.host.loadavg).toHaveLength(3);
  });

  it('has only finite, non-negative numbers, and positive timings', () => {
    for (const [at, value] of numbers(report)) {
      // Budgets may measure a negative difference (an ordered access faster than relaxed).
      if (/^\$\.budgets\[\d+\]\.measured$/.test(at)) {
        expect(Number.isFinite(value), at).toBe(true);
        continue;
      }
      expect(Number.isFinite(value) && value >= 0, `${at} = ${value}`).toBe(true);
    }
    expect(report.micro.results.length).toBeGreaterThan(50);
    for (const result of report.micro.results) {
      expect(result.p50, result.name).toBeGreaterThan(0);
      expect(result.avg, result.name).toBeGreaterThan(0);
    }
    expect(report.elapsedSeconds).toBeGreaterThan(0);
  });

  it('times every strength at every size, raw code beside the library', () => {
    for (const op of ['read', 'write']) {
      for (const size of [8, 64, 4096, 65536]) {
        const strengths = new Set(
          report.micro.results
            .filter(
              (result) => result.group === 'transfer' && result.op === op && result.size === size,
            )
            .map((result) => result.strength),
        );
        const ordered = op === 'read' ? 'acquire' : 'release';
        expect([...strengths].sort()).toEqual(['full', ordered, 'raw', 'relaxed'].sort());
      }
    }
    const groups = new Set(report.micro.results.map((result) => result.group));
    for (const group of ['transfer', 'set', 'fixed', 'flags', 'iommu', 'legacy']) {
      expect(groups.has(group), group).toBe(true);
    }
  });

  it('runs the virtio ring for each variant, with median and min–max', () => {
    expect(report.macro.skipped).toBeUndefined();
    expect(report.macro.variants.map((row) => row.variant)).toEqual(['legacy', 'attrs', 'relaxed']);
    for (const row of report.macro.variants) {
      expect(row.runs.length).toBeGreaterThanOrEqual(1);
      for (const spread of [row.packetsPerSecond, row.packetsPerCpuSecond]) {
        expect(spread.median).toBeGreaterThan(0);
        expect(spread.min).toBeLessThanOrEqual(spread.median);
        expect(spread.max).toBeGreaterThanOrEqual(spread.median);
      }
    }
  });

  it('counts GC events for every kind of access', () => {
    expect(report.allocation.accesses).toBe(2e6);
    const kinds = report.allocation.kinds.map((row) => row.kind);
    for (const kind of [
      'read 8B',
      'read 64B',
      'write 8B',
      'write 64B',
      'set 64B',
      'readU32LE',
      'writeU32LE',
      "barrier('full')",
      'IOMMU read 64B (IOTLB hit)',
      'read 4KiB',
    ]) {
      expect(kinds).toContain(kind);
    }
    for (const row of report.allocation.kinds) {
      expect(Number.isInteger(row.gcEvents)).toBe(true);
      if (row.expect === 'zero') expect(typeof row.met).toBe('boolean');
      else expect([row.expect, row.met]).toEqual(['by design', null]);
    }
  });

  it('lists every budget as { name, limit, measured, met }', () => {
    expect(report.budgets.length).toBeGreaterThan(40);
    for (const budget of report.budgets) {
      expect(typeof budget.name).toBe('string');
      expect(Number.isFinite(budget.limit)).toBe(true);
      expect(['<=', '>='].includes(budget.comparison)).toBe(true);
      if (budget.skipped === undefined) {
        expect(typeof budget.measured).toBe('number');
        expect(typeof budget.met).toBe('boolean');
        const measured = budget.measured as number;
        expect(budget.met).toBe(
          budget.comparison === '<=' ? measured <= budget.limit : measured >= budget.limit,
        );
      } else {
        expect(budget.measured).toBeNull();
        expect(budget.met).toBeNull();
      }
    }
    const issues = new Set(report.budgets.map((budget) => budget.issue));
    expect([...issues].sort((a, b) => a - b)).toEqual([2, 3, 4, 6, 10, 13]);
  });

  it('writes the chart as SVG with every series', () => {
    expect(report.chart.written).toContain(svgPath);
    const svg = readFileSync(svgPath, 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    for (const series of ['raw', 'relaxed', 'acquire', 'release', 'full']) {
      expect(svg).toContain(`data-series="${series}`);
    }
    // Balanced elements: every opened <g>, <text> and <circle> is closed.
    for (const tag of ['g', 'text', 'circle', 'title']) {
      const opened = svg.match(new RegExp(`<${tag}[\\s>]`, 'g'))?.length ?? 0;
      const closed = svg.match(new RegExp(`</${tag}>`, 'g'))?.length ?? 0;
      expect(closed, tag).toBe(opened);
    }
  });
});

/** `node dist/cli.js bench …` as it is, with its exit status and both streams. */
const spawnBench = (args: string[]): Promise<CliRun> => spawnCli(['bench', ...args]);

describe('dma-attrs bench arguments (one option table, node:util parseArgs)', () => {
  // Each of these stops at the command line, before mitata is loaded or anything is timed.
  it('exits 2 naming an unknown option, a missing value, a bad value, or an argument after --', async () => {
    const [help, unknown, missing, swallowed, dashes, runs, filter] = await Promise.all([
      spawnBench(['--help']),
      spawnBench(['--quick', '--frobnicate']),
      spawnBench(['--quick', '--svg']),
      spawnBench(['--filter', '--json']),
      spawnBench(['--quick', '--', '--json']),
      spawnBench(['--runs', '0']),
      spawnBench(['--filter=(']),
    ]);
    const usage = (message: string): string => `dma-attrs bench: ${message}\n\n${help.stdout}`;
    expect(unknown).toEqual({ code: 2, stdout: '', stderr: usage('unknown option --frobnicate') });
    expect(missing).toEqual({
      code: 2,
      stdout: '',
      stderr: usage('option --svg needs a value <PATH>'),
    });
    expect(swallowed.code).toBe(2);
    expect(swallowed.stderr).toMatch(
      /^dma-attrs bench: option --filter needs a value <RE>; received the option --json \(write --filter=--json/,
    );
    // After `--`, `--json` is an argument, which bench takes none of: nothing runs.
    expect(dashes).toEqual({
      code: 2,
      stdout: '',
      stderr: usage('takes no arguments; received "--json"'),
    });
    expect(runs.stderr).toBe(usage('option --runs must be a positive number; received "0"'));
    expect(filter.code).toBe(2);
    expect(filter.stderr).toMatch(
      /^dma-attrs bench: option --filter must be a regular expression; received "\(" \(/,
    );
  });

  it('generates --help from its option table, and lets it win over a usage error', async () => {
    const [help, short, first] = await Promise.all([
      spawnBench(['--help']),
      spawnBench(['-h']),
      spawnBench(['--frobnicate', '--help', '--svg']),
    ]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: dma-attrs bench \[options\]\n/);
    const rows = [...help.stdout.matchAll(/^ {2}((?:-\w, )?--[\w-]+(?: <\w+>)?) +(\S.*)$/gm)];
    // Every option docs/performance.md documents, and --help.
    expect(rows.map((row) => row[1])).toEqual([
      '--quick',
      '--json',
      '--svg <PATH>',
      '--filter <RE>',
      '--runs <N>',
      '--seconds <S>',
      '--no-macro',
      '--codemod',
      '--no-codemod',
      '-h, --help',
    ]);
    const columns = new Set(rows.map((row) => row[0].indexOf(row[2] as string)));
    expect(columns.size).toBe(1);
    expect(help.stdout).toMatch(/\nExit status: 0 when it ran/);
    expect(short).toEqual(help);
    expect(first).toEqual(help);
  });
});
