/**
 * The reference model and the accesses shared by test/growth.test.ts and its DMA worker
 * (test/workers/growth-dma.mjs): a mirror of the whole backing that knows where every guest
 * byte lives, and one function that performs any kind of access both through the library and
 * on the mirror, and says whether they agree.
 *
 * The model never asks the library anything. It knows the regions (base, size, backing
 * offset), the backing's current length, and, for a context behind an IOMMU, the mappings
 * the test made. From those it predicts each access:
 *
 * - every byte in a region that lies wholly inside the backing: the access must succeed;
 * - a byte in a hole, or a region byte beyond the backing's current length (a resizable
 *   `ArrayBuffer` shrunk, a detached buffer), or an IOMMU refusal: the access must fail with
 *   the predicted code (a `DMAFault`) and change no byte of guest memory or of the caller's
 *   buffer;
 * - only bytes inside the backing, but some in a region the backing no longer wholly holds:
 *   the contract (issue 10) only promises that regions still inside keep working, so the
 *   access may succeed (then with the right bytes) or fail with ERR_DMA_UNASSIGNED.
 *
 * The library's classes are passed in (`env`), so that the test uses src/ and the worker the
 * built dist/, each with its own brand checks.
 */
import { Buffer } from 'node:buffer';

const READ = 1;
const WRITE = 2;
const BIDIRECTIONAL = 3;
const RELAXED = 4;

/** The IOMMU page size of every domain these tests make. */
export const PAGE = 4096;

/** The codes a DMAError may carry (SPEC §7). */
export const DOCUMENTED_CODES = new Set([
  'ERR_DMA_INVALID_ATTRIBUTES',
  'ERR_DMA_INVALID_ARGUMENT',
  'ERR_DMA_UNASSIGNED',
  'ERR_DMA_IOMMU_UNMAPPED',
  'ERR_DMA_IOMMU_PERMISSION',
  'ERR_DMA_IOMMU_OVERLAP',
  'ERR_DMA_VIRTQUEUE',
]);

/** What the caller's buffer holds before a read: a failed read must leave it so. */
const FILL = 0x5a;

/** A range's state in the model: must succeed, may succeed, must fault. */
const LIVE = 0;
const CUT = 1;
const FAULT = 2;

/**
 * @typedef {{ readonly base: number, readonly size: number, readonly offset: number }} Region
 * @typedef {{ readonly iova: number, readonly gpa: number, readonly size: number, readonly perm: number }} Mapping
 * @typedef {'read' | 'rwRead' | 'cpuRead' | 'gather' | 'write' | 'rwWrite' | 'cpuWrite' | 'scatter' | 'set'
 *   | 'readU8' | 'readU16LE' | 'readU16BE' | 'readU32LE' | 'readU32BE' | 'readU64LE' | 'readU64BE'
 *   | 'writeU8' | 'writeU16LE' | 'writeU16BE' | 'writeU32LE' | 'writeU32BE' | 'writeU64LE' | 'writeU64BE'
 *   | 'mapRead' | 'mapWrite' | 'mapBoth' | 'valid'} OpKind
 */

/**
 * One access, as plain data (fast-check makes them, workers receive them). `addr` is an IOVA
 * for a context behind an IOMMU, except for `cpuRead`/`cpuWrite` (the vCPU's own accesses,
 * `memory.read`/`memory.write`), whose address is always guest-physical. `length` is ignored
 * by the fixed-width kinds and by `gather`/`scatter`, which use `ranges`. `seed` makes the
 * data, the value, `valid`'s direction and `unmap`'s accessed length.
 *
 * @typedef {object} Op
 * @property {OpKind} kind
 * @property {number} addr
 * @property {number} length
 * @property {number} seed
 * @property {boolean} relaxed
 * @property {ReadonlyArray<readonly [number, number]>} [ranges]
 */

/** Every kind of access, in a stable order. @type {readonly OpKind[]} */
export const KINDS = [
  'read',
  'rwRead',
  'cpuRead',
  'gather',
  'write',
  'rwWrite',
  'cpuWrite',
  'scatter',
  'set',
  'readU8',
  'readU16LE',
  'readU16BE',
  'readU32LE',
  'readU32BE',
  'readU64LE',
  'readU64BE',
  'writeU8',
  'writeU16LE',
  'writeU16BE',
  'writeU32LE',
  'writeU32BE',
  'writeU64LE',
  'writeU64BE',
  'mapRead',
  'mapWrite',
  'mapBoth',
  'valid',
];

/**
 * What {@link runOp} needs: the library objects, the model, and the backing's bytes as they
 * are now, seen without the library.
 *
 * @typedef {object} Env
 * @property {import('../../src/index.js').DMAContext} ctx
 * @property {import('../../src/index.js').GuestMemory} memory
 * @property {BackingModel} model
 * @property {IommuModel | undefined} iommu - the mappings of `ctx`'s domain, when it has one
 * @property {typeof import('../../src/index.js').ScatterGatherList} ScatterGatherList
 * @property {typeof import('../../src/index.js').DMAError} DMAError
 * @property {typeof import('../../src/index.js').DMAFault} DMAFault
 * @property {() => Uint8Array} current - the backing's bytes now (empty when detached)
 * @property {number} [diffLimit] - compare only this many backing bytes after each access
 */

/**
 * The result of one access: `outcome` is `'ok'`, the DMAError's code, or `'threw'` for
 * anything else; `problem` says how the library and the model disagreed, if they did.
 *
 * @typedef {{ outcome: string, problem: string | undefined }} OpResult
 */

/**
 * A mirror of the whole backing (not only the regions: a byte outside every region must
 * never change either).
 */
export class BackingModel {
  /**
   * @param {readonly Region[]} regions
   * @param {number} length - the backing's byte length now
   * @param {number} maxLength - the most it can ever grow to
   */
  constructor(regions, length, maxLength) {
    /** @type {readonly Region[]} */
    this.regions = [...regions].sort((a, b) => a.base - b.base);
    /** @type {number} */
    this.length = length;
    /** @type {Uint8Array} */
    this.mirror = new Uint8Array(maxLength);
    /** Backing ranges `[offset, length]` not compared (a fence word inside the backing). @type {[number, number][]} */
    this.ignored = [];
  }

  /**
   * Fills `bytes` (the backing now) and the mirror with the same pattern.
   * @param {Uint8Array} bytes
   * @param {number} seed
   */
  paint(bytes, seed) {
    for (let i = 0; i < bytes.length; i++) {
      const value = (Math.imul(i, 29) + seed + (i >>> 8)) & 0xff;
      bytes[i] = value;
      this.mirror[i] = value;
    }
  }

  /**
   * Takes the backing's new length: bytes beyond a shorter length are lost, and read as 0
   * when the backing grows again (as `resize` and `grow` give them).
   * @param {number} length
   */
  resize(length) {
    if (length < this.length) this.mirror.fill(0, length, this.length);
    this.length = length;
  }

  /** @param {number} gpa @returns {Region | undefined} */
  region(gpa) {
    for (const region of this.regions) {
      if (gpa >= region.base && gpa < region.base + region.size) return region;
    }
    return undefined;
  }

  /**
   * LIVE, CUT or FAULT for a guest-physical range (see the module comment).
   * @param {number} gpa @param {number} length @returns {number}
   */
  rangeState(gpa, length) {
    let state = LIVE;
    for (let at = gpa; at < gpa + length;) {
      const region = this.region(at);
      if (region === undefined) return FAULT;
      const stop = Math.min(gpa + length, region.base + region.size);
      if (region.offset + (stop - region.base) > this.length) return FAULT;
      if (region.offset + region.size > this.length) state = CUT;
      at = stop;
    }
    return state;
  }

  /**
   * How many bytes from `gpa` one `map` view can cover: to the region's end, or to the
   * backing's end when that comes first. Regions in these tests are never contiguous with a
   * guest-adjacent neighbour in the backing, so a region is a span of its own.
   * @param {number} gpa @returns {number}
   */
  mapExtent(gpa) {
    const region = /** @type {Region} */ (this.region(gpa));
    const end = Math.min(region.base + region.size, region.base + this.length - region.offset);
    return end - gpa;
  }

  /**
   * The guest bytes of `pieces` (all RAM), concatenated.
   * @param {ReadonlyArray<readonly [number, number]>} pieces @returns {Uint8Array}
   */
  gather(pieces) {
    let total = 0;
    for (const [, length] of pieces) total += length;
    const out = new Uint8Array(total);
    let at = 0;
    for (const [gpa, length] of pieces) {
      for (let i = 0; i < length; i++) out[at++] = this.mirror[this.#offset(gpa + i)];
    }
    return out;
  }

  /**
   * Stores `data` over `pieces` (all RAM), in order.
   * @param {ReadonlyArray<readonly [number, number]>} pieces @param {Uint8Array} data
   */
  scatter(pieces, data) {
    let at = 0;
    for (const [gpa, length] of pieces) {
      for (let i = 0; i < length; i++) this.mirror[this.#offset(gpa + i)] = data[at++];
    }
  }

  /** @param {number} gpa @returns {number} */
  #offset(gpa) {
    const region = /** @type {Region} */ (this.region(gpa));
    return region.offset + (gpa - region.base);
  }

  /**
   * Where the backing's bytes differ from the mirror, or undefined when they agree.
   * @param {Uint8Array} bytes - the backing now
   * @param {number} [limit] - compare only the first `limit` bytes
   * @returns {string | undefined}
   */
  diff(bytes, limit = Infinity) {
    const length = Math.min(bytes.length, this.length, limit);
    for (const [offset, size] of this.ignored) {
      for (let i = offset; i < Math.min(offset + size, length); i++) this.mirror[i] = bytes[i];
    }
    const actual = Buffer.from(bytes.buffer, bytes.byteOffset, length);
    const expected = Buffer.from(this.mirror.buffer, 0, length);
    if (actual.equals(expected)) return undefined;
    let first = 0;
    while (actual[first] === expected[first]) first++;
    let count = 0;
    for (let i = first; i < length; i++) if (actual[i] !== expected[i]) count++;
    return `backing byte 0x${first.toString(16)} is 0x${actual[first].toString(16)}, expected 0x${expected[first].toString(16)} (${count} bytes differ)`;
  }
}

/** The mappings of one IOMMU domain, as the test made them. */
export class IommuModel {
  /** @param {readonly Mapping[]} mappings */
  constructor(mappings) {
    this.mappings = mappings;
  }

  /** @param {number} iova @returns {Mapping | undefined} */
  lookup(iova) {
    return this.mappings.find((m) => iova >= m.iova && iova < m.iova + m.size);
  }

  /**
   * The guest-physical pieces of an IOVA range, and the IOMMU codes it faults with.
   * @param {number} iova @param {number} length @param {number} bits
   * @returns {{ codes: Set<string>, pieces: [number, number][] }}
   */
  translate(iova, length, bits) {
    const codes = new Set();
    /** @type {[number, number][]} */
    const pieces = [];
    const needed = bits & BIDIRECTIONAL;
    for (let at = iova; at < iova + length;) {
      const mapping = this.lookup(at);
      if (mapping === undefined) {
        codes.add('ERR_DMA_IOMMU_UNMAPPED');
        at = (Math.floor(at / PAGE) + 1) * PAGE;
        continue;
      }
      if ((mapping.perm & needed) !== needed) codes.add('ERR_DMA_IOMMU_PERMISSION');
      const stop = Math.min(iova + length, mapping.iova + mapping.size);
      pieces.push([mapping.gpa + (at - mapping.iova), stop - at]);
      at = stop;
    }
    return { codes, pieces };
  }
}

/**
 * Makes the mappings in a domain (of src/ or of dist/).
 * @param {{ map(iova: number, gpa: number, size: number, perm: number): void }} domain
 * @param {readonly Mapping[]} mappings
 */
export function mapDomain(domain, mappings) {
  for (const { iova, gpa, size, perm } of mappings) domain.map(iova, gpa, size, perm);
}

/**
 * `length` bytes of a pattern that differs from seed to seed.
 * @param {number} length @param {number} seed @returns {Uint8Array}
 */
export function pattern(length, seed) {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (Math.imul(i + 1, 0x9e3779b1) ^ seed) >>> 11;
  return bytes;
}

/**
 * A small deterministic PRNG (mulberry32): returns numbers in [0, 1).
 * @param {number} seed @returns {() => number}
 */
export function prng(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A random access near the interesting addresses: the ones that start or end a region, a
 * hole, an IOMMU mapping. `addrs` are what the context's accesses take (IOVAs behind an
 * IOMMU), `gpas` what the vCPU's own accesses take.
 * @param {() => number} next @param {readonly number[]} addrs @param {readonly number[]} gpas
 * @returns {Op}
 */
export function randomOp(next, addrs, gpas) {
  const kind = KINDS[Math.floor(next() * KINDS.length)];
  const near = (/** @type {readonly number[]} */ points) =>
    Math.max(0, points[Math.floor(next() * points.length)] + Math.floor(next() * 33) - 16);
  const roll = next();
  const length =
    roll < 0.7
      ? 1 + Math.floor(next() * 48)
      : roll < 0.95
        ? 1 + Math.floor(next() * 600)
        : 0x800 + Math.floor(next() * 0x1000);
  /** @type {[number, number][]} */
  const ranges = [];
  const count = 1 + Math.floor(next() * 4);
  for (let i = 0; i < count; i++) ranges.push([near(addrs), 1 + Math.floor(next() * 40)]);
  const cpu = kind === 'cpuRead' || kind === 'cpuWrite';
  return {
    kind,
    addr: near(cpu ? gpas : addrs),
    length,
    seed: Math.floor(next() * 0x7fffffff),
    relaxed: next() < 0.3,
    ranges,
  };
}

/** @param {Op} op @returns {string} */
export function describeOp(op) {
  const hex = (/** @type {number} */ n) => `0x${n.toString(16)}`;
  const where =
    op.kind === 'gather' || op.kind === 'scatter'
      ? (op.ranges ?? []).map(([a, l]) => `${hex(a)}+${l}`).join(',')
      : `${hex(op.addr)}+${op.length}`;
  return `${op.kind}(${where}${op.relaxed ? ', RELAXED' : ''}, seed ${op.seed})`;
}

const NO_ERROR = Symbol('no error');

/** @param {() => void} action @returns {unknown} */
function attempt(action) {
  try {
    action();
    return NO_ERROR;
  } catch (error) {
    return error;
  }
}

/** @param {Uint8Array} a @param {Uint8Array} b */
function sameBytes(a, b) {
  return a.length === b.length && Buffer.from(a).equals(Buffer.from(b));
}

/** @param {Uint8Array} bytes */
function hex(bytes) {
  const shown = [...bytes.subarray(0, 16)].map((b) => b.toString(16).padStart(2, '0')).join('');
  return bytes.length > 16 ? `${shown}… (${bytes.length} bytes)` : shown;
}

/**
 * The model's prediction for ranges accessed with `bits`.
 * @param {Env} env @param {ReadonlyArray<readonly [number, number]>} ranges @param {number} bits
 * @param {boolean} translated - whether the IOMMU (if any) translates these addresses
 * @returns {{ state: number, codes: Set<string>, pieces: [number, number][] }}
 */
function predict(env, ranges, bits, translated) {
  const codes = new Set();
  let state = LIVE;
  /** @type {[number, number][]} */
  const pieces = [];
  for (const [addr, length] of ranges) {
    let physical = [[addr, length]];
    if (translated && env.iommu !== undefined) {
      const translation = env.iommu.translate(addr, length, bits);
      for (const code of translation.codes) codes.add(code);
      if (translation.codes.size > 0) state = FAULT;
      physical = translation.pieces;
    }
    for (const [gpa, run] of physical) {
      const rangeState = env.model.rangeState(gpa, run);
      if (rangeState === FAULT) codes.add('ERR_DMA_UNASSIGNED');
      state = Math.max(state, rangeState);
      pieces.push([gpa, run]);
    }
  }
  return { state, codes, pieces };
}

/**
 * Why a thrown value is not what the prediction allows, or undefined when it is.
 * @param {Env} env @param {unknown} error @param {{ state: number, codes: Set<string> }} expected
 * @returns {string | undefined}
 */
function wrongError(env, error, expected) {
  if (!(error instanceof env.DMAError)) {
    const shown = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    return `threw something that is not a DMAError: ${shown}`;
  }
  if (!DOCUMENTED_CODES.has(error.code)) return `threw the undocumented code ${error.code}`;
  if (expected.state === LIVE)
    return `failed with ${error.code} (${error.message}); expected success`;
  const allowed = new Set(expected.codes);
  if (expected.state === CUT) allowed.add('ERR_DMA_UNASSIGNED');
  if (!allowed.has(error.code)) {
    return `failed with ${error.code} (${error.message}); expected ${[...allowed].join(' or ')}`;
  }
  if (!(error instanceof env.DMAFault)) return `${error.code} was not a DMAFault`;
  return undefined;
}

/**
 * Turns an attempt into a result: a success the prediction forbids, or an error it does not
 * allow, is a problem; otherwise the check of the successful or failed access decides.
 * @param {Env} env @param {Op} op @param {{ state: number, codes: Set<string> }} expected
 * @param {unknown} error @param {() => string | undefined} succeeded @param {() => string | undefined} failed
 * @returns {OpResult}
 */
function settle(env, op, expected, error, succeeded, failed) {
  if (error === NO_ERROR) {
    const problem =
      expected.state === FAULT
        ? `succeeded; expected ${[...expected.codes].join(' or ')}`
        : succeeded();
    return { outcome: 'ok', problem: problem && `${describeOp(op)}: ${problem}` };
  }
  const outcome = error instanceof env.DMAError ? error.code : 'threw';
  const problem = wrongError(env, error, expected) ?? failed();
  return { outcome, problem: problem && `${describeOp(op)}: ${problem}` };
}

const FIXED = /^(read|write)U(8|16|32|64)(LE|BE)?$/;

/** @param {Uint8Array} bytes @param {boolean} little @returns {bigint} */
function decode(bytes, little) {
  let value = 0n;
  for (let i = 0; i < bytes.length; i++) {
    value = (value << 8n) | BigInt(bytes[little ? bytes.length - 1 - i : i]);
  }
  return value;
}

/** @param {bigint} value @param {number} width @param {boolean} little @returns {Uint8Array} */
function encode(value, width, little) {
  const bytes = new Uint8Array(width);
  for (let i = 0; i < width; i++) {
    bytes[little ? i : width - 1 - i] = Number((value >> BigInt(8 * i)) & 0xffn);
  }
  return bytes;
}

/** A value of `width` bytes made from `seed`. @param {number} width @param {number} seed */
function valueFor(width, seed) {
  const low = BigInt(Math.imul(seed, 0x9e3779b1) >>> 0);
  const high = BigInt(Math.imul(seed ^ 0x5bd1e995, 0x85ebca6b) >>> 0);
  return ((high << 32n) | low) & ((1n << BigInt(8 * width)) - 1n);
}

/**
 * Performs one access through the library and on the model, and compares: the outcome, the
 * bytes read, the value loaded, the view mapped, the caller's buffer after a failure, and
 * then the whole backing against the mirror (no byte anywhere changed but those the access
 * was to write). The model takes the backing's current length before and after.
 * @param {Env} env @param {Op} op @returns {OpResult}
 */
export function runOp(env, op) {
  env.model.resize(env.current().length);
  const result = execute(env, op);
  if (result.problem !== undefined) return result;
  const bytes = env.current();
  env.model.resize(bytes.length);
  const difference = env.model.diff(bytes, env.diffLimit);
  if (difference !== undefined) {
    return {
      outcome: result.outcome,
      problem: `after ${describeOp(op)} (${result.outcome}): ${difference}`,
    };
  }
  return result;
}

/** @param {Env} env @param {Op} op @returns {OpResult} */
function execute(env, op) {
  const { ctx, memory, model } = env;
  const relaxed = op.relaxed ? RELAXED : undefined;
  const extra = relaxed ?? 0;
  switch (op.kind) {
    case 'read':
    case 'rwRead':
    case 'cpuRead':
    case 'gather': {
      const ranges = op.kind === 'gather' ? (op.ranges ?? []) : [[op.addr, op.length]];
      const expected = predict(env, ranges, READ, op.kind !== 'cpuRead');
      let total = 0;
      for (const [, length] of ranges) total += length;
      const buf = new Uint8Array(total).fill(FILL);
      const error = attempt(() => {
        if (op.kind === 'read') ctx.read(op.addr, buf, relaxed);
        else if (op.kind === 'rwRead') ctx.rw(op.addr, buf, READ | extra);
        else if (op.kind === 'cpuRead') memory.read(op.addr, buf);
        else {
          const sg = new env.ScatterGatherList(ctx);
          for (const [addr, length] of ranges) sg.add(addr, length);
          sg.gather(buf, relaxed);
        }
      });
      return settle(
        env,
        op,
        expected,
        error,
        () => {
          const want = model.gather(expected.pieces);
          return sameBytes(buf, want) ? undefined : `read ${hex(buf)}, expected ${hex(want)}`;
        },
        () => (buf.every((b) => b === FILL) ? undefined : "the caller's buffer changed"),
      );
    }
    case 'write':
    case 'rwWrite':
    case 'cpuWrite':
    case 'scatter':
    case 'set': {
      const ranges = op.kind === 'scatter' ? (op.ranges ?? []) : [[op.addr, op.length]];
      const expected = predict(env, ranges, WRITE, op.kind !== 'cpuWrite');
      let total = 0;
      for (const [, length] of ranges) total += length;
      const value = op.seed & 0xff;
      const data = op.kind === 'set' ? new Uint8Array(total).fill(value) : pattern(total, op.seed);
      const copy = data.slice();
      const error = attempt(() => {
        if (op.kind === 'write') ctx.write(op.addr, data, relaxed);
        else if (op.kind === 'rwWrite') ctx.rw(op.addr, data, WRITE | extra);
        else if (op.kind === 'cpuWrite') memory.write(op.addr, data);
        else if (op.kind === 'set') ctx.set(op.addr, value, op.length, relaxed);
        else {
          const sg = new env.ScatterGatherList(ctx);
          for (const [addr, length] of ranges) sg.add(addr, length);
          sg.scatter(data, relaxed);
        }
      });
      const unchanged = () => (sameBytes(data, copy) ? undefined : "the caller's data changed");
      return settle(
        env,
        op,
        expected,
        error,
        () => {
          model.scatter(expected.pieces, copy);
          return unchanged();
        },
        unchanged,
      );
    }
    case 'mapRead':
    case 'mapWrite':
    case 'mapBoth': {
      const bits = op.kind === 'mapRead' ? READ : op.kind === 'mapWrite' ? WRITE : BIDIRECTIONAL;
      const expected = predict(env, [[op.addr, 1]], bits, true);
      let run = op.length;
      let gpa = op.addr;
      const mapping = env.iommu?.lookup(op.addr);
      if (mapping !== undefined) {
        run = Math.min(run, mapping.iova + mapping.size - op.addr);
        gpa = mapping.gpa + (op.addr - mapping.iova);
      }
      /** @type {Uint8Array | undefined} */
      let view;
      const error = attempt(() => {
        view = ctx.map(op.addr, op.length, bits | extra);
      });
      return settle(
        env,
        op,
        expected,
        error,
        () => {
          const mapped = /** @type {Uint8Array} */ (view);
          const want = Math.min(run, model.mapExtent(gpa));
          if (mapped.length !== want) return `mapped ${mapped.length} bytes, expected ${want}`;
          if ((bits & READ) !== 0) {
            const seen = model.gather([[gpa, want]]);
            if (!sameBytes(mapped.slice(), seen)) {
              return `the view holds ${hex(mapped.slice())}, expected ${hex(seen)}`;
            }
          }
          let accessed;
          if ((bits & WRITE) !== 0) {
            const data = pattern(want, op.seed);
            mapped.set(data);
            model.scatter([[gpa, want]], data);
            accessed = op.seed % (want + 1);
          }
          const unmapError = attempt(() => {
            ctx.unmap(mapped, accessed);
          });
          if (unmapError === NO_ERROR) return undefined;
          return `unmap threw ${unmapError instanceof Error ? `${unmapError.name}: ${unmapError.message}` : String(unmapError)}`;
        },
        () => undefined,
      );
    }
    case 'valid': {
      const bits = [READ, WRITE, BIDIRECTIONAL][op.seed % 3];
      const expected = predict(env, [[op.addr, op.length]], bits, true);
      /** @type {boolean | undefined} */
      let answer;
      const error = attempt(() => {
        answer = ctx.valid(op.addr, op.length, bits | extra);
      });
      if (error !== NO_ERROR) {
        const shown = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
        return { outcome: 'threw', problem: `${describeOp(op)}: threw ${shown}` };
      }
      const wrong =
        (expected.state === LIVE && answer !== true) ||
        (expected.state === FAULT && answer !== false);
      return {
        outcome: 'ok',
        problem: wrong ? `${describeOp(op)}: answered ${String(answer)}` : undefined,
      };
    }
    default: {
      const fixed = FIXED.exec(op.kind);
      if (fixed === null) return { outcome: 'threw', problem: `unknown kind ${op.kind}` };
      const store = fixed[1] === 'write';
      const width = Number(fixed[2]) / 8;
      const little = fixed[3] !== 'BE';
      const expected = predict(env, [[op.addr, width]], store ? WRITE : READ, true);
      const call = /** @type {Record<string, (...args: unknown[]) => unknown>} */ (
        /** @type {unknown} */ (ctx)
      )[op.kind];
      const value = valueFor(width, op.seed);
      const argument = width === 8 ? value : Number(value);
      /** @type {unknown} */
      let loaded;
      const error = attempt(() => {
        if (store) call.call(ctx, op.addr, argument, relaxed);
        else loaded = call.call(ctx, op.addr, relaxed);
      });
      return settle(
        env,
        op,
        expected,
        error,
        () => {
          if (store) {
            model.scatter(expected.pieces, encode(value, width, little));
            return undefined;
          }
          const want = decode(model.gather(expected.pieces), little);
          const wanted = width === 8 ? want : Number(want);
          return loaded === wanted
            ? undefined
            : `loaded ${String(loaded)}, expected ${String(wanted)}`;
        },
        () => undefined,
      );
    }
  }
}

/** The control words of the growth workers (an Int32Array over a SharedArrayBuffer of its own). */
export const CONTROL = {
  /** How many times the grower has grown the backing so far. */
  GROWS: 0,
  /** How many batches of accesses the DMA worker has finished. */
  BATCHES: 1,
  /** Set by the main thread (or a worker that failed): everyone stops. */
  STOP: 2,
  /** The byte size of the control buffer. */
  BYTES: 64,
};
