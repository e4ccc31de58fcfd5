/* global window, Worker */
/**
 * The browser test page: `window.tests` holds what test/browser.test.ts calls through
 * `page.evaluate`. It imports the package by its own name (`dma-attrs`), and Vite bundles it
 * and the module workers (`new Worker(new URL(...), { type: 'module' })`).
 */
import { DMAAttributes, DMAContext, DMAError, GuestMemory, IommuDomain } from 'dma-attrs';
import { SplitVirtqueue, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from 'dma-attrs/virtio';
import { AREA, expectedArea, exerciseAccessors, exercisePermissionFault } from './checks.mjs';

const { READ, RELAXED } = DMAAttributes;
const WORKER_TIMEOUT_MS = 20_000;
const PAGE = 4096;
const IOVA = 0x40000;
const FAULT_GPA = 0x3000;

/** Posts `message` to each worker and resolves with one reply from each; rejects on error or timeout. */
function exchange(workers, messages, timeoutMs = WORKER_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    const replies = new Array(workers.length);
    let pending = workers.length;
    const timer = setTimeout(() => {
      fail(new Error(`no reply from the workers within ${timeoutMs} ms`));
    }, timeoutMs);
    function fail(error) {
      clearTimeout(timer);
      for (const worker of workers) worker.terminate();
      reject(error);
    }
    workers.forEach((worker, index) => {
      worker.onerror = (event) => {
        fail(new Error(`worker error: ${event.message ?? 'unknown (did it load?)'}`));
      };
      worker.onmessage = ({ data }) => {
        if (data.error !== undefined) {
          fail(new Error(`worker ${index}: ${data.error}`));
          return;
        }
        replies[index] = data;
        if (--pending === 0) {
          clearTimeout(timer);
          for (const w of workers) w.terminate();
          resolve(replies);
        }
      };
      worker.postMessage(messages[index]);
    });
  });
}

function accessWorker() {
  return new Worker(new URL('./access-worker.mjs', import.meta.url), { type: 'module' });
}

function litmusWorker() {
  return new Worker(new URL('./litmus-worker.mjs', import.meta.url), { type: 'module' });
}

function areaOf(memory, base) {
  const bytes = new Uint8Array(AREA);
  memory.read(base, bytes);
  return Array.from(bytes);
}

/** A READ-only IOMMU mapping of one page at IOVA, over guest bytes 9, 8, 7, 6 at FAULT_GPA. */
function faultSetup() {
  const memory = new GuestMemory({ size: 1 << 20 });
  memory.write(FAULT_GPA, Uint8Array.from([9, 8, 7, 6]));
  const domain = new IommuDomain();
  domain.map(IOVA, FAULT_GPA, PAGE, READ);
  return { memory, domain };
}

function bestOf(runs, calls, body) {
  let best = Infinity;
  for (let run = 0; run < runs; run++) {
    const started = performance.now();
    body(calls);
    best = Math.min(best, performance.now() - started);
  }
  return (best * 1e6) / calls;
}

window.tests = {
  /**
   * `dma-attrs/virtio` in the page: the driver side written here by hand puts one chain of a
   * readable and a writable descriptor on the ring; the device side pops it, answers, pushes.
   */
  virtqueue() {
    const memory = new GuestMemory({ size: 1 << 16 });
    const ctx = new DMAContext(memory);
    const [desc, avail, used, data] = [0x0000, 0x1000, 0x2000, 0x4000];
    const { RELAXED } = DMAAttributes;
    const descriptor = (index, addr, length, flags, next) => {
      ctx.writeU64LE(desc + 16 * index, BigInt(addr), RELAXED);
      ctx.writeU32LE(desc + 16 * index + 8, length, RELAXED);
      ctx.writeU16LE(desc + 16 * index + 12, flags, RELAXED);
      ctx.writeU16LE(desc + 16 * index + 14, next, RELAXED);
    };
    ctx.write(data, Uint8Array.of(1, 2, 3, 4), RELAXED);
    descriptor(0, data, 4, VIRTQ_DESC_F_NEXT, 1);
    descriptor(1, data + 0x100, 4, VIRTQ_DESC_F_WRITE, 0);
    ctx.writeU16LE(avail + 4, 0, RELAXED);
    ctx.writeU16LE(avail + 2, 1);
    const vq = new SplitVirtqueue(ctx, { size: 8, desc, avail, used });
    const chain = vq.pop();
    const request = new Uint8Array(chain?.readableLength ?? 0);
    chain?.read(request);
    const written = chain?.write(request.map((byte) => byte + 1)) ?? 0;
    if (chain !== undefined) vq.push(chain, written);
    const response = new Uint8Array(4);
    memory.read(data + 0x100, response);
    return {
      head: chain?.head,
      readable: chain?.readableLength,
      writable: chain?.writableLength,
      request: [...request],
      response: [...response],
      usedIdx: ctx.readU16LE(used + 2),
      usedId: ctx.readU32LE(used + 4),
      usedLength: ctx.readU32LE(used + 8),
      empty: vq.pop() === undefined,
    };
  },

  environment() {
    return {
      crossOriginIsolated: window.crossOriginIsolated,
      sharedArrayBuffer: typeof SharedArrayBuffer,
      userAgent: window.navigator.userAgent,
    };
  },

  accessorsInPage() {
    const memory = new GuestMemory({ size: 1 << 16 });
    return {
      shared: memory.shared,
      ...exerciseAccessors(memory, 0x100),
      area: areaOf(memory, 0x100),
    };
  },

  async accessorsInWorker() {
    const memory = new GuestMemory({ size: 1 << 16 });
    const base = 0x200;
    const [reply] = await exchange(
      [accessWorker()],
      [{ job: 'accessors', memory: memory.handle(), base }],
    );
    return {
      ...reply,
      area: areaOf(memory, base),
      expected: Array.from(expectedArea()),
    };
  },

  faultInPage() {
    const { memory, domain } = faultSetup();
    const report = exercisePermissionFault(memory, domain, IOVA);
    return { ...report, after: areaOf(memory, FAULT_GPA).slice(0, 4) };
  },

  async faultInWorker() {
    const { memory, domain } = faultSetup();
    const [reply] = await exchange(
      [accessWorker()],
      [{ job: 'fault', memory: memory.handle(), domain: domain.handle(), iova: IOVA }],
    );
    return { ...reply.fault, after: areaOf(memory, FAULT_GPA).slice(0, 4) };
  },

  /** Runs one litmus test; resolves with the outcome counts. */
  async litmus(kind, iterations, fence) {
    const xBase = 0x1000;
    const yBase = xBase + 4 * iterations + 0x1000;
    const size = Math.ceil((yBase + 4 * iterations + 0x1000) / 0x10000) * 0x10000;
    const memory = new GuestMemory({ size });
    const rendezvous = new SharedArrayBuffer(8);
    const outcomes = new SharedArrayBuffer(2 * iterations);
    const handle = memory.handle();
    const message = { kind, handle, rendezvous, outcomes, iterations, xBase, yBase, fence };
    const started = performance.now();
    const replies = await exchange(
      [litmusWorker(), litmusWorker()],
      [
        { ...message, side: 0 },
        { ...message, side: 1 },
      ],
      60_000,
    );
    const milliseconds = performance.now() - started;
    const out = new Uint8Array(outcomes);
    const counts = {};
    for (let i = 0; i < iterations; i++) {
      const key =
        kind === 'sb'
          ? `${out[i]},${out[iterations + i]}`
          : `flag=${out[iterations + i] >> 1},data=${out[iterations + i] & 1}`;
      counts[key] = (counts[key] ?? 0) + 1;
    }
    const forbidden = kind === 'sb' ? (counts['0,0'] ?? 0) : (counts['flag=1,data=0'] ?? 0);
    return {
      kind,
      fence,
      iterations,
      counts,
      forbidden,
      milliseconds,
      workerMilliseconds: replies.map((r) => r.milliseconds),
    };
  },

  /** ns per call of a 64-byte RELAXED ctx.read and of ctx.barrier('full'), best of `runs`. */
  timings(calls, runs) {
    const memory = new GuestMemory({ size: 1 << 16 });
    const ctx = new DMAContext(memory);
    const buf = new Uint8Array(64);
    const read = bestOf(runs, calls, (n) => {
      for (let i = 0; i < n; i++) ctx.read(0x100, buf, RELAXED);
    });
    const barrier = bestOf(runs, calls, (n) => {
      for (let i = 0; i < n; i++) ctx.barrier('full');
    });
    return { shared: memory.shared, policy: memory.barrierPolicy, read, barrier };
  },

  /** §4.3: what a page without cross-origin isolation gets. */
  fallback() {
    const memory = new GuestMemory({ size: 1 << 16 });
    const ctx = new DMAContext(memory);
    ctx.write(0x10, Uint8Array.from([1, 2, 3]));
    ctx.writeU32LE(0x20, 0xcafef00d);
    const back = new Uint8Array(3);
    ctx.read(0x10, back);
    const domain = new IommuDomain();
    domain.map(0x8000, 0x1000, PAGE, READ);
    const translated = domain.translate(0x8010, READ);
    const unshared = faultSetup();
    const fault = exercisePermissionFault(unshared.memory, unshared.domain, IOVA);
    const thrown = (make) => {
      try {
        make();
        return { thrown: false };
      } catch (error) {
        return {
          thrown: true,
          isDMAError: error instanceof DMAError,
          name: String(error?.name),
          code: error?.code,
          message: String(error?.message),
        };
      }
    };
    return {
      crossOriginIsolated: window.crossOriginIsolated,
      sharedArrayBuffer: typeof SharedArrayBuffer,
      shared: memory.shared,
      readBack: Array.from(back),
      u32: ctx.readU32LE(0x20),
      translated: { gpa: translated.gpa, length: translated.length },
      faultCode: fault.code,
      memoryHandle: thrown(() => memory.handle()),
      domainHandle: thrown(() => domain.handle()),
    };
  },
};
