/**
 * The device's side of the ring for the `attrs` and `attrs-no-full` variants: the library's
 * `SplitVirtqueue` (dma-attrs/virtio). `available` counts what the driver published, `pop`
 * takes each of those chains, `chain.read` gathers the request, `chain.write` scatters the
 * response, `fill` writes the used element, `flush` publishes `used.idx` once per batch,
 * `needsNotification` decides the interrupt, and `enableNotification` asks for a kick and
 * looks again before the device sleeps. The orderings are the library's (SPEC §10): nothing
 * here issues a barrier.
 *
 * `attrs-no-full` is the same device on a {@link NoFullBarrierContext}: a `DMAContext`
 * subclass that skips `barrier('full')` and publishes the ring indices with plain stores.
 * On a context that overrides `readU16LE`, `writeU16LE` or `barrier`, `SplitVirtqueue` makes
 * every ordered access and every barrier through those public methods, so a subclass sees
 * each of them and can change how one is done (RELAXED ring and payload accesses it may
 * make directly); the
 * library has no option to drop a barrier, and needs none for this.
 * Environment-neutral: no Node built-in. The ring's interface is handWrittenRing's (see
 * hand-written-ring.mjs).
 */
import { DMAContext, DMAError } from 'dma-attrs';
import { SplitVirtqueue } from 'dma-attrs/virtio';
import {
  AVAIL_RING,
  DESC_TABLE,
  MEMORY_SIZE,
  PAYLOAD_SIZE,
  QUEUE_SIZE,
  USED_RING,
  respond,
} from './protocol.mjs';

const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * A `DMAContext` whose ordered little-endian u16 stores (those without attributes, as
 * `SplitVirtqueue` makes for `used.idx` and `avail_event`) are a release barrier followed by
 * a plain aligned 16-bit store: what WRITE promises, and no more.
 *
 * The library's own ordered store is an `Atomics.store`, which V8 compiles to `xchg` on x64:
 * a full fence, stronger than WRITE promises, that happens to order the index store before
 * the event-index load that follows it, so a missing `barrier('full')` would not show on x64.
 * This context takes that accident away. The release barrier comes before the store, so it
 * cannot keep the store waiting in the store buffer while the next load reads the other
 * side's event index: only `barrier('full')` between the two does. (It does not mark a dirty
 * log: the demo's memory has none.)
 */
export class PlainIndexContext extends DMAContext {
  /** The guest memory as u16 words in host byte order, or undefined where that is not LE. */
  #words;

  /**
   * @param {import('dma-attrs').GuestMemory} memory one region from 0 of `MEMORY_SIZE` bytes.
   * @param {import('dma-attrs').DMAContextOptions} [options] as `DMAContext`'s (a `trace`).
   */
  constructor(memory, options) {
    super(memory, options);
    const base = memory.offsetOf(0, MEMORY_SIZE);
    if (HOST_LITTLE_ENDIAN && base >= 0 && base % 2 === 0) {
      this.#words = new Uint16Array(memory.buffer, base, MEMORY_SIZE >> 1);
    }
  }

  /**
   * The library's `writeU16LE`, except an ordered aligned store inside the demo's memory:
   * `barrier('release')` (through this class's `barrier`), then a plain element store.
   *
   * @param {number} addr the guest address.
   * @param {number} value a u16.
   * @param {import('dma-attrs').DMAAttributesLike} [attrs]
   */
  writeU16LE(addr, value, attrs) {
    const words = this.#words;
    if (
      attrs !== undefined ||
      words === undefined ||
      (addr & 1) !== 0 ||
      !(addr >= 0 && addr < MEMORY_SIZE) ||
      (value & 0xffff) !== value
    ) {
      super.writeU16LE(addr, value, attrs);
      return;
    }
    this.barrier('release');
    words[addr >> 1] = value;
  }
}

/**
 * A {@link PlainIndexContext} on which `barrier('full')` does nothing: `SplitVirtqueue`'s
 * `needsNotification` and `enableNotification` then lack the `virtio_mb()` between their
 * store and their load. The bug `attrs-no-full` shows; other strengths are the library's.
 */
export class NoFullBarrierContext extends PlainIndexContext {
  /**
   * `DMAContext.barrier`, except that `full` issues nothing.
   *
   * @param {import('dma-attrs').BarrierStrength} strength
   */
  barrier(strength) {
    if (strength !== 'full') super.barrier(strength);
  }
}

/**
 * The `SplitVirtqueue` device ring on `memory`.
 *
 * @param {import('dma-attrs').GuestMemory} memory the guest memory.
 * @param {'attrs' | 'attrs-no-full'} variant
 * @param {{ plainIndexStores?: boolean }} [options] `plainIndexStores` (a test hook, `attrs`
 *   only): the indices stored as `attrs-no-full` stores them, the full barriers kept, so that
 *   only the library's `barrier('full')` keeps notifications from being lost.
 * @returns {object} the ring (see hand-written-ring.mjs for its interface).
 */
export function queueRing(memory, variant, options = {}) {
  if (variant !== 'attrs' && variant !== 'attrs-no-full') {
    throw new TypeError(
      `queueRing: variant ${JSON.stringify(variant)} is not attrs or attrs-no-full`,
    );
  }
  let ctx;
  if (variant === 'attrs-no-full') ctx = new NoFullBarrierContext(memory);
  else if (options.plainIndexStores === true) ctx = new PlainIndexContext(memory);
  else ctx = new DMAContext(memory);
  const vq = new SplitVirtqueue(ctx, {
    size: QUEUE_SIZE,
    desc: DESC_TABLE,
    avail: AVAIL_RING,
    used: USED_RING,
    eventIdx: true,
  });
  const payload = new Uint8Array(PAYLOAD_SIZE);

  const ring = {
    name: 'SplitVirtqueue',
    availTotal: 0,
    usedTotal: 0,
    corrupted: 0,
    broken: false,
    // A data property that `serve` keeps current, not a getter: V8 makes an object literal
    // with an accessor a dictionary-mode object, whose every property access (the loop's and
    // `serve`'s, several per batch) is a slow lookup that the other rings do not pay.
    nextAvail: vq.nextAvail,
    serve,
    needsInterrupt: () => vq.needsNotification(),
    enableKicks: () => vq.enableNotification(),
    disableKicks: () => vq.disableNotification(),
  };
  let expectedSeq = 0;
  /** The chain being served, to give back if serving it throws. */
  let current;

  /** Serves one chain: returns the bytes written to its response buffer (0 when corrupted). */
  function serveChain(chain) {
    if (chain.readableLength !== PAYLOAD_SIZE || chain.writableLength !== PAYLOAD_SIZE) {
      ring.corrupted++;
      return 0;
    }
    chain.read(payload);
    const seq = respond(payload);
    if (seq < 0 || seq !== expectedSeq) ring.corrupted++;
    expectedSeq = (seq < 0 ? expectedSeq : seq) + 1;
    return chain.write(payload);
  }

  /** Pops, serves and pushes what is available, `QUEUE_SIZE` chains at most; returns how many. */
  function serve() {
    const firstAvail = vq.nextAvail;
    let pushed = 0;
    try {
      // One batch: what avail.idx shows now, handed back as soon as it is served.
      for (let count = vq.available(); pushed < count; pushed++) {
        const chain = vq.pop();
        if (chain === undefined) break;
        current = chain;
        vq.fill(chain, serveChain(chain));
        current = undefined;
      }
      // One used.idx store (release) for the batch, as a hand-written ring makes it.
      vq.flush();
    } catch (error) {
      // A malformed chain (ERR_DMA_VIRTQUEUE, consumed by pop) or a buffer that faults: a
      // corrupted request. A broken queue (an impossible avail.idx) stops the device.
      if (!(error instanceof DMAError)) throw error;
      ring.corrupted++;
      if (current !== undefined && !vq.broken) {
        vq.fill(current, 0);
        pushed++;
      }
      if (!vq.broken) vq.flush();
      current = undefined;
      ring.broken = vq.broken;
    }
    ring.nextAvail = vq.nextAvail;
    ring.availTotal += (ring.nextAvail - firstAvail) & 0xffff;
    ring.usedTotal += pushed;
    return pushed;
  }

  return ring;
}
