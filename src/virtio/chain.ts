/**
 * A descriptor chain the device popped from a split virtqueue: the buffers the driver
 * offers, readable ones first, with gather/scatter over them.
 *
 * @module
 */
import { transferKnownLength, type DirectSpan, type DMAContext } from '../context.js';
import { DMAFault } from '../errors.js';
import { bufferLength, checkLength, invalidArgument } from '../internal/check.js';
import { READ, RELAXED, WRITE } from '../internal/bits.js';
import { CallerWords, copyIn, copyOut, copyWords } from '../internal/copy.js';
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

/**
 * The bytes `read` or `write` copies by words at once, or -1 for the general copy: the part
 * is one buffer (`word`, its first word in guest memory, is not -1), the device's buffer is
 * one it used in the previous call (`words` and its real length known, see `CallerWords`),
 * the copy starts at 0 and is whole words, more than 16 bytes (what `#one` copies by words).
 */
function wordCount(
  word: number,
  words: Int32Array | undefined,
  reused: CallerWords,
  offset: number,
  part: number,
): number {
  if (word < 0 || words === undefined || offset !== 0) return -1;
  const count = Math.min(reused.knownLength(), part);
  return count > 16 && (count & 3) === 0 ? count : -1;
}

const CREATE = Symbol('DescriptorChain');

/**
 * The queue's side of a chain: how `pop` fills one (reused once pushed) and how `push`
 * claims it. Set by the class's static block.
 * @internal
 */
export let chainAccess: {
  /**
   * A new, empty chain of `owner` (a queue); `span` is the context's direct span, if any;
   * `ranges`, `reads` and `writes` are the queue's, lent to each of its chains.
   */
  make(
    context: DMAContext,
    span: DirectSpan | undefined,
    owner: object,
    ranges: number[],
    reads: CallerWords,
    writes: CallerWords,
  ): DescriptorChain;
  /** Whether `pop` may refill the chain: it was pushed (or never handed out). */
  free(chain: DescriptorChain): boolean;
  /** Empties the chain for a walk from `head`; it stays free until `finish`. */
  start(chain: DescriptorChain, head: number): void;
  /** Appends one buffer; returns the chain's descriptor count after it. */
  add(
    chain: DescriptorChain,
    addr: number,
    length: number,
    writable: boolean,
    index: number,
    indirect: boolean,
  ): number;
  /** Ends the walk and hands the chain out: it is no longer free until pushed. */
  finish(
    chain: DescriptorChain,
    readableLength: number,
    writableLength: number,
    firstWritable: number,
    indirectOf: number,
  ): DescriptorChain;
  /**
   * The writable length of `chain` if it is a chain `owner` popped and did not push yet,
   * else -1; read from the chain's own fields, never its (replaceable) getters.
   */
  held(chain: object, owner: object): number;
  /** Marks a chain {@link held} found as pushed; returns its head. */
  claim(chain: DescriptorChain): number;
};

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
 * A chain is the device's from `pop` until `push`. Once pushed, its buffers are the
 * driver's again: `read` and `write` throw, and the queue reuses the object for a later
 * `pop` of the same head, so that a device allocates nothing per request. (A driver that
 * offers a head again while the device still holds its chain gets a new object for it.)
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
  readonly #context: DMAContext;
  /** The context's direct span: a copy inside it is a plain copy of the views. */
  readonly #span: DirectSpan | undefined;
  readonly #owner: object;
  /** A scratch list of `[addr, length, ...]` the queue lends to every chain it pops. */
  readonly #ranges: number[];
  /** The queue's last buffers read into and written from, as words (see `CallerWords`). */
  readonly #reads: CallerWords;
  readonly #writes: CallerWords;
  // The buffers, in chain order, as the walk found them: the chain's own copy, which no
  // caller can change (the `descriptors` objects are made from it on demand). Reused, with
  // the chain, by a later pop of the same head once this one is pushed.
  readonly #addrs: number[] = [];
  readonly #lengths: number[] = [];
  /**
   * `4 * index + kind`: the descriptor's index in its table (below 2^28, a table being at
   * most 2^32 - 1 bytes), and its kind (bit 0: writable; bit 1: from an indirect table).
   * One list, not two, for one store less per descriptor.
   */
  readonly #marks: number[] = [];
  #count = 0;
  #head = 0;
  #readableLength = 0;
  #writableLength = 0;
  /** The descriptor that held the indirect table, or -1. */
  #indirectOf = -1;
  #firstWritable = 0;
  /** The span's guest memory as words, where the span has them (a shared backing). */
  readonly #guestWords: Int32Array | undefined;
  /**
   * The element of `#guestWords` where the readable part starts when that part is one
   * buffer, word-aligned in the span and longer than 16 bytes, else -1; `#writeWord` the same
   * for the writable part. Set as the chain is handed out, -1 again once it is pushed: a
   * copy that meets them copies words at once (see `read`).
   */
  #readWord = -1;
  #writeWord = -1;
  /** Whether the chain is not handed out: never yet, or pushed back. */
  #pushed = true;
  #descriptors: readonly VirtqDescriptor[] | undefined;

  /** @internal Made only by {@link SplitVirtqueue.pop}. */
  constructor(
    token: symbol,
    context: DMAContext,
    span: DirectSpan | undefined,
    owner: object,
    ranges: number[],
    reads: CallerWords,
    writes: CallerWords,
  ) {
    if (token !== CREATE) throw new TypeError('DescriptorChain is made by SplitVirtqueue.pop()');
    this.#context = context;
    this.#span = span;
    this.#guestWords = span?.store.words;
    this.#owner = owner;
    this.#ranges = ranges;
    this.#reads = reads;
    this.#writes = writes;
  }

  /** The head descriptor index: the `id` that {@link SplitVirtqueue.push} puts in the used ring. */
  get head(): number {
    return this.#head;
  }

  /** Bytes the driver offers the device to read. */
  get readableLength(): number {
    return this.#readableLength;
  }

  /** Bytes the driver offers the device to write. */
  get writableLength(): number {
    return this.#writableLength;
  }

  /**
   * The buffers in chain order, indirect tables expanded; readable ones first. Made on first
   * use (frozen objects in a frozen array), so that a device that only calls `read` and
   * `write` allocates nothing per chain.
   */
  get descriptors(): readonly VirtqDescriptor[] {
    let descriptors = this.#descriptors;
    if (descriptors === undefined) {
      const list: VirtqDescriptor[] = [];
      for (let at = 0; at < this.#count; at++) {
        const mark = this.#marks[at] as number;
        list.push(
          Object.freeze({
            addr: this.#addrs[at] as number,
            length: this.#lengths[at] as number,
            writable: (mark & 1) !== 0,
            index: mark >>> 2,
            indirect: (mark & 2) !== 0,
          }),
        );
      }
      descriptors = Object.freeze(list);
      this.#descriptors = descriptors;
    }
    return descriptors;
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
    const reads = this.#reads;
    const words = reads.of(buf);
    const word = this.#readWord;
    const count = wordCount(word, words, reads, offset, this.#readableLength);
    if (count < 0) return this.#copy(buf, words, reads, offset, false);
    copyWords(this.#guestWords as Int32Array, word, words as Int32Array, 0, count >> 2);
    return count;
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
    const writes = this.#writes;
    const words = writes.of(data);
    const word = this.#writeWord;
    const count = wordCount(word, words, writes, offset, this.#writableLength);
    if (count < 0) return this.#copy(data, words, writes, offset, true);
    copyWords(words as Int32Array, 0, this.#guestWords as Int32Array, word, count >> 2);
    this.#span?.dirty?.mark(this.#addrs[this.#firstWritable] as number, count);
    return count;
  }

  /**
   * Any copy `read` (`toGuest` false) or `write` makes; `words` are what `reused.of(buf)`
   * gave for `buf`.
   */
  #copy(
    buf: Uint8Array,
    words: Int32Array | undefined,
    reused: CallerWords,
    offset: number,
    toGuest: boolean,
  ): number {
    // A buffer the device uses again has its words and its length known (`CallerWords`):
    // they stand for the brand check and the length read.
    const known = words === undefined ? -1 : reused.knownLength();
    const length = known >= 0 ? known : bufferLength(buf, toGuest ? 'data' : 'buf');
    checkLength(offset, 'offset');
    if (this.#pushed) {
      invalidArgument(
        'chain',
        "a chain not yet pushed: once pushed, its buffers are the driver's again",
        `chain ${this.#head}`,
      );
    }
    const part = toGuest ? this.#writableLength : this.#readableLength;
    if (offset >= part || length === 0) return 0;
    const count = Math.min(length, part - offset);
    // The common case first: the part's first buffer holds the whole copy.
    const at = toGuest ? this.#firstWritable : 0;
    const firstLength = this.#lengths[at] as number;
    if (offset < firstLength && count <= firstLength - offset) {
      this.#one((this.#addrs[at] as number) + offset, buf, words, length, count, toGuest, at);
      return count;
    }
    this.#gather(buf, words, length, offset, count, toGuest);
    return count;
  }

  /**
   * A copy of `count` bytes at `addr`, inside the chain's buffer `at`; `words` are the words
   * of `buf` from `CallerWords.of`, if any.
   */
  #one(
    addr: number,
    buf: Uint8Array,
    words: Int32Array | undefined,
    length: number,
    count: number,
    toGuest: boolean,
    at: number,
  ): void {
    // A copy into guest memory takes the buffer's whole length: a longer one is cut to
    // `count` (a view, the one allocation of a copy that one buffer covers), or its tail
    // would land past the descriptor. A copy out stores only `count` bytes into `buf`.
    const span = this.#span;
    if (span !== undefined && addr >= span.lo && addr + count <= span.hi) {
      // The context's RELAXED fast path, written out: the copy, then the dirty mark. A
      // buffer the device uses again and again is copied by a word loop (`CallerWords`).
      const offset = addr + span.delta;
      const guest = span.store.words;
      // Whole words above 16 bytes of a shared backing, and a buffer whose words hold them.
      const byWords =
        guest !== undefined &&
        count > 16 &&
        (offset | 0) === offset &&
        ((offset | count) & 3) === 0 &&
        words !== undefined &&
        words.length >= count >> 2;
      if (toGuest) {
        if (byWords) {
          copyWords(words, 0, guest, offset >> 2, count >> 2);
        } else {
          copyIn(span.store, offset, count !== length ? fixedView(buf, 0, count) : buf, count);
        }
        span.dirty?.mark(addr, count);
      } else if (byWords) {
        copyWords(guest, offset >> 2, words, 0, count >> 2);
      } else {
        copyOut(span.store, offset, buf, count);
      }
      return;
    }
    const whole = toGuest && count !== length ? fixedView(buf, 0, count) : buf;
    try {
      transferKnownLength(this.#context, addr, whole, count, (toGuest ? WRITE : READ) | RELAXED);
    } catch (error) {
      throw error instanceof DMAFault ? this.#named(error, at) : error;
    }
  }

  /** A copy over the buffers from `offset` into the part, as one vector access. */
  #gather(
    buf: Uint8Array,
    words: Int32Array | undefined,
    length: number,
    offset: number,
    count: number,
    toGuest: boolean,
  ): void {
    const end = toGuest ? this.#count : this.#firstWritable;
    const addrs = this.#addrs;
    const lengths = this.#lengths;
    // Refilled by index and cut to length after: `length = 0` would drop the list's storage
    // in V8, and make the next push allocate it again.
    const ranges = this.#ranges;
    let listed = 0;
    let skip = offset;
    let left = count;
    let first = -1;
    for (let at = toGuest ? this.#firstWritable : 0; at < end && left > 0; at++) {
      const bufferLength = lengths[at] as number;
      if (skip >= bufferLength) {
        skip -= bufferLength;
        continue;
      }
      const take = Math.min(bufferLength - skip, left);
      if (first < 0) first = at;
      ranges[listed++] = (addrs[at] as number) + skip;
      ranges[listed++] = take;
      skip = 0;
      left -= take;
    }
    if (listed === 2) {
      this.#one(ranges[0] as number, buf, words, length, count, toGuest, first);
      return;
    }
    ranges.length = listed;
    try {
      this.#context.vector(
        ranges,
        count,
        count === length ? buf : fixedView(buf, 0, count),
        RELAXED,
        toGuest,
      );
    } catch (error) {
      throw error instanceof DMAFault ? this.#named(error, first) : error;
    }
  }

  /**
   * The element of `#guestWords` where the buffers `from` to `to` start when they are one
   * buffer, longer than 16 bytes and word-aligned inside the span; else -1.
   */
  #wordOf(from: number, to: number): number {
    const span = this.#span;
    if (to - from !== 1 || span === undefined || this.#guestWords === undefined) return -1;
    const addr = this.#addrs[from] as number;
    const length = this.#lengths[from] as number;
    const offset = addr + span.delta;
    return length > 16 &&
      addr >= span.lo &&
      addr + length <= span.hi &&
      (offset & 3) === 0 &&
      (offset | 0) === offset
      ? offset >> 2
      : -1;
  }

  /** The fault again, its message naming the descriptor whose buffer faulted. */
  #named(fault: DMAFault, first: number): DMAFault {
    let culprit = first;
    for (let at = first; at < this.#count; at++) {
      const addr = this.#addrs[at] as number;
      if (fault.addr >= addr && fault.addr - addr < (this.#lengths[at] as number)) {
        culprit = at;
        break;
      }
    }
    const mark = this.#marks[culprit] as number;
    const name = descriptorName(mark >>> 2, (mark & 2) !== 0 ? this.#indirectOf : -1);
    return new DMAFault(
      fault.code,
      `virtqueue chain ${this.#head}: ${name}: ${fault.message}`,
      fault.addr,
      fault.length,
      fault.attrs,
      fault.reason,
      fault.access,
    );
  }

  static {
    chainAccess = {
      make: (context, span, owner, ranges, reads, writes) =>
        new DescriptorChain(CREATE, context, span, owner, ranges, reads, writes),
      free: (chain) => chain.#pushed,
      start: (chain, head) => {
        chain.#head = head;
        chain.#count = 0;
        chain.#descriptors = undefined;
      },
      add: (chain, addr, length, writable, index, indirect) => {
        const at = chain.#count;
        chain.#addrs[at] = addr;
        chain.#lengths[at] = length;
        chain.#marks[at] = 4 * index + (writable ? 1 : 0) + (indirect ? 2 : 0);
        chain.#count = at + 1;
        return at + 1;
      },
      finish: (chain, readableLength, writableLength, firstWritable, indirectOf) => {
        chain.#readableLength = readableLength;
        chain.#writableLength = writableLength;
        chain.#firstWritable = firstWritable;
        chain.#indirectOf = indirectOf;
        chain.#readWord = chain.#wordOf(0, firstWritable);
        chain.#writeWord = chain.#wordOf(firstWritable, chain.#count);
        chain.#pushed = false;
        return chain;
      },
      held: (chain, owner) =>
        #pushed in chain && chain.#owner === owner && !chain.#pushed ? chain.#writableLength : -1,
      claim: (chain) => {
        chain.#pushed = true;
        chain.#readWord = -1;
        chain.#writeWord = -1;
        return chain.#head;
      },
    };
  }
}
