/**
 * The dma-attrs benchmark: micro (each accessor beside hand-written TypedArray code, mitata),
 * macro (the virtio ring between two workers, and the virtio device's allocations),
 * allocation (GC events per kind of access), and every performance budget of the issues in
 * one table.
 *
 *   npm run bench                         build, then run everything and print the tables
 *   npx dma-attrs bench [options]         the same from an installed package
 *   node bench/index.mjs [options]
 *
 * Options: --quick (under 30 s), --json (one JSON object on stdout), --svg PATH (write the
 * chart there too), --filter REGEX (micro benchmarks and allocation kinds by name),
 * --runs N and --seconds S (macro repetitions and seconds per run), --no-macro, --codemod /
 * --no-codemod (the codemod benchmark in a child process; on by default without --quick),
 * --help (the options, from the one table below).
 *
 * Progress goes to stderr, so `--json > out.json` stays clean. A full run from a source
 * checkout also writes docs/performance.svg; --quick never touches docs/.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, realpathSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import v8 from 'node:v8';
import vm from 'node:vm';
import { DMAError } from 'dma-attrs';
import { helpText, parseCommandLine, usageError } from '../dist/args.js';
import { runAllocation } from './alloc.mjs';
import { computeBudgets, formatBudgetValue, formatLimit } from './budgets.mjs';
import { renderChart } from './chart.mjs';
import { runMacro } from './macro.mjs';
import { formatNs, LEGACY_PAIRS, microBenchmarks, runMicro } from './micro.mjs';

const PACKAGE_ROOT = fileURLToPath(new URL('..', import.meta.url));

/**
 * The command's one option table: the parser and `--help` are both made from it by
 * src/internal/args.ts, as for `dma-attrs migrate` and `dma-attrs litmus` (built as
 * dist/args.js, beside which this file ships).
 */
const BENCH = {
  name: 'dma-attrs bench',
  synopsis: '[options]',
  description: `Measures every accessor beside hand-written TypedArray code (micro), the virtio ring
between two workers (macro) and GC events per kind of access (allocation), and checks every
performance budget. Progress goes to stderr.
`,
  options: [
    {
      name: 'quick',
      description: 'fewer iterations and one short macro run per variant: under 30 s',
    },
    {
      name: 'json',
      description: 'print one JSON object (results, budgets, CPU model, Node version, load)',
    },
    {
      name: 'svg',
      value: 'PATH',
      description: 'also write the chart (cost per access by size and strength) to PATH',
    },
    {
      name: 'filter',
      value: 'RE',
      description: 'only the micro benchmarks and allocation kinds whose name matches RE',
    },
    { name: 'runs', value: 'N', description: 'macro runs per variant (default 5; 1 with --quick)' },
    {
      name: 'seconds',
      value: 'S',
      description: 'seconds per macro run (default 2; 1 with --quick)',
    },
    { name: 'no-macro', description: 'skip the virtio macro benchmark' },
    { name: 'codemod', description: 'run the codemod benchmark (default without --quick)' },
    { name: 'no-codemod', description: 'skip the codemod benchmark' },
    { name: 'help', short: 'h', description: 'show this help' },
  ],
  footer:
    'Exit status: 0 when it ran (missed budgets are reported, not failed), 1 when mitata is\nmissing, 2 on bad usage.\n',
};

/** A usage error of the benchmark: a `DMAError` whose message starts with its name. */
const usage = (message) => usageError(BENCH, message);

/**
 * The benchmark's options, or `'help'`.
 *
 * @throws {DMAError} `ERR_DMA_INVALID_ARGUMENT` on bad usage.
 */
function parseOptions(argv) {
  const { positionals, flags, values: lists } = parseCommandLine(BENCH, argv);
  if (flags.has('help')) return 'help';
  // Each option's last value: none of the benchmark's may be repeated.
  const values = new Map([...lists].map(([name, list]) => [name, list.at(-1)]));
  if (positionals.length > 0) {
    throw usage(`takes no arguments; received ${JSON.stringify(positionals[0])}`);
  }
  const positive = (name) => {
    const text = values.get(name);
    if (text === undefined) return undefined;
    const number = Number(text);
    if (!(number > 0) || !Number.isFinite(number)) {
      throw usage(`option --${name} must be a positive number; received ${JSON.stringify(text)}`);
    }
    return number;
  };
  let filter = /.*/;
  if (values.has('filter')) {
    const source = values.get('filter');
    try {
      filter = new RegExp(source);
    } catch (error) {
      throw usage(
        `option --filter must be a regular expression; received ${JSON.stringify(source)} (${error.message})`,
      );
    }
  }
  const runs = positive('runs');
  // The last of --codemod and --no-codemod wins.
  const codemod = [...flags].findLast((flag) => flag === 'codemod' || flag === 'no-codemod');
  return {
    quick: flags.has('quick'),
    json: flags.has('json'),
    svg: values.get('svg'),
    filter,
    filtered: values.has('filter'),
    runs: runs === undefined ? undefined : Math.ceil(runs),
    seconds: positive('seconds'),
    macro: !flags.has('no-macro'),
    codemod: codemod === undefined ? undefined : codemod === 'codemod',
  };
}

/**
 * mitata collects garbage before each benchmark; without a callable `gc` it falls back to
 * allocating 1 GiB, which is slow and disturbs the heap, and the allocation count needs a
 * clean heap too. Expose the real `gc` before mitata is loaded.
 */
function exposeGc() {
  if (typeof globalThis.gc !== 'function') {
    v8.setFlagsFromString('--expose-gc');
    globalThis.gc = vm.runInNewContext('gc');
  }
}

/** mitata, loaded lazily: a devDependency here, an optional peer of the installed package. */
async function loadMitata() {
  try {
    return await import('mitata');
  } catch (error) {
    const missing =
      error instanceof Error &&
      (error.code === 'ERR_MODULE_NOT_FOUND' || /Cannot find (module|package)/.test(error.message));
    if (!missing) throw error;
    return undefined;
  }
}

/** Runs bench/codemod.mjs in a child process and reads its closing line. */
function runCodemod(progress) {
  const script = fileURLToPath(new URL('./codemod.mjs', import.meta.url));
  if (!existsSync(script))
    return Promise.resolve({ skipped: 'bench/codemod.mjs is not installed' });
  progress('codemod: 2,000 generated files in a child process…');
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [script],
      { maxBuffer: 1 << 22, timeout: 180_000 },
      (error, stdout, stderr) => {
        const line =
          /(\d+) files \(([\d.]+) MiB\).*?([\d.]+) s: (\d+) files\/s, peak RSS (\d+) MiB/.exec(
            stdout,
          );
        if (line === null) {
          const reason = (stderr || error?.message || stdout || 'no output').trim().split('\n')[0];
          progress(`codemod: skipped (${reason})`);
          resolve({ skipped: `the codemod benchmark failed: ${reason}` });
          return;
        }
        const result = {
          files: Number(line[1]),
          corpusMiB: Number(line[2]),
          seconds: Number(line[3]),
          filesPerSecond: Number(line[4]),
          peakRssMiB: Number(line[5]),
        };
        progress(`codemod: ${result.filesPerSecond} files/s, peak RSS ${result.peakRssMiB} MiB`);
        resolve(result);
      },
    );
  });
}

function hostInfo(loadStart) {
  return {
    cpu: os.cpus()[0]?.model.trim() ?? 'unknown',
    cores: os.cpus().length,
    node: process.version,
    v8: process.versions.v8,
    arch: process.arch,
    platform: process.platform,
    loadavg: os.loadavg(),
    loadavgAtStart: loadStart,
  };
}

/** A text table; `align` has one 'l' or 'r' per column (default: first left, others right). */
function table(header, rows, align = header.map((_, column) => (column === 0 ? 'l' : 'r'))) {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => String(row[column]).length)),
  );
  const line = (cells) =>
    cells
      .map((cell, column) =>
        align[column] === 'l'
          ? String(cell).padEnd(widths[column])
          : String(cell).padStart(widths[column]),
      )
      .join('  ')
      .trimEnd();
  return [
    line(header),
    widths.map((width) => '-'.repeat(width)).join('  '),
    ...rows.map(line),
  ].join('\n');
}

const count = (value) => Math.round(value).toLocaleString('en-US');

/** The readable report. */
export function renderText(report) {
  const { host, micro, macro, allocation, budgets, codemod } = report;
  const out = [];
  out.push(
    `dma-attrs benchmark (${report.mode}) — ${host.cpu} (${host.cores} cores), Node ${host.node}, ${host.arch}`,
  );
  out.push(
    `load average: ${host.loadavgAtStart.map((load) => load.toFixed(2)).join(' ')} at the start, ${host.loadavg.map((load) => load.toFixed(2)).join(' ')} at the end; ${report.elapsedSeconds.toFixed(1)} s`,
  );

  out.push('', 'Micro: median (p50) and mean per access, in one mitata run');
  out.push(
    table(
      ['benchmark', 'p50', 'avg', 'p99'],
      micro.results.map((result) => [
        result.name,
        formatNs(result.p50),
        formatNs(result.avg),
        formatNs(result.p99),
      ]),
    ),
  );

  const byName = new Map(micro.results.map((result) => [result.name, result]));
  const pairs = LEGACY_PAIRS.filter(
    ([legacy, current]) => byName.has(legacy) && byName.has(current),
  );
  if (pairs.length > 0) {
    out.push('', 'Legacy API beside the attributes API (same work, tso)');
    out.push(
      table(
        ['work', 'legacy', 'new', 'new / legacy'],
        pairs.map(([legacy, current, what]) => [
          what,
          formatNs(byName.get(legacy).p50),
          formatNs(byName.get(current).p50),
          `${(byName.get(current).p50 / byName.get(legacy).p50).toFixed(2)}×`,
        ]),
      ),
    );
  }

  if (macro.skipped !== undefined) {
    out.push('', `Macro: skipped (${macro.skipped})`);
  } else {
    out.push(
      '',
      `Macro: virtio ring between two workers, ${macro.runs} run(s) × ${macro.durationMs / 1000} s per variant, policy ${macro.barrierPolicy} (median, min–max)`,
    );
    const rows = macro.raw === undefined ? macro.variants : [...macro.variants, macro.raw];
    out.push(
      table(
        ['variant', 'packets/s', 'min–max', 'packets/CPU-s', 'min–max', 'lost', 'corrupted'],
        rows.map((row) => [
          row.variant,
          count(row.packetsPerSecond.median),
          `${count(row.packetsPerSecond.min)}–${count(row.packetsPerSecond.max)}`,
          count(row.packetsPerCpuSecond.median),
          `${count(row.packetsPerCpuSecond.min)}–${count(row.packetsPerCpuSecond.max)}`,
          row.lostNotifications,
          row.corrupted,
        ]),
      ),
    );
    const ratio = macro.attrsOverRaw;
    if (ratio !== undefined) {
      out.push(
        `attrs (SplitVirtqueue) / raw, packets per CPU-second, per round: ${ratio.median.toFixed(2)}× (${ratio.min.toFixed(2)}–${ratio.max.toFixed(2)}); goal ≥ ${ratio.goal}×: ${ratio.met ? 'met' : 'NOT met'}`,
      );
    }
    const virtio = macro.allocation;
    if (virtio?.skipped !== undefined) {
      out.push('', `Virtio device allocation: skipped (${virtio.skipped})`);
    } else if (virtio !== undefined) {
      out.push(
        '',
        `Virtio device allocation: GC events over ${count(virtio.packets)} packets (${virtio.inFlight} in flight, guest in the same thread), bytes per packet sampled by V8`,
      );
      out.push(
        table(
          ['variant', 'ring', 'GC events', 'B/packet', 'ns/packet', 'allocated by'],
          virtio.variants.map((row) => [
            row.variant,
            row.ring,
            row.gcEvents,
            row.bytesPerPacket === null ? '–' : row.bytesPerPacket.toFixed(1),
            row.nsPerPacket.toFixed(0),
            row.sites
              .map((entry) => `${entry.site} ${entry.bytesPerPacket.toFixed(0)} B`)
              .join(', '),
          ]),
          ['l', 'l', 'r', 'r', 'r', 'l'],
        ),
      );
    }
  }

  out.push(
    '',
    `Allocation: GC events during ${count(allocation.accesses)} accesses of each kind (numeric attributes, tso)`,
  );
  out.push(
    table(
      ['kind', 'GC events', 'expected', 'met'],
      allocation.kinds.map((row) => [
        row.kind,
        row.gcEvents,
        row.expect,
        row.met === null ? `by design: ${row.note ?? ''}` : row.met ? 'yes' : 'NO',
      ]),
      ['l', 'r', 'l', 'l'],
    ),
  );

  if (codemod?.skipped === undefined && codemod !== undefined) {
    out.push(
      '',
      `Codemod: ${count(codemod.files)} files (${codemod.corpusMiB} MiB) in ${codemod.seconds} s: ${count(codemod.filesPerSecond)} files/s, peak RSS ${codemod.peakRssMiB} MiB`,
    );
  }

  out.push('', 'Budgets (issues 2, 3, 4 and 6)');
  out.push(
    table(
      ['issue', 'budget', 'measured', 'limit', 'met'],
      budgets.map((row) => [
        `#${row.issue}`,
        row.name,
        row.skipped === undefined ? formatBudgetValue(row) : 'not run',
        formatLimit(row),
        row.met === null ? `— (${row.skipped})` : row.met ? 'yes' : 'NO',
      ]),
      ['l', 'l', 'r', 'r', 'l'],
    ),
  );
  const checked = budgets.filter((row) => row.met !== null);
  out.push('', `${checked.filter((row) => row.met).length} of ${checked.length} budgets met`);
  if (report.chart.written.length > 0) out.push(`chart: ${report.chart.written.join(', ')}`);
  return `${out.join('\n')}\n`;
}

/**
 * Runs the benchmark.
 *
 * @param {string[]} argv the arguments after `bench`.
 * @param {{ stdout: (text: string) => void, stderr: (text: string) => void, cwd?: string }} io
 * @returns {Promise<number>} the exit status: 0 when it ran (missed budgets are reported, not
 *   failed), 1 when mitata is missing, 2 for bad usage.
 */
export async function runBench(argv, io) {
  let options;
  try {
    options = parseOptions(argv);
  } catch (error) {
    if (!(error instanceof DMAError)) throw error;
    io.stderr(`${error.message}\n\n${helpText(BENCH)}`);
    return 2;
  }
  if (options === 'help') {
    io.stdout(helpText(BENCH));
    return 0;
  }
  const progress = (line) => io.stderr(`${line}\n`);
  const started = performance.now();
  const loadStart = os.loadavg();

  exposeGc();
  const mitata = await loadMitata();
  if (mitata === undefined) {
    io.stderr(
      'dma-attrs bench needs the benchmark library mitata, an optional peer dependency.\n' +
        'Install it beside dma-attrs and run again:\n\n  npm install --save-dev mitata\n',
    );
    return 1;
  }

  const micro = await runMicro(mitata, microBenchmarks(mitata.do_not_optimize), {
    quick: options.quick,
    filter: options.filter,
    progress,
  });
  const allocation = await runAllocation({
    accesses: 2e6,
    filter: options.filtered ? options.filter : /.*/,
    progress,
  });
  const macro = options.macro
    ? await runMacro({
        runs: options.runs ?? (options.quick ? 1 : 5),
        durationMs: (options.seconds ?? (options.quick ? 1 : 2)) * 1000,
        barrierPolicy: 'auto',
        // Issue 12's allocation goal is over 10^6 packets; --quick counts the two rows that
        // matter over fewer, to stay within its 30 s.
        allocationPackets: options.quick ? 2e5 : 1e6,
        allocationVariants: options.quick ? ['raw', 'attrs'] : undefined,
        progress,
      })
    : { skipped: '--no-macro' };
  const codemod =
    (options.codemod ?? !options.quick)
      ? await runCodemod(progress)
      : { skipped: options.codemod === false ? '--no-codemod' : '--quick' };

  const elapsedSeconds = (performance.now() - started) / 1000;
  const host = hostInfo(loadStart);
  const budgets = computeBudgets({
    micro,
    allocation,
    codemod,
    elapsedSeconds: options.quick ? elapsedSeconds : undefined,
  });

  const svg = renderChart(micro, host);
  const targets = [];
  if (options.svg !== undefined) targets.push(path.resolve(io.cwd ?? process.cwd(), options.svg));
  const isCheckout =
    existsSync(path.join(PACKAGE_ROOT, 'src')) && existsSync(path.join(PACKAGE_ROOT, 'docs'));
  if (!options.quick && !options.filtered && isCheckout) {
    targets.push(path.join(PACKAGE_ROOT, 'docs', 'performance.svg'));
  }
  for (const target of targets) {
    mkdirSync(path.dirname(target), { recursive: true });
    writeFileSync(target, svg);
    progress(`chart written to ${target}`);
  }

  const report = {
    mode: options.quick ? 'quick' : 'full',
    host,
    elapsedSeconds,
    micro: { timing: { minCpuTimeMs: options.quick ? 15 : 400 }, results: micro },
    macro: macro.skipped === undefined ? macro : { skipped: macro.skipped, variants: [] },
    allocation,
    codemod,
    budgets,
    chart: { written: targets },
  };
  io.stdout(options.json ? `${JSON.stringify(report, null, 2)}\n` : renderText(report));
  return 0;
}

// `node bench/index.mjs …`: run as a program (not when imported by `dma-attrs bench`).
const entry = process.argv[1];
if (entry !== undefined && import.meta.url === pathToFileURL(realpathSync(entry)).href) {
  runBench(process.argv.slice(2), {
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
    cwd: process.cwd(),
  }).then(
    (status) => {
      process.exitCode = status;
    },
    (error) => {
      process.stderr.write(
        `dma-attrs bench: ${error instanceof Error ? error.stack : String(error)}\n`,
      );
      process.exitCode = 1;
    },
  );
}
