/**
 * File discovery for `dma-attrs migrate`: tinyglobby for directories and globs, `ignore` for
 * `.gitignore` files, checked against git's own answer (`git ls-files --others
 * --exclude-standard`) on a tree with root, nested, negated, anchored and directory rules.
 * The trees are written to temporary folders, so that this repository's git ignores none of it.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { expandPaths } from '../src/codemod/glob.js';
import { migrateFiles } from '../src/codemod/index.js';

const LEGACY =
  "import { dmaMemoryRead } from 'dma-attrs/legacy';\ndmaMemoryRead(dma, 0, buf, 4);\n";

/** Ignore rules of every kind git has, and files each rule keeps or drops. */
const TREE: Record<string, string> = {
  '.gitignore': [
    '# a comment, and a blank line',
    '',
    '*.gen.ts',
    '!keep.gen.ts',
    '/build',
    'coverage/',
    'logs/**/*.js',
    'ignored-dir/',
    '\\#hash.ts',
  ].join('\n'),
  'src/a.ts': '',
  'src/x.gen.ts': '',
  'src/keep.gen.ts': '',
  'src/secret.ts': '',
  'src/#hash.ts': '',
  'src/build/c.ts': '', // `/build` is anchored to the root
  'build/b.ts': '',
  'coverage/d.ts': '',
  'src/coverage/e.ts': '', // `coverage/` is not anchored
  'logs/a/b/f.js': '',
  'logs/g.ts': '',
  'ignored-dir/.gitignore': '!*\n', // cannot re-include below an ignored folder
  'ignored-dir/h.ts': '',
  'pkg/.gitignore': 'local.ts\n!*.gen.ts\n/only-here.ts\n',
  'pkg/local.ts': '',
  'pkg/sub/local.ts': '',
  'pkg/only-here.ts': '',
  'pkg/sub/only-here.ts': '',
  'pkg/y.gen.ts': '', // re-included by the deeper file
  'pkg/vendor/.gitignore': '*\n!.gitignore\n',
  'pkg/vendor/v.ts': '',
  'pkg/types.d.ts': '',
  'pkg/readme.md': '',
  'node_modules/m/i.ts': '',
  'dist/j.ts': '',
};

let root: string;

function write(base: string, files: Record<string, string>): void {
  for (const [file, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(base, file)), { recursive: true });
    writeFileSync(path.join(base, file), text);
  }
}

function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', args, { cwd, encoding: 'utf8' });
}

/** What git leaves untracked and not ignored, limited to what the codemod reads. */
function gitVisibleSources(cwd: string): string[] {
  return git(cwd, 'ls-files', '--others', '--exclude-standard')
    .split('\n')
    .filter((file) => /\.(ts|js)$/.test(file) && !file.endsWith('.d.ts'))
    .filter((file) => !/(^|\/)(node_modules|dist)\//.test(file))
    .sort();
}

function expanded(patterns: string[], cwd: string, gitignore = true): string[] {
  const { files } = expandPaths(patterns, cwd, { gitignore });
  return files.map((file) => file.split(path.sep).join('/')).sort();
}

beforeEach(() => {
  root = mkdtempSync(path.join(tmpdir(), 'dma-attrs-glob-'));
  write(root, TREE);
});
afterEach(() => {
  rmSync(root, { recursive: true, force: true });
});

describe('expandPaths with .gitignore', () => {
  it('keeps exactly the files git does not ignore, in a repository', () => {
    git(root, 'init', '-q');
    writeFileSync(path.join(root, '.git/info/exclude'), 'secret.ts\n');
    const visible = gitVisibleSources(root);
    // The tree exercises both sides of every rule.
    expect(visible).toContain('src/keep.gen.ts');
    expect(visible).toContain('pkg/y.gen.ts');
    expect(visible).not.toContain('src/secret.ts');
    expect(visible).not.toContain('ignored-dir/h.ts');
    expect(expanded(['.'], root)).toEqual(visible);
    // From a subfolder, the repository root's rules still apply, as in git.
    const pkg = path.join(root, 'pkg');
    expect(expanded(['.'], pkg)).toEqual(gitVisibleSources(pkg));
    expect(expanded(['**/*.ts'], pkg)).toEqual(gitVisibleSources(pkg));
  });

  it("honours the working directory's .gitignore outside a repository", () => {
    const files = expanded(['.'], root);
    expect(files).toContain('src/a.ts');
    expect(files).toContain('pkg/y.gen.ts');
    expect(files).not.toContain('src/x.gen.ts');
    expect(files).not.toContain('coverage/d.ts');
    expect(files).not.toContain('pkg/vendor/v.ts');
  });

  it('with gitignore off, still skips node_modules, dist and declaration files', () => {
    const files = expanded(['.'], root, false);
    expect(files).toContain('src/x.gen.ts');
    expect(files).toContain('ignored-dir/h.ts');
    expect(files).toContain('pkg/vendor/v.ts');
    expect(files.filter((file) => /node_modules|dist|\.d\.ts|\.md$/.test(file))).toEqual([]);
    expect(files).toHaveLength(
      Object.keys(TREE).filter(
        (file) => /\.(ts|js)$/.test(file) && !/node_modules|dist|\.d\.ts/.test(file),
      ).length,
    );
  });

  it('takes an explicit file whatever ignores it, and names a folder whose files are all ignored', () => {
    expect(expandPaths(['src/x.gen.ts', 'pkg/readme.md'], root).files).toEqual([
      'src/x.gen.ts',
      'pkg/readme.md',
    ]);
    const { files, unmatched } = expandPaths(['coverage', 'src/*.gen.ts', 'nowhere'], root);
    expect(files).toEqual([path.join('src', 'keep.gen.ts')]);
    expect(unmatched).toEqual([
      { pattern: 'coverage', ignored: 1 },
      { pattern: 'nowhere', ignored: 0 },
    ]);
  });

  it('applies ignorePatterns in .gitignore syntax relative to cwd, with or without gitignore', () => {
    const patterns = { ignorePatterns: ['pkg/', '*.js'] };
    const on = expandPaths(['.'], root, patterns).files.map((f) => f.split(path.sep).join('/'));
    expect(on.some((file) => file.startsWith('pkg/'))).toBe(false);
    expect(on).toContain('src/a.ts');
    const off = expandPaths(['.'], root, { ...patterns, gitignore: false }).files;
    expect(off.map((f) => f.split(path.sep).join('/'))).toContain('src/x.gen.ts');
    expect(off.some((file) => file.endsWith('.js'))).toBe(false);
  });

  it('expands globs from their static base: dist is entered when the glob starts in it', () => {
    expect(expanded(['dist/**/*.ts'], root)).toEqual(['dist/j.ts']);
    expect(expanded(['src/{a,keep.gen}.ts'], root)).toEqual(['src/a.ts', 'src/keep.gen.ts']);
    expect(expanded([path.join(root, 'pkg/**/only-*.ts')], root)).toEqual([
      path.join(root, 'pkg/sub/only-here.ts').split(path.sep).join('/'),
    ]);
  });
});

describe('migrateFiles and migrate --no-gitignore', () => {
  it('migrates what .gitignore leaves, and everything with gitignore off', () => {
    write(root, { 'src/a.ts': LEGACY, 'src/x.gen.ts': LEGACY });
    const report = migrateFiles(['src'], { cwd: root, write: false });
    expect(report.filesChanged).toBe(1);
    expect(migrateFiles(['src'], { cwd: root, write: false, gitignore: false }).filesChanged).toBe(
      2,
    );
    const ignoredOnly = migrateFiles(['coverage'], { cwd: root, write: false });
    expect(ignoredOnly.errors).toEqual([
      {
        file: 'coverage',
        message:
          "the one source file it matches is ignored by .gitignore or --ignore-pattern (--no-gitignore takes .gitignore'd files)",
      },
    ]);
  });
});
