/**
 * `dma-attrs migrate`: the command line of the codemod, with the conventions of the
 * well-known codemods (jscodeshift, ts-migrate): paths and globs, `--dry-run`, `--print`,
 * `--check`, `--json`, exit 0 / 1 / 2.
 *
 * @module
 */
import { isAbsolute, relative } from 'node:path';
import { unifiedDiff } from './diff.js';
import { migrateFiles } from './files.js';
import type { MigrationReport } from './report.js';

/** Where the command writes, and the directory it resolves paths from. */
export interface CliIo {
  /** Receives standard output, in pieces that each end with a line break. */
  stdout: (text: string) => void;
  /** Receives standard error, in pieces that each end with a line break. */
  stderr: (text: string) => void;
  /** The working directory. */
  cwd: string;
}

const USAGE = `Usage: dma-attrs migrate <paths or globs…> [options]

Rewrites uses of dma-attrs/legacy into the attributes API.

Options:
  --dry-run                 print a unified diff, write nothing
  --check                   write nothing; exit 1 when a file would change
  --print                   print each migrated file, write nothing
  --json                    print the report as one JSON object
  --flags                   emit flag objects ({ read: true }) instead of bit expressions
  --preserve-full-barriers  keep the 2012 full barriers with explicit dma.barrier('full')
  -h, --help                show this help

Exit status: 0 ok, 1 changes found under --check or a file failed, 2 bad usage.
`;

const OPTIONS = new Set([
  '--dry-run',
  '--check',
  '--print',
  '--json',
  '--flags',
  '--preserve-full-barriers',
]);

function plural(count: number, one: string, many = `${one}s`): string {
  return `${count} ${count === 1 ? one : many}`;
}

/**
 * The closing summary line.
 *
 * @param report - the run's report.
 * @returns e.g. `migrate: 12 files scanned, 3 changed, 17 sites rewritten, 2 for review, 5 barriers weakened`.
 */
function summary(report: MigrationReport): string {
  const parts = [
    plural(report.filesScanned, 'file') + ' scanned',
    `${report.filesChanged} changed`,
    plural(report.rewritten, 'site') + ' rewritten',
    `${report.review.length} for review`,
    plural(report.weakened.length, 'barrier') + ' weakened',
  ];
  if (report.strengthened.length > 0) {
    parts.push(plural(report.strengthened.length, 'barrier') + ' strengthened');
  }
  if (report.errors.length > 0) parts.push(plural(report.errors.length, 'error'));
  return `migrate: ${parts.join(', ')}\n`;
}

/**
 * Runs `dma-attrs migrate` with the arguments after `migrate`.
 *
 * @param argv - paths, globs and options.
 * @param io - output streams and the working directory.
 * @returns the exit status: 0 ok, 1 changes found under `--check` or a file failed, 2 bad usage.
 * @example
 * ```ts
 * const status = await runMigrate(['src', '--check'], {
 *   stdout: (s) => process.stdout.write(s),
 *   stderr: (s) => process.stderr.write(s),
 *   cwd: process.cwd(),
 * });
 * ```
 */
export function runMigrate(argv: readonly string[], io: CliIo): Promise<number> {
  const paths: string[] = [];
  const options = new Set<string>();
  let onlyPaths = false;
  for (const arg of argv) {
    if (!onlyPaths && (arg === '-h' || arg === '--help')) {
      io.stdout(USAGE);
      return Promise.resolve(0);
    }
    if (!onlyPaths && arg === '--') {
      onlyPaths = true;
    } else if (!onlyPaths && arg.startsWith('-')) {
      if (!OPTIONS.has(arg)) {
        io.stderr(`dma-attrs migrate: unknown option ${arg}\n\n${USAGE}`);
        return Promise.resolve(2);
      }
      options.add(arg);
    } else {
      paths.push(arg);
    }
  }
  if (paths.length === 0) {
    io.stderr(`dma-attrs migrate: no paths given\n\n${USAGE}`);
    return Promise.resolve(2);
  }
  const json = options.has('--json');
  const dryRun = options.has('--dry-run');
  const print = options.has('--print');
  const check = options.has('--check');
  let report: MigrationReport;
  try {
    report = migrateFiles(paths, {
      cwd: io.cwd,
      flags: options.has('--flags'),
      preserveFullBarriers: options.has('--preserve-full-barriers'),
      write: !(dryRun || check || print),
      onFile: (file, before, result) => {
        if (json) return;
        if (dryRun) io.stdout(unifiedDiff(before, result.text, diffName(io.cwd, file)));
        if (print && result.errors.length === 0) io.stdout(result.text);
      },
    });
  } catch (error) {
    io.stderr(`dma-attrs migrate: ${(error as Error).message}\n`);
    return Promise.resolve(1);
  }
  if (json) {
    io.stdout(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    for (const site of report.review) {
      io.stderr(`${site.file}:${site.line}:${site.column}: ${site.reason}\n`);
    }
    for (const site of report.weakened) {
      io.stderr(
        `${site.file}:${site.line}:${site.column}: barrier weakened from ${site.from} to ${site.to}\n`,
      );
    }
    for (const error of report.errors) io.stderr(`${error.file}: error: ${error.message}\n`);
    io.stderr(summary(report));
  }
  if (report.errors.length > 0) return Promise.resolve(1);
  if (check && report.filesChanged > 0) return Promise.resolve(1);
  return Promise.resolve(0);
}

/**
 * The name a diff header gives a file: relative to the working directory, with forward
 * slashes, as `git diff` prints it (`a/src/x.ts`, never `a//abs/src/x.ts`).
 */
function diffName(cwd: string, file: string): string {
  const name = isAbsolute(file) ? relative(cwd, file) : file;
  return name.split('\\').join('/');
}
