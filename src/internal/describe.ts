import { byteLengthOfView, typedArrayKind } from './intrinsics.js';

/**
 * Renders any value for an error message, so that the message names what was received
 * without ever throwing itself (a hostile `toString` must not replace our error).
 */
export function describe(value: unknown): string {
  switch (typeof value) {
    case 'number':
      return Object.is(value, -0) ? '-0' : String(value);
    case 'bigint':
      return `${value.toString()}n`;
    case 'string':
      return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
    case 'boolean':
    case 'undefined':
      return String(value);
    case 'symbol':
      return 'a symbol';
    case 'function':
      return 'a function';
    default:
      return typeof value === 'object' && value !== null ? describeObject(value) : 'null';
  }
}

function describeObject(value: object): string {
  try {
    const kind = typedArrayKind(value);
    if (kind !== undefined) {
      return `${article(kind)} of ${byteLengthOfView(value as Uint8Array)} bytes`;
    }
    if (value instanceof DataView) return `a DataView of ${value.byteLength} bytes`;
    // Inherits from a typed array prototype (or a proxy's trap says so) but has no typed
    // array inside: the message must not read "expected a Uint8Array; received a Uint8Array".
    if (value instanceof Object.getPrototypeOf(Uint8Array) && !Array.isArray(value)) {
      return `an object posing as ${article(String((value as { constructor?: { name?: unknown } }).constructor?.name))} (not a genuine typed array)`;
    }
    if (Array.isArray(value)) return `an array of length ${value.length}`;
    const name = (value.constructor as { name?: unknown } | undefined)?.name;
    return typeof name === 'string' && name !== 'Object' ? article(name) : 'an object';
  } catch {
    return 'an object';
  }
}

/** `name` with its indefinite article: "an Int8Array", "a Uint8Array" (a "you" sound). */
function article(name: string): string {
  return `${/^[AEIO]/.test(name) ? 'an' : 'a'} ${name}`;
}
