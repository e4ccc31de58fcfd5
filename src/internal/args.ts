/**
 * The command lines of `dma-attrs` and its subcommands: one option table per command, from
 * which both the parser (over `node:util` `parseArgs`) and the `--help` text are made. Node
 * only: the CLI entries import it, no browser entry does. Built on its own as dist/args.js
 * (in no `exports`) for bench/index.mjs, which ships beside dist/.
 *
 * @module
 */
import { parseArgs } from 'node:util';
import { DMAError } from '../errors.js';

/**
 * One option of a command: a row of the table that both `parseArgs` and `--help` are made from.
 *
 * @internal
 */
export interface CommandOption {
  /** The long name, without `--`. */
  readonly name: string;
  /** A one-letter alias, without `-`. */
  readonly short?: string;
  /** The value's name in the help (`pattern` prints `<pattern>`): set for options that take one. */
  readonly value?: string;
  /** The only values the option accepts; any other is a usage error that lists these. */
  readonly choices?: readonly string[];
  /** Whether the option may be repeated, its values collected in order. */
  readonly multiple?: boolean;
  /** The help line. */
  readonly description: string;
}

/**
 * A command's usage: its name, synopsis, options and the text around them.
 *
 * @internal
 */
export interface CommandSpec {
  /** What messages start with: `dma-attrs migrate`. */
  readonly name: string;
  /** What follows the name in the `Usage:` line. */
  readonly synopsis: string;
  /** Paragraphs between the `Usage:` line and the options, each line ending with `\n`. */
  readonly description: string;
  /** The options; one named `help` makes `--help` win over any usage error. */
  readonly options: readonly CommandOption[];
  /** The closing paragraph (the exit statuses), ending with `\n`. */
  readonly footer: string;
}

/**
 * A parsed command line.
 *
 * @internal
 */
export interface CommandLine {
  /** The arguments that are not options, in order (all of them after `--`). */
  readonly positionals: readonly string[];
  /** The long names of the boolean options given, in the order each was last given. */
  readonly flags: ReadonlySet<string>;
  /** The values of the options that take one, by long name, in order. */
  readonly values: ReadonlyMap<string, readonly string[]>;
}

/**
 * The `--help` text of a command, its option table aligned in two columns.
 *
 * @param spec - the command.
 * @returns the text, ending with a line break.
 * @internal
 */
export function helpText(spec: CommandSpec): string {
  const rows = spec.options.map((option) => {
    const long = `--${option.name}${option.value === undefined ? '' : ` <${option.value}>`}`;
    return [option.short === undefined ? long : `-${option.short}, ${long}`, option.description];
  });
  const width = Math.max(...rows.map(([left]) => (left as string).length)) + 2;
  const table = rows
    .map(([left, description]) => `  ${(left as string).padEnd(width)}${description as string}\n`)
    .join('');
  return `Usage: ${spec.name} ${spec.synopsis}\n\n${spec.description}\nOptions:\n${table}\n${spec.footer}`;
}

/**
 * A usage error of a command: what `parseCommandLine` throws, for the checks a command makes
 * after it (a number out of range, an argument the command takes none of).
 *
 * @param spec - the command, whose name starts the message.
 * @param message - what was wrong, naming the bad value.
 * @returns a `DMAError` with code `ERR_DMA_INVALID_ARGUMENT`.
 * @internal
 */
export function usageError(spec: CommandSpec, message: string): DMAError {
  return new DMAError('ERR_DMA_INVALID_ARGUMENT', `${spec.name}: ${message}`);
}

/** `a, b or c`. */
function alternatives(choices: readonly string[]): string {
  return choices.length < 2
    ? choices.join('')
    : `${choices.slice(0, -1).join(', ')} or ${choices[choices.length - 1] as string}`;
}

/**
 * Parses a command line against an option table with `node:util` `parseArgs`, naming the
 * offending option in every error: an unknown option, a value given to an option that takes
 * none, a missing value (also when the next argument is itself an option: write
 * `--name=-value` for a value that starts with `-`), a value outside the option's `choices`.
 * `--` ends the options.
 *
 * @param spec - the command and its options.
 * @param argv - the arguments.
 * @param stopAtPositional - end the options at the first positional too, which starts the
 * positionals with everything after it as it is (a subcommand and its own arguments).
 * @returns the positionals, flags and values; only `help` when a `help` option was given.
 * @throws DMAError `ERR_DMA_INVALID_ARGUMENT` on bad usage.
 * @internal
 */
export function parseCommandLine(
  spec: CommandSpec,
  argv: readonly string[],
  stopAtPositional = false,
): CommandLine {
  const known = new Map(spec.options.map((option) => [option.name, option]));
  const { tokens } = parseArgs({
    args: [...argv],
    options: Object.fromEntries(
      spec.options.map((option) => [
        option.name,
        {
          type: option.value === undefined ? ('boolean' as const) : ('string' as const),
          ...(option.short === undefined ? {} : { short: option.short }),
          ...(option.multiple === true ? { multiple: true } : {}),
        },
      ]),
    ),
    allowPositionals: true,
    strict: false,
    tokens: true,
  });
  const positionals: string[] = [];
  const flags = new Set<string>();
  const values = new Map<string, string[]>();
  let end = tokens.length;
  if (stopAtPositional) {
    const first = tokens.findIndex((token) => token.kind === 'positional');
    if (first >= 0) {
      end = first;
      positionals.push(...argv.slice((tokens[first] as { index: number }).index));
    }
  }
  const options = tokens.slice(0, end);
  if (known.has('help') && options.some((t) => t.kind === 'option' && t.name === 'help')) {
    return { positionals: [], flags: new Set(['help']), values };
  }
  const usage = (message: string): DMAError => usageError(spec, message);
  for (const token of options) {
    if (token.kind === 'positional') {
      positionals.push(token.value);
      continue;
    }
    if (token.kind === 'option-terminator') continue;
    const option = known.get(token.name);
    if (option === undefined) throw usage(`unknown option ${token.rawName}`);
    if (option.value === undefined) {
      if (token.value !== undefined) {
        throw usage(
          `option ${token.rawName} takes no value; received ${JSON.stringify(token.value)}`,
        );
      }
      // Re-added, so that the set lists each flag where it was last given (the last of
      // `--codemod` and `--no-codemod` wins in `dma-attrs bench`).
      flags.delete(option.name);
      flags.add(option.name);
      continue;
    }
    const value = token.value;
    if (value === undefined || (!token.inlineValue && value.startsWith('-') && value !== '-')) {
      throw usage(
        value === undefined
          ? `option ${token.rawName} needs a value <${option.value}>`
          : `option ${token.rawName} needs a value <${option.value}>; received the option ${value} (write --${option.name}=${value} for a value that starts with -)`,
      );
    }
    if (option.choices !== undefined && !option.choices.includes(value)) {
      throw usage(
        `option ${token.rawName} must be ${alternatives(option.choices)}; received ${JSON.stringify(value)}`,
      );
    }
    const list = values.get(option.name) ?? [];
    if (option.multiple === true) list.push(value);
    else list.splice(0, list.length, value);
    values.set(option.name, list);
  }
  return { positionals, flags, values };
}
