/**
 * Byte copies between guest memory and a caller's buffer, tuned on V8 (Node 20, x64):
 * a byte loop beats `TypedArray.prototype.set` below about 32 bytes, because `set` from a
 * range needs a `subarray` view (an allocation) and a call into the runtime. Copies into
 * guest memory never allocate: `set(data, offset)` takes the caller's whole buffer.
 * A buffer that may alias guest memory (a mapped view, or any view of a
 * `SharedArrayBuffer`, since two `SharedArrayBuffer` objects can share one block of memory)
 * always goes through `set`, which copies overlapping ranges correctly.
 */

/** Up to this many bytes, a loop is faster than `set` for copies out of guest memory. */
const SMALL_OUT = 32;
/** Up to this many bytes, a loop is faster than `set` for copies into guest memory. */
const SMALL_IN = 16;

/** Copies `length` bytes of `bytes` at `offset` into the start of `buf`. */
export function copyOut(bytes: Uint8Array, offset: number, buf: Uint8Array, length: number): void {
  if (length <= SMALL_OUT && buf.buffer !== bytes.buffer && buf.buffer instanceof ArrayBuffer) {
    for (let index = 0; index < length; index++) buf[index] = bytes[offset + index] as number;
  } else {
    buf.set(bytes.subarray(offset, offset + length));
  }
}

/** Copies all of `data` into `bytes` at `offset`. */
export function copyIn(bytes: Uint8Array, offset: number, data: Uint8Array): void {
  const length = data.length;
  if (length <= SMALL_IN && data.buffer !== bytes.buffer && data.buffer instanceof ArrayBuffer) {
    for (let index = 0; index < length; index++) bytes[offset + index] = data[index] as number;
  } else {
    bytes.set(data, offset);
  }
}
