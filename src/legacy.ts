/**
 * The 1.x API, shaped like QEMU's 2012 DMA helpers: a `DMADirection` and a `_relaxed`
 * variant of each helper, with a full barrier before every ordered access. It is kept so
 * that old device models run unchanged while they migrate (`npx dma-attrs migrate`), and
 * it is built on the attributes API: no second implementation of memory access.
 *
 * @module dma-attrs/legacy
 */
/* eslint-disable @typescript-eslint/no-deprecated -- this module is the deprecated API itself */
import { READ, RELAXED, WRITE } from './internal/bits.js';
import { isDMAContext, transferKnownLength, type DMAContext } from './context.js';
import { DMAError } from './errors.js';
import {
  bufferLength,
  checkAddress,
  checkLength,
  checkRange,
  invalidArgument,
  notInstance,
} from './internal/check.js';
import { describe } from './internal/describe.js';
import { fixedView } from './internal/intrinsics.js';

/**
 * The direction of a transfer, as the 2012 helpers named it.
 *
 * @deprecated Use {@link dma-attrs!DMAAttributes | DMAAttributes}: `TO_DEVICE` is `DMAAttributes.READ`,
 * `FROM_DEVICE` is `DMAAttributes.WRITE`.
 */
export enum DMADirection {
  /** The device reads guest memory. @deprecated Use `DMAAttributes.READ`. */
  TO_DEVICE = 0,
  /** The device writes guest memory. @deprecated Use `DMAAttributes.WRITE`. */
  FROM_DEVICE = 1,
}

/**
 * The attributes of a direction: READ for `TO_DEVICE`, WRITE for `FROM_DEVICE`.
 *
 * @param dir - a {@link DMADirection}.
 * @returns `DMAAttributes.READ` or `DMAAttributes.WRITE`.
 * @throws {@link dma-attrs!DMAError | DMAError} `ERR_DMA_INVALID_ATTRIBUTES` for anything else.
 * @deprecated Write `DMAAttributes.READ` or `DMAAttributes.WRITE` directly.
 */
export function directionToAttributes(dir: DMADirection): number {
  // Typed callers cannot pass anything else, but JavaScript callers can.
  const given: unknown = dir;
  if (given === DMADirection.TO_DEVICE) return READ;
  if (given === DMADirection.FROM_DEVICE) return WRITE;
  throw new DMAError(
    'ERR_DMA_INVALID_ATTRIBUTES',
    `dir must be DMADirection.TO_DEVICE (0) or DMADirection.FROM_DEVICE (1); received ${describe(dir)}`,
  );
}

/**
 * Checks that `dma` is a genuine {@link dma-attrs!DMAContext | DMAContext}: the helpers are
 * plain functions, so nothing else would stop a `null`, a `{}` or a `GuestMemory`.
 */
function context(dma: unknown): DMAContext {
  if (!isDMAContext(dma)) notInstance('dma', 'DMAContext', dma);
  return dma;
}

/**
 * The first `len` bytes of `buf`, with the address checked. Arguments are validated before the barrier, so that a
 * programmer error issues none; a guest fault (a hole, an IOMMU refusal) comes after it,
 * as in 2012, where `smp_mb()` preceded the access that failed.
 */
function prefix(addr: unknown, buf: Uint8Array, len: number): Uint8Array {
  checkAddress(addr);
  const length = bufferLength(buf);
  checkLength(len, 'len');
  if (len > length) invalidArgument('len', `at most buf.length (${length})`, len);
  checkRange(addr, len);
  // A fixed view made from the buffer's own slots, never the caller's `subarray`. The whole
  // buffer is passed as it is, with its length already read: see {@link transfer}.
  return len === length ? buf : fixedView(buf, 0, len);
}

/** The access of a helper, on a buffer and length {@link prefix} validated (read once). */
function transfer(
  ctx: DMAContext,
  addr: number,
  bytes: Uint8Array,
  len: number,
  bits: number,
): void {
  transferKnownLength(ctx, addr, bytes, len, bits);
}

/**
 * Reads or writes `len` bytes, as `dir` says, after a full barrier.
 *
 * @param dma - the DMA context.
 * @param addr - the guest address.
 * @param buf - the device's buffer; its first `len` bytes are used.
 * @param len - the byte count, at most `buf.length`.
 * @param dir - the direction.
 * @deprecated Use `dma.rw(addr, buf, attrs)`: READ gets an acquire barrier after it, WRITE
 * a release barrier before it; add `dma.barrier('full')` where a store→load order is needed.
 */
export function dmaMemoryRw(
  dma: DMAContext,
  addr: number,
  buf: Uint8Array,
  len: number,
  dir: DMADirection,
): void {
  const ctx = context(dma);
  const attrs = directionToAttributes(dir);
  const bytes = prefix(addr, buf, len);
  ctx.barrier('full');
  transfer(ctx, addr, bytes, len, attrs | RELAXED);
}

/**
 * Reads or writes `len` bytes, as `dir` says, with no barrier.
 *
 * @param dma - the DMA context.
 * @param addr - the guest address.
 * @param buf - the device's buffer; its first `len` bytes are used.
 * @param len - the byte count, at most `buf.length`.
 * @param dir - the direction.
 * @deprecated Use `dma.rw(addr, buf, attrs | DMAAttributes.RELAXED)`.
 */
export function dmaMemoryRwRelaxed(
  dma: DMAContext,
  addr: number,
  buf: Uint8Array,
  len: number,
  dir: DMADirection,
): void {
  const ctx = context(dma);
  const attrs = directionToAttributes(dir);
  transfer(ctx, addr, prefix(addr, buf, len), len, attrs | RELAXED);
}

/**
 * The device reads `len` bytes of guest memory into `buf`, after a full barrier.
 *
 * @param dma - the DMA context.
 * @param addr - the guest address.
 * @param buf - receives the bytes.
 * @param len - the byte count, at most `buf.length`.
 * @deprecated Use `dma.read(addr, buf)` (an acquire barrier after the read).
 */
export function dmaMemoryRead(dma: DMAContext, addr: number, buf: Uint8Array, len: number): void {
  const ctx = context(dma);
  const bytes = prefix(addr, buf, len);
  ctx.barrier('full');
  transfer(ctx, addr, bytes, len, READ | RELAXED);
}

/**
 * The device writes the first `len` bytes of `buf` to guest memory, after a full barrier.
 *
 * @param dma - the DMA context.
 * @param addr - the guest address.
 * @param buf - the bytes.
 * @param len - the byte count, at most `buf.length`.
 * @deprecated Use `dma.write(addr, buf)` (a release barrier before the write).
 */
export function dmaMemoryWrite(dma: DMAContext, addr: number, buf: Uint8Array, len: number): void {
  const ctx = context(dma);
  const bytes = prefix(addr, buf, len);
  ctx.barrier('full');
  transfer(ctx, addr, bytes, len, WRITE | RELAXED);
}

/**
 * The device reads `len` bytes of guest memory into `buf`, with no barrier.
 *
 * @param dma - the DMA context.
 * @param addr - the guest address.
 * @param buf - receives the bytes.
 * @param len - the byte count, at most `buf.length`.
 * @deprecated Use `dma.read(addr, buf, DMAAttributes.RELAXED)`.
 */
export function dmaMemoryReadRelaxed(
  dma: DMAContext,
  addr: number,
  buf: Uint8Array,
  len: number,
): void {
  const ctx = context(dma);
  transfer(ctx, addr, prefix(addr, buf, len), len, READ | RELAXED);
}

/**
 * The device writes the first `len` bytes of `buf` to guest memory, with no barrier.
 *
 * @param dma - the DMA context.
 * @param addr - the guest address.
 * @param buf - the bytes.
 * @param len - the byte count, at most `buf.length`.
 * @deprecated Use `dma.write(addr, buf, DMAAttributes.RELAXED)`.
 */
export function dmaMemoryWriteRelaxed(
  dma: DMAContext,
  addr: number,
  buf: Uint8Array,
  len: number,
): void {
  const ctx = context(dma);
  transfer(ctx, addr, prefix(addr, buf, len), len, WRITE | RELAXED);
}

/**
 * Fills `len` bytes of guest memory with the byte `c`, after a full barrier.
 *
 * @param dma - the DMA context.
 * @param addr - the guest address.
 * @param c - the byte, 0 to 255.
 * @param len - the byte count.
 * @deprecated Use `dma.set(addr, c, len)` (a release barrier before the fill).
 */
export function dmaMemorySet(dma: DMAContext, addr: number, c: number, len: number): void {
  const ctx = context(dma);
  checkAddress(addr);
  if (typeof c !== 'number' || (c & 0xff) !== c)
    invalidArgument('c', 'an integer from 0 to 255', c);
  checkLength(len, 'len');
  checkRange(addr, len);
  ctx.barrier('full');
  ctx.set(addr, c, len, RELAXED);
}

/**
 * Maps guest memory for direct access, with no barrier.
 *
 * @param dma - the DMA context.
 * @param addr - the guest address.
 * @param len - the wanted length.
 * @param dir - the direction.
 * @returns a view of up to `len` bytes.
 * @deprecated Use `dma.map(addr, len, attrs)`, which orders the mapping as the attributes say.
 */
export function dmaMemoryMap(
  dma: DMAContext,
  addr: number,
  len: number,
  dir: DMADirection,
): Uint8Array {
  const ctx = context(dma);
  return ctx.map(addr, len, directionToAttributes(dir) | RELAXED);
}

/**
 * Gives back a view from {@link dmaMemoryMap}, with no barrier.
 *
 * @param dma - the DMA context.
 * @param buffer - the view.
 * @param len - the mapped length (unused, as in 2012).
 * @param dir - the direction (unused: the mapping remembers it).
 * @param accessLen - how many bytes the device accessed.
 * @deprecated Use `dma.unmap(buffer, accessLen)`.
 */
export function dmaMemoryUnmap(
  dma: DMAContext,
  buffer: Uint8Array,
  len: number,
  dir: DMADirection,
  accessLen: number,
): void {
  const ctx = context(dma);
  // Attributes first, then arguments: the documented order.
  directionToAttributes(dir);
  checkLength(len, 'len');
  ctx.unmap(buffer, accessLen);
}

/**
 * Issues a full barrier, whatever the direction.
 *
 * @param dma - the DMA context.
 * @param dir - the direction (validated, otherwise unused).
 * @deprecated Use `dma.barrier('full')`.
 */
export function dmaBarrier(dma: DMAContext, dir: DMADirection): void {
  const ctx = context(dma);
  directionToAttributes(dir);
  ctx.barrier('full');
}
