/**
 * The `%TypedArray%` builtins, taken once when the module loads, so that what the library
 * learns about a caller's buffer comes from the buffer's internal slots and never from a
 * property the caller can override: a subclass's `get length()`, an own `set` or
 * `subarray`, a `Proxy`, an object made with `Object.create(Uint8Array.prototype)`.
 *
 * Each getter throws a `TypeError` for a receiver that is not a typed array, except the
 * `Symbol.toStringTag` one, which answers `undefined`: it is the brand check, and the
 * others are only ever called after it.
 *
 * @module
 */

const TYPED_ARRAY_PROTOTYPE = Object.getPrototypeOf(Uint8Array.prototype) as object;

/** A getter of `%TypedArray%.prototype`, called with the value to inspect as `this`. */
type Getter = (this: unknown) => unknown;

function intrinsicGetter(key: PropertyKey): Getter {
  // eslint-disable-next-line @typescript-eslint/unbound-method -- always called with `.call(value)`
  return Object.getOwnPropertyDescriptor(TYPED_ARRAY_PROTOTYPE, key)?.get as Getter;
}

const tagOf = intrinsicGetter(Symbol.toStringTag) as (this: unknown) => string | undefined;
const lengthOf = intrinsicGetter('length') as (this: unknown) => number;
const bufferOf = intrinsicGetter('buffer') as (this: unknown) => ArrayBufferLike;
const byteOffsetOf = intrinsicGetter('byteOffset') as (this: unknown) => number;
const byteLengthOf = intrinsicGetter('byteLength') as (this: unknown) => number;

/** `%TypedArray%.prototype.set`, for copies into a caller's buffer. */
const setInto = (
  Object.getOwnPropertyDescriptor(TYPED_ARRAY_PROTOTYPE, 'set') as { value: Uint8Array['set'] }
).value;

/**
 * The real element count of a genuine `Uint8Array` (a `Buffer` is one), or -1 for anything
 * else. A detached buffer, or a view a resizable buffer no longer covers, has length 0.
 *
 * The builtin getters cost 5–8 ns a call on V8 (it does not inline them through `.call`), more
 * than a whole small copy, so the common case is proven without them, by what no caller can
 * fake: `ArrayBuffer.isView` answers from the object's internal slots (a proxy, an object made
 * with `Object.create(Uint8Array.prototype)` or an array is not a view), and the elements of a
 * typed array are exotic (reading `value[i]` never reaches a getter or the prototype). So if
 * `value[length - 1]` is a number and `value[length]` is undefined, `length` is the real
 * length, whatever its `length` property is. V8 inlines all of it to a few loads. A claimed
 * length that fails the proof (a subclass's or an own `length` that lies) is not used: the
 * answer then comes from the builtins.
 *
 * Reading `value.length` may run a caller's getter; callers of this function call it before an
 * access starts, never inside one. A getter that throws is ignored, like one that lies.
 */
export function uint8Length(value: unknown): number {
  if (ArrayBuffer.isView(value) && value instanceof Uint8Array) {
    const claimed = claimedLength(value);
    if (
      typeof claimed === 'number' &&
      (claimed | 0) === claimed &&
      claimed >= 0 &&
      (claimed === 0 || typeof value[claimed - 1] === 'number') &&
      value[claimed] === undefined
    ) {
      return claimed;
    }
  }
  return builtinUint8Length(value);
}

/**
 * `value.length`, or undefined where reading it throws: a DataView given a typed array's
 * prototype reaches the builtin getter with the wrong receiver, and a caller's own getter may
 * throw. Neither is an answer; the builtins then decide.
 */
function claimedLength(value: Uint8Array): unknown {
  try {
    return value.length;
  } catch {
    return undefined;
  }
}

/** {@link uint8Length} by the builtin getters alone: the brand check and the real length. */
function builtinUint8Length(value: unknown): number {
  return tagOf.call(value) === 'Uint8Array' ? lengthOf.call(value) : -1;
}

/**
 * The name of a genuine typed array's kind (`'Uint16Array'`), or undefined for anything
 * else, including objects that only inherit from a typed array prototype.
 */
export function typedArrayKind(value: unknown): string | undefined {
  return tagOf.call(value);
}

/** The real `ArrayBuffer` or `SharedArrayBuffer` of a genuine typed array. */
export function bufferOfView(view: Uint8Array): ArrayBufferLike {
  return bufferOf.call(view);
}

/** The real byte offset of a genuine typed array. */
export function byteOffsetOfView(view: Uint8Array): number {
  return byteOffsetOf.call(view);
}

/** The real byte length of a genuine typed array. */
export function byteLengthOfView(view: Uint8Array): number {
  return byteLengthOf.call(view);
}

/**
 * A fixed-length view of `length` bytes of a genuine `Uint8Array` from element `start`:
 * `subarray` without the caller's `subarray`, species constructor or length-tracking.
 * Call only with `start + length` within the view's real length.
 */
export function fixedView(view: Uint8Array, start: number, length: number): Uint8Array {
  // A detached buffer cannot be viewed at all, not even for zero bytes.
  if (length === 0) return new Uint8Array(0);
  return new Uint8Array(bufferOf.call(view), byteOffsetOf.call(view) + start, length);
}

/** `target.set(source, offset)` with the builtin `set`, whatever `target` overrides. */
export function setBytes(target: Uint8Array, source: Uint8Array, offset = 0): void {
  setInto.call(target, source, offset);
}

const sharedByteLengthOf =
  typeof SharedArrayBuffer === 'function'
    ? // eslint-disable-next-line @typescript-eslint/unbound-method -- always called with `.call(value)`
      (Object.getOwnPropertyDescriptor(SharedArrayBuffer.prototype, 'byteLength')?.get as
        ((this: unknown) => number) | undefined)
    : undefined;

/**
 * The byte length of a genuine `SharedArrayBuffer`, or -1 for anything else (an object
 * made with `Object.create(SharedArrayBuffer.prototype)`, a proxy, an `ArrayBuffer`).
 */
export function sharedByteLength(value: unknown): number {
  if (sharedByteLengthOf === undefined || typeof value !== 'object' || value === null) return -1;
  try {
    return sharedByteLengthOf.call(value);
  } catch {
    return -1;
  }
}

// eslint-disable-next-line @typescript-eslint/unbound-method -- always called with `.call(value)`
const arrayBufferByteLengthOf = Object.getOwnPropertyDescriptor(ArrayBuffer.prototype, 'byteLength')
  ?.get as (this: unknown) => number;

/**
 * The byte length of a genuine `ArrayBuffer` now (0 once detached, the current length of a
 * resizable one), or -1 for anything else.
 */
export function arrayBufferByteLength(value: unknown): number {
  if (typeof value !== 'object' || value === null) return -1;
  try {
    return arrayBufferByteLengthOf.call(value);
  } catch {
    return -1;
  }
}

/** The resizable-buffer getters that ES2024 added; undefined where the engine lacks them. */
function bufferFlag(prototype: object, key: string): ((this: unknown) => boolean) | undefined {
  // eslint-disable-next-line @typescript-eslint/unbound-method -- always called with `.call(value)`
  return Object.getOwnPropertyDescriptor(prototype, key)?.get as
    ((this: unknown) => boolean) | undefined;
}
const resizableOf = bufferFlag(ArrayBuffer.prototype, 'resizable');

/** Whether a genuine `ArrayBuffer` is resizable (false for anything else). */
export function isResizable(value: unknown): boolean {
  try {
    return resizableOf?.call(value) === true;
  } catch {
    return false;
  }
}

interface WasmMemoryLike {
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
}
const wasm = (globalThis as { WebAssembly?: { Memory?: { prototype: WasmMemoryLike } } })
  .WebAssembly;
const wasmBufferOf = (
  wasm?.Memory === undefined
    ? undefined
    : // eslint-disable-next-line @typescript-eslint/unbound-method -- always called with `.call(value)`
      Object.getOwnPropertyDescriptor(wasm.Memory.prototype, 'buffer')?.get
) as ((this: unknown) => ArrayBuffer | SharedArrayBuffer) | undefined;

/**
 * The current buffer of a genuine `WebAssembly.Memory` (a new object after every `grow`), or
 * undefined for anything else: the builtin getter, never a `buffer` property a caller set.
 */
export function wasmMemoryBuffer(value: unknown): ArrayBuffer | SharedArrayBuffer | undefined {
  if (wasmBufferOf === undefined || typeof value !== 'object' || value === null) return undefined;
  try {
    return wasmBufferOf.call(value);
  } catch {
    return undefined;
  }
}
