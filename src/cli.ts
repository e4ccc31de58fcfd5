#!/usr/bin/env node
/**
 * The `dma-attrs` command: dispatches subcommands.
 *
 * @module
 */
import { runMigrate } from './codemod/cli.js';
import { runLitmus } from './litmus/run.js';

const USAGE = `Usage: dma-attrs <command> [options]

Commands:
  migrate   rewrite uses of dma-attrs/legacy into the attributes API (see: dma-attrs migrate --help)
  litmus    run the SB/MP/LB litmus tests on worker threads (see: dma-attrs litmus --help)
`;

/** Subcommands: each takes the arguments after its name and resolves to an exit status. */
const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = {
  migrate: (argv) =>
    runMigrate(argv, {
      stdout: (text) => process.stdout.write(text),
      stderr: (text) => process.stderr.write(text),
      cwd: process.cwd(),
    }),
  litmus: (argv) =>
    runLitmus(argv, {
      stdout: (text) => process.stdout.write(text),
      stderr: (text) => process.stderr.write(text),
    }),
  // `bench` is added here by its own module.
};

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === '--help' || command === '-h') {
    process.stdout.write(USAGE);
    return 0;
  }
  const run = command === undefined ? undefined : COMMANDS[command];
  if (run === undefined) {
    process.stderr.write(
      command === undefined ? USAGE : `dma-attrs: unknown command ${command}\n\n${USAGE}`,
    );
    return 2;
  }
  return run(rest);
}

main(process.argv.slice(2)).then(
  (status) => {
    process.exitCode = status;
  },
  (error: unknown) => {
    process.stderr.write(`dma-attrs: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  },
);
