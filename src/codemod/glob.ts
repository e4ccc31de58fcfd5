/**
 * Which files the codemod reads: explicit files as given, directories and globs expanded with
 * tinyglobby, minus `node_modules`, `dist`, `.git`, what `.gitignore` files exclude (as git
 * reads them: the repository root's, nested ones relative to their folder, and
 * `.git/info/exclude`) and `--ignore-pattern` patterns.
 *
 * @module
 */
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import ignore, { type Ignore } from 'ignore';
import { globSync, isDynamicPattern } from 'tinyglobby';

/** The extensions the codemod reads when it expands a directory or a glob. */
export const SOURCE_EXTENSIONS = ['.ts', '.tsx', '.mts', '.cts', '.js', '.jsx', '.mjs', '.cjs'];

const SOURCE_GLOB = '**/*.{ts,tsx,mts,cts,js,jsx,mjs,cjs}';
/** Never entered below a directory or glob base, as jscodeshift, ESLint and Prettier do. */
const SKIPPED = ['**/node_modules/**', '**/dist/**', '**/.git/**', '**/*.d.{ts,mts,cts}'];

function isSource(file: string): boolean {
  return (
    !/\.d\.[mc]?ts$/.test(file) && SOURCE_EXTENSIONS.some((extension) => file.endsWith(extension))
  );
}

function toPosix(file: string): string {
  return path.sep === '/' ? file : file.split(path.sep).join('/');
}

function isWithin(directory: string, target: string): boolean {
  const relative = path.relative(directory, target);
  return !relative.startsWith('..') && !path.isAbsolute(relative);
}

/** `target` relative to `directory`, one of its ancestors: a slice when the prefix is there. */
function below(directory: string, target: string): string {
  if (!target.startsWith(directory)) return path.relative(directory, target);
  return target.slice(directory.endsWith(path.sep) ? directory.length : directory.length + 1);
}

/** The `ignore` rules of one file, or `undefined` when it cannot be read (usually: absent). */
function readRules(...files: string[]): Ignore | undefined {
  let rules: Ignore | undefined;
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    rules = (rules ?? ignore()).add(text);
  }
  return rules;
}

/**
 * The `.gitignore` files of one repository, read lazily: only the folders on the way to a
 * candidate file, and never below an ignored folder (git does not look there either).
 *
 * Precedence as in git: a deeper `.gitignore` overrides a shallower one, the last matching line
 * of a file wins, and nothing below an ignored folder can be re-included. One known difference:
 * a file's rules are tested by `ignore`, which also checks the file's folders against that same
 * file's rules, so a folder that a shallower file ignores and a deeper one re-includes still
 * has its contents ignored by the shallower file's patterns.
 */
class GitignoreRules {
  private readonly rules = new Map<string, Ignore | undefined>();
  private readonly ignoredDirectories = new Map<string, boolean>();

  /** @param root - the repository root (or the working directory outside a repository). */
  constructor(private readonly root: string) {}

  /**
   * @param file - an absolute path below the root.
   * @returns whether git would ignore it.
   */
  ignores(file: string): boolean {
    return this.directoryIgnored(path.dirname(file)) || this.decide(file, false);
  }

  private rulesOf(directory: string): Ignore | undefined {
    if (this.rules.has(directory)) return this.rules.get(directory);
    // In the root, `.git/info/exclude` ranks below `.gitignore`: added first, so that its
    // lines lose to the later ones.
    const rules =
      directory === this.root
        ? readRules(
            path.join(directory, '.git', 'info', 'exclude'),
            path.join(directory, '.gitignore'),
          )
        : readRules(path.join(directory, '.gitignore'));
    this.rules.set(directory, rules);
    return rules;
  }

  private directoryIgnored(directory: string): boolean {
    if (directory.length <= this.root.length) return false;
    const cached = this.ignoredDirectories.get(directory);
    if (cached !== undefined) return cached;
    const ignored = this.directoryIgnored(path.dirname(directory)) || this.decide(directory, true);
    this.ignoredDirectories.set(directory, ignored);
    return ignored;
  }

  /** The deepest `.gitignore` with a matching line decides; the folders above are not looked at. */
  private decide(target: string, isDirectory: boolean): boolean {
    let directory = path.dirname(target);
    for (;;) {
      const rules = this.rulesOf(directory);
      if (rules !== undefined) {
        const relative = toPosix(below(directory, target)) + (isDirectory ? '/' : '');
        const result = rules.test(relative);
        if (result.ignored) return true;
        if (result.unignored) return false;
      }
      if (directory === this.root) return false;
      directory = path.dirname(directory);
    }
  }
}

/** The nearest folder at or above `directory` that holds `.git` (a folder, or a worktree's file). */
function repositoryRoot(directory: string): string | undefined {
  for (let current = directory; ;) {
    try {
      statSync(path.join(current, '.git'));
      return current;
    } catch {
      // not here: one level up
    }
    const parent = path.dirname(current);
    if (parent === current) return undefined;
    current = parent;
  }
}

/** Options of {@link expandPaths}. */
export interface ExpandOptions {
  /** Honour `.gitignore` files and `.git/info/exclude` (default `true`). */
  gitignore?: boolean;
  /** More patterns in `.gitignore` syntax, relative to `cwd`. */
  ignorePatterns?: readonly string[];
}

/** A pattern that named no file: nothing exists there, or everything it matched is ignored. */
export interface UnmatchedPattern {
  /** The pattern, as given. */
  pattern: string;
  /** How many source files it matched that `.gitignore` or `ignorePatterns` excluded. */
  ignored: number;
}

/**
 * The source files named by paths, directories and globs, each once, in a stable order.
 * A file named explicitly is taken whatever its extension and whatever ignores it; directories
 * and globs (tinyglobby's syntax: `*`, `**`, `?`, `{a,b}`, `[ab]`) yield the source
 * extensions only, without declaration files, `node_modules`, `dist`, `.git`, symbolic links,
 * and what `.gitignore` files and `ignorePatterns` exclude.
 *
 * @param patterns - files, directories or globs, relative to `cwd` or absolute.
 * @param cwd - the directory relative patterns (and `ignorePatterns`) start from.
 * @param options - whether to honour `.gitignore`, and more patterns to ignore.
 * @returns the files (`cwd`-relative when the pattern was relative, else absolute) and the
 * patterns that yielded none.
 */
export function expandPaths(
  patterns: readonly string[],
  cwd: string,
  options: ExpandOptions = {},
): { files: string[]; unmatched: UnmatchedPattern[] } {
  const gitignore = options.gitignore ?? true;
  const extra =
    options.ignorePatterns !== undefined && options.ignorePatterns.length > 0
      ? ignore().add(options.ignorePatterns)
      : undefined;
  const repositories = new Map<string, GitignoreRules>();
  const seen = new Set<string>();
  const files: string[] = [];
  const unmatched: UnmatchedPattern[] = [];

  const rulesFor = (base: string): GitignoreRules => {
    const root = repositoryRoot(base) ?? (isWithin(cwd, base) ? cwd : base);
    let rules = repositories.get(root);
    if (rules === undefined) {
      rules = new GitignoreRules(root);
      repositories.set(root, rules);
    }
    return rules;
  };
  const add = (file: string, key = path.resolve(cwd, file)): void => {
    if (seen.has(key)) return;
    seen.add(key);
    files.push(file);
  };

  for (const pattern of patterns) {
    const full = path.resolve(cwd, pattern);
    let found: string[];
    let base: string;
    let isDirectory: boolean | undefined;
    try {
      isDirectory = statSync(full).isDirectory();
    } catch {
      isDirectory = undefined;
    }
    if (isDirectory === false) {
      // An explicit file, even one whose name looks like a glob (`routes/[id].ts`).
      add(pattern);
      continue;
    }
    if (isDirectory === true) {
      base = full;
      found = globFrom(base, SOURCE_GLOB);
    } else if (isDynamicPattern(pattern)) {
      const split = splitGlob(pattern);
      base = path.resolve(cwd, split.base);
      found = globFrom(base, split.rest).filter(isSource);
    } else {
      unmatched.push({ pattern, ignored: 0 });
      continue;
    }
    const rules = gitignore ? rulesFor(base) : undefined;
    let ignored = 0;
    const inCwd = isWithin(cwd, base);
    for (const file of found.sort()) {
      // Below `base`, and so below `cwd` when `base` is: the relative path is a slice.
      const relative = inCwd ? below(cwd, file) : path.relative(cwd, file);
      const excluded =
        rules?.ignores(file) === true ||
        (extra !== undefined && inCwd && extra.ignores(toPosix(relative)));
      if (excluded) ignored++;
      else add(path.isAbsolute(pattern) ? file : relative, file);
    }
    if (ignored === found.length) unmatched.push({ pattern, ignored });
  }
  return { files, unmatched };
}

/** Absolute paths of the files below `base` that `glob` (relative to it) matches. */
function globFrom(base: string, glob: string): string[] {
  return globSync(glob, {
    cwd: base,
    absolute: true,
    dot: true,
    ignore: SKIPPED,
    followSymbolicLinks: false,
    expandDirectories: false,
  }).map((file) => path.resolve(file));
}

/**
 * Splits a glob at its first dynamic segment: `src/**\/*.ts` → `src` and `**\/*.ts`, so that
 * the walk starts in `src` and `node_modules`/`dist` are skipped below it only (`dist/**\/*.js`
 * still reaches into `dist`).
 */
function splitGlob(pattern: string): { base: string; rest: string } {
  const normalized = path.sep === '\\' ? pattern.split('\\').join('/') : pattern;
  const segments = normalized.split('/');
  const first = segments.findIndex((segment) => isDynamicPattern(segment));
  const baseSegments = segments.slice(0, first);
  const base =
    baseSegments.length === 0
      ? '.'
      : baseSegments.length === 1 && baseSegments[0] === ''
        ? '/'
        : baseSegments.join('/');
  return { base, rest: segments.slice(first).join('/') };
}
