/**
 * Byte copies between guest memory and a caller's buffer, tuned on V8 (Node 20, x64) so that
 * copies into guest memory and copies of up to 192 bytes out of it never allocate, and every
 * copy is correct when the caller's buffer overlaps guest memory
 * (a mapped view, or any view of the memory's buffer), without asking which buffer backs it:
 * `TypedArray.prototype.buffer` is a ~30 ns builtin call, more than a whole small copy.
 *
 * - Unshared guest memory is never indexed as elements: on a view whose buffer was detached
 *   or shrunk, an element load answers `undefined` and a store does nothing, silently, where
 *   a `DataView` access, `set` and `fill` throw before any byte moves. The address layer
 *   (address.ts) relies on that throw to notice a backing that changed. A shared backing
 *   never detaches or shrinks, so the longer copies out of it load whole words as elements
 *   (`GuestStore.words`), which costs far less than a `DataView` load.
 * - Small copies load every byte of the source before the first store to the destination,
 *   which is what makes an overlapping copy correct: whole words of up to 16 bytes in
 *   registers, other small reads through a private scratch buffer. Guest memory is read and
 *   written in 32-bit words through a `DataView` (a byte loop on a `SharedArrayBuffer` costs
 *   about 1 ns per byte).
 * - Other copies into guest memory use `set(data, offset)`, which takes the caller's whole
 *   buffer (no view to allocate) and copies overlapping ranges correctly.
 * - Large copies out of guest memory need a view of the source range for `set`: the one
 *   allocation left, above {@link STAGED_OUT} bytes.
 */

import {
  bufferOfView,
  byteLengthOfView,
  byteOffsetOfView,
  fixedView,
  isResizable,
  setBytes,
  typedArrayKind,
} from './intrinsics.js';

/** Up to this many bytes, copies out of guest memory are staged through the scratch buffer. */
const STAGED_OUT = 192;
/**
 * Up to this many bytes, a copy out of guest memory ends with byte stores rather than `set`,
 * and a copy of whole words into it is word stores rather than `set`.
 */
const LOOP_OUT = 16;

const SCRATCH = new Uint8Array(STAGED_OUT);
const SCRATCH_WORDS = new Int32Array(SCRATCH.buffer);
const HOST_LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;
/** `SCRATCH.subarray(0, length)`, made once per length on first use. */
const SCRATCH_PREFIXES: (Uint8Array | undefined)[] = [];

/**
 * The guest's backing store, seen each way the copies need it: the address layer's views
 * (`FlatView` in address.ts), rebuilt there when the backing's buffer changes.
 */
export interface GuestStore {
  /** Bytes of the backing store. */
  readonly bytes: Uint8Array;
  /** The same bytes for 32-bit loads and stores. */
  readonly view: DataView;
  /**
   * The same bytes as 32-bit words where the backing is shared (it never detaches or shrinks,
   * so an element load in range is as safe as a `DataView` one and far cheaper: V8 checks a
   * view's buffer and length on every `DataView` access); undefined where it is not.
   */
  readonly words: Int32Array | undefined;
  /** `bytes.buffer`, kept because the getter is a slow builtin call. */
  readonly buffer: ArrayBufferLike;
  /** `bytes.byteOffset`. */
  readonly byteOffset: number;
}

/**
 * Copies `length` bytes of guest memory at `offset` into the start of `buf`. The copies of up
 * to {@link LOOP_OUT} bytes are written here, small enough for V8 to inline them into the
 * accessor; longer ones are a call to {@link copyOutLong}.
 */
export function copyOut(store: GuestStore, at: number, buf: Uint8Array, length: number): void {
  // Offsets come from float arithmetic; as int32 the staged loops index without conversions.
  const offset = at | 0;
  if (length > LOOP_OUT || offset !== at) {
    copyOutLong(store, at, buf, length);
    return;
  }
  const view = store.view;
  if ((length & 3) === 0) {
    copyWordsOut(view, offset, buf, length);
    return;
  }
  // Words are read in host byte order and stored in host byte order: the bytes are unchanged.
  // Every load from guest memory comes before the first store to `buf`, which may overlap it.
  let index = 0;
  for (; index + 4 <= length; index += 4) {
    SCRATCH_WORDS[index >> 2] = view.getInt32(offset + index, HOST_LITTLE_ENDIAN);
  }
  for (; index < length; index++) SCRATCH[index] = view.getUint8(offset + index);
  for (index = 0; index < length; index++) buf[index] = SCRATCH[index] as number;
}

/**
 * Stores the four bytes of `word`, little-endian, at `at` in `buf`, each masked to a byte as
 * a `Uint8Array` store would truncate it: a typed array of another kind with the prototype of
 * `Uint8Array` gets the same element values as from a byte copy.
 */
function storeBytes(buf: Uint8Array, at: number, word: number): void {
  buf[at] = word & 0xff;
  buf[at + 1] = (word >> 8) & 0xff;
  buf[at + 2] = (word >> 16) & 0xff;
  buf[at + 3] = word >>> 24;
}

/**
 * The four elements of `data` at `at` as a little-endian word, each taken modulo 256 as a
 * store into a `Uint8Array` would take it; every element loaded before the caller stores.
 */
function loadBytes(data: Uint8Array, at: number): number {
  return (
    ((data[at] as number) & 0xff) |
    (((data[at + 1] as number) & 0xff) << 8) |
    (((data[at + 2] as number) & 0xff) << 16) |
    ((data[at + 3] as number) << 24)
  );
}

/**
 * {@link copyOut} of whole words, up to 16 bytes (descriptors, headers): all loads from guest
 * memory first, into registers, then four byte stores per word into `buf`. A byte loop
 * through the scratch buffer, or a loop over staged words, costs half as much again. Apart
 * from copyOut so that a caller that never copies small words (the IOMMU's path) does not
 * spend V8's inlining budget on it.
 */
function copyWordsOut(view: DataView, offset: number, buf: Uint8Array, length: number): void {
  const w0 = length >= 4 ? view.getInt32(offset, true) : 0;
  const w1 = length >= 8 ? view.getInt32(offset + 4, true) : 0;
  const w2 = length >= 12 ? view.getInt32(offset + 8, true) : 0;
  const w3 = length === 16 ? view.getInt32(offset + 12, true) : 0;
  if (length >= 4) storeBytes(buf, 0, w0);
  if (length >= 8) storeBytes(buf, 4, w1);
  if (length >= 12) storeBytes(buf, 8, w2);
  if (length === 16) storeBytes(buf, 12, w3);
}

/** {@link copyOut} above {@link LOOP_OUT} bytes (or at an offset beyond int32). */
function copyOutLong(store: GuestStore, at: number, buf: Uint8Array, length: number): void {
  const offset = at | 0;
  if (length <= STAGED_OUT && offset === at) {
    const words = store.words;
    if (words !== undefined && ((offset | length) & 3) === 0) {
      copyWords(words, offset >> 2, SCRATCH_WORDS, 0, length >> 2);
      setBytes(buf, scratchPrefix(length));
      return;
    }
    const view = store.view;
    let index = 0;
    for (; index + 8 <= length; index += 8) {
      SCRATCH_WORDS[index >> 2] = view.getInt32(offset + index, HOST_LITTLE_ENDIAN);
      SCRATCH_WORDS[(index >> 2) + 1] = view.getInt32(offset + index + 4, HOST_LITTLE_ENDIAN);
    }
    if (index + 4 <= length) {
      SCRATCH_WORDS[index >> 2] = view.getInt32(offset + index, HOST_LITTLE_ENDIAN);
      index += 4;
    }
    for (; index < length; index++) SCRATCH[index] = view.getUint8(offset + index);
    // Above LOOP_OUT bytes (copyOut takes the shorter ones), one `set` beats a byte loop.
    setBytes(buf, scratchPrefix(length));
  } else {
    // The one allocation left: there is no way to copy a range out of a SharedArrayBuffer
    // without a view of it (Node's Buffer#copy makes one too). A constructed view is
    // cheaper than `subarray`.
    setBytes(buf, guestView(store, at, length));
  }
}

/**
 * A caller's buffer as 32-bit words, for copies between it and a shared backing that need
 * neither the scratch buffer nor `set`: a device that copies into and out of the same buffers
 * for every request (its request and response buffers) gets them copied word by word.
 *
 * The words are made only for a buffer used twice in a row, so a caller that brings a new
 * buffer every time never gets a view made for it (it costs one comparison and one store),
 * and only for a genuine `Uint8Array` (the real kind, not its prototype) at a 4-aligned
 * offset of an unshared `ArrayBuffer`: such a buffer cannot share a byte with a shared
 * backing (two `SharedArrayBuffer` objects can hold the same bytes; an `ArrayBuffer` and a
 * `SharedArrayBuffer` never do), so a word loop is as correct as `set`, and storing a byte
 * into a word of it is what storing it as an element does. The words are a fixed-length view
 * made when the buffer was first eligible: a detached or shrunk buffer leaves them shorter
 * than the copy (or empty), and the caller then takes the ordinary copy, which behaves as it
 * always did. The last buffer is held until the next call with another one.
 * @internal
 */
export class CallerWords {
  #last: Uint8Array | undefined;
  #words: Int32Array | undefined;
  /** Whether `#words` was worked out for `#last` (undefined then means "not eligible"). */
  #made = false;
  /**
   * The real length of `#last` when its words were made, or -1 for a resizable backing. A
   * buffer over a fixed-length `ArrayBuffer` keeps its length until the buffer is detached,
   * which empties the words too: while they are not empty, this is its length.
   */
  #length = -1;

  /**
   * The words of `buf`, or undefined: the first use of `buf` after another buffer, or a
   * buffer that does not qualify. The caller checks their length against its copy.
   */
  of(buf: Uint8Array): Int32Array | undefined {
    if (buf === this.#last && this.#made) return this.#words;
    this.note(buf);
    return this.#words;
  }

  /**
   * {@link CallerWords.of} without its answer: holds `buf` as the last buffer, and makes its
   * words on its second use in a row.
   */
  note(buf: Uint8Array): void {
    if (buf !== this.#last) {
      this.#last = buf;
      this.#words = undefined;
      this.#made = false;
    } else if (!this.#made) {
      this.#make(buf);
    }
  }

  /** Makes the words of `buf`, the last buffer, on its second use (once per buffer). */
  #make(buf: Uint8Array): void {
    this.#made = true;
    const words = callerWords(buf);
    this.#words = words;
    this.#length =
      words === undefined || isResizable(bufferOfView(buf)) ? -1 : byteLengthOfView(buf);
  }

  /**
   * The real length of the buffer whose words {@link CallerWords.of} just gave, when they
   * still stand for it (it is not detached, and its backing cannot resize); else -1. It was
   * read from the buffer's internal slot, so it takes the place of the brand check and the
   * length read of `bufferLength` for a buffer used again.
   */
  knownLength(): number {
    const words = this.#words;
    return words !== undefined && words.length !== 0 ? this.#length : -1;
  }

  /**
   * {@link CallerWords.knownLength} when `buf` is the buffer whose words the last call of
   * {@link CallerWords.of} gave, else -1; changes nothing. No code of the caller's runs.
   */
  lengthOf(buf: Uint8Array): number {
    return buf === this.#last ? this.knownLength() : -1;
  }

  /**
   * The words last made, which stand for `buf` when {@link CallerWords.lengthOf} gives its
   * length: use them only then.
   */
  get words(): Int32Array | undefined {
    return this.#words;
  }
}

/** The words of a caller's buffer that {@link CallerWords} may copy through, or undefined. */
function callerWords(buf: Uint8Array): Int32Array | undefined {
  if (typedArrayKind(buf) !== 'Uint8Array') return undefined;
  const backing = bufferOfView(buf);
  if (typeof SharedArrayBuffer === 'function' && backing instanceof SharedArrayBuffer) {
    return undefined;
  }
  const offset = byteOffsetOfView(buf);
  if ((offset & 3) !== 0) return undefined;
  return new Int32Array(backing, offset, byteLengthOfView(buf) >> 2);
}

/**
 * Copies `count` words from word `from` of `source` to word `to` of `target`: between a
 * shared backing and the scratch buffer or a caller's buffer from {@link CallerWords}, which
 * never overlap it; every word of a turn is loaded before it is stored. Four words a turn: a
 * loop's back edge checks for interrupts, after which V8 reloads both views' lengths and data
 * pointers, which costs more than the copy of a word.
 * @internal
 */
export function copyWords(
  source: Int32Array,
  from: number,
  target: Int32Array,
  to: number,
  count: number,
): void {
  let index = 0;
  for (; index + 4 <= count; index += 4) {
    const w0 = source[from + index] as number;
    const w1 = source[from + index + 1] as number;
    const w2 = source[from + index + 2] as number;
    const w3 = source[from + index + 3] as number;
    target[to + index] = w0;
    target[to + index + 1] = w1;
    target[to + index + 2] = w2;
    target[to + index + 3] = w3;
  }
  for (; index < count; index++) target[to + index] = source[from + index] as number;
}

/** `SCRATCH.subarray(0, length)`, made once per length. */
function scratchPrefix(length: number): Uint8Array {
  let prefix = SCRATCH_PREFIXES[length];
  if (prefix === undefined) {
    prefix = SCRATCH.subarray(0, length);
    SCRATCH_PREFIXES[length] = prefix;
  }
  return prefix;
}

/** A view of `length` bytes of guest memory at backing offset `at`. */
function guestView(store: GuestStore, at: number, length: number): Uint8Array {
  return new Uint8Array(store.buffer, store.byteOffset + at, length);
}

/**
 * Copies the first `length` bytes of `data` into guest memory at `offset`. `length` is the
 * real length of `data`, read once by the caller; no code of the caller's runs between that
 * read and this copy.
 */
export function copyIn(store: GuestStore, at: number, data: Uint8Array, length: number): void {
  const offset = at | 0;
  if ((length & 3) === 0 && length <= LOOP_OUT && offset === at) {
    copyWordsIn(store.view, offset, data, length);
  } else {
    store.bytes.set(data, at);
  }
}

/**
 * {@link copyIn} of whole words up to 16 bytes, as {@link copyWordsOut}: every load from
 * `data` (which may overlap guest memory) before the first store. Any other length is one
 * builtin `set`. Apart from copyIn so that a caller that only writes longer buffers does not
 * spend V8's inlining budget on it.
 */
function copyWordsIn(view: DataView, offset: number, data: Uint8Array, length: number): void {
  const w0 = length >= 4 ? loadBytes(data, 0) : 0;
  const w1 = length >= 8 ? loadBytes(data, 4) : 0;
  const w2 = length >= 12 ? loadBytes(data, 8) : 0;
  const w3 = length === 16 ? loadBytes(data, 12) : 0;
  if (length >= 4) view.setInt32(offset, w0, true);
  if (length >= 8) view.setInt32(offset + 4, w1, true);
  if (length >= 12) view.setInt32(offset + 8, w2, true);
  if (length === 16) view.setInt32(offset + 12, w3, true);
}

/**
 * Copies between a caller's buffer and several pieces of guest memory,
 * `[offset0, length0, gpa0, offset1, ...]` in the backing store, in order. A copy in pieces is only
 * right if no piece's store clobbers what a later piece loads, so when the caller's buffer
 * may share bytes with guest memory it goes through a temporary: when it is a view of the
 * same backing buffer, or of any `SharedArrayBuffer`, since two `SharedArrayBuffer` objects
 * can hold the same bytes (one that went through `postMessage` and came back).
 */
export function copyPieces(
  store: GuestStore,
  pieces: readonly number[],
  buf: Uint8Array,
  toGuest: boolean,
): void {
  let total = 0;
  for (let index = 1; index < pieces.length; index += 3) total += pieces[index] as number;
  if (total === 0) return;
  const backing = bufferOfView(buf);
  const staged =
    backing === store.buffer ||
    (typeof SharedArrayBuffer === 'function' && backing instanceof SharedArrayBuffer);
  if (toGuest) {
    let source = buf;
    if (staged) {
      source = new Uint8Array(total);
      setBytes(source, fixedView(buf, 0, total));
    }
    let position = 0;
    for (let index = 0; index < pieces.length; index += 3) {
      const runLength = pieces[index + 1] as number;
      if (runLength !== 0) {
        store.bytes.set(fixedView(source, position, runLength), pieces[index]);
      }
      position += runLength;
    }
    return;
  }
  const target = staged ? new Uint8Array(total) : buf;
  let position = 0;
  for (let index = 0; index < pieces.length; index += 3) {
    const runLength = pieces[index + 1] as number;
    if (runLength !== 0) {
      setBytes(target, guestView(store, pieces[index] as number, runLength), position);
    }
    position += runLength;
  }
  if (staged) setBytes(buf, target);
}

/**
 * Empties a scratch list that is filled again at once, keeping its storage: V8 gives an
 * array's backing store back at `length = 0`, and the next push would allocate a new one
 * (two lists per general-path access, a few hundred bytes), while `pop` keeps it.
 */
export function emptyList(list: number[]): void {
  while (list.length > 0) list.pop();
}
