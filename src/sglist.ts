/**
 * Scatter-gather: one DMA transfer over a list of guest ranges, as a device walks a
 * descriptor chain.
 *
 * @module
 */
import type { DMAAttributesLike } from './attributes.js';
import { isDMAContext, type DMAContext } from './context.js';
import { checkAddress, checkLength, checkRange, notInstance } from './internal/check.js';

/**
 * A list of guest ranges that one `gather` or `scatter` transfers as a whole: every range
 * is translated and checked before the first byte moves (all or nothing), and the barrier
 * the attributes call for is issued once for the list, not once per range.
 *
 * @example
 * ```ts
 * const sg = new ScatterGatherList(ctx);
 * sg.add(headerAddr, 12).add(payloadAddr, 1500);
 * const frame = new Uint8Array(sg.length);
 * sg.gather(frame);            // READ: one acquire barrier after the whole list
 * ```
 */
export class ScatterGatherList {
  readonly #context: DMAContext;
  /** `[addr0, length0, addr1, length1, ...]`. */
  readonly #ranges: number[] = [];
  #length = 0;

  /** The context the transfers go through. */
  get context(): DMAContext {
    return this.#context;
  }

  /**
   * @param context - the DMA context (and so the memory and IOMMU) of the transfers.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for something that is not a context.
   */
  constructor(context: DMAContext) {
    if (!isDMAContext(context)) notInstance('context', 'DMAContext', context);
    this.#context = context;
  }

  /** The total byte length of the list. */
  get length(): number {
    return this.#length;
  }

  /** How many ranges the list holds. */
  get count(): number {
    return this.#ranges.length / 2;
  }

  /**
   * Appends a range.
   *
   * @param addr - the guest address (an IOVA with an IOMMU).
   * @param length - the byte count.
   * @returns this list, for chaining.
   * @throws {@link DMAError} `ERR_DMA_INVALID_ARGUMENT` for bad numbers.
   */
  add(addr: number, length: number): this {
    checkAddress(addr);
    checkLength(length);
    checkRange(addr, length);
    this.#ranges.push(addr, length);
    this.#length += length;
    return this;
  }

  /** Empties the list. */
  clear(): void {
    this.#ranges.length = 0;
    this.#length = 0;
  }

  /**
   * The device reads the listed guest memory into `buf`, range after range. READ is implied.
   *
   * @param buf - receives the bytes; its length must equal the list's length.
   * @param attrs - optionally RELAXED; a WRITE bit is an error.
   * @throws {@link DMAError} / {@link DMAFault} as `DMAContext.read`; nothing moves then.
   */
  gather(buf: Uint8Array, attrs?: DMAAttributesLike): void {
    this.#context.vector(this.#ranges, this.#length, buf, attrs, false);
  }

  /**
   * The device writes `data` to the listed guest memory, range after range. WRITE is implied.
   *
   * @param data - the bytes; its length must equal the list's length.
   * @param attrs - optionally RELAXED; a READ bit is an error.
   * @throws {@link DMAError} / {@link DMAFault} as `DMAContext.write`; nothing moves then.
   */
  scatter(data: Uint8Array, attrs?: DMAAttributesLike): void {
    this.#context.vector(this.#ranges, this.#length, data, attrs, true);
  }
}
