/**
 * A descriptor chain the device popped from a split virtqueue: the buffers the driver
 * offers, readable ones first, with gather/scatter over them.
 *
 * @module
 */
import { DMAAttributes } from '../attributes.js';
import type { DMAContext } from '../context.js';
import { DMAFault } from '../errors.js';
import { bufferLength, checkLength } from '../internal/check.js';
import { fixedView } from '../internal/intrinsics.js';

/** One buffer of a chain, after indirect tables are expanded. */
export interface VirtqDescriptor {
  /** The guest address of the buffer (an IOVA with an IOMMU). */
  readonly addr: number;
  /** The buffer's byte length. */
  readonly length: number;
  /** True when the device writes the buffer (`VIRTQ_DESC_F_WRITE`), false when it reads it. */
  readonly writable: boolean;
  /** The descriptor's index in its table: the queue's table, or the indirect table. */
  readonly index: number;
  /** True when the descriptor came from an indirect table. */
  readonly indirect: boolean;
}

const RELAXED = DMAAttributes.RELAXED;
const CREATE = Symbol('DescriptorChain');

/**
 * Marks `chain` as pushed if it came from `owner` and was not pushed yet.
 * @internal
 */
export let claimChain: (chain: object, owner: object) => boolean;

/**
 * Names a chain's descriptor in a message: `descriptor 5`, or `indirect descriptor 2 (of
 * descriptor 5)` for one inside an indirect table.
 * @internal
 */
export function descriptorName(index: number, indirectOf: number): string {
  return indirectOf < 0
    ? `descriptor ${index}`
    : `indirect descriptor ${index} (of descriptor ${indirectOf})`;
}

/**
 * A chain of descriptors that {@link SplitVirtqueue.pop} returned. Readable buffers come
 * first (the queue rejects a readable descriptor after a writable one), so `read` gathers
 * from the first `readableLength` bytes of the chain and `write` scatters into the rest.
 * Payload accesses are RELAXED: `pop` read `avail.idx` with acquire before any descriptor,
 * and `push` writes `used.idx` with release after them, which is the ordering virtio needs.
 *
 * @example
 * ```ts
 * const chain = vq.pop();
 * if (chain !== undefined) {
 *   const request = new Uint8Array(chain.readableLength);
 *   chain.read(request);
 *   const written = chain.write(reply);
 *   vq.push(chain, written);
 * }
 * ```
 */
export class DescriptorChain {
  /** The head descriptor index: the `id` that {@link SplitVirtqueue.push} puts in the used ring. */
  readonly head: number;
  /** Bytes the driver offers the device to read. */
  readonly readableLength: number;
  /** Bytes the driver offers the device to write. */
  readonly writableLength: number;
  /** The buffers in chain order, indirect tables expanded; readable ones first. */
  readonly descriptors: readonly VirtqDescriptor[];
  readonly #context: DMAContext;
  readonly #owner: object;
  /** A scratch list of `[addr, length, ...]` the queue lends to every chain it pops. */
  readonly #ranges: number[];
  /** The descriptor that held the indirect table, or -1. */
  readonly #indirectOf: number;
  readonly #firstWritable: number;
  #pushed = false;

  /** @internal Made only by {@link SplitVirtqueue.pop}. */
  constructor(
    token: symbol,
    context: DMAContext,
    owner: object,
    ranges: number[],
    head: number,
    descriptors: VirtqDescriptor[],
    readableLength: number,
    writableLength: number,
    firstWritable: number,
    indirectOf: number,
  ) {
    if (token !== CREATE) throw new TypeError('DescriptorChain is made by SplitVirtqueue.pop()');
    this.#context = context;
    this.#owner = owner;
    this.#ranges = ranges;
    this.head = head;
    this.descriptors = descriptors;
    this.readableLength = readableLength;
    this.writableLength = writableLength;
    this.#firstWritable = firstWritable;
    this.#indirectOf = indirectOf;
  }

  /**
   * Gathers from the readable part of the chain into `buf`, starting `offset` bytes into it.
   *
   * @param buf - receives the bytes; as many are copied as fit and the chain has.
   * @param offset - bytes of the readable part to skip; 0 by default.
   * @returns the bytes copied: `min(buf.length, readableLength - offset)`, or 0.
   * @throws {@link dma-attrs!DMAFault | DMAFault} when a buffer is not accessible, its message naming the
   * descriptor; no byte of `buf` changes then. `ERR_DMA_INVALID_ARGUMENT` for a bad argument.
   */
  read(buf: Uint8Array, offset = 0): number {
    return this.#copy(buf, offset, false);
  }

  /**
   * Scatters `data` into the writable part of the chain, starting `offset` bytes into it.
   *
   * @param data - the bytes; as many are copied as fit.
   * @param offset - bytes of the writable part to skip; 0 by default.
   * @returns the bytes copied: `min(data.length, writableLength - offset)`, or 0.
   * @throws {@link dma-attrs!DMAFault | DMAFault} when a buffer is not accessible, its message naming the
   * descriptor; no byte of guest memory changes then. `ERR_DMA_INVALID_ARGUMENT` for a bad
   * argument.
   */
  write(data: Uint8Array, offset = 0): number {
    return this.#copy(data, offset, true);
  }

  #copy(buf: Uint8Array, offset: number, toGuest: boolean): number {
    const length = bufferLength(buf, toGuest ? 'data' : 'buf');
    checkLength(offset, 'offset');
    const part = toGuest ? this.writableLength : this.readableLength;
    if (offset >= part || length === 0) return 0;
    const count = Math.min(length, part - offset);
    const descriptors = this.descriptors;
    const end = toGuest ? descriptors.length : this.#firstWritable;
    const ranges = this.#ranges;
    ranges.length = 0;
    let skip = offset;
    let left = count;
    let first = -1;
    for (let at = toGuest ? this.#firstWritable : 0; at < end && left > 0; at++) {
      const descriptor = descriptors[at] as VirtqDescriptor;
      if (skip >= descriptor.length) {
        skip -= descriptor.length;
        continue;
      }
      if (first < 0) first = at;
      const take = Math.min(descriptor.length - skip, left);
      ranges.push(descriptor.addr + skip, take);
      skip = 0;
      left -= take;
    }
    const view = count === length ? buf : fixedView(buf, 0, count);
    try {
      this.#context.vector(ranges, count, view, RELAXED, toGuest);
    } catch (error) {
      throw error instanceof DMAFault ? this.#named(error, first) : error;
    }
    return count;
  }

  /** The fault again, its message naming the descriptor whose buffer faulted. */
  #named(fault: DMAFault, first: number): DMAFault {
    const descriptors = this.descriptors;
    let culprit = descriptors[first] as VirtqDescriptor;
    for (let at = first; at < descriptors.length; at++) {
      const descriptor = descriptors[at] as VirtqDescriptor;
      if (fault.addr >= descriptor.addr && fault.addr - descriptor.addr < descriptor.length) {
        culprit = descriptor;
        break;
      }
    }
    const name = descriptorName(culprit.index, culprit.indirect ? this.#indirectOf : -1);
    return new DMAFault(
      fault.code,
      `virtqueue chain ${this.head}: ${name}: ${fault.message}`,
      fault.addr,
      fault.length,
      fault.attrs,
      fault.reason,
      fault.access,
    );
  }

  static {
    claimChain = (chain, owner) => {
      if (!(#pushed in chain) || chain.#owner !== owner || chain.#pushed) return false;
      chain.#pushed = true;
      return true;
    };
  }
}

/** @internal Makes a chain; only the queue calls it. */
export function makeChain(
  context: DMAContext,
  owner: object,
  ranges: number[],
  head: number,
  descriptors: VirtqDescriptor[],
  readableLength: number,
  writableLength: number,
  firstWritable: number,
  indirectOf: number,
): DescriptorChain {
  return new DescriptorChain(
    CREATE,
    context,
    owner,
    ranges,
    head,
    descriptors,
    readableLength,
    writableLength,
    firstWritable,
    indirectOf,
  );
}
