/**
 * The built `dma-attrs` command run as a user runs it: `node dist/cli.js …` in a child
 * process, with its exit status and both streams. `npm test` builds dist/ before vitest.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** dist/cli.js, the package's `bin`. */
export const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

/** What one run of the command gave. */
export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `node [nodeArgs] dist/cli.js [args]` in `cwd` (this process's by default). */
export function spawnCli(
  args: readonly string[],
  options: { nodeArgs?: readonly string[]; cwd?: string } = {},
): Promise<CliRun> {
  const { nodeArgs = [], cwd } = options;
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [...nodeArgs, CLI, ...args],
      cwd === undefined ? {} : { cwd },
      (error, stdout, stderr) => {
        resolve({ code: error === null ? 0 : (error.code as number), stdout, stderr });
      },
    );
  });
}
