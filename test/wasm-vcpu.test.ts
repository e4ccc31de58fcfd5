/**
 * A real wasm vCPU against a device on the same memory: the vCPU is a WebAssembly module
 * (its text below, compiled here with wabt) importing a shared `WebAssembly.Memory`, running
 * in one worker (test/workers/wasm-vcpu.mjs); the device is a `DMAContext` in another
 * (test/workers/wasm-device.mjs) on a `GuestMemory` that adopts that memory: guest RAM at a
 * non-zero offset in the wasm heap, the fence word in the heap outside RAM, passed to the
 * device as `memory.handle()`. What SPEC §4.1 promises, observed on real threads:
 *
 * - message passing: plain wasm stores then `i32.atomic.store` of a flag, against the
 *   device's ordered `readU32LE` of the flag then RELAXED reads, never shows a stale payload;
 * - store buffering: wasm `i32.atomic.rmw.add` on the fence word pairs with the device's
 *   `barrier('full')`, so both sides never read 0; without barriers they do (the control);
 * - the same with wasm `atomic.fence` instead of the RMW, reported, not asserted: the
 *   memory models give it no edge with JS `Atomics`, whatever this CPU happens to do.
 *
 * The workers import the built package from dist/, which `npm test` builds before vitest.
 */
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import { beforeAll, describe, expect, it } from 'vitest';
import { GuestMemory } from '../src/index.js';
import { bounded, startWorker, stopWorkersAfterEach } from './support/workers.js';

/** Two workers only race when two CPUs run them at once. */
const PARALLEL = availableParallelism() >= 2;

const MP_MESSAGES = 1_000_000; // per policy
const MP_SLOTS = 4096; // how far the vCPU may run ahead of the device; a power of two
const SB_ITERATIONS = 1_000_000; // with the RMW
const SB_ATOMIC_FENCE_ITERATIONS = 500_000; // the atomic.fence report
const SB_UNFENCED_ITERATIONS = 200_000; // per round
const SB_UNFENCED_ROUNDS = 5;
// Alone on two CPUs, 10^6 store-buffering iterations take under a second; with other busy
// processes on the same two CPUs (load average 5 to 12), each rendezvous can cost a sleep
// and a wake-up, and the same run was measured at 5 s to over 20 s. The bounds leave room
// for that; a run that makes no progress at all fails after IDLE_MS.
const TIMEOUT_MS = 60_000;
/** How long one run (both workers) may take before the test fails. */
const RUN_MS = 45_000;
/** How long either side waits for the other without progress before it gives up. */
const IDLE_MS = 5_000;
const SLEEP_MS = 20; // one sleep of a wait that found no progress (as litmus-sync.mjs)
const SPINS = 4096; // loads before a wait sleeps

// The wasm heap: control words in its first 64 KiB page, guest RAM after it at an offset
// that is 8-aligned (as `offset % 8 === base % 8` requires) but not page- or line-aligned.
const WASM_PAGE = 65_536;
const FENCE_PTR = 256; // the fence word: in the wasm heap, outside guest RAM
const CELL_PTR = 512; // [value, sleepers]: the rendezvous (SB) or the acknowledgement (MP)
const RAM_PTR = WASM_PAGE + 8 * 3;

// ---------------------------------------------------------------------------------------
// WebAssembly, typed for what these tests use (the project's lib has no WebAssembly types).

interface WasmMemory {
  readonly buffer: SharedArrayBuffer;
  grow(delta: number): number;
}
interface WasmApi {
  Memory: new (descriptor: { initial: number; maximum: number; shared: boolean }) => WasmMemory;
  Module: new (bytes: Uint8Array) => object;
}
const Wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

// ---------------------------------------------------------------------------------------
// The vCPU. Waits use a `[value, sleepers]` cell exactly as test/workers/litmus-sync.mjs
// does (spin, then announce a sleeper and sleep on the value), so the device's JS `advance`
// and `publish` wake the wasm `memory.atomic.wait32`; a wait that sleeps IDLE_MS in all
// without seeing progress returns 0 and the export returns a negative number.

/** Word j of MP message k: the sequence number and the word's place, so a stale word shows. */
const PAYLOAD_WORDS = 16;

/** One store-buffering export: meet, `x[i] = 1`, `between`, `res[i] = y[i]`. */
function storeBufferingFunc(name: string, between: string): string {
  return `
  (func (export "${name}")
    (param $cell i32) (param $n i32) (param $x i32) (param $y i32) (param $res i32) (param $fence i32)
    (result i32)
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (call $advance (local.get $cell) (i32.const 1))
        (if (i32.eqz (call $waitAtLeast (local.get $cell)
                       (i32.shl (i32.add (local.get $i) (i32.const 1)) (i32.const 1))))
          (then (return (i32.sub (i32.const -1) (local.get $i)))))
        (i32.store (i32.add (local.get $x) (i32.shl (local.get $i) (i32.const 2))) (i32.const 1))
        ${between}
        (i32.store8 (i32.add (local.get $res) (local.get $i))
          (i32.load (i32.add (local.get $y) (i32.shl (local.get $i) (i32.const 2)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $n))`;
}

const VCPU_WAT = `(module
  (import "env" "mem" (memory 2 65536 shared))

  (func $advance (param $cell i32) (param $delta i32)
    (drop (i32.atomic.rmw.add (local.get $cell) (local.get $delta)))
    (if (i32.atomic.load offset=4 (local.get $cell))
      (then (drop (memory.atomic.notify (local.get $cell) (i32.const -1))))))

  ;; 1 once the cell holds at least $target; 0 after ${IDLE_MS} ms of sleeps without progress.
  (func $waitAtLeast (param $cell i32) (param $target i32) (result i32)
    (local $seen i32) (local $spins i32) (local $idle i32)
    (loop $again
      (local.set $seen (i32.atomic.load (local.get $cell)))
      (if (i32.ge_s (local.get $seen) (local.get $target)) (then (return (i32.const 1))))
      (local.set $spins (i32.add (local.get $spins) (i32.const 1)))
      (if (i32.eq (local.get $spins) (i32.const ${SPINS}))
        (then
          (local.set $spins (i32.const 0))
          (drop (i32.atomic.rmw.add offset=4 (local.get $cell) (i32.const 1)))
          (if (i32.eq (memory.atomic.wait32 (local.get $cell) (local.get $seen)
                        (i64.const ${SLEEP_MS * 1_000_000}))
                      (i32.const 2))
            (then (local.set $idle (i32.add (local.get $idle) (i32.const 1)))))
          (drop (i32.atomic.rmw.sub offset=4 (local.get $cell) (i32.const 1)))
          (if (i32.ge_u (local.get $idle) (i32.const ${IDLE_MS / SLEEP_MS}))
            (then (return (i32.const 0))))))
      (br $again))
    (i32.const 0))

  ;; Message passing, the writer: for k = 1..n, once the device has acknowledged k - slots,
  ;; plain stores of k << 4 | j to the 16 words of slot k % slots, then an atomic store of k
  ;; to the flag. Returns n, or -k if the device stopped acknowledging.
  (func (export "mp_write")
    (param $ack i32) (param $n i32) (param $flag i32) (param $slots i32) (param $slotBase i32)
    (result i32)
    (local $k i32) (local $slot i32) (local $tag i32)
    (local.set $k (i32.const 1))
    (block $done
      (loop $next
        (br_if $done (i32.gt_u (local.get $k) (local.get $n)))
        (if (i32.eqz (call $waitAtLeast (local.get $ack) (i32.sub (local.get $k) (local.get $slots))))
          (then (return (i32.sub (i32.const 0) (local.get $k)))))
        (local.set $slot (i32.add (local.get $slotBase)
          (i32.shl (i32.and (local.get $k) (i32.sub (local.get $slots) (i32.const 1))) (i32.const 6))))
        (local.set $tag (i32.shl (local.get $k) (i32.const 4)))
        ${Array.from(
          { length: PAYLOAD_WORDS },
          (_, j) =>
            `(i32.store offset=${4 * j} (local.get $slot) (i32.or (local.get $tag) (i32.const ${j})))`,
        ).join('\n        ')}
        (i32.atomic.store (local.get $flag) (local.get $k))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $next)))
    (local.get $n))

  ;; Store buffering, the vCPU side: x = 1; [barrier]; r0 = y.  Returns n, or -1 - i if the
  ;; device did not come to the rendezvous of iteration i.
  ${storeBufferingFunc('sb_none', ';; no barrier')}
  ${storeBufferingFunc('sb_rmw', '(drop (i32.atomic.rmw.add (local.get $fence) (i32.const 0)))')}
  ${storeBufferingFunc('sb_fence', '(atomic.fence)')}
)`;

type VcpuEntry = 'mp_write' | 'sb_none' | 'sb_rmw' | 'sb_fence';

let vcpuBytes: Uint8Array;

beforeAll(async () => {
  if (!existsSync(new URL('../dist/index.js', import.meta.url))) {
    throw new Error('the wasm device worker imports dist/index.js: run `npx tsup` first');
  }
  const wabt = await (await import('wabt')).default();
  const module = wabt.parseWat('vcpu.wat', VCPU_WAT, { threads: true });
  try {
    vcpuBytes = module.toBinary({}).buffer.slice();
  } finally {
    module.destroy();
  }
  // Compiles here too, so that a bad module fails in this hook rather than in a worker.
  new Wasm.Module(vcpuBytes);
});

stopWorkersAfterEach();

/** Resolves with the one message the worker posts; rejects if it fails or exits first. */
function report<T>(worker: Worker, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    worker.once('message', (message: T) => {
      resolve(message);
    });
    worker.once('error', reject);
    worker.once('exit', (code) => {
      reject(new Error(`${what} exited with code ${code} before reporting`));
    });
  });
}

interface VcpuReport {
  entry: VcpuEntry;
  result: number;
  milliseconds: number;
}

/** Runs one export of the vCPU module in a worker; rejects if it gave up waiting. */
async function runVcpu(wasm: WasmMemory, entry: VcpuEntry, args: number[]): Promise<VcpuReport> {
  const worker = startWorker('wasm-vcpu.mjs', { bytes: vcpuBytes, memory: wasm, entry, args });
  const done = await report<VcpuReport>(worker, `the vCPU (${entry})`);
  if (done.result < 0) {
    throw new Error(`the vCPU (${entry}) gave up waiting for the device (at ${-done.result})`);
  }
  return done;
}

interface DeviceMemory {
  regions: { base: number; size: number; offset: number }[];
  fenceByteOffset: number | undefined;
  fenceIsWasmMemory: boolean;
  backingIsWasmMemory: boolean;
  bufferByteLength: number;
}

interface DeviceReport {
  task: 'mp' | 'sb';
  memory: DeviceMemory;
  milliseconds: number;
}

function runDevice<T extends DeviceReport>(workerData: Record<string, unknown>): Promise<T> {
  const worker = startWorker('wasm-device.mjs', { idleMs: IDLE_MS, ...workerData });
  return report<T>(worker, `the device (${String(workerData.task)})`);
}

/**
 * A fresh shared wasm memory of at least `RAM_PTR + ramSize + after` bytes, and a guest
 * memory adopting `[RAM_PTR, RAM_PTR + ramSize)` of it as RAM at guest address 0, with the
 * fence word at FENCE_PTR.
 */
function adopt(
  ramSize: number,
  after: number,
  barrierPolicy?: 'strict' | 'tso',
): { wasm: WasmMemory; memory: GuestMemory } {
  const pages = Math.ceil((RAM_PTR + ramSize + after) / WASM_PAGE);
  const wasm = new Wasm.Memory({ initial: pages, maximum: pages, shared: true });
  // Fault every page in now, so that no iteration races against a page fault.
  new Uint8Array(wasm.buffer).fill(0);
  const memory = new GuestMemory({
    backing: wasm,
    regions: [{ base: 0, size: ramSize, offset: RAM_PTR }],
    fence: { buffer: wasm, byteOffset: FENCE_PTR },
    ...(barrierPolicy === undefined ? {} : { barrierPolicy }),
  });
  return { wasm, memory };
}

/** The device rebuilt the very memory the test adopted. */
function expectSameMemory(seen: DeviceMemory, wasm: WasmMemory, ramSize: number): void {
  expect(seen.regions).toEqual([{ base: 0, size: ramSize, offset: RAM_PTR }]);
  expect(seen.fenceByteOffset).toBe(FENCE_PTR);
  expect(seen.fenceIsWasmMemory).toBe(true);
  expect(seen.backingIsWasmMemory).toBe(true);
  expect(seen.bufferByteLength).toBe(wasm.buffer.byteLength);
}

// ---------------------------------------------------------------------------------------

interface ReaderReport extends DeviceReport {
  /** Flag-then-payload reads done. */
  reads: number;
  /** Reads with a payload word older than the flag. */
  staleReads: number;
  /** Reads with a payload word that is neither the flag's nor older (a misplaced word). */
  otherReads: number;
  /** Times the flag went backwards. */
  flagRegressions: number;
  firstStale?: { flag: number; payload: number[] };
  firstOther?: { flag: number; payload: number[] };
}

async function messagePassing(barrierPolicy?: 'strict'): Promise<ReaderReport> {
  const flagAddr = 0;
  const slotBase = 128; // the flag has cache lines of its own
  const ramSize = slotBase + 64 * MP_SLOTS;
  const { wasm, memory } = adopt(ramSize, 0, barrierPolicy);
  const [reader, writer] = await bounded(
    Promise.all([
      runDevice<ReaderReport>({
        task: 'mp',
        handle: memory.handle(),
        ackPtr: CELL_PTR,
        messages: MP_MESSAGES,
        flagAddr,
        slotBase,
        slots: MP_SLOTS,
      }),
      runVcpu(wasm, 'mp_write', [
        CELL_PTR,
        MP_MESSAGES,
        RAM_PTR + flagAddr,
        MP_SLOTS,
        RAM_PTR + slotBase,
      ]),
    ]),
    RUN_MS,
    'the message-passing run',
  );
  expectSameMemory(reader.memory, wasm, ramSize);
  expect(writer.result).toBe(MP_MESSAGES);
  return reader;
}

describe('message passing: wasm i32.store(payload); i32.atomic.store(flag) || readU32LE(flag); RELAXED reads', () => {
  for (const policy of ['auto', 'strict'] as const) {
    it(
      `never reads a payload older than the flag under '${policy}' (${MP_MESSAGES} messages)`,
      async () => {
        const reader = await messagePassing(policy === 'auto' ? undefined : policy);
        const { reads, staleReads, otherReads, flagRegressions, milliseconds } = reader;
        console.log(`wasm MP, ${policy}:`, {
          reads,
          staleReads,
          otherReads,
          flagRegressions,
          milliseconds,
        });
        expect(reader.firstStale).toBeUndefined();
        expect(reader.staleReads).toBe(0);
        expect(reader.firstOther).toBeUndefined();
        expect(reader.otherReads).toBe(0);
        expect(reader.flagRegressions).toBe(0);
        // The reader stops at the last message, so it saw at least one read per ring lap.
        expect(reader.reads).toBeGreaterThanOrEqual(MP_MESSAGES / MP_SLOTS);
      },
      TIMEOUT_MS,
    );
  }
});

// ---------------------------------------------------------------------------------------

interface Outcomes {
  '0,0': number;
  '0,1': number;
  '1,0': number;
  '1,1': number;
  invalid: number;
}

/**
 * Runs `iterations` of store buffering on fresh zeroed words x[i] and y[i] of guest RAM,
 * the two sides meeting before each iteration:
 *
 *     vCPU (wasm):  x[i] = 1; [RMW on the fence word | atomic.fence]; r0 = y[i]
 *     device (JS):  ctx.writeU32LE(y[i], 1, RELAXED); [barrier('full')]; r1 = ctx.readU32LE(x[i], RELAXED)
 *
 * and tallies (r0, r1). (0,0) means each load was satisfied before the other side's store
 * became visible: the store→load reordering a full barrier on both sides forbids.
 */
async function storeBuffering(
  vcpu: 'sb_none' | 'sb_rmw' | 'sb_fence',
  deviceBarrier: boolean,
  iterations: number,
): Promise<Outcomes> {
  const xAddr = 0;
  const yAddr = 4 * iterations;
  const ramSize = 8 * iterations;
  const r0Ptr = RAM_PTR + ramSize; // the vCPU's results: in the wasm heap, after guest RAM
  const { wasm, memory } = adopt(ramSize, iterations);
  const outcomes = new SharedArrayBuffer(iterations);
  const [device, done] = await bounded(
    Promise.all([
      runDevice<DeviceReport>({
        task: 'sb',
        handle: memory.handle(),
        cellPtr: CELL_PTR,
        iterations,
        storeAddr: yAddr,
        loadAddr: xAddr,
        outcomes,
        fence: deviceBarrier,
      }),
      runVcpu(wasm, vcpu, [
        CELL_PTR,
        iterations,
        RAM_PTR + xAddr,
        RAM_PTR + yAddr,
        r0Ptr,
        FENCE_PTR,
      ]),
    ]),
    RUN_MS,
    `the store-buffering run (${vcpu})`,
  );
  expectSameMemory(device.memory, wasm, ramSize);
  expect(done.result).toBe(iterations);
  const r0 = new Uint8Array(wasm.buffer, r0Ptr, iterations);
  const r1 = new Uint8Array(outcomes);
  const tally: Outcomes = { '0,0': 0, '0,1': 0, '1,0': 0, '1,1': 0, invalid: 0 };
  for (let i = 0; i < iterations; i++) {
    const key = `${r0[i] as number},${r1[i] as number}`;
    if (key === '0,0' || key === '0,1' || key === '1,0' || key === '1,1') tally[key]++;
    else tally.invalid++;
  }
  return tally;
}

describe('store buffering: wasm x = 1; fence; r0 = y || device y = 1; barrier(full); r1 = x', () => {
  it(
    `never lets both sides read 0 with i32.atomic.rmw.add on the fence word (${SB_ITERATIONS} iterations)`,
    async () => {
      const tally = await storeBuffering('sb_rmw', true, SB_ITERATIONS);
      console.log('wasm SB, i32.atomic.rmw.add || barrier(full):', tally);
      expect(tally.invalid).toBe(0);
      expect(tally['0,0']).toBe(0);
      if (PARALLEL) {
        // (1,1) needs both stores before both loads: the sides did run at the same time.
        expect(tally['1,1'], 'the two sides never overlapped').toBeGreaterThan(0);
      }
    },
    TIMEOUT_MS,
  );

  // A report, not an assertion: neither memory model gives atomic.fence a happens-before
  // edge with the device's Atomics RMW, so (0,0) is allowed; whether this CPU and engine
  // show it (V8 on x64 may emit mfence for it) says nothing about the next one.
  it(
    `runs with atomic.fence instead of the RMW and reports what it sees (${SB_ATOMIC_FENCE_ITERATIONS} iterations)`,
    async ({ annotate }) => {
      const tally = await storeBuffering('sb_fence', true, SB_ATOMIC_FENCE_ITERATIONS);
      console.log('wasm SB, atomic.fence || barrier(full) (report only):', tally);
      await annotate(
        `atomic.fence || barrier('full') on ${process.arch}, ${PARALLEL ? '≥2' : '1'} CPUs: ${JSON.stringify(tally)}`,
      );
      expect(tally.invalid).toBe(0);
      expect(tally['0,0'] + tally['0,1'] + tally['1,0'] + tally['1,1']).toBe(
        SB_ATOMIC_FENCE_ITERATIONS,
      );
    },
    TIMEOUT_MS,
  );

  // The harness can see the forbidden outcome: without a barrier on either side, the store
  // buffer (x86-TSO's, or any weaker CPU's) lets both loads pass both stores. A few rounds
  // keep an unlucky scheduler from failing it.
  it(
    `observes (0,0) without any barrier (up to ${SB_UNFENCED_ROUNDS} × ${SB_UNFENCED_ITERATIONS} iterations)`,
    async ({ skip }) => {
      skip(
        !PARALLEL,
        `needs two CPUs to race the vCPU against the device (availableParallelism() is ${availableParallelism()})`,
      );
      let observed = 0;
      for (let round = 1; round <= SB_UNFENCED_ROUNDS && observed === 0; round++) {
        const tally = await storeBuffering('sb_none', false, SB_UNFENCED_ITERATIONS);
        console.log(`wasm SB without barriers, round ${round}:`, tally);
        expect(tally.invalid).toBe(0);
        observed = tally['0,0'];
      }
      expect(observed).toBeGreaterThan(0);
    },
    TIMEOUT_MS,
  );
});
