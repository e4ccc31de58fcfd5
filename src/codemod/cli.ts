/**
 * `dma-attrs migrate`: the command line of the codemod, with the conventions of the
 * well-known codemods (jscodeshift, ts-migrate): paths and globs, `.gitignore` honoured,
 * `--dry-run`, `--print`, `--check`, `--json`, exit 0 / 1 / 2, its options parsed by the
 * table parser every command shares (src/internal/args.ts). Also the progress line.
 *
 * @module
 */
import { isAbsolute, relative } from 'node:path';
import { DMAError } from '../errors.js';
import {
  helpText,
  parseCommandLine,
  type CommandLine,
  type CommandSpec,
} from '../internal/args.js';
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
  /**
   * Standard error as a stream, for the `files done / total` line: drawn only when the stream
   * is a terminal (`isTTY`), never under `--json`. Without it there is no progress line.
   */
  progress?: {
    /** Whether the stream is a terminal: the line is drawn only then. */
    readonly isTTY?: boolean;
    /** Writes text. */
    write(text: string): unknown;
  };
}

/**
 * A stream the progress line can be drawn on: `process.stderr`, or a stand-in in a test.
 *
 * @internal
 */
export type ProgressStream = NonNullable<CliIo['progress']>;

/**
 * The `files done / total` line on a terminal, rewritten in place with `\r`.
 *
 * @internal
 */
export interface Progress {
  /** Draws `done/total`: the first and the last time, and otherwise at most every 100 ms. */
  update(done: number, total: number): void;
  /** Erases the line (before other output, and at the end). */
  clear(): void;
}

const NO_PROGRESS: Progress = {
  update: () => undefined,
  clear: () => undefined,
};

/**
 * A progress line on `stream`, or one that draws nothing when the stream is absent or not a
 * terminal: piped or redirected standard error gets no `\r` lines.
 *
 * @param stream - where to draw, usually `process.stderr`.
 * @param label - what the line starts with.
 * @param now - the clock, in milliseconds (tests pass a still one).
 * @returns the line's controls.
 * @example
 * ```ts
 * const progress = createProgress(process.stderr);
 * progress.update(1, 3); // "\rmigrate: 1/3 files" on a terminal
 * progress.clear();
 * ```
 * @internal
 */
export function createProgress(
  stream: ProgressStream | undefined,
  label = 'migrate',
  now: () => number = () => performance.now(),
): Progress {
  if (stream?.isTTY !== true) return NO_PROGRESS;
  const interval = 100;
  let drawnAt = -Infinity;
  let visible = false;
  return {
    update(done, total) {
      const time = now();
      if (done !== total && drawnAt !== -Infinity && time - drawnAt < interval) return;
      drawnAt = time;
      visible = true;
      // Counts only grow within a run, so each line covers the one it overwrites.
      stream.write(`\r${label}: ${done}/${total} files`);
    },
    clear() {
      if (!visible) return;
      visible = false;
      stream.write('\r\x1b[K');
    },
  };
}

const MIGRATE: CommandSpec = {
  name: 'dma-attrs migrate',
  synopsis: '<paths or globs…> [options]',
  description: `Rewrites uses of dma-attrs/legacy into the attributes API.

Files named explicitly are always taken. Directories and globs (*, **, ?, {a,b}) yield
.ts .tsx .mts .cts .js .jsx .mjs .cjs files, skipping node_modules, dist, and what
.gitignore files exclude. On a terminal, standard error shows files done / total.
`,
  options: [
    { name: 'dry-run', description: 'print a unified diff (git apply takes it), write nothing' },
    { name: 'check', description: 'write nothing; exit 1 when a file would change' },
    { name: 'print', description: 'print each migrated file, write nothing' },
    { name: 'json', description: 'print the report as one JSON object' },
    { name: 'flags', description: 'emit flag objects ({ read: true }) instead of bit expressions' },
    {
      name: 'preserve-full-barriers',
      description: "keep the 2012 full barriers with explicit dma.barrier('full')",
    },
    { name: 'no-gitignore', description: 'also take the files .gitignore files exclude' },
    {
      name: 'ignore-pattern',
      value: 'pattern',
      multiple: true,
      description: 'leave out files matching a .gitignore-style pattern (repeatable)',
    },
    { name: 'help', short: 'h', description: 'show this help' },
  ],
  footer: 'Exit status: 0 ok, 1 changes found under --check or a file failed, 2 bad usage.\n',
};

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
 * @param io - output streams, the working directory, and standard error for the progress line.
 * @returns the exit status: 0 ok, 1 changes found under `--check` or a file failed, 2 bad usage.
 * @example
 * ```ts
 * const status = await runMigrate(['src', '--check'], {
 *   stdout: (s) => process.stdout.write(s),
 *   stderr: (s) => process.stderr.write(s),
 *   cwd: process.cwd(),
 *   progress: process.stderr,
 * });
 * ```
 */
export function runMigrate(argv: readonly string[], io: CliIo): Promise<number> {
  let line: CommandLine;
  try {
    line = parseCommandLine(MIGRATE, argv);
  } catch (error) {
    if (!(error instanceof DMAError)) throw error;
    io.stderr(`${error.message}\n\n${helpText(MIGRATE)}`);
    return Promise.resolve(2);
  }
  const { flags } = line;
  if (flags.has('help')) {
    io.stdout(helpText(MIGRATE));
    return Promise.resolve(0);
  }
  if (line.positionals.length === 0) {
    io.stderr(`${MIGRATE.name}: no paths given\n\n${helpText(MIGRATE)}`);
    return Promise.resolve(2);
  }
  const json = flags.has('json');
  const dryRun = flags.has('dry-run');
  const print = flags.has('print');
  const check = flags.has('check');
  const progress = createProgress(json ? undefined : io.progress);
  let report: MigrationReport;
  try {
    report = migrateFiles(line.positionals, {
      cwd: io.cwd,
      flags: flags.has('flags'),
      preserveFullBarriers: flags.has('preserve-full-barriers'),
      gitignore: !flags.has('no-gitignore'),
      ignorePatterns: line.values.get('ignore-pattern') ?? [],
      write: !(dryRun || check || print),
      onFile: (file, before, result) => {
        if (json) return;
        const diff = dryRun ? unifiedDiff(before, result.text, diffName(io.cwd, file)) : '';
        const text = print && result.errors.length === 0 ? result.text : '';
        if (diff === '' && text === '') return;
        // Standard output may be the same terminal: the progress line must not prefix it.
        progress.clear();
        if (diff !== '') io.stdout(diff);
        if (text !== '') io.stdout(text);
      },
      onProgress: (done, total) => {
        progress.update(done, total);
      },
    });
  } catch (error) {
    progress.clear();
    io.stderr(`${MIGRATE.name}: ${(error as Error).message}\n`);
    return Promise.resolve(1);
  }
  progress.clear();
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
