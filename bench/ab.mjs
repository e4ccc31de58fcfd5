/**
 * Two builds of the library side by side in one process: `node bench/ab.mjs <distA> <distB>`
 * times the same small accesses through each, interleaved round by round, and prints the
 * best time per call of each and their ratio. For comparing a change with the commit before
 * it on a machine whose speed drifts: both builds meet the same drift, round after round.
 *
 * Build the other commit in a worktree first, e.g.
 * `git worktree add /tmp/before HEAD~1 && (cd /tmp/before && npm ci && npx tsup)`, then
 * `node bench/ab.mjs /tmp/before/dist dist`. Rows that only build B has (issue 10's adopted
 * memory and dirty log) print B alone.
 *
 * Every row has its own loop function, compiled from its own source text: loops from one
 * source share V8's feedback, and every row after the first would then time a polymorphic
 * call.
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [distA, distB] = process.argv.slice(2);
if (distA === undefined || distB === undefined) {
  console.error('usage: node bench/ab.mjs <distA> <distB>');
  process.exit(2);
}
const load = (dist) => import(pathToFileURL(resolve(dist, 'index.js')).href);
const libraries = [await load(distA), await load(distB)];
const CALLS = 100_000;
const ROUNDS = 40;
const MEMORY_SIZE = 1 << 20;
const ADDR = 4096;
const IOVA_BASE = 1 << 24;

/** The rows of one build; `withIssue10` adds those that need adopted memory and the log. */
function rowsOf(library, withIssue10) {
  const { DMAContext, GuestMemory, DMAAttributes, IommuDomain } = library;
  const { RELAXED, BIDIRECTIONAL } = DMAAttributes;
  const memory = new GuestMemory({ size: MEMORY_SIZE, barrierPolicy: 'tso' });
  const ctx = new DMAContext(memory);
  const domain = new IommuDomain();
  domain.map(IOVA_BASE, 0, MEMORY_SIZE, BIDIRECTIONAL);
  const iommu = new DMAContext(memory, { iommu: domain });
  const buffers = Object.fromEntries([8, 16, 64, 4096].map((size) => [size, new Uint8Array(size)]));
  let tick = 0;
  const next = () => (tick = (tick + 1) & 0xffff);
  const rows = {};
  for (const size of [8, 16, 64, 4096]) {
    const buf = buffers[size];
    rows[`read ${size}B`] = () => ctx.read(ADDR, buf, RELAXED);
    rows[`write ${size}B`] = () => ctx.write(ADDR, buf, RELAXED);
  }
  const buf8 = buffers[8];
  const buf64 = buffers[64];
  rows['readU32LE relaxed'] = () => ctx.readU32LE(ADDR, RELAXED);
  rows['writeU32LE relaxed'] = () => ctx.writeU32LE(ADDR, next(), RELAXED);
  rows['readU32LE acquire'] = () => ctx.readU32LE(ADDR);
  rows['set 64B'] = () => ctx.set(ADDR, 1, 64, RELAXED);
  rows['iommu write 64B'] = () => iommu.write(IOVA_BASE + ADDR, buf64, RELAXED);
  rows['iommu read 64B'] = () => iommu.read(IOVA_BASE + ADDR, buf64, RELAXED);
  rows['iommu readU32LE relaxed'] = () => iommu.readU32LE(IOVA_BASE + ADDR, RELAXED);
  // Per access, like the benchmark's batch row: one call of such a row is a batch of 16
  // accesses (a plain loop of 16 for the direct rows), and its time is given over 16. The
  // loop is compiled per row (see `loops` below): `run` says what runs it.
  const x16 = (access, run) => Object.assign(access, { x16: run });
  const inBatch = (body) => iommu.batch(body);
  const plain = (body) => body();
  rows['iommu batch read 64B (x16)'] = x16(
    () => iommu.read(IOVA_BASE + ADDR, buf64, RELAXED),
    inBatch,
  );
  rows['iommu batch write 64B (x16)'] = x16(
    () => iommu.write(IOVA_BASE + ADDR, buf64, RELAXED),
    inBatch,
  );
  rows['iommu batch readU32LE (x16)'] = x16(
    () => iommu.readU32LE(IOVA_BASE + ADDR, RELAXED),
    inBatch,
  );
  rows['direct read 64B (x16)'] = x16(() => ctx.read(ADDR, buf64, RELAXED), plain);
  rows['direct readU32LE (x16)'] = x16(() => ctx.readU32LE(ADDR, RELAXED), plain);
  rows['flags read 8B'] = () => ctx.read(ADDR, buf8, { relaxed: true });
  if (withIssue10) {
    const offset = 65536 + 8;
    const adopted = new DMAContext(
      new GuestMemory({
        backing: new SharedArrayBuffer(offset + MEMORY_SIZE),
        regions: [{ base: 0, size: MEMORY_SIZE, offset }],
        barrierPolicy: 'tso',
      }),
    );
    const logged = new DMAContext(
      new GuestMemory({ size: MEMORY_SIZE, barrierPolicy: 'tso', dirtyLog: { clients: ['code'] } }),
    );
    for (const size of [8, 64, 4096]) {
      const buf = buffers[size];
      rows[`adopted read ${size}B`] = () => adopted.read(ADDR, buf, RELAXED);
      rows[`adopted write ${size}B`] = () => adopted.write(ADDR, buf, RELAXED);
      rows[`dirty-log write ${size}B`] = () => logged.write(ADDR, buf, RELAXED);
    }
    rows['adopted writeU32LE relaxed'] = () => adopted.writeU32LE(ADDR, next(), RELAXED);
    rows['dirty-log writeU32LE relaxed'] = () => logged.writeU32LE(ADDR, next(), RELAXED);
  }
  return rows;
}

const builds = [
  rowsOf(libraries[0], 'dirtyLog' in libraries[0].GuestMemory.prototype),
  rowsOf(libraries[1], 'dirtyLog' in libraries[1].GuestMemory.prototype),
];
const names = [...new Set([...Object.keys(builds[0]), ...Object.keys(builds[1])])];
const best = names.map(() => [Infinity, Infinity]);
const loops = names.map((name) =>
  [0, 1].map((build) =>
    // Its own source text per row and build: see the module comment.
    name.endsWith('(x16)')
      ? new Function(
          'access',
          'calls',
          `/* ${build}: ${name} */ const run = access.x16;
            const body = () => { for (let j = 0; j < 16; j++) access(); };
            for (let i = 0; i < calls; i++) run(body);`,
        )
      : new Function(
          'access',
          'calls',
          `/* ${build}: ${name} */ for (let i = 0; i < calls; i++) access();`,
        ),
  ),
);
for (let round = 0; round < ROUNDS; round++) {
  for (const [index, name] of names.entries()) {
    for (const build of [0, 1]) {
      const access = builds[build][name];
      if (access === undefined) continue;
      // A "(x16)" row's call is 16 accesses: fewer calls, and its time per access.
      const per = name.endsWith('(x16)') ? 16 : 1;
      const calls = CALLS / per;
      const started = process.hrtime.bigint();
      loops[index][build](access, calls);
      const each = Number(process.hrtime.bigint() - started) / (calls * per);
      best[index][build] = Math.min(best[index][build], each);
    }
  }
}
const cell = (ns) => (Number.isFinite(ns) ? `${ns.toFixed(1)} ns` : '—');
console.log(`Node ${process.versions.node}; best of ${ROUNDS} rounds of ${CALLS} calls`);
console.log(`${'row'.padEnd(30)}${'A'.padStart(10)}${'B'.padStart(10)}${'B/A'.padStart(8)}`);
for (const [index, name] of names.entries()) {
  const [a, b] = best[index];
  const ratio = Number.isFinite(a) && Number.isFinite(b) ? (b / a).toFixed(2) : '';
  console.log(
    `${name.padEnd(30)}${cell(a).padStart(10)}${cell(b).padStart(10)}${ratio.padStart(8)}`,
  );
}
