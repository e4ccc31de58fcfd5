/**
 * `dma-attrs migrate --dry-run` prints a diff that `git apply` takes: applied to a repository,
 * it leaves exactly the files that `migrate` itself writes.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runMigrate, unifiedDiff } from '../src/codemod/index.js';

const CALLS = Array.from({ length: 12 }, (_, index) => `  const v${index} = ${index};`).join('\n');

/** The repository: hunks far apart, no final newline, CRLF, a space in a name, a nested folder. */
const FILES: Record<string, string> = {
  'src/device.ts': `import { dmaMemoryRead, dmaMemoryWrite, DMADirection } from 'dma-attrs/legacy';

export function run(dma, buf) {
  dmaMemoryRead(dma, 0x10, buf, 4);
${CALLS}
  dmaMemoryWrite(dma, 0x20, buf, buf.length);
  return DMADirection.FROM_DEVICE;
}
`,
  'src/no newline.mjs': `import { dmaMemoryRead } from 'dma-attrs/legacy';\ndmaMemoryRead(dma, 0, buf, 4);`,
  'src/crlf.js':
    "import { dmaMemoryRw, DMADirection } from 'dma-attrs/legacy';\r\n\r\ndmaMemoryRw(dma, 0, buf, 4, DMADirection.TO_DEVICE);\r\n",
  'src/deep/queue.ts': `import { dmaMemorySet } from 'dma-attrs/legacy';\ndmaMemorySet(dma, 0, 0, 16);\n`,
  'src/plain.ts': 'export const answer = 42;\n',
};

let repository: string;
let copy: string;

function git(cwd: string, args: string[], input?: string): string {
  return execFileSync('git', args, {
    cwd,
    encoding: 'utf8',
    ...(input === undefined ? {} : { input }),
  });
}

async function migrate(
  cwd: string,
  ...argv: string[]
): Promise<{ status: number; stdout: string }> {
  let stdout = '';
  const status = await runMigrate(argv, {
    stdout: (text) => (stdout += text),
    stderr: () => undefined,
    cwd,
  });
  return { status, stdout };
}

function read(base: string): Record<string, string> {
  return Object.fromEntries(
    Object.keys(FILES).map((file) => [file, readFileSync(path.join(base, file), 'utf8')]),
  );
}

beforeEach(() => {
  repository = mkdtempSync(path.join(tmpdir(), 'dma-attrs-diff-'));
  for (const [file, text] of Object.entries(FILES)) {
    mkdirSync(path.dirname(path.join(repository, file)), { recursive: true });
    writeFileSync(path.join(repository, file), text);
  }
  git(repository, ['init', '-q']);
  copy = mkdtempSync(path.join(tmpdir(), 'dma-attrs-diff-copy-'));
  cpSync(repository, copy, { recursive: true });
});
afterEach(() => {
  rmSync(repository, { recursive: true, force: true });
  rmSync(copy, { recursive: true, force: true });
});

describe('migrate --dry-run', () => {
  it('prints a patch that git apply takes, giving what migrate writes', async () => {
    const dryRun = await migrate(repository, 'src', '--dry-run');
    expect(dryRun.status).toBe(0);
    expect(read(repository)).toEqual(FILES);
    // Four files change, src/device.ts in two hunks.
    expect(dryRun.stdout.match(/^\+\+\+ b\//gm)).toHaveLength(4);
    expect(dryRun.stdout).toContain('+++ b/src/no newline.mjs\n');
    expect(dryRun.stdout).toContain('\\ No newline at end of file\n');
    const start = dryRun.stdout.indexOf('--- a/src/device.ts\n');
    const device = dryRun.stdout.slice(start, dryRun.stdout.indexOf('--- a/', start + 1));
    expect(device.match(/^@@ /gm)).toHaveLength(2);

    git(repository, ['apply', '--check'], dryRun.stdout);
    git(repository, ['apply'], dryRun.stdout);

    expect((await migrate(copy, 'src')).status).toBe(0);
    const migrated = read(copy);
    expect(migrated['src/device.ts']).not.toBe(FILES['src/device.ts']);
    expect(migrated['src/crlf.js']).toContain('\r\n');
    expect(read(repository)).toEqual(migrated);
    // Applied, the tree is migrated: a second dry run prints nothing.
    expect((await migrate(repository, 'src', '--dry-run')).stdout).toBe('');
  });
});

describe('unifiedDiff', () => {
  it('marks a text that does not end with a line break, on each side', () => {
    expect(unifiedDiff('a\nb', 'a\nc', 'f.ts')).toBe(
      '--- a/f.ts\n+++ b/f.ts\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+c\n\\ No newline at end of file\n',
    );
    expect(unifiedDiff('a\n', 'a\nb', 'f.ts')).toBe(
      '--- a/f.ts\n+++ b/f.ts\n@@ -1,1 +1,2 @@\n a\n+b\n\\ No newline at end of file\n',
    );
  });
});
