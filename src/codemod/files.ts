/**
 * The codemod over files: expands paths, migrates each file, writes the changed ones (unless
 * asked not to) and sums the reports.
 *
 * @module
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { expandPaths } from './glob.js';
import type { MigrateResult, MigrationReport } from './report.js';
import { migrateSource } from './transform.js';

/** Options of {@link migrateFiles}. */
export interface MigrateFilesOptions {
  /** The directory relative paths start from; `process.cwd()` by default. */
  cwd?: string;
  /** Emit flag objects instead of bit expressions. */
  flags?: boolean;
  /** Keep the 2012 full barriers with explicit `barrier('full')` calls. */
  preserveFullBarriers?: boolean;
  /** Write the migrated files (default `true`); `false` for `--dry-run`, `--check`, `--print`. */
  write?: boolean;
  /**
   * Honour `.gitignore` files (and `.git/info/exclude`) when expanding directories and globs,
   * as git does (default `true`); `false` for `--no-gitignore`.
   */
  gitignore?: boolean;
  /**
   * More files to leave out of directories and globs: patterns in `.gitignore` syntax,
   * relative to `cwd` (`--ignore-pattern`).
   */
  ignorePatterns?: readonly string[];
  /**
   * Called for each file after it was migrated (and before it is written), with its text before
   * and after: the CLI prints diffs and migrated texts from here.
   */
  onFile?: (file: string, before: string, result: MigrateResult) => void;
  /**
   * Called once the paths are expanded with `done` 0, then after each file (read or not) with
   * how many are done: the CLI's progress line.
   */
  onProgress?: (done: number, total: number) => void;
}

/**
 * Migrates files, directories and globs (`*`, `**`, `?`, `{a,b}`), skipping `node_modules`,
 * `dist` and what `.gitignore` files exclude; a file named explicitly is always taken.
 * A file that cannot be read or parsed is named in `errors` and left untouched.
 *
 * @param paths - files, directories or globs.
 * @param options - where to start, the output style, and whether to write.
 * @returns the aggregate report (SPEC §9 `--json`, plus `strengthened`).
 * @throws Error when the `typescript` package is not installed.
 * @example
 * ```ts
 * const report = migrateFiles(['src'], { write: false });
 * console.log(report.weakened);
 * ```
 */
export function migrateFiles(
  paths: readonly string[],
  options: MigrateFilesOptions = {},
): MigrationReport {
  const cwd = options.cwd ?? process.cwd();
  const write = options.write ?? true;
  const report: MigrationReport = {
    filesScanned: 0,
    filesChanged: 0,
    rewritten: 0,
    review: [],
    weakened: [],
    strengthened: [],
    errors: [],
  };
  const { files, unmatched } = expandPaths(paths, cwd, {
    ...(options.gitignore === undefined ? {} : { gitignore: options.gitignore }),
    ...(options.ignorePatterns === undefined ? {} : { ignorePatterns: options.ignorePatterns }),
  });
  for (const { pattern, ignored } of unmatched) {
    report.errors.push({
      file: pattern,
      message:
        ignored === 0
          ? 'no such file, or no source file matches'
          : `${ignored === 1 ? 'the one source file it matches is' : `all ${ignored} source files it matches are`} ` +
            "ignored by .gitignore or --ignore-pattern (--no-gitignore takes .gitignore'd files)",
    });
  }
  options.onProgress?.(0, files.length);
  for (const [index, file] of files.entries()) {
    migrateFile(file, cwd, write, options, report);
    options.onProgress?.(index + 1, files.length);
  }
  return report;
}

/** Reads, migrates and (when `write`) rewrites one file, adding what happened to `report`. */
function migrateFile(
  file: string,
  cwd: string,
  write: boolean,
  options: MigrateFilesOptions,
  report: MigrationReport,
): void {
  const full = path.resolve(cwd, file);
  let before: string;
  try {
    before = readFileSync(full, 'utf8');
  } catch (error) {
    report.errors.push({ file, message: `cannot read: ${(error as Error).message}` });
    return;
  }
  report.filesScanned++;
  const result = migrateSource(before, {
    fileName: file,
    ...(options.flags === undefined ? {} : { flags: options.flags }),
    ...(options.preserveFullBarriers === undefined
      ? {}
      : { preserveFullBarriers: options.preserveFullBarriers }),
  });
  options.onFile?.(file, before, result);
  report.rewritten += result.rewritten;
  report.review.push(...result.review);
  report.weakened.push(...result.weakened);
  report.strengthened.push(...result.strengthened);
  report.errors.push(...result.errors);
  if (!result.changed) return;
  report.filesChanged++;
  if (!write) return;
  try {
    writeFileSync(full, result.text);
  } catch (error) {
    report.errors.push({ file, message: `cannot write: ${(error as Error).message}` });
  }
}
