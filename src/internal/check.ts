import { DMAError } from '../errors.js';
import { describe } from './describe.js';
import { uint8Length } from './intrinsics.js';

/** 2^53: the first integer that a double cannot tell from its neighbour. */
export const ADDRESS_LIMIT = 2 ** 53;

/**
 * True for a non-negative safe integer. Written with comparisons rather than
 * `Number.isSafeInteger` plus a sign check so that the hot path is one inlined test.
 */
export function isSafeIndex(value: unknown): value is number {
  return typeof value === 'number' && value >= 0 && value < ADDRESS_LIMIT && value % 1 === 0;
}

/** Exact for every safe integer (a `Math.log2` test is not, above 2^49). At most 53 steps. */
export function isPowerOfTwo(value: unknown): value is number {
  if (!isSafeIndex(value) || value < 1) return false;
  let rest = value;
  while (rest % 2 === 0) rest /= 2;
  return rest === 1;
}

/** Throws `ERR_DMA_INVALID_ARGUMENT` naming `what` and the received value. */
export function invalidArgument(what: string, expected: string, received: unknown): never {
  throw new DMAError(
    'ERR_DMA_INVALID_ARGUMENT',
    `${what} must be ${expected}; received ${describe(received)}`,
  );
}

/** Validates a guest address or IOVA. */
export function checkAddress(addr: unknown, what = 'addr'): asserts addr is number {
  if (!isSafeIndex(addr)) invalidArgument(what, 'a non-negative safe integer (below 2^53)', addr);
}

/** Validates a byte length. */
export function checkLength(length: unknown, what = 'length'): asserts length is number {
  if (!isSafeIndex(length)) invalidArgument(what, 'a non-negative safe integer', length);
}

/**
 * Validates that `addr + length` stays within 2^53. Written as a subtraction, which is exact
 * for safe integers, because the sum rounds: `(2^53 - 1) + 2` is `2^53` in a double.
 */
export function checkRange(addr: number, length: number): void {
  if (length > ADDRESS_LIMIT - addr) {
    throw new DMAError(
      'ERR_DMA_INVALID_ARGUMENT',
      `addr + length must not exceed 2^53; received addr ${addr} and length ${length}`,
    );
  }
}

/**
 * Validates a caller's buffer with a brand check (a genuine `Uint8Array`, not an object that
 * inherits from its prototype or a proxy of one) and returns its real length, read once from
 * the buffer's internal slot: the length of the access.
 */
export function bufferLength(buf: unknown, what = 'buf'): number {
  const length = uint8Length(buf);
  if (length < 0) invalidArgument(what, 'a genuine Uint8Array', buf);
  return length;
}

/**
 * Throws `ERR_DMA_INVALID_ARGUMENT` for a value that failed the brand check of one of the
 * library's classes. An object that names the class but lacks its brand is most often an
 * instance from the other build (CommonJS or ES module) of the package in the same process,
 * which is worth saying.
 */
export function notInstance(what: string, className: string, received: unknown): never {
  let name: unknown;
  try {
    name = (received as { constructor?: { name?: unknown } } | null)?.constructor?.name;
  } catch {
    name = undefined;
  }
  const article = /^[AEIO]/.test(className) ? 'an' : 'a';
  const shown =
    name === className
      ? `an object that is not ${article} ${className} of this copy of dma-attrs (an instance from the other build, CommonJS or ES module, or a fake)`
      : describe(received);
  throw new DMAError(
    'ERR_DMA_INVALID_ARGUMENT',
    `${what} must be ${article} ${className}; received ${shown}`,
  );
}
