import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createProgress, type ProgressStream } from '../src/codemod/cli.js';
import { migrateFiles, runMigrate, unifiedDiff } from '../src/codemod/index.js';

const LEGACY = `import { dmaMemoryRead, DMADirection } from 'dma-attrs/legacy';

export function run(dma, buf) {
  dmaMemoryRead(dma, 0x10, buf, 4);
  return DMADirection.TO_DEVICE;
}
`;
const MIGRATED = `import { DMAAttributes } from 'dma-attrs';

export function run(dma, buf) {
  dma.read(0x10, buf.subarray(0, 4));
  return DMAAttributes.READ;
}
`;
const PLAIN = 'export const answer = 42;\n';
const BROKEN = "import { dmaMemoryRead } from 'dma-attrs/legacy';\ndmaMemoryRead(dma, 0, buf, 4;\n";

let cwd: string;

function tree(files: Record<string, string>): void {
  for (const [file, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(cwd, file)), { recursive: true });
    writeFileSync(path.join(cwd, file), text);
  }
}

function read(file: string): string {
  return readFileSync(path.join(cwd, file), 'utf8');
}

async function cli(...argv: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const status = await runMigrate(argv, {
    stdout: (text) => (stdout += text),
    stderr: (text) => (stderr += text),
    cwd,
  });
  return { status, stdout, stderr };
}

/** A terminal stand-in that records what is written to it. */
function terminal(isTTY = true): ProgressStream & { writes: string[] } {
  const writes: string[] = [];
  return {
    isTTY,
    writes,
    write: (text: string) => writes.push(text),
  };
}

beforeEach(() => {
  cwd = mkdtempSync(path.join(tmpdir(), 'dma-attrs-migrate-'));
  tree({
    'src/device.mjs': LEGACY,
    'src/util.ts': PLAIN,
    'src/deep/more/queue.js': LEGACY,
    'node_modules/dep/index.js': LEGACY,
    'dist/device.js': LEGACY,
  });
});
afterEach(() => {
  rmSync(cwd, { recursive: true, force: true });
});

describe('dma-attrs migrate', () => {
  it('rewrites files in place, skips node_modules and dist, and prints a summary', async () => {
    const { status, stderr } = await cli('.');
    expect(status).toBe(0);
    expect(read('src/device.mjs')).toBe(MIGRATED);
    expect(read('src/deep/more/queue.js')).toBe(MIGRATED);
    expect(read('src/util.ts')).toBe(PLAIN);
    expect(read('node_modules/dep/index.js')).toBe(LEGACY);
    expect(read('dist/device.js')).toBe(LEGACY);
    expect(stderr).toMatch(
      /migrate: 3 files scanned, 2 changed, 4 sites rewritten, 0 for review, 2 barriers weakened\n$/,
    );
    expect(stderr).toContain('src/device.mjs:4:3: barrier weakened from full to acquire');
    expect((await cli('.')).stderr).toMatch(/3 files scanned, 0 changed, 0 sites rewritten/);
  });

  it('--check writes nothing and exits 1 when a file would change, 0 when none would', async () => {
    const first = await cli('src', '--check');
    expect(first.status).toBe(1);
    expect(read('src/device.mjs')).toBe(LEGACY);
    await cli('src');
    expect((await cli('src', '--check')).status).toBe(0);
  });

  it('--dry-run prints a unified diff and writes nothing', async () => {
    const { status, stdout } = await cli('src/device.mjs', '--dry-run');
    expect(status).toBe(0);
    expect(read('src/device.mjs')).toBe(LEGACY);
    expect(stdout).toBe(`--- a/src/device.mjs
+++ b/src/device.mjs
@@ -1,6 +1,6 @@
-import { dmaMemoryRead, DMADirection } from 'dma-attrs/legacy';
+import { DMAAttributes } from 'dma-attrs';
 
 export function run(dma, buf) {
-  dmaMemoryRead(dma, 0x10, buf, 4);
-  return DMADirection.TO_DEVICE;
+  dma.read(0x10, buf.subarray(0, 4));
+  return DMAAttributes.READ;
 }
`);
  });

  it('--print prints each migrated file and writes nothing', async () => {
    const { stdout } = await cli('src/device.mjs', '--print');
    expect(stdout).toBe(MIGRATED);
    expect(read('src/device.mjs')).toBe(LEGACY);
  });

  it('--json prints the report object', async () => {
    const { status, stdout, stderr } = await cli('src', '--json', '--dry-run');
    expect(status).toBe(0);
    expect(stderr).toBe('');
    const report = JSON.parse(stdout) as Record<string, unknown>;
    expect(Object.keys(report).sort()).toEqual(
      [
        'errors',
        'filesChanged',
        'filesScanned',
        'review',
        'rewritten',
        'strengthened',
        'weakened',
      ].sort(),
    );
    expect(report).toMatchObject({ filesScanned: 3, filesChanged: 2, rewritten: 4, errors: [] });
    expect(report.weakened).toContainEqual({
      file: path.join('src', 'deep', 'more', 'queue.js'),
      line: 4,
      column: 3,
      from: 'full',
      to: 'acquire',
    });
  });

  it('names a file that does not parse, leaves it untouched, and exits 1', async () => {
    tree({ 'src/broken.ts': BROKEN });
    const { status, stderr } = await cli('src');
    expect(status).toBe(1);
    expect(read('src/broken.ts')).toBe(BROKEN);
    expect(read('src/device.mjs')).toBe(MIGRATED);
    expect(stderr).toMatch(/src[/\\]broken\.ts: error: does not parse: 2:/);
  });

  it('expands globs with *, **, ? and {a,b}', async () => {
    const { stderr } = await cli('src/**/*.js', '--check');
    expect(stderr).toMatch(/1 file scanned, 1 changed/);
    expect((await cli('src/devic?.mjs', '--check')).stderr).toMatch(/1 file scanned, 1 changed/);
    expect((await cli('**/*.mjs', '--check')).stderr).toMatch(/1 file scanned/);
    expect((await cli('src/*.js', '--check')).status).toBe(1); // `*` does not cross `/`
    expect((await cli('src/{util.ts,deep/**/*.js}', '--check')).stderr).toMatch(
      /2 files scanned, 1 changed/,
    );
  });

  it('skips what .gitignore excludes unless --no-gitignore, and takes explicit files', async () => {
    tree({ '.gitignore': 'deep/\n' });
    expect((await cli('src', '--check')).stderr).toMatch(/2 files scanned, 1 changed/);
    expect((await cli('src', '--check', '--no-gitignore')).stderr).toMatch(
      /3 files scanned, 2 changed/,
    );
    expect((await cli('src/deep/more/queue.js', '--check')).stderr).toMatch(
      /1 file scanned, 1 changed/,
    );
    const leftOut = await cli(
      'src',
      '--check',
      '--ignore-pattern',
      '*.mjs',
      '--ignore-pattern=util.ts',
    );
    expect(leftOut.status).toBe(1);
    expect(leftOut.stderr).toContain('src: error: all 3 source files it matches are ignored');
  });

  it('exits 2 on bad usage: an unknown option, no paths', async () => {
    const unknown = await cli('src', '--frobnicate');
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toMatch(/unknown option --frobnicate/);
    expect((await cli()).status).toBe(2);
    expect((await cli('--dry-run')).status).toBe(2);
    expect((await cli('--help')).status).toBe(0);
  });

  it('exits 1 for a path that matches nothing', async () => {
    const { status, stderr } = await cli('missing');
    expect(status).toBe(1);
    expect(stderr).toMatch(/missing: error: no such file/);
  });

  it('--flags and --preserve-full-barriers reach the transform', async () => {
    tree({
      'a.ts':
        "import { dmaMemoryRw, DMADirection } from 'dma-attrs/legacy';\ndmaMemoryRw(dma, 0, buf, 4, DMADirection.FROM_DEVICE);\n",
    });
    const { stdout } = await cli('a.ts', '--print', '--flags', '--preserve-full-barriers');
    expect(stdout).toBe(
      "dma.barrier('full'); dma.rw(0, buf.subarray(0, 4), { write: true, relaxed: true });\n",
    );
  });

  it('migrateFiles returns the aggregate report', () => {
    const report = migrateFiles(['src'], { cwd, write: false });
    expect(report.filesScanned).toBe(3);
    expect(report.filesChanged).toBe(2);
    expect(report.weakened).toHaveLength(2);
    expect(read('src/device.mjs')).toBe(LEGACY);
  });
});

describe('unifiedDiff', () => {
  it('is empty for equal texts and has separate hunks for distant changes', () => {
    expect(unifiedDiff('a\n', 'a\n', 'f')).toBe('');
    const before = Array.from({ length: 20 }, (_, i) => `line ${i}`).join('\n') + '\n';
    const after = before.replace('line 2\n', 'LINE 2\n').replace('line 17\n', 'LINE 17\n');
    const diff = unifiedDiff(before, after, 'f');
    expect(diff.match(/^@@/gm)).toHaveLength(2);
    expect(diff).toContain('@@ -1,6 +1,6 @@\n line 0\n line 1\n-line 2\n+LINE 2\n');
    expect(diff).toContain('@@ -15,6 +15,6 @@\n');
  });
});

describe('the progress line', () => {
  it('draws files done / total on a terminal, the first and last time and then every 100 ms', () => {
    const still = terminal();
    const progress = createProgress(still, 'migrate', () => 0);
    for (let done = 0; done <= 3; done++) progress.update(done, 3);
    progress.clear();
    progress.clear();
    expect(still.writes).toEqual(['\rmigrate: 0/3 files', '\rmigrate: 3/3 files', '\r\x1b[K']);

    const moving = terminal();
    let time = 0;
    const ticking = createProgress(moving, 'migrate', () => (time += 100));
    for (let done = 0; done <= 3; done++) ticking.update(done, 3);
    expect(moving.writes).toEqual([0, 1, 2, 3].map((done) => `\rmigrate: ${done}/3 files`));
  });

  it('draws nothing on a stream that is not a terminal', () => {
    const piped = terminal(false);
    const progress = createProgress(piped);
    progress.update(0, 1);
    progress.update(1, 1);
    progress.clear();
    expect(piped.writes).toEqual([]);
  });

  it('runs through migrate on a terminal, is erased before diffs and at the end, and is off under --json', async () => {
    const log: string[] = [];
    const tty: ProgressStream = { isTTY: true, write: (text: string) => log.push(`tty:${text}`) };
    const io = { stdout: (text: string) => log.push(`out:${text}`), stderr: () => undefined, cwd };
    expect(await runMigrate(['src', '--dry-run'], { ...io, progress: tty })).toBe(0);
    expect(log[0]).toBe('tty:\rmigrate: 0/3 files');
    expect(log).toContain('tty:\rmigrate: 3/3 files');
    expect(log.at(-1)).toBe('tty:\r\x1b[K');
    // Whatever goes to standard output starts on a clean line.
    log.forEach((entry, index) => {
      if (!entry.startsWith('out:')) return;
      const drawn = log.slice(0, index).filter((earlier) => earlier.startsWith('tty:'));
      expect(drawn.at(-1)).toBe('tty:\r\x1b[K');
    });
    expect(log.filter((entry) => entry.startsWith('out:'))).toHaveLength(2);

    log.length = 0;
    expect(await runMigrate(['src', '--json'], { ...io, progress: tty })).toBe(0);
    expect(log.filter((entry) => entry.startsWith('tty:'))).toEqual([]);
  });
});
