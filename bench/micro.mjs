/**
 * The micro benchmark: every accessor beside the best hand-written TypedArray code for the
 * same work, timed by mitata in one run so that the ratios compare like with like.
 *
 * Each benchmark is described by { name, group, op, size, strength, policy, fn }, so that the
 * budgets, the tables and the chart can find what they need without parsing names.
 * Ratios use the median (p50) of mitata's samples: on a shared machine the average moves
 * with every other process, the median much less.
 */
import { DMAAttributes, DMAContext, GuestMemory, IommuDomain } from 'dma-attrs';
import {
  dmaBarrier,
  dmaMemoryRead,
  dmaMemoryReadRelaxed,
  dmaMemorySet,
  dmaMemoryWrite,
  DMADirection,
} from 'dma-attrs/legacy';
import { FloorAccessor, FloorIommuAccessor } from './floor.mjs';

const { BIDIRECTIONAL, RELAXED } = DMAAttributes;

/** The transfer sizes of the performance issue. */
export const SIZES = [8, 16, 64, 4096, 65536];
/** The barrier policies compared side by side. */
export const POLICIES = ['tso', 'strict'];

const ADDR = 4096;
const MEMORY_SIZE = 1 << 20;
const PAGE = 4096;
/** Where the IOMMU maps guest memory: IOVA = GPA + IOVA_BASE, so the copies touch the same bytes. */
const IOVA_BASE = 1 << 24;
const FLAGS_RELAXED = Object.freeze({ relaxed: true });

/**
 * Builds the benchmarks. Stores take a changing value, so that no compiler can drop a
 * repeated identical store; loads go through mitata's `do_not_optimize`.
 *
 * @param {(value: unknown) => void} doNotOptimize mitata's `do_not_optimize`.
 * @returns {Array<{ name: string, group: string, op: string, size: number, strength: string,
 *   policy: string, fn: () => void }>}
 */
export function microBenchmarks(doNotOptimize) {
  const memories = Object.fromEntries(
    POLICIES.map((policy) => [
      policy,
      new GuestMemory({ size: MEMORY_SIZE, barrierPolicy: policy }),
    ]),
  );
  const contexts = Object.fromEntries(
    POLICIES.map((policy) => [policy, new DMAContext(memories[policy])]),
  );
  const domain = new IommuDomain();
  domain.map(IOVA_BASE, 0, MEMORY_SIZE, BIDIRECTIONAL);
  const iommuCtx = new DMAContext(memories.tso, { iommu: domain });

  // The hand-written baseline works on the same SharedArrayBuffer through its own views.
  const buffer = memories.tso.buffer;
  const guest = new Uint8Array(buffer);
  const guestView = new DataView(buffer);
  const guestU16 = new Uint16Array(buffer);
  const guestU32 = new Uint32Array(buffer);
  const guestU64 = new BigUint64Array(buffer);
  const fenceWord = new Int32Array(new SharedArrayBuffer(64), 0, 1);
  const buffers = new Map(SIZES.map((size) => [size, new Uint8Array(size).fill(0x5a)]));
  let tick = 0;
  const next = () => (tick = (tick + 1) & 0xfffffff);
  // Fixed-width rows, raw and library alike, access a word that moves through one page
  // (8-aligned): at a constant address V8 hoists a raw typed-array load out of the loop
  // (0.3 ns), which no accessor call can match. The page is one that no transfer or set row
  // touches, so it holds only what the write rows store (below 2^28): a u32 of 2^31 or more,
  // as the set rows leave at ADDR, is a heap number, whose allocation on every load, raw and
  // library alike, once hid the accessors' cost (raw `u32[i]` 7.4 ns instead of 1.4).
  const WORDS = ADDR + SIZES.at(-1) + PAGE;
  // The u64 write rows, raw and library alike, store bigints made beforehand. A row that
  // made one per call (`BigInt(next())`) measured V8's escape analysis: for a raw element
  // store the bigint is never made (1.1 ns), while any call that takes it as an argument
  // must allocate it (about 7 ns), so the rows compared an allocation with none.
  const BIGS = Array.from({ length: 256 }, (_, index) => BigInt(index * 0x1_0001 + 7));
  let bigSpot = 0;
  const big = () => BIGS[(bigSpot = (bigSpot + 1) & 0xff)];
  let spot = 0;
  const word = () => WORDS + (spot = (spot + 8) & 0xff8);

  const list = [];
  const add = (name, meta, fn) => {
    list.push({
      name,
      group: meta.group,
      op: meta.op,
      size: meta.size,
      strength: meta.strength ?? 'relaxed',
      policy: meta.policy ?? 'tso',
      fn,
    });
  };

  // ---- read / write at each size ----------------------------------------------------------
  for (const size of SIZES) {
    const buf = buffers.get(size);
    const end = ADDR + size;
    const meta = (op, strength, policy = 'tso') => ({
      group: 'transfer',
      op,
      size,
      strength,
      policy,
    });
    add(`raw read loop ${size}B`, meta('read', 'raw'), () => {
      for (let index = 0; index < size; index++) buf[index] = guest[ADDR + index];
    });
    add(`raw read subarray+set ${size}B`, meta('read', 'raw'), () => {
      buf.set(guest.subarray(ADDR, end));
    });
    add(`raw write loop ${size}B`, meta('write', 'raw'), () => {
      for (let index = 0; index < size; index++) guest[ADDR + index] = buf[index];
    });
    add(`raw write set ${size}B`, meta('write', 'raw'), () => {
      guest.set(buf, ADDR);
    });
    for (const policy of POLICIES) {
      const ctx = contexts[policy];
      add(`relaxed read ${size}B ${policy}`, meta('read', 'relaxed', policy), () => {
        ctx.read(ADDR, buf, RELAXED);
      });
      add(`acquire read ${size}B ${policy}`, meta('read', 'acquire', policy), () => {
        ctx.read(ADDR, buf);
      });
      // A full barrier is what `barrier('full')` beside a relaxed access costs: the
      // store→load pattern of virtio's notification suppression.
      add(`full read ${size}B ${policy}`, meta('read', 'full', policy), () => {
        ctx.read(ADDR, buf, RELAXED);
        ctx.barrier('full');
      });
      add(`relaxed write ${size}B ${policy}`, meta('write', 'relaxed', policy), () => {
        ctx.write(ADDR, buf, RELAXED);
      });
      add(`release write ${size}B ${policy}`, meta('write', 'release', policy), () => {
        ctx.write(ADDR, buf);
      });
      add(`full write ${size}B ${policy}`, meta('write', 'full', policy), () => {
        ctx.barrier('full');
        ctx.write(ADDR, buf, RELAXED);
      });
    }
  }

  // ---- set (memset) at each size --------------------------------------------------------
  for (const size of SIZES) {
    const meta = (strength, policy = 'tso') => ({
      group: 'set',
      op: 'set',
      size,
      strength,
      policy,
    });
    add(`raw fill ${size}B`, meta('raw'), () => {
      guest.fill(0xab, ADDR, ADDR + size);
    });
    for (const policy of POLICIES) {
      const ctx = contexts[policy];
      add(`relaxed set ${size}B ${policy}`, meta('relaxed', policy), () => {
        ctx.set(ADDR, 0xab, size, RELAXED);
      });
      add(`release set ${size}B ${policy}`, meta('release', policy), () => {
        ctx.set(ADDR, 0xab, size);
      });
    }
  }

  // ---- fixed-width ------------------------------------------------------------------------
  const fixed = (op, size, strength, policy = 'tso', group = 'fixed') => ({
    group,
    op,
    size,
    strength,
    policy,
  });
  add('raw readU32LE DataView', fixed('readU32LE', 4, 'raw'), () => {
    doNotOptimize(guestView.getUint32(word(), true));
  });
  add('raw readU32LE u32[i]', fixed('readU32LE', 4, 'raw'), () => {
    doNotOptimize(guestU32[word() >> 2]);
  });
  add('raw readU32LE Atomics.load', fixed('readU32LE', 4, 'raw-atomic'), () => {
    doNotOptimize(Atomics.load(guestU32, word() >> 2));
  });
  add('raw writeU32LE DataView', fixed('writeU32LE', 4, 'raw'), () => {
    guestView.setUint32(word(), next(), true);
  });
  add('raw writeU32LE u32[i]', fixed('writeU32LE', 4, 'raw'), () => {
    guestU32[word() >> 2] = next();
  });
  add('raw writeU32LE Atomics.store', fixed('writeU32LE', 4, 'raw-atomic'), () => {
    Atomics.store(guestU32, word() >> 2, next());
  });
  add('raw readU16LE u16[i]', fixed('readU16LE', 2, 'raw'), () => {
    doNotOptimize(guestU16[word() >> 1]);
  });
  add('raw readU16LE Atomics.load', fixed('readU16LE', 2, 'raw-atomic'), () => {
    doNotOptimize(Atomics.load(guestU16, word() >> 1));
  });
  add('raw readU64LE u64[i]', fixed('readU64LE', 8, 'raw'), () => {
    doNotOptimize(guestU64[word() >> 3]);
  });
  add('raw writeU64LE u64[i]', fixed('writeU64LE', 8, 'raw'), () => {
    guestU64[word() >> 3] = big();
  });
  add('raw writeU64LE Atomics.store', fixed('writeU64LE', 8, 'raw-atomic'), () => {
    Atomics.store(guestU64, word() >> 3, big());
  });
  add('raw readU64LE DataView', fixed('readU64LE', 8, 'raw'), () => {
    doNotOptimize(guestView.getBigUint64(word(), true));
  });
  add('raw readU64LE Atomics.load', fixed('readU64LE', 8, 'raw-atomic'), () => {
    doNotOptimize(Atomics.load(guestU64, word() >> 3));
  });
  add('raw Atomics.add (fence RMW)', fixed('barrier', 0, 'raw-atomic'), () => {
    Atomics.add(fenceWord, 0, 0);
  });
  for (const policy of POLICIES) {
    const ctx = contexts[policy];
    add(`relaxed readU32LE ${policy}`, fixed('readU32LE', 4, 'relaxed', policy), () => {
      doNotOptimize(ctx.readU32LE(word(), RELAXED));
    });
    add(`acquire readU32LE ${policy}`, fixed('readU32LE', 4, 'acquire', policy), () => {
      doNotOptimize(ctx.readU32LE(word()));
    });
    add(`relaxed writeU32LE ${policy}`, fixed('writeU32LE', 4, 'relaxed', policy), () => {
      ctx.writeU32LE(word(), next(), RELAXED);
    });
    add(`release writeU32LE ${policy}`, fixed('writeU32LE', 4, 'release', policy), () => {
      ctx.writeU32LE(word(), next());
    });
    add(`relaxed readU16LE ${policy}`, fixed('readU16LE', 2, 'relaxed', policy), () => {
      doNotOptimize(ctx.readU16LE(word(), RELAXED));
    });
    add(`acquire readU16LE ${policy}`, fixed('readU16LE', 2, 'acquire', policy), () => {
      doNotOptimize(ctx.readU16LE(word()));
    });
    add(`relaxed writeU64LE ${policy}`, fixed('writeU64LE', 8, 'relaxed', policy), () => {
      ctx.writeU64LE(word(), big(), RELAXED);
    });
    add(`release writeU64LE ${policy}`, fixed('writeU64LE', 8, 'release', policy), () => {
      ctx.writeU64LE(word(), big());
    });
    add(`relaxed readU64LE ${policy}`, fixed('readU64LE', 8, 'relaxed', policy), () => {
      doNotOptimize(ctx.readU64LE(word(), RELAXED));
    });
    add(`acquire readU64LE ${policy}`, fixed('readU64LE', 8, 'acquire', policy), () => {
      doNotOptimize(ctx.readU64LE(word()));
    });
    add(`barrier('full') ${policy}`, fixed('barrier', 0, 'full', policy), () => {
      ctx.barrier('full');
    });
  }

  // ---- the floor: a throwaway accessor with the contract's checks and nothing else ---------
  // (bench/floor.mjs), on the same words as the raw and library rows.
  const floor = new FloorAccessor(buffer, 0, MEMORY_SIZE, 0);
  const floorMeta = (op, size) => ({ group: 'floor', op, size, strength: 'relaxed' });
  add('floor relaxed readU16LE', floorMeta('readU16LE', 2), () => {
    doNotOptimize(floor.readU16LE(word(), RELAXED));
  });
  add('floor relaxed readU32LE', floorMeta('readU32LE', 4), () => {
    doNotOptimize(floor.readU32LE(word(), RELAXED));
  });
  add('floor relaxed writeU32LE', floorMeta('writeU32LE', 4), () => {
    floor.writeU32LE(word(), next(), RELAXED);
  });
  // The same load behind the least an IOTLB hit needs (bench/floor.mjs): what any IOMMU with
  // the library's unmap protocol adds to a single access.
  const floorIommu = new FloorIommuAccessor(buffer, IOVA_BASE, MEMORY_SIZE);
  add('floor iommu relaxed readU32LE', floorMeta('readU32LE', 4), () => {
    doNotOptimize(floorIommu.readU32LE(IOVA_BASE + word(), RELAXED));
  });

  // ---- flag objects beside numeric attributes -----------------------------------------------
  const ctx = contexts.tso;
  for (const size of [8, 64]) {
    const buf = buffers.get(size);
    const meta = (op, style) => ({ group: 'flags', op, size, strength: `relaxed (${style})` });
    add(`flags-const relaxed read ${size}B tso`, meta('read', 'flags-const'), () => {
      ctx.read(ADDR, buf, FLAGS_RELAXED);
    });
    add(`flags-inline relaxed read ${size}B tso`, meta('read', 'flags-inline'), () => {
      ctx.read(ADDR, buf, { relaxed: true });
    });
    add(`flags-const relaxed write ${size}B tso`, meta('write', 'flags-const'), () => {
      ctx.write(ADDR, buf, FLAGS_RELAXED);
    });
    add(`flags-inline relaxed write ${size}B tso`, meta('write', 'flags-inline'), () => {
      ctx.write(ADDR, buf, { relaxed: true });
    });
  }
  add(
    'flags-const relaxed readU32LE tso',
    fixed('readU32LE', 4, 'relaxed (flags-const)', 'tso', 'flags'),
    () => {
      doNotOptimize(ctx.readU32LE(word(), FLAGS_RELAXED));
    },
  );
  add(
    'flags-inline relaxed readU32LE tso',
    fixed('readU32LE', 4, 'relaxed (flags-inline)', 'tso', 'flags'),
    () => {
      doNotOptimize(ctx.readU32LE(word(), { relaxed: true }));
    },
  );

  // ---- IOMMU on: an IOTLB hit on one page, and an access that crosses a page ---------------
  for (const size of [64, 4096]) {
    const buf = buffers.get(size);
    const single = IOVA_BASE + ADDR;
    const crossing = IOVA_BASE + 2 * PAGE - size / 2;
    const meta = (op, where) => ({ group: 'iommu', op, size, strength: `relaxed, ${where}` });
    add(`iommu read ${size}B single page`, meta('read', 'single page'), () => {
      iommuCtx.read(single, buf, RELAXED);
    });
    add(`iommu read ${size}B page-crossing`, meta('read', 'page-crossing'), () => {
      iommuCtx.read(crossing, buf, RELAXED);
    });
    add(`iommu write ${size}B single page`, meta('write', 'single page'), () => {
      iommuCtx.write(single, buf, RELAXED);
    });
    add(`iommu write ${size}B page-crossing`, meta('write', 'page-crossing'), () => {
      iommuCtx.write(crossing, buf, RELAXED);
    });
    if (size === 64) {
      // Issue 13: a batch of 16 accesses (one IOMMU entry), beside the same 16 without an
      // IOMMU: the difference over 16 is the per-access cost inside a batch.
      add(`iommu batch 16 x read ${size}B single page`, meta('read', 'batch of 16'), () => {
        iommuCtx.batch(() => {
          for (let index = 0; index < 16; index++) iommuCtx.read(single, buf, RELAXED);
        });
      });
      add(`16 x relaxed read ${size}B tso`, meta('read', 'no IOMMU, 16 in a row'), () => {
        for (let index = 0; index < 16; index++) ctx.read(ADDR, buf, RELAXED);
      });
      add('iommu readU32LE single page', meta('readU32LE', 'single page'), () => {
        doNotOptimize(iommuCtx.readU32LE(IOVA_BASE + word(), RELAXED));
      });
    }
    // The same page-crossing access without an IOMMU, for a like-for-like baseline.
    add(`relaxed read ${size}B tso, page-crossing address`, meta('read', 'no IOMMU'), () => {
      ctx.read(2 * PAGE - size / 2, buf, RELAXED);
    });
    add(`relaxed write ${size}B tso, page-crossing address`, meta('write', 'no IOMMU'), () => {
      ctx.write(2 * PAGE - size / 2, buf, RELAXED);
    });
  }

  // ---- issue 10: adopted memory at an offset, and the dirty log ----------------------------
  {
    // RAM at 64 KiB + 8 into an emulator's own buffer, as a wasm heap holds it.
    const RAM_OFFSET = 65536 + 8;
    const backing = new SharedArrayBuffer(RAM_OFFSET + MEMORY_SIZE);
    const adopted = new DMAContext(
      new GuestMemory({
        backing,
        regions: [{ base: 0, size: MEMORY_SIZE, offset: RAM_OFFSET }],
        barrierPolicy: 'tso',
      }),
    );
    const logged = new DMAContext(
      new GuestMemory({ size: MEMORY_SIZE, barrierPolicy: 'tso', dirtyLog: { clients: ['code'] } }),
    );
    for (const size of [8, 64, 4096]) {
      const buf = buffers.get(size);
      const meta = (op, where) => ({ group: 'adopted', op, size, strength: `relaxed, ${where}` });
      add(`adopted read ${size}B offset`, meta('read', 'adopted at an offset'), () => {
        adopted.read(ADDR, buf, RELAXED);
      });
      add(`adopted write ${size}B offset`, meta('write', 'adopted at an offset'), () => {
        adopted.write(ADDR, buf, RELAXED);
      });
      add(`dirty-log write ${size}B one client`, meta('write', 'dirty log, one client'), () => {
        logged.write(ADDR, buf, RELAXED);
      });
    }
    add(
      'adopted readU32LE offset',
      fixed('readU32LE', 4, 'relaxed, adopted', 'tso', 'adopted'),
      () => {
        doNotOptimize(adopted.readU32LE(word(), RELAXED));
      },
    );
    add(
      'adopted writeU32LE offset',
      fixed('writeU32LE', 4, 'relaxed, adopted', 'tso', 'adopted'),
      () => {
        adopted.writeU32LE(word(), next(), RELAXED);
      },
    );
    add(
      'dirty-log writeU32LE one client',
      fixed('writeU32LE', 4, 'relaxed, dirty log', 'tso', 'adopted'),
      () => {
        logged.writeU32LE(word(), next(), RELAXED);
      },
    );
  }

  // ---- the legacy API beside the new one, for the same work ---------------------------------
  {
    const buf = buffers.get(64);
    const meta = (op, api) => ({ group: 'legacy', op, size: 64, strength: api });
    add('legacy dmaMemoryRead 64B', meta('read', 'legacy (full before)'), () => {
      dmaMemoryRead(ctx, ADDR, buf, 64);
    });
    add('legacy dmaMemoryReadRelaxed 64B', meta('read', 'legacy relaxed'), () => {
      dmaMemoryReadRelaxed(ctx, ADDR, buf, 64);
    });
    add('legacy dmaMemoryWrite 64B', meta('write', 'legacy (full before)'), () => {
      dmaMemoryWrite(ctx, ADDR, buf, 64);
    });
    add('legacy dmaMemorySet 64B', meta('set', 'legacy (full before)'), () => {
      dmaMemorySet(ctx, ADDR, 0xab, 64);
    });
    add('legacy dmaBarrier', meta('barrier', 'legacy (full)'), () => {
      dmaBarrier(ctx, DMADirection.FROM_DEVICE);
    });
    add('map+unmap BIDIRECTIONAL 64B tso', meta('map', 'new'), () => {
      ctx.unmap(ctx.map(ADDR, 64, BIDIRECTIONAL));
    });
  }
  return list;
}

/**
 * The pairs the "legacy vs new" table shows: [legacy benchmark, new benchmark, what].
 */
export const LEGACY_PAIRS = [
  ['legacy dmaMemoryRead 64B', 'acquire read 64B tso', 'read 64 B: full before vs acquire after'],
  ['legacy dmaMemoryRead 64B', 'full read 64B tso', 'read 64 B: same barrier (full)'],
  ['legacy dmaMemoryReadRelaxed 64B', 'relaxed read 64B tso', 'relaxed read 64 B'],
  ['legacy dmaMemoryWrite 64B', 'release write 64B tso', 'write 64 B: full before vs release'],
  ['legacy dmaMemorySet 64B', 'release set 64B tso', 'set 64 B: full before vs release'],
  ['legacy dmaBarrier', "barrier('full') tso", 'barrier'],
];

/** Timing options of mitata's `measure` for the full run and for `--quick`. */
export const TIMING = {
  full: { min_cpu_time: 400e6, min_samples: 12 },
  quick: { min_cpu_time: 15e6, min_samples: 12 },
};

/**
 * Warms every benchmark, then measures each with mitata.
 *
 * Warming all of them first puts every piece of type feedback the library will ever see
 * (numbers and flag objects, every size, both policies, IOMMU on and off) in place before
 * timing starts: nothing deoptimizes halfway through, and every benchmark times the same code.
 *
 * @param {{ measure: Function }} mitata
 * @param {ReturnType<typeof microBenchmarks>} benchmarks
 * @param {{ quick: boolean, filter: RegExp, progress: (line: string) => void }} options
 * @returns {Promise<Array<object>>} one result per benchmark, in nanoseconds.
 */
export async function runMicro(mitata, benchmarks, { quick, filter, progress }) {
  const selected = benchmarks.filter((entry) => filter.test(entry.name));
  progress(`micro: warming ${selected.length} benchmarks…`);
  for (const entry of selected) {
    const calls = Math.max(200, Math.floor((quick ? 5e4 : 4e5) / Math.max(entry.size, 8)));
    for (let call = 0; call < calls; call++) entry.fn();
  }
  const timing = quick ? TIMING.quick : TIMING.full;
  const results = [];
  let done = 0;
  for (const entry of selected) {
    const stats = await mitata.measure(entry.fn, { ...timing });
    done++;
    results.push({
      name: entry.name,
      group: entry.group,
      op: entry.op,
      size: entry.size,
      strength: entry.strength,
      policy: entry.policy,
      p50: stats.p50,
      avg: stats.avg,
      p75: stats.p75,
      p99: stats.p99,
      min: stats.min,
      max: stats.max,
      samples: stats.samples.length,
    });
    progress(
      `[${String(done).padStart(3)}/${selected.length}] ${entry.name.padEnd(48)} p50 ${formatNs(stats.p50).padStart(10)}`,
    );
  }
  return results;
}

/** Formats nanoseconds for people. */
export function formatNs(value) {
  if (value === undefined || value === null || Number.isNaN(value)) return '—';
  if (value >= 1e6) return `${(value / 1e6).toFixed(2)} ms`;
  if (value >= 1e3) return `${(value / 1e3).toFixed(2)} µs`;
  return `${value.toFixed(2)} ns`;
}
