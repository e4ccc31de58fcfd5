/**
 * `dma-attrs litmus`: runs the store-buffering, message-passing and load-buffering litmus
 * tests on two worker threads sharing one guest memory, with no barrier, with the library's
 * acquire/release accessors and with `barrier('full')`, and reports how often each pattern's
 * forbidden outcome was observed beside what x86-TSO and the ECMAScript model allow.
 *
 * @module
 */
import { Worker } from 'node:worker_threads';
import { DMAError } from '../errors.js';
import type * as Library from '../index.js';
import {
  helpText,
  parseCommandLine,
  usageError,
  type CommandLine,
  type CommandSpec,
} from '../internal/args.js';
import {
  BARRIERS,
  PATTERNS,
  PATTERN_DESCRIPTIONS,
  POLICIES,
  allowedByModel,
  isPromised,
  type AllowedByModel,
  type LitmusBarrier,
  type LitmusPattern,
  type LitmusPolicy,
  type LitmusWorkerData,
} from './patterns.js';

/** Where the command writes: standard output (the table or JSON) and standard error (progress). */
export interface LitmusIO {
  /** Receives the table or the JSON. */
  stdout(text: string): void;
  /** Receives usage errors and progress. */
  stderr(text: string): void;
}

/** One run of one pattern with one policy and one barrier mode: one row of the table. */
export interface LitmusRunResult {
  /** The pattern. */
  readonly pattern: LitmusPattern;
  /** The guest memory's barrier policy. */
  readonly policy: LitmusPolicy;
  /** How the two accesses of each side were ordered. */
  readonly barrier: LitmusBarrier;
  /** Iterations run. */
  readonly iterations: number;
  /** Iterations that ended in the pattern's forbidden outcome. */
  readonly forbidden: number;
  /** `forbidden` per million iterations. */
  readonly perMillion: number;
  /** Whether x86-TSO and the ECMAScript model allow the forbidden outcome here. */
  readonly allowedByModel: AllowedByModel;
  /** Whether the library promises the forbidden outcome cannot happen here. */
  readonly promised: boolean;
  /** False only for a promised run that observed the forbidden outcome (or did not finish). */
  readonly pass: boolean;
}

const DEFAULT_ITERATIONS = 200_000;
const MAX_ITERATIONS = 10_000_000;
/** A run that takes longer than this (plus 20 µs per iteration) has stalled: it fails. */
const RUN_TIMEOUT_BASE_MS = 30_000;

/** The package's own name: a variable, so that neither tsc nor the bundler resolves it. */
const PACKAGE = 'dma-attrs';

const LITMUS: CommandSpec = {
  name: 'dma-attrs litmus',
  synopsis: '[options]',
  description: `Runs each pattern on two worker threads sharing one guest memory, once with no barrier,
once with the acquire/release accessors (READ/WRITE) and once with barrier('full'), and
counts the pattern's forbidden outcome.
`,
  options: [
    {
      name: 'pattern',
      value: 'pattern',
      choices: [...PATTERNS, 'all'],
      description:
        'sb (store buffering), mp (message passing), lb (load buffering) or all (default)',
    },
    {
      name: 'policy',
      value: 'policy',
      choices: [...POLICIES, 'all'],
      description: "the guest memory's barrier policy: strict, tso or all (default)",
    },
    {
      name: 'barrier',
      value: 'barrier',
      choices: [...BARRIERS, 'all'],
      description: 'only this barrier mode: none, acquire-release, full or all (default)',
    },
    {
      name: 'iterations',
      value: 'N',
      description: `iterations per run, 1 to ${MAX_ITERATIONS} (default ${DEFAULT_ITERATIONS})`,
    },
    { name: 'json', description: 'print an array with one object per run instead of the table' },
    { name: 'help', short: 'h', description: 'show this help' },
  ],
  footer: `Exit status: 0 when no run the library promises (SB with full; MP and LB with
acquire-release or full) observed its forbidden outcome, 1 otherwise, 2 on bad usage.
`,
};

interface Options {
  patterns: readonly LitmusPattern[];
  barriers: readonly LitmusBarrier[];
  policies: readonly LitmusPolicy[];
  iterations: number;
  json: boolean;
}

/** The runs an option asks for: `all` (or no option) is every one, in the command's order. */
function selected<T extends string>(
  line: CommandLine,
  name: string,
  every: readonly T[],
): readonly T[] {
  const value = line.values.get(name)?.[0];
  // parseCommandLine has checked the value against the option's choices.
  return value === undefined || value === 'all' ? every : [value as T];
}

/**
 * The options of a command line.
 *
 * @throws DMAError `ERR_DMA_INVALID_ARGUMENT` on bad usage.
 */
function parseOptions(argv: readonly string[]): Options | 'help' {
  const line = parseCommandLine(LITMUS, argv);
  if (line.flags.has('help')) return 'help';
  const [extra] = line.positionals;
  if (extra !== undefined) {
    throw usageError(LITMUS, `takes no arguments; received ${JSON.stringify(extra)}`);
  }
  let iterations = DEFAULT_ITERATIONS;
  const text = line.values.get('iterations')?.[0];
  if (text !== undefined) {
    iterations = /^\d+$/.test(text) ? Number(text) : NaN;
    if (!(iterations >= 1 && iterations <= MAX_ITERATIONS)) {
      throw usageError(
        LITMUS,
        `option --iterations must be an integer from 1 to ${MAX_ITERATIONS}; received ${JSON.stringify(text)}`,
      );
    }
  }
  return {
    patterns: selected(line, 'pattern', PATTERNS),
    barriers: selected(line, 'barrier', BARRIERS),
    policies: selected(line, 'policy', POLICIES),
    iterations,
    json: line.flags.has('json'),
  };
}

/** Starts one side and resolves when it reports; rejects when it fails or exits early. */
function startSide(data: LitmusWorkerData, live: Set<Worker>): Promise<void> {
  const worker = new Worker(new URL('./litmus-worker.js', import.meta.url), { workerData: data });
  live.add(worker);
  return new Promise<void>((resolve, reject) => {
    worker.once('message', () => {
      resolve();
    });
    worker.once('error', reject);
    worker.once('exit', (code) => {
      live.delete(worker);
      reject(
        new Error(`litmus worker (side ${data.side}) exited with code ${code} before reporting`),
      );
    });
  });
}

function isForbidden(pattern: LitmusPattern, side0: number, side1: number): boolean {
  if (pattern === 'sb') return side0 === 0 && side1 === 0;
  if (pattern === 'lb') return side0 === 1 && side1 === 1;
  return side1 === 1; // MP: the flag was seen (bit 0), the data was not (bit 1)
}

async function runOne(
  library: typeof Library,
  pattern: LitmusPattern,
  policy: LitmusPolicy,
  barrier: LitmusBarrier,
  iterations: number,
): Promise<{ forbidden: number; finished: boolean }> {
  const xBase = 0;
  const yBase = 4 * iterations;
  const memory = new library.GuestMemory({ size: 8 * iterations, barrierPolicy: policy });
  // Fault every page in now, so that no iteration races against a page fault.
  new Uint8Array(memory.buffer).fill(0);
  const outcomes = new SharedArrayBuffer(2 * iterations);
  const common = {
    handle: memory.handle(),
    rendezvous: new SharedArrayBuffer(8),
    outcomes,
    pattern,
    barrier,
    iterations,
    xBase,
    yBase,
  };
  const live = new Set<Worker>();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(
      () => {
        resolve('timeout');
      },
      RUN_TIMEOUT_BASE_MS + iterations / 50,
    );
  });
  try {
    const outcome = await Promise.race([
      Promise.all([
        startSide({ ...common, side: 0 }, live),
        startSide({ ...common, side: 1 }, live),
      ]),
      timeout,
    ]);
    if (outcome === 'timeout') return { forbidden: 0, finished: false };
  } finally {
    clearTimeout(timer);
    await Promise.all([...live].map((worker) => worker.terminate()));
  }
  const loaded = new Uint8Array(outcomes);
  let forbidden = 0;
  for (let i = 0; i < iterations; i++) {
    if (isForbidden(pattern, loaded[i] as number, loaded[iterations + i] as number)) forbidden++;
  }
  return { forbidden, finished: true };
}

function yesNo(value: boolean, yes: string, no: string): string {
  return value ? yes : no;
}

function formatTable(results: readonly LitmusRunResult[]): string {
  const header = [
    'pattern',
    'policy',
    'barrier',
    'iterations',
    'forbidden',
    'per million',
    'x86-TSO',
    'ECMAScript',
    'promised',
    'result',
  ];
  const rows = results.map((result) => [
    result.pattern,
    result.policy,
    result.barrier,
    String(result.iterations),
    String(result.forbidden),
    result.perMillion.toFixed(1),
    yesNo(result.allowedByModel.tso, 'allows', 'forbids'),
    yesNo(result.allowedByModel.ecmascript, 'allows', 'forbids'),
    yesNo(result.promised, 'forbidden', '-'),
    result.promised ? yesNo(result.pass, 'PASS', 'FAIL') : '-',
  ]);
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] as string).length)),
  );
  const line = (cells: readonly string[]): string =>
    cells
      .map((cell, column) => cell.padEnd(widths[column] as number))
      .join('  ')
      .trimEnd();
  const patterns = [...new Set(results.map((result) => result.pattern))];
  return [
    line(header),
    line(widths.map((width) => '-'.repeat(width))),
    ...rows.map(line),
    '',
    ...patterns.map((pattern) => `${pattern}: ${PATTERN_DESCRIPTIONS[pattern]}`),
    'x86-TSO / ECMAScript: whether the model allows the forbidden outcome with that barrier and policy.',
    '',
  ].join('\n');
}

/**
 * Runs the `litmus` command.
 *
 * @param argv - the arguments after `litmus`.
 * @param io - where the table (or JSON) and the progress go.
 * @returns the exit status: 0 when every promised run passed, 1 otherwise, 2 on bad usage.
 *
 * @example
 * ```ts
 * const status = await runLitmus(['--pattern', 'sb', '--json'], {
 *   stdout: (text) => process.stdout.write(text),
 *   stderr: (text) => process.stderr.write(text),
 * });
 * ```
 */
export async function runLitmus(argv: readonly string[], io: LitmusIO): Promise<number> {
  let options: Options | 'help';
  try {
    options = parseOptions(argv);
  } catch (error) {
    if (!(error instanceof DMAError)) throw error;
    io.stderr(`${error.message}\n\n${helpText(LITMUS)}`);
    return 2;
  }
  if (options === 'help') {
    io.stdout(helpText(LITMUS));
    return 0;
  }
  const library = (await import(PACKAGE)) as typeof Library;
  const { iterations } = options;
  const total = options.patterns.length * options.policies.length * options.barriers.length;
  const results: LitmusRunResult[] = [];
  for (const pattern of options.patterns) {
    for (const policy of options.policies) {
      for (const barrier of options.barriers) {
        const started = performance.now();
        const { forbidden, finished } = await runOne(library, pattern, policy, barrier, iterations);
        const promised = isPromised(pattern, barrier);
        const result: LitmusRunResult = {
          pattern,
          policy,
          barrier,
          iterations,
          forbidden,
          perMillion: (forbidden * 1e6) / iterations,
          allowedByModel: allowedByModel(pattern, barrier, policy),
          promised,
          pass: !promised || (finished && forbidden === 0),
        };
        results.push(result);
        io.stderr(
          `litmus [${results.length}/${total}] ${pattern} ${policy} ${barrier}: ` +
            `${finished ? `${forbidden} forbidden of ${iterations}` : 'did not finish in time'} ` +
            `(${((performance.now() - started) / 1000).toFixed(1)} s)\n`,
        );
      }
    }
  }
  io.stdout(options.json ? `${JSON.stringify(results, null, 2)}\n` : formatTable(results));
  return results.every((result) => result.pass) ? 0 : 1;
}
