/**
 * Litmus tests on real threads and a real SharedArrayBuffer: the orderings the barrier
 * table promises, observed rather than traced. The workers (test/workers/litmus-*.mjs)
 * import the built package from dist/, which `npm test` builds before vitest runs.
 */
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { GuestMemory } from '../src/index.js';

const SB_ITERATIONS = 500_000; // per policy: 10^6 with barrier('full') in total
const SB_UNFENCED_ITERATIONS = 200_000; // per round
const SB_UNFENCED_ROUNDS = 5;
const MP_MESSAGES = 200_000; // per policy
const MP_SLOTS = 4096; // how far the writer may run ahead of the reader
const TIMEOUT_MS = 30_000;

/** Two workers only race when two CPUs run them at once. */
const PARALLEL = availableParallelism() >= 2;

const POLICIES = ['strict', 'tso'] as const;
type Policy = (typeof POLICIES)[number];

const live = new Set<Worker>();

/** Starts a worker and resolves with the one message it posts when done. */
function run<T>(file: string, workerData: Record<string, unknown>): Promise<T> {
  const worker = new Worker(new URL(`./workers/${file}`, import.meta.url), { workerData });
  live.add(worker);
  return new Promise<T>((resolve, reject) => {
    worker.once('message', (message: T) => {
      resolve(message);
    });
    worker.once('error', reject);
    worker.once('exit', (code) => {
      live.delete(worker);
      reject(new Error(`${file} exited with code ${code} before reporting`));
    });
  });
}

beforeAll(() => {
  if (!existsSync(new URL('../dist/index.js', import.meta.url))) {
    throw new Error('the litmus workers import dist/index.js: run `npx tsup` first');
  }
});

// A test that times out leaves its workers spinning: stop them before the next test.
afterEach(async () => {
  await Promise.all([...live].map((worker) => worker.terminate()));
  live.clear();
});

interface Outcomes {
  '0,0': number;
  '0,1': number;
  '1,0': number;
  '1,1': number;
  invalid: number;
}

/**
 * Runs `iterations` of store buffering on fresh zeroed slots x[i] and y[i], the two workers
 * meeting before each iteration:
 *
 *     side 0: x[i] = 1; [barrier('full')]; r0 = y[i]
 *     side 1: y[i] = 1; [barrier('full')]; r1 = x[i]
 *
 * and tallies the (r0, r1) outcomes. (0,0) means each load was satisfied before the other
 * side's store became visible: the store→load reordering a full barrier forbids.
 */
async function storeBuffering(
  policy: Policy,
  iterations: number,
  fence: boolean,
): Promise<Outcomes> {
  const xBase = 0;
  const yBase = 4 * iterations;
  const memory = new GuestMemory({ size: 8 * iterations, barrierPolicy: policy });
  // Fault every page in now, so that no iteration races against a page fault.
  new Uint8Array(memory.buffer).fill(0);
  const outcomes = new SharedArrayBuffer(2 * iterations);
  const common = {
    handle: memory.handle(),
    rendezvous: new SharedArrayBuffer(8),
    outcomes,
    iterations,
    xBase,
    yBase,
    fence,
  };
  await Promise.all([
    run('litmus-sb.mjs', { ...common, side: 0 }),
    run('litmus-sb.mjs', { ...common, side: 1 }),
  ]);
  const loaded = new Uint8Array(outcomes);
  const tally: Outcomes = { '0,0': 0, '0,1': 0, '1,0': 0, '1,1': 0, invalid: 0 };
  for (let i = 0; i < iterations; i++) {
    const key = `${loaded[i] as number},${loaded[iterations + i] as number}`;
    if (key === '0,0' || key === '0,1' || key === '1,0' || key === '1,1') tally[key]++;
    else tally.invalid++;
  }
  return tally;
}

interface ReaderReport {
  role: 'reader';
  milliseconds: number;
  /** Flag-then-payload reads done. */
  reads: number;
  /** Reads with a payload word older than the flag. */
  staleReads: number;
  /** Reads with a payload word newer than the flag (the harness would be broken). */
  otherReads: number;
  /** Times the flag went backwards. */
  flagRegressions: number;
  firstStale?: { flag: number; payload: number[] };
}

/**
 * Message passing: the writer does `write(slot, payload)` then `writeU32LE(flag, seq)`, the
 * reader `readU32LE(flag)` then `read(slot, payload)`, with every u32 of the 64-byte payload
 * equal to its sequence number so that a stale word is seen, not guessed.
 */
async function messagePassing(policy: Policy): Promise<ReaderReport> {
  const flagAddr = 0;
  const slotBase = 64; // the flag has a cache line of its own
  const memory = new GuestMemory({ size: slotBase + 64 * MP_SLOTS, barrierPolicy: policy });
  const common = {
    handle: memory.handle(),
    ack: new SharedArrayBuffer(8),
    iterations: MP_MESSAGES,
    flagAddr,
    slotBase,
    slots: MP_SLOTS,
  };
  const [reader] = await Promise.all([
    run<ReaderReport>('litmus-mp.mjs', { ...common, role: 'reader' }),
    run('litmus-mp.mjs', { ...common, role: 'writer' }),
  ]);
  return reader;
}

describe('store buffering: x = 1; barrier(full); read y || y = 1; barrier(full); read x', () => {
  for (const policy of POLICIES) {
    it(
      `never lets both sides read 0 under '${policy}' (${SB_ITERATIONS} iterations)`,
      async () => {
        const tally = await storeBuffering(policy, SB_ITERATIONS, true);
        console.log(`SB with barrier('full'), ${policy}:`, tally);
        expect(tally.invalid).toBe(0);
        expect(tally['0,0']).toBe(0);
        if (PARALLEL) {
          // (1,1) needs both stores before both loads: the sides did run at the same time.
          expect(tally['1,1'], 'the two sides never overlapped').toBeGreaterThan(0);
        }
      },
      TIMEOUT_MS,
    );
  }

  // The harness can see the forbidden outcome: without the barrier, x86-TSO's store buffer
  // (and any weaker CPU) lets both loads pass both stores. Measured here at 0.3% to 1.7% of
  // iterations, under load too; a few rounds keep an unlucky scheduler from failing it.
  it.skipIf(!PARALLEL)(
    `observes (0,0) without the barrier (up to ${SB_UNFENCED_ROUNDS} × ${SB_UNFENCED_ITERATIONS} iterations)`,
    async () => {
      let observed = 0;
      for (let round = 1; round <= SB_UNFENCED_ROUNDS && observed === 0; round++) {
        const tally = await storeBuffering('strict', SB_UNFENCED_ITERATIONS, false);
        console.log(`SB without barrier, round ${round}:`, tally);
        expect(tally.invalid).toBe(0);
        observed = tally['0,0'];
      }
      expect(observed).toBeGreaterThan(0);
    },
    TIMEOUT_MS,
  );
});

describe('message passing: write(payload); writeU32LE(flag) || readU32LE(flag); read(payload)', () => {
  for (const policy of POLICIES) {
    it(
      `never reads a payload older than the flag under '${policy}' (${MP_MESSAGES} messages)`,
      async () => {
        const report = await messagePassing(policy);
        console.log(`MP with READ/WRITE, ${policy}:`, report);
        expect(report.firstStale).toBeUndefined();
        expect(report.staleReads).toBe(0);
        expect(report.otherReads).toBe(0);
        expect(report.flagRegressions).toBe(0);
        expect(report.reads).toBeGreaterThan(0);
      },
      TIMEOUT_MS,
    );
  }
});
