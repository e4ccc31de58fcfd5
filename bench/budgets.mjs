/**
 * Every performance budget of the issues in one table: what was measured, the limit, met or not.
 *
 * A row is `{ name, issue, limit, measured, unit, comparison, met, subject?, baseline?,
 * subjectNs?, baselineNs?, floorNs? }` (`floorNs`: see bench/floor.mjs) where `unit` is `'×'`
 * (a ratio of medians), `'ns'` (a difference of medians), `'files/s'`, `'MiB'`, `'GC events'`
 * or `'s'`, and `met` compares `measured` with `limit` by `comparison` (`'<='` or `'>='`). A
 * budget that could not be measured in this run has `measured: null`, `met: null` and a
 * `skipped` reason.
 */

/**
 * @param {{ micro: Array<object>, allocation: { kinds: Array<object> } | undefined,
 *   codemod: object | undefined, elapsedSeconds: number | undefined }} measured
 * @returns {Array<object>}
 */
export function computeBudgets({ micro, allocation, codemod, elapsedSeconds }) {
  const byName = new Map(micro.map((result) => [result.name, result]));
  const rows = [];

  /** The fastest of several benchmarks by median, as the baseline. */
  const fastest = (...names) => {
    let best;
    for (const name of names) {
      const result = byName.get(name);
      if (result !== undefined && (best === undefined || result.p50 < best.p50)) best = result;
    }
    return best;
  };
  const get = (nameOrResult) =>
    typeof nameOrResult === 'string' ? byName.get(nameOrResult) : nameOrResult;

  /** subject / baseline ≤ limit (or, with `inverse`, baseline / subject ≥ limit: throughput). */
  const ratio = (issue, name, subjectName, baselineName, limit, inverse = false) => {
    const subject = get(subjectName);
    const baseline = get(baselineName);
    if (subject === undefined || baseline === undefined) return;
    const measured = inverse ? baseline.p50 / subject.p50 : subject.p50 / baseline.p50;
    rows.push({
      name,
      issue,
      limit,
      measured,
      unit: '×',
      comparison: inverse ? '>=' : '<=',
      met: inverse ? measured >= limit : measured <= limit,
      subject: subject.name,
      baseline: baseline.name,
      subjectNs: subject.p50,
      baselineNs: baseline.p50,
    });
  };
  /** subject - baseline ≤ limit nanoseconds. */
  const delta = (issue, name, subjectName, baselineName, limit) => {
    const subject = get(subjectName);
    const baseline = get(baselineName);
    if (subject === undefined || baseline === undefined) return;
    const measured = subject.p50 - baseline.p50;
    rows.push({
      name,
      issue,
      limit,
      measured,
      unit: 'ns',
      comparison: '<=',
      met: measured <= limit,
      subject: subject.name,
      baseline: baseline.name,
      subjectNs: subject.p50,
      baselineNs: baseline.p50,
    });
  };

  // ---- issue 2: the core ------------------------------------------------------------------
  for (const size of [8, 64, 4096, 65536]) {
    const limit = size >= 64 ? 1.25 : 2;
    ratio(
      2,
      `relaxed read ${size} B ≤ ${limit}× best raw`,
      `relaxed read ${size}B tso`,
      fastest(`raw read loop ${size}B`, `raw read subarray+set ${size}B`),
      limit,
    );
    ratio(
      2,
      `relaxed write ${size} B ≤ ${limit}× best raw`,
      `relaxed write ${size}B tso`,
      fastest(`raw write loop ${size}B`, `raw write set ${size}B`),
      limit,
    );
  }
  for (const size of [8, 64, 4096, 65536]) {
    ratio(
      2,
      `acquire read ${size} B ≤ 1.05× relaxed (tso)`,
      `acquire read ${size}B tso`,
      `relaxed read ${size}B tso`,
      1.05,
    );
    ratio(
      2,
      `release write ${size} B ≤ 1.05× relaxed (tso)`,
      `release write ${size}B tso`,
      `relaxed write ${size}B tso`,
      1.05,
    );
  }
  ratio(
    2,
    'acquire readU32LE ≤ 1.05× relaxed (tso)',
    'acquire readU32LE tso',
    'relaxed readU32LE tso',
    1.05,
  );
  ratio(
    2,
    'release writeU32LE ≤ 1.05× relaxed (tso)',
    'release writeU32LE tso',
    'relaxed writeU32LE tso',
    1.05,
  );
  ratio(
    2,
    'release set 64 B ≤ 1.05× relaxed (tso)',
    'release set 64B tso',
    'relaxed set 64B tso',
    1.05,
  );
  for (const policy of ['tso', 'strict']) {
    for (const size of [8, 64, 4096, 65536]) {
      delta(
        2,
        `full read ${size} B ≤ relaxed + 15 ns (${policy})`,
        `full read ${size}B ${policy}`,
        `relaxed read ${size}B ${policy}`,
        15,
      );
      delta(
        2,
        `full write ${size} B ≤ relaxed + 15 ns (${policy})`,
        `full write ${size}B ${policy}`,
        `relaxed write ${size}B ${policy}`,
        15,
      );
    }
  }
  // The barrier itself, without a copy beside it: at 4 KiB and above the copy's own
  // run-to-run spread is larger than 15 ns, so the per-size rows above are noisy there.
  for (const policy of ['tso', 'strict']) {
    const barrier = get(`barrier('full') ${policy}`);
    if (barrier !== undefined) {
      rows.push({
        name: `barrier('full') alone ≤ 15 ns (${policy})`,
        issue: 2,
        limit: 15,
        measured: barrier.p50,
        unit: 'ns',
        comparison: '<=',
        met: barrier.p50 <= 15,
        subject: barrier.name,
        subjectNs: barrier.p50,
      });
    }
  }
  for (const size of [8, 64]) {
    for (const op of ['read', 'write']) {
      for (const style of ['const', 'inline']) {
        delta(
          2,
          `flag object (${style}) ${op} ${size} B ≤ numeric + 15 ns`,
          `flags-${style} relaxed ${op} ${size}B tso`,
          `relaxed ${op} ${size}B tso`,
          15,
        );
      }
    }
  }
  for (const style of ['const', 'inline']) {
    delta(
      2,
      `flag object (${style}) readU32LE ≤ numeric + 15 ns`,
      `flags-${style} relaxed readU32LE tso`,
      'relaxed readU32LE tso',
      15,
    );
  }
  // Not in the issue's list, held to its 8 B budget by analogy: a u32 is smaller than 8 B.
  ratio(
    2,
    'relaxed readU32LE ≤ 2× best raw (the 8 B budget by analogy; not in the issue)',
    'relaxed readU32LE tso',
    fastest('raw readU32LE DataView', 'raw readU32LE u32[i]'),
    2,
  );
  ratio(
    2,
    'relaxed writeU32LE ≤ 2× best raw (the 8 B budget by analogy; not in the issue)',
    'relaxed writeU32LE tso',
    fastest('raw writeU32LE DataView', 'raw writeU32LE u32[i]'),
    2,
  );
  ratio(2, 'relaxed set 64 B ≤ 1.25× raw fill', 'relaxed set 64B tso', 'raw fill 64B', 1.25);

  const zeroKinds = allocation?.kinds.filter((row) => row.expect === 'zero') ?? [];
  if (zeroKinds.length > 0) {
    const events = zeroKinds.reduce((sum, row) => sum + row.gcEvents, 0);
    rows.push({
      name: `no allocation per access, numeric attributes (GC events over ${zeroKinds.length} kinds × ${allocation.kinds[0]?.accesses ?? 0} accesses)`,
      issue: 2,
      limit: 0,
      measured: events,
      unit: 'GC events',
      comparison: '<=',
      met: events === 0,
    });
  }

  // ---- issue 10: adopted memory and the dirty log -------------------------------------------
  for (const size of [8, 64, 4096]) {
    for (const op of ['read', 'write']) {
      ratio(
        10,
        `adopted memory at an offset, ${op} ${size} B ≤ 1.05× allocated`,
        `adopted ${op} ${size}B offset`,
        `relaxed ${op} ${size}B tso`,
        1.05,
      );
    }
  }
  ratio(
    10,
    'adopted memory at an offset, readU32LE ≤ 1.05× allocated',
    'adopted readU32LE offset',
    'relaxed readU32LE tso',
    1.05,
  );
  ratio(
    10,
    'adopted memory at an offset, writeU32LE ≤ 1.05× allocated',
    'adopted writeU32LE offset',
    'relaxed writeU32LE tso',
    1.05,
  );
  delta(
    10,
    'dirty log (one client), write 8 B ≤ no log + 12 ns',
    'dirty-log write 8B one client',
    'relaxed write 8B tso',
    12,
  );
  delta(
    10,
    'dirty log (one client), write 4 KiB ≤ no log + 15 ns',
    'dirty-log write 4096B one client',
    'relaxed write 4096B tso',
    15,
  );

  // ---- issue 13: small accesses, the flag object, the IOMMU, on each Node version -----------
  for (const size of [8, 16, 64, 4096]) {
    const limit = size >= 64 ? 1.1 : 1.3;
    for (const op of ['read', 'write']) {
      ratio(
        13,
        `relaxed ${op} ${size} B ≤ ${limit}× best raw`,
        `relaxed ${op} ${size}B tso`,
        op === 'read'
          ? fastest(`raw read loop ${size}B`, `raw read subarray+set ${size}B`)
          : fastest(`raw write loop ${size}B`, `raw write set ${size}B`),
        limit,
      );
    }
  }
  const plain = [
    ['relaxed readU16LE tso', 'raw readU16LE u16[i]', 1.5],
    ['relaxed readU32LE tso', 'raw readU32LE u32[i]', 1.5],
    ['relaxed writeU32LE tso', 'raw writeU32LE u32[i]', 1.5],
    ['acquire readU16LE tso', 'raw readU16LE Atomics.load', 1.3],
    ['acquire readU32LE tso', 'raw readU32LE Atomics.load', 1.3],
    ['release writeU32LE tso', 'raw writeU32LE Atomics.store', 1.3],
    ['relaxed readU64LE tso', 'raw readU64LE u64[i]', 1.5],
    ['relaxed writeU64LE tso', 'raw writeU64LE u64[i]', 1.5],
    ['acquire readU64LE tso', 'raw readU64LE Atomics.load', 1.5],
    ['release writeU64LE tso', 'raw writeU64LE Atomics.store', 1.5],
  ];
  for (const [subject, baseline, limit] of plain) {
    ratio(
      13,
      `${subject.replace(/ tso$/, '')} ≤ ${limit}× ${baseline.replace(/^raw \w+ /, '')}`,
      subject,
      baseline,
      limit,
    );
  }
  // Not a budget: the floor (bench/floor.mjs), what an accessor with only the contract's checks
  // costs on the same words, beside the three RELAXED rows, so that each run tells how much of
  // the gap to raw code any such accessor pays and how much is the library's.
  for (const op of ['readU16LE', 'readU32LE', 'writeU32LE']) {
    const floorRow = get(`floor relaxed ${op}`);
    const budget = rows.find((row) => row.subject === `relaxed ${op} tso`);
    if (floorRow !== undefined && budget !== undefined) budget.floorNs = floorRow.p50;
  }
  // And the IOTLB hit's floor: the same load behind the least the unmap protocol needs (one
  // compareExchange to enter, a generation check, one IOTLB entry, a plain store to leave).
  {
    const floorRow = get('floor iommu relaxed readU32LE');
    const budget = rows.find((row) => row.subject === 'iommu readU32LE single page');
    if (floorRow !== undefined && budget !== undefined) budget.floorNs = floorRow.p50;
  }
  for (const [subject, baseline] of [
    ['flags-inline relaxed read 8B tso', 'relaxed read 8B tso'],
    ['flags-inline relaxed write 8B tso', 'relaxed write 8B tso'],
    ['flags-inline relaxed readU32LE tso', 'relaxed readU32LE tso'],
  ]) {
    delta(
      13,
      `${subject.replace(/^flags-inline relaxed /, 'a flag object, ').replace(/ tso$/, '')} ≤ numeric + 8 ns`,
      subject,
      baseline,
      8,
    );
  }
  delta(
    13,
    'IOTLB hit, read 64 B ≤ no IOMMU + 12 ns',
    'iommu read 64B single page',
    'relaxed read 64B tso',
    12,
  );
  delta(
    13,
    'IOTLB hit, write 64 B ≤ no IOMMU + 12 ns',
    'iommu write 64B single page',
    'relaxed write 64B tso',
    12,
  );
  delta(
    13,
    'IOTLB hit, readU32LE ≤ no IOMMU + 12 ns',
    'iommu readU32LE single page',
    'relaxed readU32LE tso',
    12,
  );
  {
    const batched = get('iommu batch 16 x read 64B single page');
    const plainRun = get('16 x relaxed read 64B tso');
    if (batched !== undefined && plainRun !== undefined) {
      const measured = (batched.p50 - plainRun.p50) / 16;
      rows.push({
        name: 'IOTLB hit inside a batch, per read 64 B ≤ no IOMMU + 3 ns',
        issue: 13,
        limit: 3,
        measured,
        unit: 'ns',
        comparison: '<=',
        met: measured <= 3,
        subject: batched.name,
        baseline: plainRun.name,
        subjectNs: batched.p50,
        baselineNs: plainRun.p50,
      });
    }
  }
  for (const op of ['read', 'write']) {
    ratio(
      13,
      `IOMMU ${op} 4 KiB ≥ 0.95× direct`,
      `iommu ${op} 4096B single page`,
      `relaxed ${op} 4096B tso`,
      0.95,
      true,
    );
  }

  // ---- issue 3: the IOMMU -------------------------------------------------------------------
  for (const size of [64, 4096]) {
    for (const op of ['read', 'write']) {
      delta(
        3,
        `IOTLB hit, ${op} ${size} B single page ≤ no IOMMU + 15 ns`,
        `iommu ${op} ${size}B single page`,
        `relaxed ${op} ${size}B tso`,
        15,
      );
    }
  }
  for (const op of ['read', 'write']) {
    ratio(
      3,
      `IOMMU ${op} 4 KiB single page ≥ 0.9× no-IOMMU throughput`,
      `iommu ${op} 4096B single page`,
      `relaxed ${op} 4096B tso`,
      0.9,
      true,
    );
    ratio(
      3,
      `IOMMU ${op} 4 KiB page-crossing ≥ 0.9× no-IOMMU throughput`,
      `iommu ${op} 4096B page-crossing`,
      `relaxed ${op} 4096B tso, page-crossing address`,
      0.9,
      true,
    );
  }

  // ---- issue 4: the codemod -----------------------------------------------------------------
  const codemodRow = (name, limit, unit, comparison, value) => {
    if (codemod === undefined || codemod.skipped !== undefined || value === undefined) {
      rows.push({
        name,
        issue: 4,
        limit,
        measured: null,
        unit,
        comparison,
        met: null,
        skipped: codemod?.skipped ?? 'not run',
      });
      return;
    }
    rows.push({
      name,
      issue: 4,
      limit,
      measured: value,
      unit,
      comparison,
      met: comparison === '<=' ? value <= limit : value >= limit,
    });
  };
  codemodRow(
    'codemod, 2,000 files (~16 MB): ≥ 400 files/s',
    400,
    'files/s',
    '>=',
    codemod?.filesPerSecond,
  );
  codemodRow(
    'codemod, 2,000 files (~16 MB): ≤ 1 GiB peak RSS',
    1024,
    'MiB',
    '<=',
    codemod?.peakRssMiB,
  );

  // ---- issue 6: this benchmark --------------------------------------------------------------
  if (elapsedSeconds !== undefined) {
    rows.push({
      name: 'bench --quick finishes in < 30 s',
      issue: 6,
      limit: 30,
      measured: elapsedSeconds,
      unit: 's',
      comparison: '<=',
      met: elapsedSeconds < 30,
    });
  }
  return rows;
}

/** A budget's measured value as text: `1.031×`, `+4.20 ns` (a difference), `812 files/s`. */
export function formatBudgetValue(row) {
  const { measured: value, unit } = row;
  if (value === null || value === undefined) return '—';
  if (unit === '×') return `${value.toFixed(3)}×`;
  if (unit === 'ns' && row.baseline === undefined) return `${value.toFixed(2)} ns`;
  if (unit === 'ns') return `${value >= 0 ? '+' : ''}${value.toFixed(2)} ns`;
  if (unit === 's') return `${value.toFixed(1)} s`;
  if (unit === 'GC events') return `${value} GC`;
  return `${Math.round(value)} ${unit}`;
}

/** The limit as text: `≤ 1.25×`, `≤ +15 ns`, `≥ 400 files/s`. */
export function formatLimit(row) {
  const sign = row.comparison === '<=' ? '≤' : '≥';
  if (row.unit === 'ns') return `${sign} ${row.baseline === undefined ? '' : '+'}${row.limit} ns`;
  if (row.unit === '×') return `${sign} ${row.limit}×`;
  if (row.unit === 'GC events') return `${row.limit} GC`;
  return `${sign} ${row.limit} ${row.unit}`;
}
