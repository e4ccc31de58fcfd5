/**
 * The dma-attrs benchmark: the library beside the best hand-written TypedArray code, in one
 * run, with the budgets of the performance issue checked against mitata's results.
 *
 *   npm run bench                  build, then run everything and print the tables
 *   node bench/index.mjs --json    one JSON object on stdout (results, budgets, allocation, host)
 *   node bench/index.mjs --filter=U32   only the benchmarks whose name matches the regex
 *
 * Progress goes to stderr, so `--json > out.json` stays clean. Ratios use the median (p50) of
 * mitata's samples; averages are reported beside them.
 */
import os from 'node:os';
import v8 from 'node:v8';
import vm from 'node:vm';
import { PerformanceObserver } from 'node:perf_hooks';

// mitata collects garbage before each benchmark; without `--expose-gc` it falls back to
// allocating 1 GiB, which is slow and disturbs the heap. Expose a real `gc` before loading it.
if (typeof globalThis.gc !== 'function') {
  v8.setFlagsFromString('--expose-gc');
  globalThis.gc = vm.runInNewContext('gc');
}
const { bench, run, do_not_optimize } = await import('mitata');
const { DMAAttributes, DMAContext, GuestMemory } = await import('../dist/index.js');

const argv = process.argv.slice(2);
const json = argv.includes('--json');
const filterArg = argv.find((arg) => arg.startsWith('--filter='));
const filter = filterArg === undefined ? /.*/ : new RegExp(filterArg.slice('--filter='.length));

const { RELAXED, BIDIRECTIONAL } = DMAAttributes;
const SIZES = [8, 64, 4096, 65536];
const ADDR = 4096;
const MEMORY_SIZE = 1 << 20;
const FLAGS_RELAXED = { relaxed: true };
// Below 2^30, so that values stay small integers (no boxed HeapNumber) on every V8 build.
const VALUE32 = 0x12345678;
// Stores take a changing value, so that no compiler can drop a repeated identical store.
let tick = 0;

const tsoMemory = new GuestMemory({ size: MEMORY_SIZE, barrierPolicy: 'tso' });
const strictMemory = new GuestMemory({ size: MEMORY_SIZE, barrierPolicy: 'strict' });
const contexts = { tso: new DMAContext(tsoMemory), strict: new DMAContext(strictMemory) };

// The hand-written baseline works on the same SharedArrayBuffer through its own views.
const guest = new Uint8Array(tsoMemory.buffer);
const guestView = new DataView(tsoMemory.buffer);
const guestU32 = new Uint32Array(tsoMemory.buffer);
const fenceWord = new Int32Array(new SharedArrayBuffer(64), 0, 1);
const buffers = new Map(SIZES.map((size) => [size, new Uint8Array(size).fill(0x5a)]));

/** name -> the function mitata times; registered in this order. */
const benchmarks = new Map();
function add(name, fn) {
  if (filter.test(name)) benchmarks.set(name, fn);
}

for (const size of SIZES) {
  const buf = buffers.get(size);
  const end = ADDR + size;
  add(`raw read loop ${size}B`, () => {
    for (let index = 0; index < size; index++) buf[index] = guest[ADDR + index];
  });
  add(`raw read subarray+set ${size}B`, () => {
    buf.set(guest.subarray(ADDR, end));
  });
  add(`raw write loop ${size}B`, () => {
    for (let index = 0; index < size; index++) guest[ADDR + index] = buf[index];
  });
  add(`raw write set ${size}B`, () => {
    guest.set(buf, ADDR);
  });
  for (const policy of ['tso', 'strict']) {
    const ctx = contexts[policy];
    add(`relaxed read ${size}B ${policy}`, () => {
      ctx.read(ADDR, buf, RELAXED);
    });
    add(`acquire read ${size}B ${policy}`, () => {
      ctx.read(ADDR, buf);
    });
    add(`full+relaxed read ${size}B ${policy}`, () => {
      ctx.read(ADDR, buf, RELAXED);
      ctx.barrier('full');
    });
    add(`relaxed write ${size}B ${policy}`, () => {
      ctx.write(ADDR, buf, RELAXED);
    });
    add(`release write ${size}B ${policy}`, () => {
      ctx.write(ADDR, buf);
    });
    add(`full+relaxed write ${size}B ${policy}`, () => {
      ctx.barrier('full');
      ctx.write(ADDR, buf, RELAXED);
    });
  }
}

{
  const ctx = contexts.tso;
  const buf8 = buffers.get(8);
  const buf64 = buffers.get(64);
  add('raw Atomics.add (fence RMW)', () => {
    Atomics.add(fenceWord, 0, 0);
  });
  add('map+unmap BIDIRECTIONAL 64B tso', () => {
    ctx.unmap(ctx.map(ADDR, 64, BIDIRECTIONAL));
  });
  for (const [label, buf] of [
    ['8B', buf8],
    ['64B', buf64],
  ]) {
    add(`flags-const relaxed read ${label} tso`, () => {
      ctx.read(ADDR, buf, FLAGS_RELAXED);
    });
    add(`flags-inline relaxed read ${label} tso`, () => {
      ctx.read(ADDR, buf, { relaxed: true });
    });
    add(`flags-const relaxed write ${label} tso`, () => {
      ctx.write(ADDR, buf, FLAGS_RELAXED);
    });
    add(`flags-inline relaxed write ${label} tso`, () => {
      ctx.write(ADDR, buf, { relaxed: true });
    });
  }

  add('raw readU32LE DataView', () => {
    do_not_optimize(guestView.getUint32(ADDR, true));
  });
  add('raw readU32LE u32[i]', () => {
    do_not_optimize(guestU32[ADDR >> 2]);
  });
  add('raw readU32LE Atomics.load', () => {
    do_not_optimize(Atomics.load(guestU32, ADDR >> 2));
  });
  add('raw writeU32LE DataView', () => {
    guestView.setUint32(ADDR, (tick = (tick + 1) & 0xfffffff), true);
  });
  add('raw writeU32LE u32[i]', () => {
    guestU32[ADDR >> 2] = tick = (tick + 1) & 0xfffffff;
  });
  add('raw writeU32LE Atomics.store', () => {
    Atomics.store(guestU32, ADDR >> 2, (tick = (tick + 1) & 0xfffffff));
  });
  for (const policy of ['tso', 'strict']) {
    const pctx = contexts[policy];
    add(`relaxed readU32LE ${policy}`, () => {
      do_not_optimize(pctx.readU32LE(ADDR, RELAXED));
    });
    add(`acquire readU32LE ${policy}`, () => {
      do_not_optimize(pctx.readU32LE(ADDR));
    });
    add(`relaxed writeU32LE ${policy}`, () => {
      pctx.writeU32LE(ADDR, (tick = (tick + 1) & 0xfffffff), RELAXED);
    });
    add(`release writeU32LE ${policy}`, () => {
      pctx.writeU32LE(ADDR, (tick = (tick + 1) & 0xfffffff));
    });
  }
  add('flags-const relaxed readU32LE tso', () => {
    do_not_optimize(ctx.readU32LE(ADDR, FLAGS_RELAXED));
  });
  add('flags-inline relaxed readU32LE tso', () => {
    do_not_optimize(ctx.readU32LE(ADDR, { relaxed: true }));
  });
  add('raw fill 64B', () => {
    guest.fill(0xab, ADDR, ADDR + 64);
  });
  add('relaxed set 64B tso', () => {
    ctx.set(ADDR, 0xab, 64, RELAXED);
  });
  add('release set 64B tso', () => {
    ctx.set(ADDR, 0xab, 64);
  });
}

function progress(message) {
  process.stderr.write(`${message}\n`);
}

/** Formats nanoseconds for people. */
function ns(value) {
  if (value === undefined || Number.isNaN(value)) return '—';
  if (value >= 1e6) return `${(value / 1e6).toFixed(2)} ms`;
  if (value >= 1e3) return `${(value / 1e3).toFixed(2)} µs`;
  return `${value.toFixed(2)} ns`;
}

// Warm every path first, so that all the feedback the library's functions will ever see
// (numbers and flag objects, every size, both policies) is in place before timing starts:
// nothing deoptimizes halfway through the run, and every benchmark times the same code.
progress(`warming ${benchmarks.size} benchmarks…`);
for (const [name, fn] of benchmarks) {
  const size = Number(/(\d+)B/.exec(name)?.[1] ?? 8);
  const calls = Math.max(200, Math.floor(4e5 / Math.max(size, 8)));
  for (let call = 0; call < calls; call++) fn();
}

for (const [name, fn] of benchmarks) bench(name, fn);

let done = 0;
const started = Date.now();
const outcome = await run({
  format: 'quiet',
  throw: true,
  observe(trial) {
    done++;
    const stats = trial.runs[0]?.stats;
    progress(
      `[${String(done).padStart(3)}/${benchmarks.size}] ${trial.alias.padEnd(42)} p50 ${ns(stats?.p50).padStart(11)}  avg ${ns(stats?.avg).padStart(11)}`,
    );
    return trial;
  },
});
progress(`timed in ${((Date.now() - started) / 1000).toFixed(1)} s`);

/** name -> { avg, p50, ... } in nanoseconds. */
const results = new Map();
for (const trial of outcome.benchmarks) {
  const stats = trial.runs[0]?.stats;
  if (stats === undefined) continue;
  results.set(trial.alias, {
    avg: stats.avg,
    p50: stats.p50,
    p75: stats.p75,
    p99: stats.p99,
    min: stats.min,
    max: stats.max,
    samples: stats.samples.length,
  });
}

/** The faster of several benchmarks by median, as the baseline. */
function fastest(...names) {
  let best;
  for (const name of names) {
    const result = results.get(name);
    if (result !== undefined && (best === undefined || result.p50 < best.result.p50)) {
      best = { name, result };
    }
  }
  return best;
}

const budgets = [];
function ratioBudget(what, subject, base, limit) {
  const result = results.get(subject);
  const baseline = typeof base === 'string' ? fastest(base) : base;
  if (result === undefined || baseline === undefined) return;
  const ratio = result.p50 / baseline.result.p50;
  budgets.push({
    what,
    budget: limit === undefined ? 'info' : `≤ ${limit}×`,
    subject,
    baseline: baseline.name,
    subjectNs: result.p50,
    baselineNs: baseline.result.p50,
    measured: `${ratio.toFixed(3)}×`,
    ratio,
    met: limit === undefined ? null : ratio <= limit,
  });
}
function deltaBudget(what, subject, base, limitNs) {
  const result = results.get(subject);
  const baseline = results.get(base);
  if (result === undefined || baseline === undefined) return;
  const delta = result.p50 - baseline.p50;
  budgets.push({
    what,
    budget: limitNs === undefined ? 'info' : `≤ +${limitNs} ns`,
    subject,
    baseline: base,
    subjectNs: result.p50,
    baselineNs: baseline.p50,
    measured: `${delta >= 0 ? '+' : ''}${delta.toFixed(2)} ns`,
    delta,
    met: limitNs === undefined ? null : delta <= limitNs,
  });
}

for (const size of SIZES) {
  const limit = size >= 64 ? 1.25 : 2;
  const rawRead = fastest(`raw read loop ${size}B`, `raw read subarray+set ${size}B`);
  const rawWrite = fastest(`raw write loop ${size}B`, `raw write set ${size}B`);
  ratioBudget(`relaxed read ${size}B vs best raw`, `relaxed read ${size}B tso`, rawRead, limit);
  ratioBudget(`relaxed write ${size}B vs best raw`, `relaxed write ${size}B tso`, rawWrite, limit);
}
for (const size of SIZES) {
  for (const policy of ['tso', 'strict']) {
    const limit = policy === 'tso' ? 1.05 : undefined;
    ratioBudget(
      `acquire read ${size}B vs relaxed, ${policy}`,
      `acquire read ${size}B ${policy}`,
      `relaxed read ${size}B ${policy}`,
      limit,
    );
    ratioBudget(
      `release write ${size}B vs relaxed, ${policy}`,
      `release write ${size}B ${policy}`,
      `relaxed write ${size}B ${policy}`,
      limit,
    );
  }
}
for (const size of SIZES) {
  for (const policy of ['tso', 'strict']) {
    deltaBudget(
      `full: read ${size}B + barrier('full') vs relaxed, ${policy}`,
      `full+relaxed read ${size}B ${policy}`,
      `relaxed read ${size}B ${policy}`,
      15,
    );
    deltaBudget(
      `full: barrier('full') + write ${size}B vs relaxed, ${policy}`,
      `full+relaxed write ${size}B ${policy}`,
      `relaxed write ${size}B ${policy}`,
      15,
    );
  }
}
for (const label of ['8B', '64B']) {
  for (const op of ['read', 'write']) {
    for (const style of ['const', 'inline']) {
      deltaBudget(
        `flag object (${style}) vs numeric, relaxed ${op} ${label}`,
        `flags-${style} relaxed ${op} ${label} tso`,
        `relaxed ${op} ${label} tso`,
        15,
      );
    }
  }
}
for (const style of ['const', 'inline']) {
  deltaBudget(
    `flag object (${style}) vs numeric, relaxed readU32LE`,
    `flags-${style} relaxed readU32LE tso`,
    'relaxed readU32LE tso',
    15,
  );
}
ratioBudget(
  'relaxed readU32LE vs best raw (8 B budget, by analogy)',
  'relaxed readU32LE tso',
  fastest('raw readU32LE DataView', 'raw readU32LE u32[i]'),
  2,
);
ratioBudget(
  'relaxed writeU32LE vs best raw (8 B budget, by analogy)',
  'relaxed writeU32LE tso',
  fastest('raw writeU32LE DataView', 'raw writeU32LE u32[i]'),
  2,
);
ratioBudget(
  'acquire readU32LE vs raw Atomics.load',
  'acquire readU32LE tso',
  'raw readU32LE Atomics.load',
  undefined,
);
ratioBudget(
  'release writeU32LE vs raw Atomics.store',
  'release writeU32LE tso',
  'raw writeU32LE Atomics.store',
  undefined,
);
for (const policy of ['tso', 'strict']) {
  ratioBudget(
    `acquire readU32LE vs relaxed, ${policy}`,
    `acquire readU32LE ${policy}`,
    `relaxed readU32LE ${policy}`,
    policy === 'tso' ? 1.05 : undefined,
  );
  ratioBudget(
    `release writeU32LE vs relaxed, ${policy}`,
    `release writeU32LE ${policy}`,
    `relaxed writeU32LE ${policy}`,
    policy === 'tso' ? 1.05 : undefined,
  );
}
ratioBudget('relaxed set 64B vs raw fill', 'relaxed set 64B tso', 'raw fill 64B', 1.25);
ratioBudget('release set 64B vs relaxed, tso', 'release set 64B tso', 'relaxed set 64B tso', 1.05);

// Allocation: count garbage collections while one kind of access runs many times with
// numeric attributes. A scavenge comes every few MB of allocation, so even 16 bytes per
// access over 2×10^6 accesses shows up; zero collections means no allocation per access.
const ACCESSES = 2e6;
let collections = 0;
const observer = new PerformanceObserver((list) => {
  collections += list.getEntries().length;
});
observer.observe({ entryTypes: ['gc'] });
const settle = () =>
  new Promise((resolve) => {
    setTimeout(resolve, 50);
  });

const ctx = contexts.tso;
const buf8 = buffers.get(8);
const buf64 = buffers.get(64);
const buf4k = buffers.get(4096);
let sink = 0;
const allocationKinds = [
  ['read 8B', () => ctx.read(ADDR, buf8)],
  ['read 8B relaxed', () => ctx.read(ADDR, buf8, RELAXED)],
  ['read 64B', () => ctx.read(ADDR, buf64)],
  ['read 64B relaxed', () => ctx.read(ADDR, buf64, RELAXED)],
  ['read 4KiB', () => ctx.read(ADDR, buf4k)],
  ['write 8B', () => ctx.write(ADDR, buf8)],
  ['write 8B relaxed', () => ctx.write(ADDR, buf8, RELAXED)],
  ['write 64B', () => ctx.write(ADDR, buf64)],
  ['write 64B relaxed', () => ctx.write(ADDR, buf64, RELAXED)],
  ['write 4KiB', () => ctx.write(ADDR, buf4k)],
  ['readU32LE', () => (sink ^= ctx.readU32LE(ADDR))],
  ['readU32LE relaxed', () => (sink ^= ctx.readU32LE(ADDR, RELAXED))],
  ['writeU32LE', () => ctx.writeU32LE(ADDR, VALUE32)],
  ['writeU32LE relaxed', () => ctx.writeU32LE(ADDR, VALUE32, RELAXED)],
  ['set 64B', () => ctx.set(ADDR, 0xab, 64)],
  ['set 64B relaxed', () => ctx.set(ADDR, 0xab, 64, RELAXED)],
  ["barrier('full')", () => ctx.barrier('full')],
  ['read 8B, flags-const (info)', () => ctx.read(ADDR, buf8, FLAGS_RELAXED)],
  ['read 8B, flags-inline (info)', () => ctx.read(ADDR, buf8, { relaxed: true })],
];
const allocation = [];
for (const [kind, access] of allocationKinds) {
  if (!filter.test(kind) && filterArg !== undefined) continue;
  for (let call = 0; call < 1e5; call++) access();
  globalThis.gc();
  await settle();
  collections = 0;
  const heapBefore = v8.getHeapStatistics().used_heap_size;
  for (let call = 0; call < ACCESSES; call++) access();
  const heapAfter = v8.getHeapStatistics().used_heap_size;
  await settle();
  const info = kind.endsWith('(info)');
  allocation.push({
    kind,
    accesses: ACCESSES,
    gcEvents: collections,
    // Only meaningful without a collection in between; an upper bound on bytes per access.
    bytesPerAccess: collections === 0 ? Math.max(0, heapAfter - heapBefore) / ACCESSES : null,
    met: info ? null : collections === 0,
  });
  progress(`allocation: ${kind.padEnd(30)} ${collections} GC events in ${ACCESSES} accesses`);
}
observer.disconnect();
do_not_optimize(sink);

const host = {
  cpu: os.cpus()[0]?.model ?? 'unknown',
  cores: os.cpus().length,
  node: process.version,
  v8: process.versions.v8,
  arch: process.arch,
  platform: process.platform,
  loadavg: os.loadavg(),
};

if (json) {
  process.stdout.write(
    `${JSON.stringify(
      { host, results: Object.fromEntries(results), budgets, allocation },
      null,
      2,
    )}\n`,
  );
} else {
  const out = (line = '') => {
    process.stdout.write(`${line}\n`);
  };
  out(`dma-attrs benchmark — ${host.cpu} (${host.cores} cores), node ${host.node}, ${host.arch}`);
  out(`load average at the end: ${host.loadavg.map((load) => load.toFixed(2)).join(' ')}`);
  out();
  out(
    `${'benchmark'.padEnd(44)} ${'p50'.padStart(11)} ${'avg'.padStart(11)} ${'p99'.padStart(11)}`,
  );
  for (const [name, result] of results) {
    out(
      `${name.padEnd(44)} ${ns(result.p50).padStart(11)} ${ns(result.avg).padStart(11)} ${ns(result.p99).padStart(11)}`,
    );
  }
  out();
  out(
    `${'budget'.padEnd(58)} ${'limit'.padEnd(10)} ${'subject p50'.padStart(11)} ${'base p50'.padStart(11)} ${'measured'.padStart(11)}  met`,
  );
  for (const row of budgets) {
    const met = row.met === null ? 'info' : row.met ? 'yes' : 'NO';
    out(
      `${row.what.padEnd(58)} ${row.budget.padEnd(10)} ${ns(row.subjectNs).padStart(11)} ${ns(row.baselineNs).padStart(11)} ${row.measured.padStart(11)}  ${met}`,
    );
  }
  out();
  out(
    `${'allocation (numeric attributes, tso)'.padEnd(40)} ${'GC events'.padStart(10)}  bytes/access  met`,
  );
  for (const row of allocation) {
    const met = row.met === null ? 'info' : row.met ? 'yes' : 'NO';
    const bytes = row.bytesPerAccess === null ? '—' : row.bytesPerAccess.toFixed(3);
    out(
      `${row.kind.padEnd(40)} ${String(row.gcEvents).padStart(10)}  ${bytes.padStart(12)}  ${met}`,
    );
  }
  const missed = [...budgets, ...allocation].filter((row) => row.met === false).length;
  const checked = [...budgets, ...allocation].filter((row) => row.met !== null).length;
  out();
  out(`${checked - missed} of ${checked} budgets met`);
}
