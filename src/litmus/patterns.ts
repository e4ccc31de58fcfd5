/**
 * The litmus patterns the `dma-attrs litmus` command runs, the barrier modes it runs them
 * with, and what the x86-TSO and ECMAScript memory models say about each forbidden outcome.
 *
 * @module
 */

/** A litmus pattern: store buffering, message passing or load buffering. */
export type LitmusPattern = 'sb' | 'mp' | 'lb';

/** How both sides order their two accesses. */
export type LitmusBarrier = 'none' | 'acquire-release' | 'full';

/** The barrier policy a run's guest memory uses. */
export type LitmusPolicy = 'strict' | 'tso';

/** Every pattern, in the order the command runs them. */
export const PATTERNS: readonly LitmusPattern[] = ['sb', 'mp', 'lb'];

/** Every barrier mode, in the order the command runs them. */
export const BARRIERS: readonly LitmusBarrier[] = ['none', 'acquire-release', 'full'];

/** Every policy, in the order the command runs them. */
export const POLICIES: readonly LitmusPolicy[] = ['strict', 'tso'];

/** What each pattern does, and which outcome is the forbidden one, for the table's legend. */
export const PATTERN_DESCRIPTIONS: Readonly<Record<LitmusPattern, string>> = {
  sb: 'store buffering: x=1; r0=y || y=1; r1=x; forbidden (r0,r1)=(0,0)',
  mp: 'message passing: data=1; flag=1 || r0=flag; r1=data; forbidden (r0,r1)=(1,0)',
  lb: 'load buffering: r0=x; y=1 || r1=y; x=1; forbidden (r0,r1)=(1,1)',
};

/** Whether two memory models allow a run's forbidden outcome. */
export interface AllowedByModel {
  /** x86-TSO, the hardware model: only a store followed by a load may be reordered. */
  readonly tso: boolean;
  /**
   * The ECMAScript memory model, for the instructions the policy emits: unordered accesses
   * that race give no guarantee; `Atomics` read-modify-writes on the one fence word are
   * totally ordered and give happens-before edges between the two sides.
   */
  readonly ecmascript: boolean;
}

/**
 * Whether each model allows the pattern's forbidden outcome with that barrier and policy.
 *
 * @param pattern - the pattern.
 * @param barrier - the barrier mode.
 * @param policy - the guest memory's barrier policy.
 * @returns the verdict of x86-TSO and of the ECMAScript model.
 */
export function allowedByModel(
  pattern: LitmusPattern,
  barrier: LitmusBarrier,
  policy: LitmusPolicy,
): AllowedByModel {
  // x86-TSO keeps every order but store→load; only a locked instruction restores that one.
  const tso = pattern === 'sb' && barrier !== 'full';
  let ecmascript: boolean;
  if (barrier === 'none') ecmascript = true;
  else if (barrier === 'full') ecmascript = false;
  // Acquire/release under `tso` emit nothing: plain racing accesses, no guarantee. Under
  // `strict` they are fence-word RMWs, which order everything but a store before a load.
  else ecmascript = policy === 'tso' || pattern === 'sb';
  return { tso, ecmascript };
}

/**
 * Whether the library promises that the forbidden outcome cannot happen: SB with `full`,
 * MP and LB with acquire-release or `full`, under either policy (`tso` on x86 hosts only).
 *
 * @param pattern - the pattern.
 * @param barrier - the barrier mode.
 * @returns true where a single forbidden outcome is a failure.
 */
export function isPromised(pattern: LitmusPattern, barrier: LitmusBarrier): boolean {
  if (barrier === 'full') return true;
  return barrier === 'acquire-release' && pattern !== 'sb';
}

/** What the worker is given: one side of one run. */
export interface LitmusWorkerData {
  /** The guest memory, from `GuestMemory.handle()`. */
  readonly handle: unknown;
  /** The rendezvous cell: `[value, sleepers]` as Int32 words. */
  readonly rendezvous: SharedArrayBuffer;
  /** One byte per side per iteration: side `s` writes `outcomes[s * iterations + i]`. */
  readonly outcomes: SharedArrayBuffer;
  /** 0 or 1. */
  readonly side: number;
  /** The pattern. */
  readonly pattern: LitmusPattern;
  /** The barrier mode. */
  readonly barrier: LitmusBarrier;
  /** Iterations; each uses fresh zeroed words `x[i]` and `y[i]`. */
  readonly iterations: number;
  /** Guest address of `x[0]`; `x[i]` is at `xBase + 4 * i`. */
  readonly xBase: number;
  /** Guest address of `y[0]`. */
  readonly yBase: number;
}
