/**
 * The device side of a split virtqueue (virtio 1.2 §2.7), with rust-vmm virtio-queue's
 * orderings issued through the DMA context's attribute accessors, so `trace` shows them.
 *
 * @module
 */
import { directSpan, isDMAContext, type DirectSpan, type DMAContext } from '../context.js';
import type { DirtyBitmap } from '../dirty.js';
import { DMAError, DMAFault } from '../errors.js';
import { ACQUIRE, FULL, RELAXED, RELEASE } from '../internal/bits.js';
import { ADDRESS_LIMIT, invalidArgument, isSafeIndex, notInstance } from '../internal/check.js';
import { describe } from '../internal/describe.js';
import { CallerWords } from '../internal/copy.js';
import { descriptorName, chainAccess, type DescriptorChain } from './chain.js';
import {
  VIRTQ_DESC_SIZE,
  VIRTQ_MAX_SIZE,
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_USED_F_NO_NOTIFY,
} from './constants.js';

/** 2^32, to join the halves of a descriptor's u64 address. */
const HIGH = 0x1_0000_0000;
/** The high half of an address at or above 2^53. */
const HIGH_LIMIT = ADDRESS_LIMIT / HIGH;

/** Where the driver put a queue's three parts, and the features it negotiated. */
export interface SplitVirtqueueOptions {
  /** The queue size: a power of two up to 32768. */
  size: number;
  /** The guest address of the descriptor table; 16-byte aligned. */
  desc: number;
  /** The guest address of the available ring; 2-byte aligned. */
  avail: number;
  /** The guest address of the used ring; 4-byte aligned. */
  used: number;
  /** VIRTIO_F_EVENT_IDX was negotiated: `used_event` / `avail_event` suppress notifications. */
  eventIdx?: boolean;
  /** VIRTIO_F_INDIRECT_DESC was negotiated: descriptors may point to indirect tables. */
  indirect?: boolean;
}

/**
 * A structured-cloneable snapshot of a queue's layout and the device's position in it:
 * post it to a worker and call {@link SplitVirtqueue.fromHandle} there.
 */
export interface SplitVirtqueueHandle extends Required<SplitVirtqueueOptions> {
  /** Marks the object as a virtqueue handle. */
  readonly kind: 'dma-attrs:split-virtqueue';
  /** The next avail ring position the device reads (a free-running u16). */
  readonly nextAvail: number;
  /** The next used ring position the device writes (a free-running u16). */
  readonly nextUsed: number;
  /** The used index at the last {@link SplitVirtqueue.needsNotification}, or -1. */
  readonly signalledUsed: number;
  /** The queue is broken (virtio's DEVICE_NEEDS_RESET). */
  readonly broken: boolean;
}

/** `vring_need_event` (virtio 1.2 §2.7.10): did the index pass `event` going from old to new? */
function needEvent(event: number, next: number, old: number): boolean {
  return ((next - event - 1) & 0xffff) < ((next - old) & 0xffff);
}

function virtqueueError(message: string): DMAError {
  return new DMAError('ERR_DMA_VIRTQUEUE', `virtqueue: ${message}`);
}

function readBoolean(value: unknown, what: string): boolean {
  if (value === undefined) return false;
  if (typeof value !== 'boolean') invalidArgument(what, 'a boolean', value);
  return value;
}

function checkPart(value: unknown, what: string, alignment: number, bytes: number): number {
  if (!isSafeIndex(value) || value % alignment !== 0 || ADDRESS_LIMIT - value < bytes) {
    invalidArgument(what, `a guest address aligned to ${alignment} bytes, below 2^53`, value);
  }
  return value;
}

/**
 * The device side of a split virtqueue. The ring belongs to the guest, which may be
 * hostile: every malformed chain is an `ERR_DMA_VIRTQUEUE` error naming the descriptor, the
 * work of one `pop` is bounded by the queue size, `pop` never writes guest memory, a bad
 * chain is consumed so it is never returned twice, and a queue that cannot continue says so
 * with {@link SplitVirtqueue.broken}.
 *
 * Orderings (rust-vmm virtio-queue): `avail.idx` is read with acquire, so the ring entry
 * and descriptors read RELAXED after it see what the driver wrote before publishing; the
 * used element is written RELAXED and `used.idx` with release, so the driver that sees the
 * index sees the element and the payload; the notification checks put `barrier('full')`
 * between their store and their load, since neither acquire nor release orders a store
 * before a load.
 *
 * @example
 * ```ts
 * const vq = new SplitVirtqueue(ctx, { size: 256, desc, avail, used, eventIdx: true });
 * for (;;) {
 *   let chain;
 *   while ((chain = vq.pop()) !== undefined) vq.push(chain, serve(chain));
 *   if (vq.needsNotification()) raiseInterrupt();
 *   if (!vq.enableNotification()) break; // sleep until the next kick
 * }
 * ```
 */
export class SplitVirtqueue {
  /** The queue size. */
  readonly size: number;
  /** The guest address of the descriptor table. */
  readonly desc: number;
  /** The guest address of the available ring. */
  readonly avail: number;
  /** The guest address of the used ring. */
  readonly used: number;
  /** VIRTIO_F_EVENT_IDX is in use. */
  readonly eventIdx: boolean;
  /** VIRTIO_F_INDIRECT_DESC is in use. */
  readonly indirect: boolean;
  readonly #context: DMAContext;
  readonly #span: DirectSpan | undefined;
  readonly #availIdx: number;
  readonly #availRing: number;
  readonly #usedEvent: number;
  readonly #usedIdx: number;
  readonly #usedRing: number;
  readonly #availEvent: number;
  readonly #mask: number;
  // The context's direct span (see DirectSpan in context.ts): where a RELAXED access lies
  // in it, the queue makes it as the context's fast path would, a plain element access of
  // the views, without the call. Ordered accesses and barriers go through the context
  // unless its accessors are the library's own (the index words below), so that a trace or
  // a subclass sees each of them. Without a span (an IOMMU, a trace, a backing that may
  // change), `#hi` is -1 and every test below fails.
  readonly #lo: number;
  readonly #hi: number;
  readonly #delta: number;
  readonly #u16: Uint16Array;
  readonly #u32: Uint32Array;
  readonly #dirty: DirtyBitmap | undefined;
  /** The u16 element of avail ring entry 0 when the whole ring is in the span, else -1. */
  readonly #availWord: number;
  /** The u32 element of used element 0 when the whole used ring is in the span, else -1. */
  readonly #usedWord: number;
  // The four indices, as u16 elements, when the span's `ordered` says the context's u16
  // accessors and `barrier` are the library's own; else -1, and the queue calls them. The
  // ordered access is then made here exactly as the accessor makes it: `Atomics.load` then
  // the acquire fence, the release fence then `Atomics.store` and the dirty mark.
  readonly #availIdxWord: number;
  readonly #usedEventWord: number;
  readonly #usedIdxWord: number;
  readonly #availEventWord: number;
  readonly #availFlagsWord: number;
  readonly #usedFlagsWord: number;
  /** `barrier('full')` may be made here (the span's `ordered`). */
  readonly #ordered: boolean;
  /**
   * Whether the full barrier that `needsNotification` and `enableNotification` make here
   * costs the fence RMW. Not under `tso` when the index each of them stores before it is one
   * of the words above: that store is the queue's own `Atomics.store`, which V8 emits on x86
   * as `xchg`, a full fence by itself, so the RMW after it would only be a second one (and
   * the device written by hand, which makes the same store, issues none).
   */
  readonly #fullFence: boolean;
  /** The context's fence word (a stand-in where it has none) and its policy's mask. */
  readonly #fence: Int32Array;
  readonly #fenceMask: number;
  /** One descriptor, read in one access. */
  readonly #scratch = new Uint8Array(VIRTQ_DESC_SIZE);
  readonly #view = new DataView(this.#scratch.buffer);
  /** Ranges lent to the chains' `read`/`write`. */
  readonly #ranges: number[] = [];
  /** The last buffers the chains read into and wrote from, as words (see `CallerWords`). */
  readonly #reads = new CallerWords();
  readonly #writes = new CallerWords();
  /** The chain of each head, reused by the next pop of that head once it is pushed. */
  readonly #chains: (DescriptorChain | undefined)[] = [];
  #nextAvail = 0;
  #nextUsed = 0;
  /** `used.idx` as this device last stored it: `#nextUsed` less the elements not flushed. */
  #publishedUsed = 0;
  /** The last `avail.idx` read (with acquire), so a batch costs one ordered read. */
  #seenAvail = 0;
  #signalledUsed = -1;
  /** Where the walk of `pop` stands, to name the descriptor whose read faulted. */
  #walkIndex = 0;
  #walkIndirectOf = -1;
  #broken = false;

  /**
   * @param context - the DMA context the queue accesses guest memory through.
   * @param options - the layout and features; see {@link SplitVirtqueueOptions}.
   * @throws {@link dma-attrs!DMAError | DMAError} `ERR_DMA_INVALID_ARGUMENT` for a size that is not a power of
   * two up to 32768, a misaligned or unsafe address, or a non-boolean feature.
   */
  constructor(context: DMAContext, options: SplitVirtqueueOptions) {
    if (!isDMAContext(context)) notInstance('context', 'DMAContext', context);
    if (typeof options !== 'object' || (options as unknown) === null) {
      invalidArgument('options', 'an object { size, desc, avail, used }', options);
    }
    // Each option is read once, then validated and used.
    const { size, desc, avail, used, eventIdx, indirect } = options as unknown as Record<
      string,
      unknown
    >;
    if (!isSafeIndex(size) || size < 1 || size > VIRTQ_MAX_SIZE || (size & (size - 1)) !== 0) {
      invalidArgument('size', 'a power of two from 1 to 32768', size);
    }
    this.#context = context;
    this.size = size;
    this.#mask = size - 1;
    this.desc = checkPart(desc, 'desc', 16, VIRTQ_DESC_SIZE * size);
    this.avail = checkPart(avail, 'avail', 2, 6 + 2 * size);
    this.used = checkPart(used, 'used', 4, 6 + 8 * size);
    this.eventIdx = readBoolean(eventIdx, 'eventIdx');
    this.indirect = readBoolean(indirect, 'indirect');
    this.#availIdx = this.avail + 2;
    this.#availRing = this.avail + 4;
    this.#usedEvent = this.avail + 4 + 2 * size;
    this.#usedIdx = this.used + 2;
    this.#usedRing = this.used + 4;
    this.#availEvent = this.used + 4 + 8 * size;
    const span = directSpan(context);
    const lo = span?.lo ?? 0;
    const hi = span?.hi ?? -1;
    const delta = span?.delta ?? 0;
    this.#span = span;
    this.#lo = lo;
    this.#hi = hi;
    this.#delta = delta;
    this.#u16 = span?.u16 ?? new Uint16Array(0);
    this.#u32 = span?.u32 ?? new Uint32Array(0);
    this.#dirty = span?.dirty;
    const inSpan = (addr: number, length: number): boolean => addr >= lo && addr + length <= hi;
    this.#availWord = inSpan(this.#availRing, 2 * size) ? (this.#availRing + delta) / 2 : -1;
    this.#usedWord = inSpan(this.#usedRing, 8 * size) ? (this.#usedRing + delta) / 4 : -1;
    const ordered = span?.ordered === true;
    const word = (addr: number): number => (ordered && inSpan(addr, 2) ? (addr + delta) / 2 : -1);
    this.#availIdxWord = word(this.#availIdx);
    this.#usedEventWord = word(this.#usedEvent);
    this.#usedIdxWord = word(this.#usedIdx);
    this.#availEventWord = word(this.#availEvent);
    this.#availFlagsWord = word(this.avail);
    this.#usedFlagsWord = word(this.used);
    this.#ordered = ordered;
    this.#fence = span?.fence ?? new Int32Array(1);
    this.#fenceMask = span?.fence === undefined ? 0 : span.fenceMask;
    // `tso`: acquire and release cost nothing, full the RMW (src/barrier.ts).
    const tso = this.#fenceMask === 1 << FULL;
    const stored = this.eventIdx ? this.#availEventWord : this.#usedFlagsWord;
    this.#fullFence =
      (this.#fenceMask & (1 << FULL)) !== 0 && !(tso && this.#usedIdxWord >= 0 && stored >= 0);
  }

  /** The context's `readU16LE(addr)` of the index at u16 element `word`: load, then acquire. */
  #acquire(word: number): number {
    const value = Atomics.load(this.#u16, word);
    if ((this.#fenceMask & (1 << ACQUIRE)) !== 0) Atomics.add(this.#fence, 0, 0);
    return value;
  }

  /** The context's `writeU16LE(addr, value)` at u16 element `word`: release, store, mark. */
  #release(word: number, addr: number, value: number): void {
    if ((this.#fenceMask & (1 << RELEASE)) !== 0) Atomics.add(this.#fence, 0, 0);
    Atomics.store(this.#u16, word, value);
    this.#dirty?.mark(addr, 2);
  }

  /**
   * The context's `barrier('full')`, after the store of `used.idx` (`needsNotification`) or of
   * `avail_event`/`used.flags` (`enableNotification`): without the RMW where that store was
   * the queue's own `xchg` (`#fullFence`).
   */
  #full(): void {
    if (!this.#ordered) this.#context.barrier('full');
    else if (this.#fullFence) Atomics.add(this.#fence, 0, 0);
  }

  /** The queue cannot continue (virtio's DEVICE_NEEDS_RESET): every `pop`/`push` throws. */
  get broken(): boolean {
    return this.#broken;
  }

  /** The next avail ring position the device reads (a free-running u16). */
  get nextAvail(): number {
    return this.#nextAvail;
  }

  /** The next used ring position the device writes (a free-running u16). */
  get nextUsed(): number {
    return this.#nextUsed;
  }

  /**
   * Takes the next chain the driver made available, or `undefined` when there is none.
   * Reads only: `avail.idx` (acquire, once per batch), then RELAXED the ring entry and at
   * most `size` descriptors (after expanding an indirect table) plus one indirect one.
   *
   * @returns the chain, or `undefined`.
   * @throws {@link dma-attrs!DMAError | DMAError} `ERR_DMA_VIRTQUEUE` for a malformed chain, naming the
   * descriptor (the chain is consumed: the next `pop` moves past it), or for an `avail.idx`
   * more than `size` ahead (the queue is then {@link SplitVirtqueue.broken}); the
   * {@link dma-attrs!DMAFault | DMAFault} of a descriptor-table access, its message naming the descriptor.
   */
  pop(): DescriptorChain | undefined {
    if (this.#broken) throw virtqueueError('the queue is broken and needs a reset');
    const context = this.#context;
    const nextAvail = this.#nextAvail;
    if (this.#seenAvail === nextAvail && this.#refresh(nextAvail) === 0) return undefined;
    let head: number;
    const availWord = this.#availWord;
    if (availWord >= 0) {
      head = this.#u16[availWord + (nextAvail & this.#mask)] as number;
    } else {
      try {
        head = context.readU16LE(this.#availRing + 2 * (nextAvail & this.#mask), RELAXED);
      } catch (error) {
        this.#broken = true;
        throw error;
      }
    }
    // Consumed before it is parsed: a bad chain is never returned twice.
    this.#nextAvail = (nextAvail + 1) & 0xffff;
    if (head >= this.size) {
      throw virtqueueError(
        `avail ring entry ${nextAvail & this.#mask} names head descriptor ${head}, out of range for queue size ${this.size}`,
      );
    }
    try {
      return this.#parse(head);
    } catch (error) {
      // Only a descriptor read can fault; it is named by where the walk stood.
      if (!(error instanceof DMAFault)) throw error;
      throw this.#faulted(error, head, this.#walkIndex, this.#walkIndirectOf);
    }
  }

  /**
   * How many chains the driver has made available that the device has not popped yet: reads
   * `avail.idx` (acquire), so that the next that many `pop`s make no ordered read. A device
   * that serves those, flushes, and asks again hands each batch back as soon as it is done,
   * as a device that reads the index once per batch does; popping until `undefined` also
   * takes what arrives meanwhile into the same batch.
   *
   * @returns the count, from 0 to `size`.
   * @throws {@link dma-attrs!DMAError | DMAError} `ERR_DMA_VIRTQUEUE` when the queue is broken, or
   * for an `avail.idx` more than `size` ahead (the queue is then broken); the
   * {@link dma-attrs!DMAFault | DMAFault} of the read (the queue is then broken).
   * @example
   * ```ts
   * for (let count = vq.available(); count > 0; count--) {
   *   const chain = vq.pop()!; // a chain, or a DMAError for a malformed one
   *   vq.fill(chain, serve(chain));
   * }
   * vq.flush();
   * ```
   */
  available(): number {
    if (this.#broken) throw virtqueueError('the queue is broken and needs a reset');
    return this.#refresh(this.#nextAvail);
  }

  /** Reads `avail.idx` (acquire) and returns how far it is ahead of `nextAvail`. */
  #refresh(nextAvail: number): number {
    let published: number;
    try {
      // Acquire: the ring entries and descriptors the driver wrote before it published
      // this index are visible to the RELAXED reads that follow (virtio 1.2 §2.7.13.3).
      const word = this.#availIdxWord;
      published = word >= 0 ? this.#acquire(word) : this.#context.readU16LE(this.#availIdx);
    } catch (error) {
      this.#broken = true;
      throw error;
    }
    const pending = (published - nextAvail) & 0xffff;
    if (pending > this.size) {
      this.#broken = true;
      throw virtqueueError(
        `avail.idx ${published} is ${pending} entries ahead of the device's ${nextAvail}, more than the queue size ${this.size}`,
      );
    }
    this.#seenAvail = published;
    return pending;
  }

  /** Walks the chain at `head`: bounded, read-only, every hostile case an error. */
  #parse(head: number): DescriptorChain {
    const context = this.#context;
    const scratch = this.#scratch;
    const view = this.#view;
    const limit = this.size;
    let chain = this.#chains[head];
    if (chain === undefined || !chainAccess.free(chain)) {
      // The first pop of this head, or a driver that offers a head the device still holds:
      // a chain of its own (kept for reuse only in the first case).
      const made = chainAccess.make(
        context,
        this.#span,
        this,
        this.#ranges,
        this.#reads,
        this.#writes,
      );
      if (chain === undefined) this.#chains[head] = made;
      chain = made;
    }
    chainAccess.start(chain, head);
    let count = 0;
    let table = this.desc;
    let tableSize = this.size;
    let indirectOf = -1;
    let index = head;
    let readable = 0;
    let writable = 0;
    let firstWritable = -1;
    const lo = this.#lo;
    const hi = this.#hi;
    const delta = this.#delta;
    const u32 = this.#u32;
    // The loop writes the descriptor's layout and flags as literals (VIRTQ_DESC_SIZE 16,
    // VIRTQ_DESC_F_NEXT 1, WRITE 2, INDIRECT 4): optimised code reloads and rechecks a
    // module's binding at every use, which is a tenth of the loop's instructions.
    for (;;) {
      const at = table + 16 * index;
      let low: number;
      let high: number;
      let length: number;
      let last: number;
      if (at >= lo && at + 16 <= hi && ((at + delta) & 3) === 0) {
        // In the span and word-aligned: the four words, each loaded once.
        const word = (at + delta) >> 2;
        low = u32[word] as number;
        high = u32[word + 1] as number;
        length = u32[word + 2] as number;
        last = u32[word + 3] as number;
      } else {
        this.#walkIndex = index;
        this.#walkIndirectOf = indirectOf;
        context.read(at, scratch, RELAXED);
        low = view.getUint32(0, true);
        high = view.getUint32(4, true);
        length = view.getUint32(8, true);
        last = view.getUint32(12, true);
      }
      const flags = last & 0xffff;
      const next = last >>> 16;
      // A buffer below 4 GiB (high 0) cannot leave the 2^53 address space.
      let addr = low;
      if (high !== 0) {
        if (high >= HIGH_LIMIT || ADDRESS_LIMIT - (high * HIGH + low) < length) {
          throw this.#bad(head, index, indirectOf, 'addr + len leaves the 2^53 address space');
        }
        addr = high * HIGH + low;
      }
      if ((flags & 4) !== 0) {
        if (indirectOf >= 0) {
          throw this.#bad(head, index, indirectOf, 'is a nested indirect descriptor');
        }
        if (!this.indirect) {
          throw this.#bad(head, index, -1, 'is indirect, but VIRTIO_F_INDIRECT_DESC is off');
        }
        if ((flags & 1) !== 0) {
          throw this.#bad(head, index, -1, 'has both INDIRECT and NEXT');
        }
        if (length === 0 || length % VIRTQ_DESC_SIZE !== 0) {
          throw this.#bad(
            head,
            index,
            -1,
            `points to an indirect table of ${length} bytes, not a non-zero multiple of 16`,
          );
        }
        // virtio 1.2 §2.7.5.3.2: the device ignores WRITE on the descriptor of a table.
        table = addr;
        tableSize = length / VIRTQ_DESC_SIZE;
        indirectOf = index;
        index = 0;
        continue;
      }
      const isWritable = (flags & 2) !== 0;
      if (isWritable) {
        if (firstWritable < 0) firstWritable = count;
        writable += length;
      } else if (firstWritable >= 0) {
        throw this.#bad(head, index, indirectOf, 'is readable but follows a writable one');
      } else {
        readable += length;
      }
      // virtio 1.2 §2.7.5.3.1: no chain is longer than the queue, indirect tables expanded;
      // a loop runs into this bound.
      if (count === limit) {
        throw this.#bad(
          head,
          index,
          indirectOf,
          `makes the chain longer than the queue size ${limit} (a loop?)`,
        );
      }
      count = chainAccess.add(chain, addr, length, isWritable, index, indirectOf >= 0);
      if ((flags & 1) === 0) break;
      if (next >= tableSize) {
        throw this.#bad(
          head,
          index,
          indirectOf,
          `has next ${next}, out of range for a table of ${tableSize}`,
        );
      }
      index = next;
    }
    if (firstWritable < 0) firstWritable = count;
    return chainAccess.finish(chain, readable, writable, firstWritable, indirectOf);
  }

  #bad(head: number, index: number, indirectOf: number, what: string): DMAError {
    return virtqueueError(`chain ${head}: ${descriptorName(index, indirectOf)} ${what}`);
  }

  #faulted(fault: DMAFault, head: number, index: number, indirectOf: number): DMAFault {
    return new DMAFault(
      fault.code,
      `virtqueue chain ${head}: ${descriptorName(index, indirectOf)} cannot be read: ${fault.message}`,
      fault.addr,
      fault.length,
      fault.attrs,
      fault.reason,
      fault.access,
    );
  }

  /**
   * Returns a chain to the driver: the used element `{ id: head, len: writtenLength }`
   * RELAXED, then `used.idx` with release. {@link SplitVirtqueue.fill} then
   * {@link SplitVirtqueue.flush}.
   *
   * @param chain - a chain this queue popped and did not push yet.
   * @param writtenLength - the bytes the device wrote, at most `chain.writableLength` (and
   *   2^32 - 1, the used element's `len` being a u32).
   * @throws {@link dma-attrs!DMAError | DMAError} `ERR_DMA_INVALID_ARGUMENT` for a chain of another queue, one
   * pushed already, or a bad length; `ERR_DMA_VIRTQUEUE` when the queue is broken; the
   * {@link dma-attrs!DMAFault | DMAFault} of a used-ring access (the queue is then broken).
   */
  push(chain: DescriptorChain, writtenLength: number): void {
    this.fill(chain, writtenLength);
    this.flush();
  }

  /**
   * Writes a chain's used element `{ id: head, len: writtenLength }` RELAXED, without
   * publishing it: the driver sees it at the next {@link SplitVirtqueue.flush} (QEMU's
   * `virtqueue_fill`), so that a device that serves a batch stores `used.idx`, an ordered
   * store, once for the batch. {@link SplitVirtqueue.needsNotification} and
   * {@link SplitVirtqueue.handle} flush first, and a fill that would overwrite an element
   * not yet published (`size` fills in a row) flushes before it.
   *
   * @param chain - a chain this queue popped and did not push yet.
   * @param writtenLength - as {@link SplitVirtqueue.push}'s.
   * @throws as {@link SplitVirtqueue.push}.
   * @example
   * ```ts
   * let chain;
   * while ((chain = vq.pop()) !== undefined) vq.fill(chain, serve(chain));
   * vq.flush();
   * if (vq.needsNotification()) raiseInterrupt();
   * ```
   */
  fill(chain: DescriptorChain, writtenLength: number): void {
    if (this.#broken) throw virtqueueError('the queue is broken and needs a reset');
    if (typeof chain !== 'object' || (chain as unknown) === null) {
      invalidArgument('chain', 'a DescriptorChain this queue popped', chain);
    }
    const writableLength = chainAccess.held(chain, this);
    if (writableLength < 0) {
      invalidArgument('chain', 'a DescriptorChain this queue popped and did not push yet', chain);
    }
    // The used element's len is a u32, whatever the chain offers.
    const most = Math.min(writableLength, 0xffff_ffff);
    if (!isSafeIndex(writtenLength) || writtenLength > most) {
      invalidArgument('writtenLength', `an integer from 0 to ${most}`, writtenLength);
    }
    // An element the driver has not been shown is never overwritten.
    if (((this.#nextUsed - this.#publishedUsed) & 0xffff) >= this.size) this.flush();
    const head = chainAccess.claim(chain);
    const nextUsed = this.#nextUsed;
    const slot = nextUsed & this.#mask;
    const element = this.#usedRing + 8 * slot;
    const usedWord = this.#usedWord;
    if (usedWord >= 0) {
      const u32 = this.#u32;
      u32[usedWord + 2 * slot] = head;
      u32[usedWord + 2 * slot + 1] = writtenLength;
      this.#dirty?.mark(element, 8);
    } else {
      try {
        this.#context.writeU32LE(element, head, RELAXED);
        this.#context.writeU32LE(element + 4, writtenLength, RELAXED);
      } catch (error) {
        this.#broken = true;
        throw error;
      }
    }
    this.#nextUsed = (nextUsed + 1) & 0xffff;
  }

  /**
   * Publishes the used elements filled since the last flush: `used.idx` with release, so
   * that the driver that sees the index sees the elements and the payloads. Nothing when
   * there are none.
   *
   * @throws {@link dma-attrs!DMAError | DMAError} `ERR_DMA_VIRTQUEUE` when the queue is broken; the
   * {@link dma-attrs!DMAFault | DMAFault} of the `used.idx` store (the queue is then broken).
   */
  flush(): void {
    if (this.#broken) throw virtqueueError('the queue is broken and needs a reset');
    const nextUsed = this.#nextUsed;
    if (nextUsed === this.#publishedUsed) return;
    try {
      // Release: the elements and the payload are visible before the index that publishes
      // them (virtio 1.2 §2.7.8; the bug of TinyEMU and jor1k is this store first).
      const word = this.#usedIdxWord;
      if (word >= 0) this.#release(word, this.#usedIdx, nextUsed);
      else this.#context.writeU16LE(this.#usedIdx, nextUsed);
    } catch (error) {
      this.#broken = true;
      throw error;
    }
    this.#publishedUsed = nextUsed;
  }

  /**
   * Whether the driver wants an interrupt for what was pushed since the last call. Filled
   * elements are flushed first ({@link SplitVirtqueue.flush}). A full barrier then orders the `used.idx` store before the load of `used_event` (EVENT_IDX)
   * or `avail.flags`: without it the device can read a stale value while the driver reads
   * a stale `used.idx`, and both sleep (rust-vmm virtio-queue PR #18).
   *
   * @returns true when the device should notify the driver.
   * @throws the {@link dma-attrs!DMAFault | DMAFault} of an avail-ring access.
   */
  needsNotification(): boolean {
    if (!this.#broken) this.flush();
    const context = this.#context;
    const nextUsed = this.#nextUsed;
    this.#full();
    if (!this.eventIdx) {
      const word = this.#availFlagsWord;
      const flags = word >= 0 ? this.#acquire(word) : context.readU16LE(this.avail);
      return (flags & VRING_AVAIL_F_NO_INTERRUPT) === 0;
    }
    const word = this.#usedEventWord;
    const usedEvent = word >= 0 ? this.#acquire(word) : context.readU16LE(this.#usedEvent);
    const old = this.#signalledUsed;
    this.#signalledUsed = nextUsed;
    if (old < 0) return true;
    return needEvent(usedEvent, nextUsed, old);
  }

  /**
   * Asks the driver to kick on new work: `avail_event = nextAvail` (EVENT_IDX) or clears
   * `VRING_USED_F_NO_NOTIFY`, then a full barrier, then re-reads `avail.idx`. The barrier
   * orders the store before the load; without it work published between them is missed
   * by both sides (cloud-hypervisor PR #2179).
   *
   * @returns true when work arrived: pop again before sleeping.
   * @throws the {@link dma-attrs!DMAFault | DMAFault} of a ring access.
   */
  enableNotification(): boolean {
    const context = this.#context;
    const nextAvail = this.#nextAvail;
    if (this.eventIdx) {
      const word = this.#availEventWord;
      if (word >= 0) this.#release(word, this.#availEvent, nextAvail);
      else context.writeU16LE(this.#availEvent, nextAvail);
    } else {
      const word = this.#usedFlagsWord;
      if (word >= 0) this.#release(word, this.used, 0);
      else context.writeU16LE(this.used, 0);
    }
    this.#full();
    const word = this.#availIdxWord;
    const published = word >= 0 ? this.#acquire(word) : context.readU16LE(this.#availIdx);
    return published !== nextAvail;
  }

  /**
   * Tells the driver it need not kick: sets `VRING_USED_F_NO_NOTIFY` without EVENT_IDX.
   * With EVENT_IDX it does nothing: `avail_event` is left behind, so the driver kicks at
   * most once more (as rust-vmm does). A hint only; the driver may kick anyway.
   *
   * @throws the {@link dma-attrs!DMAFault | DMAFault} of a used-ring access.
   */
  disableNotification(): void {
    if (!this.eventIdx) this.#context.writeU16LE(this.used, VRING_USED_F_NO_NOTIFY, RELAXED);
  }

  /**
   * The layout and the device's position, to continue the queue elsewhere (a worker).
   * Filled elements are flushed first, so that the position is one the driver has seen.
   *
   * @example
   * ```ts
   * worker.postMessage({ memory: memory.handle(), queue: vq.handle() });
   * // in the worker:
   * const vq = SplitVirtqueue.fromHandle(new DMAContext(GuestMemory.fromHandle(memory)), queue);
   * ```
   */
  handle(): SplitVirtqueueHandle {
    if (!this.#broken) this.flush();
    return {
      kind: 'dma-attrs:split-virtqueue',
      size: this.size,
      desc: this.desc,
      avail: this.avail,
      used: this.used,
      eventIdx: this.eventIdx,
      indirect: this.indirect,
      nextAvail: this.#nextAvail,
      nextUsed: this.#nextUsed,
      signalledUsed: this.#signalledUsed,
      broken: this.#broken,
    };
  }

  /**
   * The queue a {@link SplitVirtqueue.handle} describes, at the same position. Stop using
   * the original: two devices on one queue race.
   *
   * @param context - the context to access guest memory through.
   * @param handle - a handle from {@link SplitVirtqueue.handle}.
   * @throws {@link dma-attrs!DMAError | DMAError} `ERR_DMA_INVALID_ARGUMENT` for something that is not a valid handle.
   */
  static fromHandle(context: DMAContext, handle: SplitVirtqueueHandle): SplitVirtqueue {
    if (typeof handle !== 'object' || (handle as unknown) === null) {
      invalidArgument('handle', 'an object made by SplitVirtqueue.handle()', handle);
    }
    const { kind, size, desc, avail, used, eventIdx, indirect, nextAvail, nextUsed } =
      handle as unknown as Record<string, unknown>;
    const { signalledUsed, broken } = handle as unknown as Record<string, unknown>;
    if (kind !== 'dma-attrs:split-virtqueue') {
      invalidArgument('handle.kind', '"dma-attrs:split-virtqueue"', kind);
    }
    const isU16 = (value: unknown): value is number => isSafeIndex(value) && value <= 0xffff;
    if (!isU16(nextAvail)) invalidArgument('handle.nextAvail', 'a u16', nextAvail);
    if (!isU16(nextUsed)) invalidArgument('handle.nextUsed', 'a u16', nextUsed);
    if (signalledUsed !== -1 && !isU16(signalledUsed)) {
      invalidArgument('handle.signalledUsed', 'a u16 or -1', signalledUsed);
    }
    if (typeof broken !== 'boolean') invalidArgument('handle.broken', 'a boolean', broken);
    const queue = new SplitVirtqueue(context, {
      size,
      desc,
      avail,
      used,
      eventIdx,
      indirect,
    } as SplitVirtqueueOptions);
    queue.#nextAvail = nextAvail;
    queue.#seenAvail = nextAvail;
    queue.#nextUsed = nextUsed;
    queue.#publishedUsed = nextUsed;
    queue.#signalledUsed = signalledUsed;
    queue.#broken = broken;
    return queue;
  }

  /** `SplitVirtqueue(size 256, next avail 3, next used 3)`, for logs. */
  toString(): string {
    return `SplitVirtqueue(size ${describe(this.size)}, next avail ${this.#nextAvail}, next used ${this.#nextUsed}${this.#broken ? ', broken' : ''})`;
  }
}
