#!/usr/bin/env node
/**
 * The `dma-attrs` command: dispatches to its subcommands.
 *
 * @module
 */
import process from 'node:process';

const USAGE = `usage: dma-attrs <command> [options]

commands:
  migrate [paths...]   migrate code from dma-attrs/legacy to the attributes API
  --help               show this help
`;

/** Runs the command line and resolves to the exit code. */
async function main(argv: readonly string[]): Promise<number> {
  const [command] = argv;
  if (command === '--help' || command === '-h') {
    process.stdout.write(USAGE);
    return 0;
  }
  process.stderr.write(
    command === undefined
      ? USAGE
      : `dma-attrs: unknown command ${JSON.stringify(command)}\n${USAGE}`,
  );
  return 2;
}

process.exitCode = await main(process.argv.slice(2));
