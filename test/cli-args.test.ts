/**
 * Argument parsing of `dma-attrs` and `dma-attrs migrate` (`node:util` `parseArgs` behind one
 * option table per command, src/internal/args.ts; `litmus` and `bench` are in their own files): unknown options, missing values, `--`, and `--help` made from the
 * same table. The top-level command and the progress line run as users run them, from
 * dist/cli.js (`npm test` builds before vitest runs).
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runMigrate } from '../src/codemod/index.js';
import { DMAError } from '../src/errors.js';
import { helpText, parseCommandLine, type CommandSpec } from '../src/internal/args.js';
import { CLI, spawnCli as spawnBuiltCli, type CliRun } from './support/cli.js';

const MANIFEST = fileURLToPath(new URL('../package.json', import.meta.url));
const LEGACY =
  "import { dmaMemoryRead } from 'dma-attrs/legacy';\ndmaMemoryRead(dma, 0, buf, 4);\n";

const SPEC: CommandSpec = {
  name: 'tool',
  synopsis: '[options] <file…>',
  description: 'Does things.\n',
  options: [
    { name: 'json', description: 'print JSON' },
    { name: 'out', short: 'o', value: 'file', description: 'write there' },
    { name: 'skip', value: 'pattern', multiple: true, description: 'skip matches' },
    { name: 'mode', value: 'mode', choices: ['fast', 'slow'], description: 'how' },
    { name: 'help', short: 'h', description: 'show this help' },
  ],
  footer: 'Exit status: 0 ok.\n',
};

let cwd: string;

type Run = CliRun;

/** The built CLI, run in the test's working directory. */
function spawnCli(args: string[], nodeArgs: string[] = []): Promise<Run> {
  return spawnBuiltCli(args, { nodeArgs, cwd });
}

async function migrate(...argv: string[]): Promise<Run> {
  let stdout = '';
  let stderr = '';
  const code = await runMigrate(argv, {
    stdout: (text) => (stdout += text),
    stderr: (text) => (stderr += text),
    cwd,
  });
  return { code, stdout, stderr };
}

function usageError(argv: string[], stopAtPositional = false): string {
  try {
    parseCommandLine(SPEC, argv, stopAtPositional);
  } catch (error) {
    expect(error).toBeInstanceOf(DMAError);
    expect((error as DMAError).code).toBe('ERR_DMA_INVALID_ARGUMENT');
    return (error as DMAError).message;
  }
  throw new Error(`no usage error for ${JSON.stringify(argv)}`);
}

beforeAll(() => {
  cwd = mkdtempSync(path.join(tmpdir(), 'dma-attrs-cli-'));
  mkdirSync(path.join(cwd, 'src'));
  writeFileSync(path.join(cwd, 'src/a.ts'), LEGACY);
  writeFileSync(path.join(cwd, 'src/b.ts'), LEGACY);
  // Makes standard error claim to be a terminal, while the test still reads it from a pipe.
  writeFileSync(
    path.join(cwd, 'tty.mjs'),
    "Object.defineProperty(process.stderr, 'isTTY', { value: true });\n",
  );
});
afterAll(() => {
  rmSync(cwd, { recursive: true, force: true });
});

describe('parseCommandLine', () => {
  it('collects flags, values (inline, separate, short, repeated) and positionals', () => {
    const line = parseCommandLine(SPEC, [
      'a',
      '--json',
      '-o',
      'x.json',
      '--skip=*.gen.ts',
      '--skip',
      'vendor/',
      '--out=y.json',
      'b',
      '-',
    ]);
    expect(line.positionals).toEqual(['a', 'b', '-']);
    expect([...line.flags]).toEqual(['json']);
    expect(line.values.get('skip')).toEqual(['*.gen.ts', 'vendor/']);
    expect(line.values.get('out')).toEqual(['y.json']); // the last one wins
  });

  it('names an unknown option, long or short, and a value given to a flag', () => {
    expect(usageError(['a', '--frobnicate'])).toBe('tool: unknown option --frobnicate');
    expect(usageError(['--frobnicate=1'])).toBe('tool: unknown option --frobnicate');
    expect(usageError(['-jx'])).toBe('tool: unknown option -j');
    expect(usageError(['--json=yes'])).toBe('tool: option --json takes no value; received "yes"');
  });

  it('names an option whose value is missing, or is the next option', () => {
    expect(usageError(['a', '--out'])).toBe('tool: option --out needs a value <file>');
    expect(usageError(['-o'])).toBe('tool: option -o needs a value <file>');
    expect(usageError(['--out', '--json'])).toBe(
      'tool: option --out needs a value <file>; received the option --json (write --out=--json for a value that starts with -)',
    );
    expect(parseCommandLine(SPEC, ['--out=--json']).values.get('out')).toEqual(['--json']);
  });

  it('takes only the listed choices, naming the value and every choice otherwise', () => {
    expect(parseCommandLine(SPEC, ['--mode', 'slow']).values.get('mode')).toEqual(['slow']);
    expect(usageError(['--mode', 'Fast'])).toBe(
      'tool: option --mode must be fast or slow; received "Fast"',
    );
    expect(usageError(['--mode='])).toBe('tool: option --mode must be fast or slow; received ""');
  });

  it('ends the options at --', () => {
    const line = parseCommandLine(SPEC, ['--json', '--', '--out', '-h', '--frobnicate']);
    expect(line.positionals).toEqual(['--out', '-h', '--frobnicate']);
    expect([...line.flags]).toEqual(['json']);
  });

  it('lets --help win over a usage error before --', () => {
    expect([...parseCommandLine(SPEC, ['--frobnicate', '-h', '--out']).flags]).toEqual(['help']);
    expect(usageError(['--frobnicate', '--', '--help'])).toBe('tool: unknown option --frobnicate');
  });

  it('with stopAtPositional, hands everything from the first positional over as it is', () => {
    const line = parseCommandLine(SPEC, ['--json', 'sub', '--frobnicate', '--out'], true);
    expect(line.positionals).toEqual(['sub', '--frobnicate', '--out']);
    expect([...line.flags]).toEqual(['json']);
    expect(parseCommandLine(SPEC, ['--', 'sub', '--help'], true).positionals).toEqual([
      'sub',
      '--help',
    ]);
    expect(usageError(['--frobnicate', 'sub'], true)).toBe('tool: unknown option --frobnicate');
  });

  it('generates the help from the table, one aligned row per option', () => {
    expect(helpText(SPEC)).toBe(`Usage: tool [options] <file…>

Does things.

Options:
  --json            print JSON
  -o, --out <file>  write there
  --skip <pattern>  skip matches
  --mode <mode>     how
  -h, --help        show this help

Exit status: 0 ok.
`);
  });
});

describe('dma-attrs migrate arguments', () => {
  it('accepts every option its --help lists, and its help lists the documented ones', async () => {
    const help = await migrate('--help');
    expect(help.code).toBe(0);
    const listed = [...help.stdout.matchAll(/^ {2}(?:-\w, )?--([\w-]+)( <\w+>)?/gm)].map(
      (match) => ({ name: match[1] as string, takesValue: match[2] !== undefined }),
    );
    // SPEC §9's options, and the ones this CLI adds.
    expect(listed.map((option) => option.name)).toEqual([
      'dry-run',
      'check',
      'print',
      'json',
      'flags',
      'preserve-full-barriers',
      'no-gitignore',
      'ignore-pattern',
      'help',
    ]);
    for (const { name, takesValue } of listed) {
      if (name === 'help') continue;
      const argv = ['src', '--check', `--${name}`, ...(takesValue ? ['nothing-matches'] : [])];
      const run = await migrate(...argv);
      expect(run.stderr, name).not.toContain('Usage:');
      expect(run.code, name).not.toBe(2);
    }
  });

  it('exits 2 naming an unknown option or a missing value; -- makes the rest paths', async () => {
    const unknown = await migrate('src', '--frobnicate');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/^dma-attrs migrate: unknown option --frobnicate\n\nUsage:/);
    const missing = await migrate('src', '--ignore-pattern');
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/^dma-attrs migrate: option --ignore-pattern needs a value/);
    const afterDashes = await migrate('--check', '--', '--help');
    expect(afterDashes.code).toBe(1);
    expect(afterDashes.stderr).toContain('--help: error: no such file');
  });
});

describe('dma-attrs (dist/cli.js)', () => {
  beforeAll(() => {
    if (!existsSync(CLI)) throw new Error('these tests run dist/cli.js: run `npx tsup` first');
  });

  it('parses its own options before the command, and hands the rest to the command', async () => {
    const [help, unknown, none, version, inherited, dashes, nested] = await Promise.all([
      spawnCli(['--help']),
      spawnCli(['--frobnicate', 'migrate']),
      spawnCli([]),
      spawnCli(['--version']),
      spawnCli(['toString']),
      spawnCli(['--', 'migrate', '--help']),
      spawnCli(['migrate', '--frobnicate']),
    ]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: dma-attrs <command> \[options\]\n/);
    expect(help.stdout).toMatch(/^ {2}migrate /m);
    expect(help.stdout).toMatch(/^ {2}-v, --version /m);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/^dma-attrs: unknown option --frobnicate\n/);
    expect(none.code).toBe(2);
    expect(none.stderr).toBe(help.stdout);
    const { version: expected } = JSON.parse(readFileSync(MANIFEST, 'utf8')) as { version: string };
    expect(version).toMatchObject({ code: 0, stdout: `${expected}\n` });
    expect(inherited.code).toBe(2);
    expect(inherited.stderr).toMatch(/^dma-attrs: unknown command toString\n/);
    expect(dashes.code).toBe(0);
    expect(dashes.stdout).toMatch(/^Usage: dma-attrs migrate /);
    expect(nested.code).toBe(2);
    expect(nested.stderr).toMatch(/^dma-attrs migrate: unknown option --frobnicate\n/);
  });

  it('shows progress on a terminal only, and never under --json', async () => {
    const tty = ['--import', pathToFileURL(path.join(cwd, 'tty.mjs')).href];
    const [piped, terminal, json] = await Promise.all([
      spawnCli(['migrate', 'src', '--check']),
      spawnCli(['migrate', 'src', '--check'], tty),
      spawnCli(['migrate', 'src', '--check', '--json'], tty),
    ]);
    expect(piped.code).toBe(1);
    expect(piped.stderr).not.toContain('\r');
    expect(piped.stderr).toMatch(/^src[/\\]a\.ts:2:1: barrier weakened/);
    expect(terminal.code).toBe(1);
    expect(terminal.stderr.startsWith('\rmigrate: 0/2 files')).toBe(true);
    expect(terminal.stderr).toContain('\rmigrate: 2/2 files');
    expect(terminal.stderr.slice(terminal.stderr.lastIndexOf('\x1b[K') + 3)).toBe(piped.stderr);
    expect(json.code).toBe(1);
    expect(json.stderr).toBe('');
    expect(JSON.parse(json.stdout)).toMatchObject({ filesScanned: 2, filesChanged: 2 });
  });
});
