/**
 * The example in examples/ runs as a user would run it: `node` on the file, importing the
 * built package by its own name.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runNode(script: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [script],
      { cwd: root, timeout: 20_000 },
      (_error, stdout, stderr) => {
        resolve({ code: child.exitCode, stdout, stderr });
      },
    );
  });
}

describe('examples/descriptor-completion.mjs', () => {
  it('completes the request, prints the check and exits 0', async () => {
    const { code, stdout, stderr } = await runNode('examples/descriptor-completion.mjs');
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout).toMatch(/^device: payload "hello from the guest", checksum 0x[0-9a-f]+$/m);
    expect(stdout).toMatch(
      /^guest: request 7 completed: status OK, checksum 0x[0-9a-f]+ matches$/m,
    );
  }, 30_000);
});
