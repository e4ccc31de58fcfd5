/**
 * The legacy API of SPEC §8 as data: one row per legacy function, saying how a call is
 * rewritten (what each parameter becomes, the shape of the new call) and which barrier the call
 * had in 2012 and has now. The rewrite (rewrite.ts), the weakened and strengthened sites of the
 * report, `--preserve-full-barriers` and the table of `docs/migration.md` (migration-table.ts) are
 * all derived from these rows: adding a legacy function is adding a row.
 *
 * @module
 */
import type { StrengthenedSite, WeakenedStrength } from './report.js';

/** The entry the codemod migrates from. */
export const LEGACY_MODULE = 'dma-attrs/legacy';
/** The entry it migrates to. */
export const MAIN_MODULE = 'dma-attrs';
/** The export of {@link MAIN_MODULE} the new calls name their attributes with. */
export const ATTRIBUTES = 'DMAAttributes';
/** The legacy enum of directions, rewritten by {@link DIRECTION_MEMBERS}. */
export const DIRECTION_ENUM = 'DMADirection';

/** An attribute bit that names a direction. */
export type DirectionBit = 'READ' | 'WRITE';

/** A direction known at migration time, or one only known at run time. */
export type Direction = DirectionBit | 'dynamic';

/** One member of the legacy `DMADirection` enum and the attribute bit that replaces it. */
export interface DirectionMember {
  /** The member's name: `DMADirection.TO_DEVICE`. */
  readonly member: string;
  /** Its numeric value, also accepted as a literal direction argument. */
  readonly value: number;
  /** The attribute bit it becomes: `DMAAttributes.READ`. */
  readonly attribute: DirectionBit;
}

/** `DMADirection` member by member (SPEC §8: `TO_DEVICE` (0) / `FROM_DEVICE` (1)). */
export const DIRECTION_MEMBERS: readonly DirectionMember[] = [
  { member: 'TO_DEVICE', value: 0, attribute: 'READ' },
  { member: 'FROM_DEVICE', value: 1, attribute: 'WRITE' },
];

/** How strong a barrier is, from none to full. */
export type Strength = 'none' | 'acquire' | 'release' | 'full';

/** A barrier a call issues: its strength, and on which side of the access it sits. */
export interface Barrier {
  readonly strength: Strength;
  /** Before or after the access; absent for `none` and for a barrier that is the whole call. */
  readonly side?: 'before' | 'after';
  /** The condition under which it is issued, when the call alone does not decide it. */
  readonly when?: string;
}

/** The barrier of a call that depends on its direction. */
export interface BarrierByDirection {
  readonly READ: Barrier;
  readonly WRITE: Barrier;
}

/**
 * What a legacy parameter becomes in the new call:
 * - `context`: the DMA context, the receiver of the new method (always the first parameter);
 * - `kept`: passed on as it is;
 * - `buffer`, with the `length` that must follow it: `buf` when the length is `buf.length` or
 *   `buf.byteLength`, else `buf.subarray(0, len)`;
 * - `direction`: becomes the attributes (a `DMADirection` constant becomes its bit, anything else
 *   is kept, since the codemod turns every `DMADirection.X` of the file into attributes);
 * - `dropped`: the new call has no such argument, so the value must have no side effect.
 */
export type Role = 'context' | 'kept' | 'buffer' | 'length' | 'direction' | 'dropped';

/**
 * The shape of the new call:
 * - `method`: `dma.<method>(…)` with the legacy arguments mapped by their {@link Role}s. Its
 *   attributes replace the `direction` parameter (`'direction'`), or are an optional last
 *   argument given only when RELAXED (`'optional'`), or do not exist (`'none'`);
 * - `fixed`: `dma.<method>(<arguments>)`, every legacy argument but the context dropped;
 * - `attributes`: the call is replaced by the attributes of its `direction` parameter.
 */
export type CallShape =
  | {
      readonly kind: 'method';
      readonly method: string;
      readonly attributes: 'direction' | 'optional' | 'none';
    }
  | { readonly kind: 'fixed'; readonly method: string; readonly arguments: readonly string[] }
  | { readonly kind: 'attributes' };

/** One legacy function: a row of the table. */
export interface LegacyFunction {
  /** The export of `dma-attrs/legacy`. */
  readonly name: string;
  /** Its parameters in call order (the names are the ones of SPEC §8), with their roles. */
  readonly parameters: Readonly<Record<string, Role>>;
  /** The new call. */
  readonly becomes: CallShape;
  /** The direction the function implies, when no parameter gives it. */
  readonly direction?: DirectionBit;
  /** The `…Relaxed` form: the new call carries RELAXED. */
  readonly relaxed?: boolean;
  /** The 2012 helper's barrier; absent when the function is no access. */
  readonly then?: Barrier;
  /** The new call's barrier; absent when the function is no access. */
  readonly now?: Barrier | BarrierByDirection;
}

const NONE: Barrier = { strength: 'none' };
const FULL: Barrier = { strength: 'full' };
const FULL_BEFORE: Barrier = { strength: 'full', side: 'before' };
const ACQUIRE_AFTER: Barrier = { strength: 'acquire', side: 'after' };
const RELEASE_BEFORE: Barrier = { strength: 'release', side: 'before' };

/** SPEC §8's functions, in the order of the migration guide's table. */
export const LEGACY_FUNCTIONS: readonly LegacyFunction[] = [
  {
    name: 'dmaMemoryRw',
    parameters: { dma: 'context', addr: 'kept', buf: 'buffer', len: 'length', dir: 'direction' },
    becomes: { kind: 'method', method: 'rw', attributes: 'direction' },
    then: FULL_BEFORE,
    now: { READ: ACQUIRE_AFTER, WRITE: RELEASE_BEFORE },
  },
  {
    name: 'dmaMemoryRwRelaxed',
    parameters: { dma: 'context', addr: 'kept', buf: 'buffer', len: 'length', dir: 'direction' },
    becomes: { kind: 'method', method: 'rw', attributes: 'direction' },
    relaxed: true,
    then: NONE,
    now: NONE,
  },
  {
    name: 'dmaMemoryRead',
    parameters: { dma: 'context', addr: 'kept', buf: 'buffer', len: 'length' },
    becomes: { kind: 'method', method: 'read', attributes: 'optional' },
    direction: 'READ',
    then: FULL_BEFORE,
    now: ACQUIRE_AFTER,
  },
  {
    name: 'dmaMemoryWrite',
    parameters: { dma: 'context', addr: 'kept', buf: 'buffer', len: 'length' },
    becomes: { kind: 'method', method: 'write', attributes: 'optional' },
    direction: 'WRITE',
    then: FULL_BEFORE,
    now: RELEASE_BEFORE,
  },
  {
    name: 'dmaMemoryReadRelaxed',
    parameters: { dma: 'context', addr: 'kept', buf: 'buffer', len: 'length' },
    becomes: { kind: 'method', method: 'read', attributes: 'optional' },
    direction: 'READ',
    relaxed: true,
    then: NONE,
    now: NONE,
  },
  {
    name: 'dmaMemoryWriteRelaxed',
    parameters: { dma: 'context', addr: 'kept', buf: 'buffer', len: 'length' },
    becomes: { kind: 'method', method: 'write', attributes: 'optional' },
    direction: 'WRITE',
    relaxed: true,
    then: NONE,
    now: NONE,
  },
  {
    name: 'dmaMemorySet',
    parameters: { dma: 'context', addr: 'kept', c: 'kept', len: 'kept' },
    becomes: { kind: 'method', method: 'set', attributes: 'optional' },
    direction: 'WRITE',
    then: FULL_BEFORE,
    now: RELEASE_BEFORE,
  },
  {
    name: 'dmaMemoryMap',
    parameters: { dma: 'context', addr: 'kept', len: 'kept', dir: 'direction' },
    becomes: { kind: 'method', method: 'map', attributes: 'direction' },
    then: NONE,
    now: { READ: ACQUIRE_AFTER, WRITE: NONE },
  },
  {
    name: 'dmaMemoryUnmap',
    parameters: {
      dma: 'context',
      buffer: 'kept',
      len: 'dropped',
      dir: 'dropped',
      accessLen: 'kept',
    },
    becomes: { kind: 'method', method: 'unmap', attributes: 'none' },
    then: NONE,
    // The view's map decides: a RELAXED map (all of them under --preserve-full-barriers) has none.
    now: { strength: 'release', side: 'before', when: 'if mapped for WRITE' },
  },
  {
    name: 'dmaBarrier',
    parameters: { dma: 'context', dir: 'direction' },
    becomes: { kind: 'fixed', method: 'barrier', arguments: ["'full'"] },
    then: FULL,
    now: FULL,
  },
  {
    name: 'directionToAttributes',
    parameters: { dir: 'direction' },
    becomes: { kind: 'attributes' },
  },
];

/** A parameter of a {@link Rule}, with its position. */
export interface RuleParameter {
  readonly name: string;
  readonly role: Role;
  readonly index: number;
}

/** A {@link LegacyFunction} with what the rewrite needs computed once. */
export interface Rule {
  readonly row: LegacyFunction;
  readonly name: string;
  readonly parameters: readonly RuleParameter[];
  /** The `direction` parameter, if any. */
  readonly direction: RuleParameter | undefined;
  /** Some direction has a weaker barrier now than in 2012 (a full barrier became less). */
  readonly weakens: boolean;
  /** The barrier now differs from 2012's for some direction. */
  readonly changesBarrier: boolean;
}

const RANK: Readonly<Record<Strength, number>> = { none: 0, acquire: 1, release: 1, full: 2 };

function isByDirection(now: Barrier | BarrierByDirection): now is BarrierByDirection {
  return 'READ' in now;
}

/** The barrier a row issues now for one direction. */
function nowFor(row: LegacyFunction, bit: DirectionBit): Barrier | undefined {
  const now = row.now;
  if (now === undefined) return undefined;
  return isByDirection(now) ? now[bit] : now;
}

/** The directions a call may have: its own, or both when only known at run time. */
function bitsOf(row: LegacyFunction, direction: Direction | undefined): DirectionBit[] {
  const fixed = direction === undefined || direction === 'dynamic' ? row.direction : direction;
  return fixed === undefined ? ['READ', 'WRITE'] : [fixed];
}

/** The strengths a call may have now, in READ, WRITE order and without repeats. */
function strengthsNow(row: LegacyFunction, direction: Direction | undefined): Strength[] {
  const strengths: Strength[] = [];
  for (const bit of bitsOf(row, direction)) {
    const strength = nowFor(row, bit)?.strength;
    if (strength !== undefined && !strengths.includes(strength)) strengths.push(strength);
  }
  return strengths;
}

type StrengthenedTo = StrengthenedSite['to'];

// What the report can say (report.ts): `a-or-b` is a call whose direction decides.
const WEAKENED_TO: readonly string[] = ['acquire', 'release', 'acquire-or-release'];
const STRENGTHENED_TO: readonly string[] = ['acquire', 'release', 'acquire-or-none'];

/**
 * How one call's barrier changes: `weakened` when its 2012 barrier was stronger than its barrier
 * now (for the direction it has), `strengthened` when weaker; the strength is the new one.
 *
 * @param rule - the call's rule.
 * @param direction - the call's direction, as far as known; undefined when it has none.
 * @returns the change, or undefined when the call keeps its 2012 strength.
 */
export function barrierChange(
  rule: Rule,
  direction: Direction | undefined,
):
  | { kind: 'weakened'; to: WeakenedStrength }
  | { kind: 'strengthened'; to: StrengthenedTo }
  | undefined {
  const then = rule.row.then;
  if (then === undefined) return undefined;
  const strengths = strengthsNow(rule.row, direction);
  const to = strengths.join('-or-');
  if (strengths.some((strength) => RANK[strength] < RANK[then.strength])) {
    if (!WEAKENED_TO.includes(to))
      throw new Error(`legacy rule ${rule.name}: the report cannot say '${to}'`);
    return { kind: 'weakened', to: to as WeakenedStrength };
  }
  if (strengths.some((strength) => RANK[strength] > RANK[then.strength])) {
    if (!STRENGTHENED_TO.includes(to))
      throw new Error(`legacy rule ${rule.name}: the report cannot say '${to}'`);
    return { kind: 'strengthened', to: to as StrengthenedTo };
  }
  return undefined;
}

/**
 * A row with its parameters numbered and its barrier change known, once its shape is checked
 * against what the rewrite assumes.
 *
 * @throws Error naming the row and what is wrong with it.
 */
function compile(row: LegacyFunction): Rule {
  const fail = (problem: string): never => {
    throw new Error(`legacy rule ${row.name}: ${problem}`);
  };
  const parameters = Object.entries(row.parameters).map(([name, role], index): RuleParameter => ({
    name,
    role,
    index,
  }));
  const directions = parameters.filter((parameter) => parameter.role === 'direction');
  if (directions.length > 1) fail('more than one direction parameter');
  const direction = directions[0];
  if (direction !== undefined && row.direction !== undefined) {
    fail('both a direction parameter and a fixed direction');
  }
  parameters.forEach((parameter, index) => {
    const previous = parameters[index - 1];
    if ((parameter.role === 'context') !== (index === 0) && row.becomes.kind !== 'attributes') {
      fail('the context must be the first parameter, and only it');
    }
    if (parameter.role === 'buffer' && parameters[index + 1]?.role !== 'length') {
      fail(`buffer ${parameter.name} is not followed by its length`);
    }
    if (parameter.role === 'length' && previous?.role !== 'buffer') {
      fail(`length ${parameter.name} does not follow a buffer`);
    }
    const first = previous === undefined || previous.role === 'context';
    if (parameter.role === 'dropped' && first && row.becomes.kind === 'method') {
      fail(`dropped ${parameter.name} must follow an argument the new call keeps`);
    }
  });
  const shape = row.becomes;
  if (shape.kind === 'method') {
    if (parameters.length < 2) fail('a method call needs an argument after the context');
    if (shape.attributes === 'direction' && direction === undefined) {
      fail('attributes from a direction, without a direction parameter');
    }
    if (shape.attributes !== 'direction' && direction !== undefined) {
      fail('a direction parameter the new call does not take: make it dropped');
    }
  }
  if (shape.kind === 'attributes' && (parameters.length !== 1 || direction === undefined)) {
    fail('an attributes call takes exactly one direction parameter');
  }
  if ((row.then === undefined) !== (row.now === undefined)) fail('then and now go together');
  if (row.now !== undefined && isByDirection(row.now) && direction === undefined) {
    fail('a barrier by direction needs a direction parameter');
  }
  const then = row.then;
  const both: DirectionBit[] = ['READ', 'WRITE'];
  const weakens =
    then !== undefined &&
    both.some((bit) => RANK[nowFor(row, bit)?.strength ?? 'none'] < RANK[then.strength]);
  // The report says `from: 'full'` of a weakened site, `from: 'none'` of a strengthened one, and
  // --preserve-full-barriers puts the full barrier back before the access.
  if (weakens && (then.strength !== 'full' || then.side !== 'before')) {
    fail('only a full barrier before the access can weaken');
  }
  const changesBarrier =
    then !== undefined && both.some((bit) => nowFor(row, bit)?.strength !== then.strength);
  if (changesBarrier && !weakens && then.strength !== 'none') {
    fail('only a call without a barrier can gain one');
  }
  if (changesBarrier && shape.kind !== 'method') {
    fail('only a method call (which takes attributes) can change its barrier');
  }
  return { row, name: row.name, parameters, direction, weakens, changesBarrier };
}

/** The rules by legacy name, and the set of names `dma-attrs/legacy` exports. */
export class RuleTable {
  /** The rows, in table order. */
  readonly rows: readonly LegacyFunction[];
  readonly #byName = new Map<string, Rule>();

  /**
   * @param rows - one row per legacy function.
   * @throws Error when a row is malformed or a name repeats.
   */
  constructor(rows: readonly LegacyFunction[]) {
    this.rows = rows;
    for (const row of rows) {
      if (this.#byName.has(row.name) || row.name === DIRECTION_ENUM) {
        throw new Error(`legacy rule ${row.name}: the name repeats`);
      }
      this.#byName.set(row.name, compile(row));
    }
  }

  /** The rule of a legacy function, if `name` is one. */
  rule(name: string): Rule | undefined {
    return this.#byName.get(name);
  }

  /** Whether `dma-attrs/legacy` exports `name`: a function of the table or `DMADirection`. */
  isLegacyName(name: string): boolean {
    return name === DIRECTION_ENUM || this.#byName.has(name);
  }
}

/** The table of SPEC §8. */
export const RULES = new RuleTable(LEGACY_FUNCTIONS);

/** The direction a member name of `DMADirection` stands for, if it is one. */
export function directionOfMember(member: string): DirectionBit | undefined {
  return DIRECTION_MEMBERS.find((entry) => entry.member === member)?.attribute;
}

/** The direction a numeric literal (its text, as the parser gives it) stands for, if any. */
export function directionOfValue(text: string): DirectionBit | undefined {
  return DIRECTION_MEMBERS.find((entry) => String(entry.value) === text)?.attribute;
}
