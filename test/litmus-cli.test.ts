/**
 * The `dma-attrs litmus` command, run as users run it: `node dist/cli.js litmus --json`,
 * against the built package (`npm test` builds before vitest runs).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { CLI, spawnCli, type CliRun } from './support/cli.js';

const run = promisify(execFile);
const ITERATIONS = 200_000;

interface LitmusRun {
  pattern: string;
  policy: string;
  barrier: string;
  iterations: number;
  forbidden: number;
  perMillion: number;
  allowedByModel: { tso: boolean; ecmascript: boolean };
  promised: boolean;
  pass: boolean;
}

async function litmus(
  args: string[],
): Promise<{ code: number; runs: LitmusRun[]; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, 'litmus', '--json', ...args], {
      maxBuffer: 1 << 24,
    });
    return { code: 0, runs: JSON.parse(stdout) as LitmusRun[], stderr };
  } catch (error) {
    const failed = error as { code?: number; stdout?: string; stderr?: string };
    const runs = failed.stdout ? (JSON.parse(failed.stdout) as LitmusRun[]) : [];
    return { code: failed.code ?? -1, runs, stderr: failed.stderr ?? '' };
  }
}

beforeAll(() => {
  if (!existsSync(CLI))
    throw new Error('the litmus command runs dist/cli.js: run `npx tsup` first');
});

describe('dma-attrs litmus with the library barriers', () => {
  const promised = [
    ['sb', 'full'],
    ['mp', 'acquire-release'],
    ['lb', 'acquire-release'],
  ] as const;
  for (const [pattern, barrier] of promised) {
    it(`observes no forbidden ${pattern} outcome with ${barrier}, strict and tso (${ITERATIONS} iterations each)`, async () => {
      const { code, runs, stderr } = await litmus([
        '--pattern',
        pattern,
        '--barrier',
        barrier,
        '--policy',
        'all',
        '--iterations',
        String(ITERATIONS),
      ]);
      console.log(stderr.trim());
      expect(runs.map((entry) => entry.policy)).toEqual(['strict', 'tso']);
      for (const entry of runs) {
        expect(entry).toMatchObject({ pattern, barrier, iterations: ITERATIONS, promised: true });
        expect(entry.forbidden).toBe(0);
        expect(entry.pass).toBe(true);
      }
      expect(code).toBe(0);
    });
  }
});

describe('dma-attrs litmus --json', () => {
  it('prints one object per pattern and barrier for a policy, with the documented fields', async () => {
    const { code, runs } = await litmus(['--policy', 'tso', '--iterations', '2000']);
    expect(code).toBe(0);
    expect(runs).toHaveLength(9);
    const keys = [
      'allowedByModel',
      'barrier',
      'forbidden',
      'iterations',
      'pass',
      'pattern',
      'perMillion',
      'policy',
      'promised',
    ];
    for (const entry of runs) {
      expect(Object.keys(entry).sort()).toEqual(keys);
      expect(['sb', 'mp', 'lb']).toContain(entry.pattern);
      expect(entry.policy).toBe('tso');
      expect(['none', 'acquire-release', 'full']).toContain(entry.barrier);
      expect(entry.iterations).toBe(2000);
      expect(entry.perMillion).toBeCloseTo((entry.forbidden * 1e6) / 2000);
      expect(typeof entry.allowedByModel.tso).toBe('boolean');
      expect(typeof entry.allowedByModel.ecmascript).toBe('boolean');
      expect(entry.promised).toBe(
        entry.barrier === 'full' || (entry.barrier === 'acquire-release' && entry.pattern !== 'sb'),
      );
      expect(entry.pass).toBe(!entry.promised || entry.forbidden === 0);
    }
    // The models' verdicts: x86-TSO only lets a load pass an earlier store.
    const sbNone = runs.find((entry) => entry.pattern === 'sb' && entry.barrier === 'none');
    expect(sbNone?.allowedByModel).toEqual({ tso: true, ecmascript: true });
    const mp = runs.find((entry) => entry.pattern === 'mp' && entry.barrier === 'acquire-release');
    expect(mp?.allowedByModel).toEqual({ tso: false, ecmascript: true });
  });

  it('exits 2 on bad usage', async () => {
    const { code, stderr } = await litmus(['--pattern', 'xx']);
    expect(code).toBe(2);
    expect(stderr).toContain('--pattern must be sb, mp, lb or all');
  });
});

/** `node dist/cli.js litmus …` as it is, with its exit status and both streams. */
const spawnLitmus = (args: string[]): Promise<CliRun> => spawnCli(['litmus', ...args]);

describe('dma-attrs litmus arguments (one option table, node:util parseArgs)', () => {
  it('exits 2 naming an unknown option, a missing value, or an argument after --', async () => {
    const [help, unknown, missing, swallowed, dashes, positional, flagValue] = await Promise.all([
      spawnLitmus(['--help']),
      spawnLitmus(['--json', '--frobnicate']),
      spawnLitmus(['--iterations']),
      spawnLitmus(['--pattern', '--json']),
      spawnLitmus(['--json', '--', '--help']),
      spawnLitmus(['sb']),
      spawnLitmus(['--json=yes']),
    ]);
    const usage = (message: string): string => `dma-attrs litmus: ${message}\n\n${help.stdout}`;
    expect(unknown).toEqual({ code: 2, stdout: '', stderr: usage('unknown option --frobnicate') });
    expect(missing).toEqual({
      code: 2,
      stdout: '',
      stderr: usage('option --iterations needs a value <N>'),
    });
    expect(swallowed.code).toBe(2);
    expect(swallowed.stderr).toMatch(
      /^dma-attrs litmus: option --pattern needs a value <pattern>; received the option --json \(write --pattern=--json/,
    );
    // After `--`, `--help` is an argument, which litmus takes none of: no help, no run.
    expect(dashes).toEqual({
      code: 2,
      stdout: '',
      stderr: usage('takes no arguments; received "--help"'),
    });
    expect(positional.stderr).toBe(usage('takes no arguments; received "sb"'));
    expect(flagValue.stderr).toBe(usage('option --json takes no value; received "yes"'));
  });

  it('generates --help from its option table, and lets it win over a usage error', async () => {
    const [help, short, first] = await Promise.all([
      spawnLitmus(['--help']),
      spawnLitmus(['-h']),
      spawnLitmus(['--frobnicate', '--help', '--iterations']),
    ]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: dma-attrs litmus \[options\]\n/);
    const rows = [...help.stdout.matchAll(/^ {2}((?:-\w, )?--[\w-]+(?: <\w+>)?) +(\S.*)$/gm)];
    expect(rows.map((row) => row[1])).toEqual([
      '--pattern <pattern>',
      '--policy <policy>',
      '--barrier <barrier>',
      '--iterations <N>',
      '--json',
      '-h, --help',
    ]);
    // One table: every description starts in the same column.
    const columns = new Set(rows.map((row) => row[0].indexOf(row[2] as string)));
    expect(columns.size).toBe(1);
    expect(help.stdout).toMatch(/\nExit status: 0 when no run the library promises/);
    expect(short).toEqual(help);
    expect(first).toEqual(help);
  });

  it('runs what inline values and a closing -- ask for', async () => {
    const { code, runs } = await litmus([
      '--pattern=mp',
      '--barrier',
      'full',
      '--policy=tso',
      '--iterations=100',
      '--',
    ]);
    expect(code).toBe(0);
    expect(runs).toHaveLength(1);
    expect(runs[0]).toMatchObject({
      pattern: 'mp',
      barrier: 'full',
      policy: 'tso',
      iterations: 100,
    });
  });
});
