#!/usr/bin/env node
/**
 * The `dma-attrs` command: dispatches subcommands.
 *
 * @module
 */
import { readFileSync } from 'node:fs';
import { runMigrate } from './codemod/cli.js';
import { helpText, parseCommandLine, type CommandLine, type CommandSpec } from './internal/args.js';
import { DMAError } from './errors.js';
import { runLitmus } from './litmus/run.js';

const MAIN: CommandSpec = {
  name: 'dma-attrs',
  synopsis: '<command> [options]',
  description: `Commands:
  migrate   rewrite uses of dma-attrs/legacy into the attributes API (see: dma-attrs migrate --help)
  litmus    run the SB/MP/LB litmus tests on worker threads (see: dma-attrs litmus --help)
  bench     measure the accessors against hand-written code, check the budgets (see: dma-attrs bench --help)
`,
  options: [
    { name: 'version', short: 'v', description: 'print the version' },
    { name: 'help', short: 'h', description: 'show this help' },
  ],
  footer: "Exit status: 2 on bad usage, else the command's.\n",
};

/** Subcommands: each takes the arguments after its name and resolves to an exit status. */
const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = {
  migrate: (argv) =>
    runMigrate(argv, {
      stdout: (text) => process.stdout.write(text),
      stderr: (text) => process.stderr.write(text),
      cwd: process.cwd(),
      progress: process.stderr,
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
  let line: CommandLine;
  try {
    // The first positional is the command: what follows it is the command's to parse.
    line = parseCommandLine(MAIN, argv, true);
  } catch (error) {
    if (!(error instanceof DMAError)) throw error;
    process.stderr.write(`${error.message}\n\n${helpText(MAIN)}`);
    return 2;
  }
  if (line.flags.has('help')) {
    process.stdout.write(helpText(MAIN));
    return 0;
  }
  if (line.flags.has('version')) {
    const manifest = new URL('../package.json', import.meta.url);
    const { version } = JSON.parse(readFileSync(manifest, 'utf8')) as { version: string };
    process.stdout.write(`${version}\n`);
    return 0;
  }
  const [command, ...rest] = line.positionals;
  // Own properties only: `dma-attrs toString` is an unknown command, not Object.prototype's.
  const run =
    command !== undefined && Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
  if (run === undefined) {
    process.stderr.write(
      command === undefined
        ? helpText(MAIN)
        : `dma-attrs: unknown command ${command}\n\n${helpText(MAIN)}`,
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
