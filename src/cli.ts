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
  bench     measure the accessors against hand-written code, check the budgets (see: dma-attrs bench --help)
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
  bench: runBench,
};

/** What bench/index.mjs exports; it ships beside dist/ and needs the optional peer `mitata`. */
interface BenchModule {
  runBench: (
    argv: string[],
    io: { stdout: (text: string) => void; stderr: (text: string) => void; cwd: string },
  ) => Promise<number>;
}

/**
 * `dma-attrs bench`: the benchmark is plain JavaScript outside the bundle, loaded only when
 * asked for, so that the other commands never load it (nor mitata).
 */
async function runBench(argv: string[]): Promise<number> {
  const entry = new URL('../bench/index.mjs', import.meta.url);
  const bench = (await import(entry.href)) as BenchModule;
  return bench.runBench(argv, {
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
    cwd: process.cwd(),
  });
}

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
