/**
 * Path and glob expansion for the codemod: directories are walked, `*`, `**` and `?` are
 * matched, and `node_modules` and `dist` are never entered (as jscodeshift and ts-migrate do).
 *
 * @module
 */
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';

/** The extensions the codemod reads when it walks a directory. */
export const SOURCE_EXTENSIONS = ['.ts', '.tsx', '.mts', '.cts', '.js', '.jsx', '.mjs', '.cjs'];

const IGNORED_DIRECTORIES = new Set(['node_modules', 'dist']);

function isSource(file: string): boolean {
  return !file.endsWith('.d.ts') && SOURCE_EXTENSIONS.some((extension) => file.endsWith(extension));
}

/**
 * A regular expression for a glob over `/`-separated paths: `**` crosses directories, `*` and
 * `?` do not.
 *
 * @param glob - the pattern, with `/` separators.
 * @returns the anchored expression.
 */
export function globToRegExp(glob: string): RegExp {
  let source = '';
  for (let index = 0; index < glob.length; index++) {
    const char = glob.charAt(index);
    if (char === '*') {
      if (glob.charAt(index + 1) === '*') {
        index++;
        if (glob.charAt(index + 1) === '/') {
          index++;
          source += '(?:.*/)?';
        } else {
          source += '.*';
        }
      } else {
        source += '[^/]*';
      }
    } else if (char === '?') {
      source += '[^/]';
    } else {
      source += /[\\^$.|+()[\]{}]/.test(char) ? `\\${char}` : char;
    }
  }
  return new RegExp(`^${source}$`);
}

function walk(directory: string, files: string[]): void {
  let entries;
  try {
    entries = readdirSync(directory, { withFileTypes: true });
  } catch {
    return;
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const entry of entries) {
    const full = path.join(directory, entry.name);
    if (entry.isDirectory()) {
      if (!IGNORED_DIRECTORIES.has(entry.name)) walk(full, files);
    } else if (entry.isFile() && isSource(entry.name)) {
      files.push(full);
    }
  }
}

/**
 * The source files named by paths, directories and globs, each once, in a stable order.
 * A file named explicitly is taken whatever its extension; directories and globs yield the
 * source extensions only and skip `node_modules` and `dist`.
 *
 * @param patterns - files, directories or globs, relative to `cwd` or absolute.
 * @param cwd - the directory relative patterns start from.
 * @returns the files (as `cwd`-relative paths when the pattern was relative) and the patterns
 * that matched nothing.
 */
export function expandPaths(
  patterns: readonly string[],
  cwd: string,
): { files: string[]; unmatched: string[] } {
  const seen = new Set<string>();
  const files: string[] = [];
  const unmatched: string[] = [];
  const add = (file: string): void => {
    const key = path.resolve(cwd, file);
    if (seen.has(key)) return;
    seen.add(key);
    files.push(file);
  };
  for (const pattern of patterns) {
    const before = files.length;
    if (/[*?]/.test(pattern)) {
      const normalized = pattern.split(path.sep).join('/');
      const segments = normalized.split('/');
      const firstGlob = segments.findIndex((segment) => /[*?]/.test(segment));
      const base =
        segments.slice(0, firstGlob).join('/') || (normalized.startsWith('/') ? '/' : '.');
      const matcher = globToRegExp(normalized.replace(/^\.\//, ''));
      const found: string[] = [];
      walk(path.resolve(cwd, base), found);
      for (const file of found) {
        const relative = path.isAbsolute(pattern)
          ? file.split(path.sep).join('/')
          : path.relative(cwd, file).split(path.sep).join('/');
        if (matcher.test(relative)) add(path.isAbsolute(pattern) ? file : relative);
      }
    } else {
      const full = path.resolve(cwd, pattern);
      let stats;
      try {
        stats = statSync(full);
      } catch {
        unmatched.push(pattern);
        continue;
      }
      if (stats.isDirectory()) {
        const found: string[] = [];
        walk(full, found);
        for (const file of found) {
          add(path.isAbsolute(pattern) ? file : path.relative(cwd, file));
        }
      } else {
        add(pattern);
      }
    }
    if (files.length === before && !unmatched.includes(pattern)) unmatched.push(pattern);
  }
  return { files, unmatched };
}
