/**
 * DMA attributes: the direction bits and RELAXED, as a number or as a flag object.
 *
 * @module
 */
import * as z from 'zod/mini';
import { DMAError } from './errors.js';
import { BIDIRECTIONAL, READ, RELAXED, WRITE } from './internal/bits.js';
import { describe } from './internal/describe.js';

/**
 * The attribute bits. READ and WRITE have the values of QEMU's `IOMMU_RO`/`IOMMU_WO`,
 * virtio-iommu's `MAP_F_READ`/`MAP_F_WRITE` and vm-memory's `Permissions`, so one value
 * serves both as the attributes of an access and as an IOMMU permission.
 *
 * @example
 * ```ts
 * ctx.read(descAddr, desc);                                       // READ: acquire after
 * ctx.write(bufAddr, payload, DMAAttributes.RELAXED);             // WRITE | RELAXED: no barrier
 * domain.map(iova, gpa, 4096, DMAAttributes.BIDIRECTIONAL);       // a read-write mapping
 * ```
 */
export const DMAAttributes = {
  /** The device reads guest memory (was `DMA_DIRECTION_TO_DEVICE`). */
  READ,
  /** The device writes guest memory (was `DMA_DIRECTION_FROM_DEVICE`). */
  WRITE,
  /** `READ | WRITE`: only `map`, `unmap`, `valid` and IOMMU permissions take it. */
  BIDIRECTIONAL,
  /** No ordering barrier: the caller orders the access itself (or needs no order). */
  RELAXED,
} as const;

/** A bitfield of {@link DMAAttributes} values: an integer with no bit outside `0b0111`. */
export type DMAAttributes = number;

/**
 * The attributes as named booleans. A missing key is `false`. Unknown keys are an error,
 * so that a misspelt `{ relaxd: true }` cannot silently mean "ordered".
 */
export interface DMAFlags {
  /** The device reads guest memory. */
  read?: boolean;
  /** The device writes guest memory. */
  write?: boolean;
  /** No ordering barrier. */
  relaxed?: boolean;
}

/** What every API taking attributes accepts: the bitfield or a flag object. */
export type DMAAttributesLike = DMAAttributes | DMAFlags;

/**
 * The strict zod schema of a {@link DMAFlags} object: unknown keys and non-boolean values
 * are rejected. Built with `zod/mini`, the tree-shakable API of zod, so that a bundle of the
 * library carries a few kilobytes of zod rather than all of it. The accessors validate flag objects with this schema's rules; a hand-written
 * pre-check that agrees with it keeps zod off the hot path for valid objects.
 */
export const DMAFlagsSchema = z.strictObject({
  /** The device reads guest memory. */
  read: z.optional(z.boolean()),
  /** The device writes guest memory. */
  write: z.optional(z.boolean()),
  /** No ordering barrier. */
  relaxed: z.optional(z.boolean()),
});

const ALL_BITS = READ | WRITE | RELAXED;

/**
 * The bits of a flag object that is plainly valid, or -1 when it needs the schema to
 * decide (and to name what is wrong). `for…in` over a literal walks V8's enum cache
 * without allocating, which keeps flag objects within a few nanoseconds of numbers.
 */
function fastFlagBits(flags: object): number {
  let bits = 0;
  for (const key in flags) {
    const value: unknown = (flags as Record<string, unknown>)[key];
    if (value === undefined || value === false) {
      if (key !== 'read' && key !== 'write' && key !== 'relaxed') return -1;
    } else if (value === true) {
      if (key === 'read') bits |= READ;
      else if (key === 'write') bits |= WRITE;
      else if (key === 'relaxed') bits |= RELAXED;
      else return -1;
    } else {
      return -1;
    }
  }
  return bits;
}

function schemaFlagBits(flags: unknown, what: string): number {
  const result = DMAFlagsSchema.safeParse(flags);
  if (!result.success) {
    const issue = result.error.issues[0];
    let detail = 'is not a valid DMAFlags object';
    if (issue?.code === 'unrecognized_keys') {
      detail = `has unknown key ${issue.keys.map((key) => JSON.stringify(key)).join(', ')} (expected read, write, relaxed)`;
    } else if (issue !== undefined && issue.path.length > 0) {
      const key = String(issue.path[0]);
      const value = (flags as Record<string, unknown>)[key];
      detail = `has key "${key}" = ${describe(value)}; expected a boolean`;
    } else if (issue !== undefined) {
      detail = `must be a flags object; received ${describe(flags)}`;
    }
    throw new DMAError('ERR_DMA_INVALID_ATTRIBUTES', `${what} ${detail}`);
  }
  const { read, write, relaxed } = result.data;
  return (
    (read === true ? READ : 0) | (write === true ? WRITE : 0) | (relaxed === true ? RELAXED : 0)
  );
}

/**
 * Converts and validates attributes given as a number or a flag object.
 *
 * A flag object is a plain object (or one with a `null` prototype); an object of another
 * prototype (a class instance) is one too when its enumerable keys set a flag and name
 * nothing else. An array, a typed array, or any other object that sets no flag (a `Date`, a
 * `Map`) is refused, never taken as "no flags".
 *
 * @param like - a bitfield of {@link DMAAttributes} or a {@link DMAFlags} object.
 * @param what - how error messages name the argument.
 * @returns the attributes as a number.
 * @throws {@link DMAError} `ERR_DMA_INVALID_ATTRIBUTES` for a number that is not an
 * integer within `0b0111`, a flag object with an unknown key or a non-boolean value,
 * or anything else.
 *
 * @example
 * ```ts
 * toAttributes({ write: true, relaxed: true }); // 0b0110
 * toAttributes(DMAAttributes.READ);            // 0b0001
 * toAttributes({ relaxd: true });              // throws: unknown key "relaxd"
 * ```
 */
export function toAttributes(like: DMAAttributesLike, what = 'attrs'): DMAAttributes {
  if (typeof like === 'number') {
    if ((like & ALL_BITS) === like) return like | 0;
    throw new DMAError(
      'ERR_DMA_INVALID_ATTRIBUTES',
      `${what} must be an integer with no bit outside 0b0111 (READ|WRITE|RELAXED); received ${describe(like)}`,
    );
  }
  if (
    typeof like === 'object' &&
    (like as unknown) !== null &&
    !Array.isArray(like) &&
    !ArrayBuffer.isView(like)
  ) {
    // An object whose keys set a flag, and name nothing else, is a flag object whatever its
    // prototype. One that sets none must be plain: zod's object schema would take a Date or
    // a Map as "no flags", which is never what the caller meant. The prototype is looked at
    // only then because `Object.getPrototypeOf` is the slowest step of this path, a runtime
    // call of about 10 ns in V8 (`docs/performance.md`, "The prototype check of a flag object").
    // Arrays and typed arrays are refused before their keys are enumerated: V8 lists every
    // index first (a cost only: they would be refused after it too).
    const bits = fastFlagBits(like);
    if (bits > 0) return bits;
    const prototype: unknown = Object.getPrototypeOf(like);
    if (prototype === Object.prototype || prototype === null) {
      return bits === 0 ? 0 : schemaFlagBits(like, what);
    }
  }
  throw new DMAError(
    'ERR_DMA_INVALID_ATTRIBUTES',
    `${what} must be a DMAAttributes number or a plain DMAFlags object; received ${describe(like)}`,
  );
}

/**
 * The attributes as a flag object with all three keys present.
 *
 * @param attrs - attributes as a number or flag object.
 * @returns `{ read, write, relaxed }`.
 * @throws {@link DMAError} `ERR_DMA_INVALID_ATTRIBUTES` for invalid attributes.
 *
 * @example
 * ```ts
 * toFlags(DMAAttributes.READ | DMAAttributes.RELAXED); // { read: true, write: false, relaxed: true }
 * ```
 */
export function toFlags(attrs: DMAAttributesLike): Required<DMAFlags> {
  const bits = toAttributes(attrs);
  return {
    read: (bits & READ) !== 0,
    write: (bits & WRITE) !== 0,
    relaxed: (bits & RELAXED) !== 0,
  };
}

/**
 * The attributes as text: the set bits joined by `|`, with `BIDIRECTIONAL` for READ and
 * WRITE together and `NONE` for zero.
 *
 * @param attrs - attributes as a number or flag object.
 * @returns text that {@link parseAttributes} reads back.
 * @throws {@link DMAError} `ERR_DMA_INVALID_ATTRIBUTES` for invalid attributes.
 *
 * @example
 * ```ts
 * formatAttributes(DMAAttributes.READ | DMAAttributes.RELAXED); // "READ|RELAXED"
 * formatAttributes(DMAAttributes.BIDIRECTIONAL);                // "BIDIRECTIONAL"
 * ```
 */
export function formatAttributes(attrs: DMAAttributesLike): string {
  const bits = toAttributes(attrs);
  const names: string[] = [];
  const direction = bits & (READ | WRITE);
  if (direction === (READ | WRITE)) names.push('BIDIRECTIONAL');
  else if (direction === READ) names.push('READ');
  else if (direction === WRITE) names.push('WRITE');
  if ((bits & RELAXED) !== 0) names.push('RELAXED');
  return names.length === 0 ? 'NONE' : names.join('|');
}

const NAMED_BITS: Readonly<Record<string, number>> = {
  NONE: 0,
  READ,
  WRITE,
  BIDIRECTIONAL: READ | WRITE,
  RELAXED,
};

/**
 * Reads attributes from text: names separated by `|`, in any case, with optional spaces.
 *
 * @param text - for example `"write|relaxed"` or `"READ | RELAXED"`.
 * @returns the attributes as a number.
 * @throws {@link DMAError} `ERR_DMA_INVALID_ATTRIBUTES` naming an unknown or empty name.
 *
 * @example
 * ```ts
 * parseAttributes('write|relaxed'); // DMAAttributes.WRITE | DMAAttributes.RELAXED
 * ```
 */
export function parseAttributes(text: string): DMAAttributes {
  if (typeof text !== 'string') {
    throw new DMAError(
      'ERR_DMA_INVALID_ATTRIBUTES',
      `attributes text must be a string; received ${describe(text)}`,
    );
  }
  let bits = 0;
  for (const part of text.split('|')) {
    const name = part.trim().toUpperCase();
    const value = Object.hasOwn(NAMED_BITS, name) ? NAMED_BITS[name] : undefined;
    if (value === undefined) {
      throw new DMAError(
        'ERR_DMA_INVALID_ATTRIBUTES',
        `unknown attribute name ${JSON.stringify(part.trim())} in ${JSON.stringify(text)}; expected READ, WRITE, BIDIRECTIONAL, RELAXED or NONE`,
      );
    }
    bits |= value;
  }
  return bits;
}
