/**
 * Which barrier an access needs, and how a barrier becomes machine code. This module is
 * the one place that decides both, as QEMU keeps `smp_mb()` in one inline helper.
 *
 * @module
 */
import { toAttributes, type DMAAttributesLike } from './attributes.js';
import { DMAError } from './errors.js';
import { ACQUIRE, FULL, NONE, RELEASE } from './internal/bits.js';
import { describe } from './internal/describe.js';

/**
 * How strongly an access is ordered against the other agents' accesses.
 *
 * - `none`: not at all (RELAXED).
 * - `acquire`: later accesses cannot move before this one (a READ, issued after it).
 * - `release`: earlier accesses cannot move after this one (a WRITE, issued before it).
 * - `full`: both, and a store before it is visible before a load after it.
 */
export type BarrierStrength = 'none' | 'acquire' | 'release' | 'full';

/**
 * How a guest memory turns a barrier strength into instructions.
 *
 * - `strict`: every barrier but `none` is one `Atomics` read-modify-write on the memory's
 *   shared fence word: sound under the ECMAScript memory model on any CPU, provided the
 *   other agents fence on the same word.
 * - `tso`: acquire and release emit nothing (x86-TSO and V8 keep program order for them);
 *   full is the same read-modify-write. Only correct on x86 and x86-64 hosts.
 * - `auto`: `tso` on x64 and ia32, `strict` elsewhere (and where the platform is unknown).
 */
export type BarrierPolicy = 'strict' | 'tso' | 'auto';

/** The strength names, indexed by numeric strength. */
export const STRENGTH_NAMES: readonly BarrierStrength[] = ['none', 'acquire', 'release', 'full'];

/**
 * The barrier table, indexed by attribute bits: -1 where there is no direction and no
 * RELAXED (an error), else the numeric strength.
 */
const TABLE = Int8Array.of(-1, ACQUIRE, RELEASE, FULL, NONE, NONE, NONE, NONE);

/**
 * The numeric strength for validated attribute bits, or -1 for "no direction, not relaxed".
 * Internal: the accessors call it with bits already checked to lie within `0b0111`.
 */
export function strengthCode(attrs: number): number {
  return TABLE[attrs] ?? -1;
}

/**
 * The barrier strength the attributes call for, per the barrier table:
 *
 * | attributes | strength | where an accessor issues it |
 * | --- | --- | --- |
 * | any with RELAXED | `none` | — |
 * | READ | `acquire` | after the access |
 * | WRITE | `release` | before the access |
 * | BIDIRECTIONAL | `full` | before and after the access |
 *
 * @param attrs - attributes as a number or flag object.
 * @returns the strength.
 * @throws {@link DMAError} `ERR_DMA_INVALID_ATTRIBUTES` for attributes with neither a
 * direction nor RELAXED, or invalid attributes.
 *
 * @example
 * ```ts
 * barrierFor(DMAAttributes.READ);                          // 'acquire'
 * barrierFor({ write: true });                             // 'release'
 * barrierFor(DMAAttributes.WRITE | DMAAttributes.RELAXED); // 'none'
 * ```
 */
export function barrierFor(attrs: DMAAttributesLike): BarrierStrength {
  const code = strengthCode(toAttributes(attrs));
  if (code < 0) {
    throw new DMAError(
      'ERR_DMA_INVALID_ATTRIBUTES',
      `attrs ${describe(attrs)} name no direction and are not RELAXED, so no barrier follows from them; expected READ, WRITE, BIDIRECTIONAL or RELAXED`,
    );
  }
  return STRENGTH_NAMES[code] ?? 'none';
}

/**
 * The numeric strength for a strength name, validated.
 *
 * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for anything but the four names.
 */
export function parseStrength(strength: unknown): number {
  // Compared one by one rather than with `indexOf`: `barrier('full')` is on hot paths, and
  // the builtin call costs about as much as the fence itself.
  if (strength === 'full') return FULL;
  if (strength === 'acquire') return ACQUIRE;
  if (strength === 'release') return RELEASE;
  if (strength === 'none') return NONE;
  throw new DMAError(
    'ERR_DMA_INVALID_ARGUMENT',
    `barrier strength must be 'none', 'acquire', 'release' or 'full'; received ${describe(strength)}`,
  );
}

/**
 * Resolves `auto` for this host: `tso` where `process.arch` says x64 or ia32, else `strict`.
 *
 * @param policy - the requested policy.
 * @returns `strict` or `tso`.
 * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for an unknown policy.
 */
export function resolveBarrierPolicy(policy: unknown = 'auto'): 'strict' | 'tso' {
  if (policy === 'strict' || policy === 'tso') return policy;
  if (policy !== 'auto') {
    throw new DMAError(
      'ERR_DMA_INVALID_ARGUMENT',
      `barrierPolicy must be 'strict', 'tso' or 'auto'; received ${describe(policy)}`,
    );
  }
  const arch = typeof process === 'object' ? (process as { arch?: unknown }).arch : undefined;
  return arch === 'x64' || arch === 'ia32' ? 'tso' : 'strict';
}

/**
 * Emits barriers for one guest memory. `mask` has bit `1 << strength` set for each
 * strength that costs an instruction under the policy; the instruction is always the
 * same read-modify-write on the shared fence word, so all agents that fence on that word
 * are totally ordered by it (the ECMAScript model's synchronizes-with edge).
 */
export class Fence {
  /** The fence word, or undefined for memory only one agent can see. */
  readonly word: Int32Array | undefined;
  /** Bit `1 << strength` is set when that strength emits an instruction. */
  readonly mask: number;

  /**
   * @param word - the shared fence word; undefined for unshared memory (no barrier at all).
   * @param policy - the resolved policy.
   */
  constructor(word: Int32Array | undefined, policy: 'strict' | 'tso') {
    this.word = word;
    if (word === undefined) this.mask = 0;
    else if (policy === 'strict') this.mask = (1 << ACQUIRE) | (1 << RELEASE) | (1 << FULL);
    else this.mask = 1 << FULL;
  }

  /** Emits the barrier for a numeric strength, if the policy needs an instruction for it. */
  emit(strength: number): void {
    if (((this.mask >> strength) & 1) !== 0) Atomics.add(this.word as Int32Array, 0, 0);
  }
}
