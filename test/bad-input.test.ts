import { describe, expect, it } from 'vitest';
import {
  DMAAttributes,
  DMAContext,
  DMAError,
  DMAFault,
  GuestMemory,
  type DMAErrorCode,
  type DMATraceEvent,
  type GuestMemoryHandle,
  type GuestMemoryOptions,
} from '../src/index.js';
import {
  ADOPTED_KINDS,
  MEMORY_KINDS,
  WASM_PAGE,
  WasmMemoryCtor,
  fillFrom,
  isSharedBacking,
  kindLabel,
  makeBacking,
  makeMemory,
  sameOutside,
  type Backing,
  type Layout,
  type MadeMemory,
  type MemoryKind,
  type WasmMemory,
} from './support/memories.js';

const { READ, WRITE, BIDIRECTIONAL, RELAXED } = DMAAttributes;

/** Two RAM regions with a hole [64, 128) between them; RAM ends at 192. */
const REGIONS = [
  { base: 0, size: 64 },
  { base: 128, size: 64 },
];
const HOLE = 64;
const END = 192;
const BUF_LENGTH = 16;

/**
 * Adopted memory has the same RAM with [0, 64) split into two guest-adjacent regions that
 * are apart in the backing, at offsets the test chose (SPEC §4.1), canaries all around.
 */
const ADOPTED_REGIONS = [
  { base: 0, size: 32 },
  { base: 32, size: 32 },
  { base: 128, size: 64 },
];
const ADOPTED_LAYOUTS: Readonly<Record<Exclude<MemoryKind, 'allocated'>, Layout>> = {
  SharedArrayBuffer: {},
  ArrayBuffer: { order: [1, 2, 0], lead: 0x50 },
  'shared WebAssembly.Memory': { order: [0, 2, 1], lead: 0x1000 },
  'unshared WebAssembly.Memory': { order: [2, 0, 1], lead: 0x18, gap: 0x41 },
};
/** The memories that have a handle. */
const SHARED_KINDS: readonly MemoryKind[] = MEMORY_KINDS.filter(
  (kind) => kind === 'allocated' || isSharedBacking(kind),
);
/** Runs once: the case makes its own memory (the harness still checks an env's memory is untouched). */
const ONCE: readonly MemoryKind[] = ['allocated'];
/** Every env memory keeps a dirty log: a failed call must mark nothing. */
const DIRTY_LOG = { clients: ['code', 'migration'], pageSize: 64 } as const;

/** What a case works on: a traced context on freshly randomised memory. */
interface Env {
  readonly kind: MemoryKind;
  readonly made: MadeMemory;
  readonly memory: GuestMemory;
  readonly ctx: DMAContext;
  /** The caller's buffer, 16 random non-zero bytes. */
  readonly buf: Uint8Array;
  /** A 16-byte view mapped BIDIRECTIONAL at 0, for unmap cases. */
  readonly view: Uint8Array;
  /** The case's own argument (a wrong-typed buffer, say), filled with non-zero bytes. */
  readonly alien: unknown;
  readonly events: DMATraceEvent[];
}

interface Case {
  readonly name: string;
  readonly code: DMAErrorCode;
  /** Text the message must contain: the bad value, and usually the argument's name. */
  readonly mentions: readonly string[];
  /** What the message must match as well: the region or option, and the value. */
  readonly pattern?: RegExp | ((env: Env) => RegExp);
  /**
   * The memories the case runs on (all by default): the handle cases need shared memory,
   * and a case that makes its own memory runs once.
   */
  readonly kinds?: readonly MemoryKind[];
  /** For faults: the address, length and attributes the fault must carry. */
  readonly fault?: { addr: number; length: number; attrs: number };
  /** Makes the case's own argument; the harness fills it with non-zero bytes. */
  readonly alien?: () => unknown;
  /** Runs before the snapshot (a first unmap, a foreign mapping). */
  readonly prepare?: (env: Env) => void;
  /** True when the case consumes `env.view`, so that the follow-up does not unmap it. */
  readonly consumesView?: boolean;
  readonly call: (env: Env) => unknown;
}

/** A small deterministic generator of non-zero bytes, so a stray write of 0 or of a copy shows. */
function nonZeroBytes(seed: number): () => number {
  let state = seed | 1;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return ((state >>> 0) % 255) + 1;
  };
}

function isWasmMemory(value: unknown): value is WasmMemory {
  return value instanceof WasmMemoryCtor;
}

function fillNonZero(target: unknown, next: () => number): void {
  if (isWasmMemory(target)) {
    fillNonZero(target.buffer, next);
  } else if (Array.isArray(target)) {
    for (let index = 0; index < target.length; index++) target[index] = next();
  } else if (ArrayBuffer.isView(target)) {
    const bytes = new Uint8Array(target.buffer, target.byteOffset, target.byteLength);
    for (let index = 0; index < bytes.length; index++) bytes[index] = next();
  } else if (target instanceof ArrayBuffer || target instanceof SharedArrayBuffer) {
    fillNonZero(new Uint8Array(target), next);
  }
}

/** A copy of every byte (or element) of a buffer-like value, or the value itself. */
function snapshot(target: unknown): unknown {
  if (isWasmMemory(target)) return snapshot(target.buffer);
  if (Array.isArray(target)) return [...(target as unknown[])];
  if (ArrayBuffer.isView(target)) {
    return Array.from(new Uint8Array(target.buffer, target.byteOffset, target.byteLength));
  }
  if (target instanceof ArrayBuffer || target instanceof SharedArrayBuffer) {
    return Array.from(new Uint8Array(target));
  }
  return target;
}

function makeEnv(seed: number, alien?: () => unknown, kind: MemoryKind = 'allocated'): Env {
  const next = nonZeroBytes(seed);
  const events: DMATraceEvent[] = [];
  const made =
    kind === 'allocated'
      ? makeMemory(kind, REGIONS, { barrierPolicy: 'strict', dirtyLog: DIRTY_LOG })
      : makeMemory(kind, ADOPTED_REGIONS, {
          barrierPolicy: 'strict',
          dirtyLog: DIRTY_LOG,
          layout: ADOPTED_LAYOUTS[kind],
        });
  const { memory } = made;
  const ctx = new DMAContext(memory, {
    trace: (event) => {
      events.push(event);
    },
  });
  const view = ctx.map(0, BUF_LENGTH, BIDIRECTIONAL);
  // Every byte of the backing: the regions and the canaries around them.
  fillFrom(made.bytes(), seed);
  const buf = new Uint8Array(BUF_LENGTH);
  fillNonZero(buf, next);
  const own = alien?.();
  fillNonZero(own, next);
  events.length = 0;
  return { kind, made, memory, ctx, buf, view, alien: own, events };
}

// ---------------------------------------------------------------------------------------
// The bad values
// ---------------------------------------------------------------------------------------

interface Bad {
  readonly label: string;
  readonly value: unknown;
  /** How the message shows the value. */
  readonly shown: string;
}

/** Everything that is not a non-negative safe integer. */
const badNumbers: Bad[] = [
  { label: 'a string', value: 'x', shown: '"x"' },
  { label: 'a numeric string', value: '8', shown: '"8"' },
  { label: 'a bigint', value: 8n, shown: '8n' },
  { label: 'an object', value: {}, shown: 'an object' },
  { label: 'an array', value: [8], shown: 'an array of length 1' },
  { label: 'a boolean', value: true, shown: 'true' },
  { label: 'undefined', value: undefined, shown: 'undefined' },
  { label: 'null', value: null, shown: 'null' },
  { label: 'NaN', value: NaN, shown: 'NaN' },
  { label: 'a negative number', value: -1, shown: '-1' },
  { label: 'a fraction', value: 1.5, shown: '1.5' },
  { label: '2^53', value: 2 ** 53, shown: '9007199254740992' },
  { label: '2^53 + 2', value: 2 ** 53 + 2, shown: '9007199254740994' },
  { label: 'Infinity', value: Infinity, shown: 'Infinity' },
  { label: '-Infinity', value: -Infinity, shown: '-Infinity' },
];

/** Attributes that are invalid whatever the accessor. */
const badAttrs: Bad[] = [
  { label: 'the unknown bit 8', value: 8, shown: '8' },
  { label: 'the unknown bits 0xff', value: 0xff, shown: '255' },
  { label: 'READ plus an unknown bit', value: READ | 0x10, shown: '17' },
  { label: 'a negative number', value: -1, shown: '-1' },
  { label: 'a fraction', value: 1.5, shown: '1.5' },
  { label: 'NaN', value: NaN, shown: 'NaN' },
  { label: 'Infinity', value: Infinity, shown: 'Infinity' },
  { label: 'a string', value: 'READ', shown: '"READ"' },
  { label: 'a bigint', value: 1n, shown: '1n' },
  { label: 'null', value: null, shown: 'null' },
  { label: 'an array', value: [READ], shown: 'an array of length 1' },
  { label: 'a boolean', value: true, shown: 'true' },
  { label: 'the misspelt key relaxd', value: { relaxd: true }, shown: 'relaxd' },
  { label: 'the misspelt key raed', value: { raed: true }, shown: 'raed' },
  { label: 'an upper-case key', value: { RELAXED: true }, shown: 'RELAXED' },
  { label: 'a non-boolean flag', value: { relaxed: 'yes' }, shown: '"yes"' },
  { label: 'a numeric flag', value: { relaxed: 1 }, shown: 'relaxed' },
];

/** Buffers that are not Uint8Array. */
const badBuffers: { label: string; make: () => unknown; shown: string }[] = [
  {
    label: 'a plain array',
    make: () => new Array<number>(BUF_LENGTH).fill(0),
    shown: 'an array of length 16',
  },
  { label: 'a Uint16Array', make: () => new Uint16Array(8), shown: 'a Uint16Array of 16 bytes' },
  { label: 'an Int8Array', make: () => new Int8Array(16), shown: 'an Int8Array of 16 bytes' },
  {
    label: 'a Uint8ClampedArray',
    make: () => new Uint8ClampedArray(16),
    shown: 'Uint8ClampedArray',
  },
  {
    label: 'a DataView',
    make: () => new DataView(new ArrayBuffer(16)),
    shown: 'a DataView of 16 bytes',
  },
  { label: 'an ArrayBuffer', make: () => new ArrayBuffer(16), shown: 'ArrayBuffer' },
  {
    label: 'a SharedArrayBuffer',
    make: () => new SharedArrayBuffer(16),
    shown: 'SharedArrayBuffer',
  },
  { label: 'a string', make: () => 'sixteen bytes...', shown: '"sixteen bytes..."' },
  { label: 'a number', make: () => 16, shown: '16' },
  { label: 'null', make: () => null, shown: 'null' },
  { label: 'undefined', make: () => undefined, shown: 'undefined' },
];

// ---------------------------------------------------------------------------------------
// The accessors, as [receiver, method, arguments] with placeholders for the bad value
// ---------------------------------------------------------------------------------------

/** Stands for the bad value in an argument list. */
const BAD = Symbol('the bad value');
/** Stands for the env's caller buffer. */
const BUF = Symbol('the caller buffer');
/** Stands for the env's mapped view. */
const VIEW = Symbol('the mapped view');

/** `[label, receiver, method, arguments]`: one call with one slot left for the bad value. */
type Call = [label: string, receiver: 'ctx' | 'memory', method: string, args: unknown[]];

/** Calls `env[receiver][method](...args)` with the placeholders filled in. */
function invoke(env: Env, [, receiver, method, args]: Call, bad: unknown): unknown {
  const target = env[receiver];
  const accessor = (target as unknown as Record<string, (...args: unknown[]) => unknown>)[method];
  const filled = args.map((arg) => {
    if (arg === BAD) return bad;
    if (arg === BUF) return env.buf;
    if (arg === VIEW) return env.view;
    return arg;
  });
  return Reflect.apply(accessor as (...args: unknown[]) => unknown, target, filled);
}

/** Every call that takes a guest address, with the name its message uses for it. */
const addressTakers: [Call, string][] = [
  [['ctx.rw (READ)', 'ctx', 'rw', [BAD, BUF, READ]], 'addr'],
  [['ctx.rw (WRITE)', 'ctx', 'rw', [BAD, BUF, WRITE]], 'addr'],
  [['ctx.read', 'ctx', 'read', [BAD, BUF]], 'addr'],
  [['ctx.write', 'ctx', 'write', [BAD, BUF]], 'addr'],
  [['ctx.set', 'ctx', 'set', [BAD, 0, 4]], 'addr'],
  [['ctx.valid', 'ctx', 'valid', [BAD, 4, READ]], 'addr'],
  [['ctx.map', 'ctx', 'map', [BAD, 4, WRITE]], 'addr'],
  [['ctx.readU8', 'ctx', 'readU8', [BAD]], 'addr'],
  [['ctx.readU16LE', 'ctx', 'readU16LE', [BAD]], 'addr'],
  [['ctx.readU16BE', 'ctx', 'readU16BE', [BAD]], 'addr'],
  [['ctx.readU32LE', 'ctx', 'readU32LE', [BAD]], 'addr'],
  [['ctx.readU32BE', 'ctx', 'readU32BE', [BAD]], 'addr'],
  [['ctx.readU64LE', 'ctx', 'readU64LE', [BAD]], 'addr'],
  [['ctx.readU64BE', 'ctx', 'readU64BE', [BAD]], 'addr'],
  [['ctx.writeU8', 'ctx', 'writeU8', [BAD, 1]], 'addr'],
  [['ctx.writeU16LE', 'ctx', 'writeU16LE', [BAD, 1]], 'addr'],
  [['ctx.writeU16BE', 'ctx', 'writeU16BE', [BAD, 1]], 'addr'],
  [['ctx.writeU32LE', 'ctx', 'writeU32LE', [BAD, 1]], 'addr'],
  [['ctx.writeU32BE', 'ctx', 'writeU32BE', [BAD, 1]], 'addr'],
  [['ctx.writeU64LE', 'ctx', 'writeU64LE', [BAD, 1n]], 'addr'],
  [['ctx.writeU64BE', 'ctx', 'writeU64BE', [BAD, 1n]], 'addr'],
  [['memory.read', 'memory', 'read', [BAD, BUF]], 'gpa'],
  [['memory.write', 'memory', 'write', [BAD, BUF]], 'gpa'],
  [['memory.offsetOf', 'memory', 'offsetOf', [BAD, 4]], 'gpa'],
];

/** Every call that takes a length. */
const lengthTakers: [Call, string][] = [
  [['ctx.set', 'ctx', 'set', [0, 0, BAD]], 'length'],
  [['ctx.valid', 'ctx', 'valid', [0, BAD, READ]], 'length'],
  [['ctx.map', 'ctx', 'map', [0, BAD, READ]], 'length'],
  [['memory.offsetOf', 'memory', 'offsetOf', [0, BAD]], 'length'],
  [['ctx.unmap', 'ctx', 'unmap', [VIEW, BAD]], 'accessedLength'],
];

/** Every call that takes attributes, and whether they are required (no default). */
const attrsTakers: [Call, boolean][] = [
  [['ctx.rw', 'ctx', 'rw', [0, BUF, BAD]], true],
  [['ctx.read', 'ctx', 'read', [0, BUF, BAD]], false],
  [['ctx.write', 'ctx', 'write', [0, BUF, BAD]], false],
  [['ctx.set', 'ctx', 'set', [0, 0, 4, BAD]], false],
  [['ctx.valid', 'ctx', 'valid', [0, 4, BAD]], true],
  [['ctx.map', 'ctx', 'map', [0, 4, BAD]], true],
  [['ctx.readU8', 'ctx', 'readU8', [0, BAD]], false],
  [['ctx.readU16LE', 'ctx', 'readU16LE', [0, BAD]], false],
  [['ctx.readU16BE', 'ctx', 'readU16BE', [0, BAD]], false],
  [['ctx.readU32LE', 'ctx', 'readU32LE', [0, BAD]], false],
  [['ctx.readU32BE', 'ctx', 'readU32BE', [0, BAD]], false],
  [['ctx.readU64LE', 'ctx', 'readU64LE', [0, BAD]], false],
  [['ctx.readU64BE', 'ctx', 'readU64BE', [0, BAD]], false],
  [['ctx.writeU8', 'ctx', 'writeU8', [0, 1, BAD]], false],
  [['ctx.writeU16LE', 'ctx', 'writeU16LE', [0, 1, BAD]], false],
  [['ctx.writeU16BE', 'ctx', 'writeU16BE', [0, 1, BAD]], false],
  [['ctx.writeU32LE', 'ctx', 'writeU32LE', [0, 1, BAD]], false],
  [['ctx.writeU32BE', 'ctx', 'writeU32BE', [0, 1, BAD]], false],
  [['ctx.writeU64LE', 'ctx', 'writeU64LE', [0, 1n, BAD]], false],
  [['ctx.writeU64BE', 'ctx', 'writeU64BE', [0, 1n, BAD]], false],
];

/** Every call that takes a caller's buffer. */
const bufferTakers: [Call, string][] = [
  [['ctx.rw (READ)', 'ctx', 'rw', [0, BAD, READ]], 'buf'],
  [['ctx.rw (WRITE)', 'ctx', 'rw', [0, BAD, WRITE]], 'buf'],
  [['ctx.read', 'ctx', 'read', [0, BAD]], 'buf'],
  [['ctx.write', 'ctx', 'write', [0, BAD]], 'buf'],
  [['memory.read', 'memory', 'read', [0, BAD]], 'buf'],
  [['memory.write', 'memory', 'write', [0, BAD]], 'buf'],
  [['ctx.unmap', 'ctx', 'unmap', [BAD]], 'view'],
];

const wrongNumbers: Case[] = [...addressTakers, ...lengthTakers].flatMap(([call, what]) =>
  badNumbers
    // unmap's accessedLength is optional: undefined means the whole view.
    .filter((bad) => !(what === 'accessedLength' && bad.value === undefined))
    .map((bad) => ({
      name: `${call[0]} rejects ${bad.label} as the ${what}`,
      code: 'ERR_DMA_INVALID_ARGUMENT' as const,
      mentions: [what, bad.shown],
      call: (env: Env) => invoke(env, call, bad.value),
    })),
);

const unsafeRanges: Case[] = addressTakers
  // A byte at 2^53 - 1 ends exactly at 2^53, which is allowed; every wider access is not.
  .filter(([call]) => !call[0].endsWith('U8'))
  .map(([call]) => ({
    name: `${call[0]} rejects an access that would end past 2^53`,
    code: 'ERR_DMA_INVALID_ARGUMENT' as const,
    mentions: ['2^53', String(2 ** 53 - 1)],
    call: (env: Env) => invoke(env, call, 2 ** 53 - 1),
  }));

const wrongAttrs: Case[] = attrsTakers.flatMap(([call, required]) =>
  [
    ...badAttrs,
    ...(required ? [{ label: 'undefined', value: undefined, shown: 'undefined' }] : []),
  ].map((bad) => ({
    name: `${call[0]} rejects ${bad.label} as attributes`,
    code: 'ERR_DMA_INVALID_ATTRIBUTES' as const,
    mentions: [bad.shown],
    call: (env: Env) => invoke(env, call, bad.value),
  })),
);

/** `[call, attrs, what the message names the operation]`. */
const conflicting: Case[] = (
  [
    [['ctx.read', 'ctx', 'read', [0, BUF, BAD]], WRITE, 'read'],
    [['ctx.read', 'ctx', 'read', [0, BUF, BAD]], BIDIRECTIONAL, 'read'],
    [['ctx.read', 'ctx', 'read', [0, BUF, BAD]], { write: true }, 'read'],
    [['ctx.write', 'ctx', 'write', [0, BUF, BAD]], READ, 'write'],
    [['ctx.write', 'ctx', 'write', [0, BUF, BAD]], READ | RELAXED, 'write'],
    [['ctx.set', 'ctx', 'set', [0, 0, 4, BAD]], READ, 'set'],
    [['ctx.readU32LE', 'ctx', 'readU32LE', [0, BAD]], WRITE, 'readU32LE'],
    [['ctx.readU64BE', 'ctx', 'readU64BE', [0, BAD]], WRITE, 'readU64BE'],
    [['ctx.writeU8', 'ctx', 'writeU8', [0, 1, BAD]], READ, 'writeU8'],
    [['ctx.writeU64LE', 'ctx', 'writeU64LE', [0, 1n, BAD]], { read: true }, 'writeU64LE'],
    [['ctx.rw', 'ctx', 'rw', [0, BUF, BAD]], BIDIRECTIONAL, 'rw'],
    [['ctx.rw', 'ctx', 'rw', [0, BUF, BAD]], BIDIRECTIONAL | RELAXED, 'rw'],
    [['ctx.rw', 'ctx', 'rw', [0, BUF, BAD]], 0, 'rw'],
    [['ctx.rw', 'ctx', 'rw', [0, BUF, BAD]], RELAXED, 'rw'],
    [['ctx.rw', 'ctx', 'rw', [0, BUF, BAD]], {}, 'rw'],
    [['ctx.map', 'ctx', 'map', [0, 4, BAD]], 0, 'map'],
    [['ctx.map', 'ctx', 'map', [0, 4, BAD]], { relaxed: true }, 'map'],
    [['ctx.valid', 'ctx', 'valid', [0, 4, BAD]], RELAXED, 'valid'],
  ] as [Call, unknown, string][]
).map(([call, attrs, op]) => ({
  name: `${call[0]} rejects the direction ${JSON.stringify(attrs)}`,
  code: 'ERR_DMA_INVALID_ATTRIBUTES',
  mentions: [op, typeof attrs === 'number' ? String(attrs) : 'an object'],
  call: (env: Env) => invoke(env, call, attrs),
}));

const wrongBuffers: Case[] = bufferTakers.flatMap(([call, what]) =>
  badBuffers.map((bad) => ({
    name: `${call[0]} rejects ${bad.label} as the buffer`,
    code: 'ERR_DMA_INVALID_ARGUMENT' as const,
    mentions: [what, bad.shown],
    alien: bad.make,
    call: (env: Env) => invoke(env, call, env.alien),
  })),
);

/** `[call, value, how the message shows it]`. */
const wrongValues: Case[] = (
  [
    [['ctx.set', 'ctx', 'set', [0, BAD, 4]], 256, '256'],
    [['ctx.set', 'ctx', 'set', [0, BAD, 4]], -1, '-1'],
    [['ctx.set', 'ctx', 'set', [0, BAD, 4]], 1.5, '1.5'],
    [['ctx.set', 'ctx', 'set', [0, BAD, 4]], NaN, 'NaN'],
    [['ctx.set', 'ctx', 'set', [0, BAD, 4]], '1', '"1"'],
    [['ctx.set', 'ctx', 'set', [0, BAD, 4]], 1n, '1n'],
    [['ctx.set', 'ctx', 'set', [0, BAD, 4]], null, 'null'],
    [['ctx.writeU8', 'ctx', 'writeU8', [0, BAD]], 256, '256'],
    [['ctx.writeU8', 'ctx', 'writeU8', [0, BAD]], -1, '-1'],
    [['ctx.writeU8', 'ctx', 'writeU8', [0, BAD]], 0.5, '0.5'],
    [['ctx.writeU16LE', 'ctx', 'writeU16LE', [0, BAD]], 65536, '65536'],
    [['ctx.writeU16BE', 'ctx', 'writeU16BE', [0, BAD]], 65536, '65536'],
    [['ctx.writeU16LE', 'ctx', 'writeU16LE', [0, BAD]], NaN, 'NaN'],
    [['ctx.writeU32LE', 'ctx', 'writeU32LE', [0, BAD]], 2 ** 32, '4294967296'],
    [['ctx.writeU32BE', 'ctx', 'writeU32BE', [0, BAD]], 2 ** 32, '4294967296'],
    [['ctx.writeU32LE', 'ctx', 'writeU32LE', [0, BAD]], -1, '-1'],
    [['ctx.writeU32LE', 'ctx', 'writeU32LE', [0, BAD]], Infinity, 'Infinity'],
    [['ctx.writeU32BE', 'ctx', 'writeU32BE', [0, BAD]], 1n, '1n'],
    [['ctx.writeU64LE', 'ctx', 'writeU64LE', [0, BAD]], 2n ** 64n, '18446744073709551616n'],
    [['ctx.writeU64BE', 'ctx', 'writeU64BE', [0, BAD]], 2n ** 64n, '18446744073709551616n'],
    [['ctx.writeU64LE', 'ctx', 'writeU64LE', [0, BAD]], -1n, '-1n'],
    [['ctx.writeU64LE', 'ctx', 'writeU64LE', [0, BAD]], 1, '1'],
    [['ctx.writeU64BE', 'ctx', 'writeU64BE', [0, BAD]], '1', '"1"'],
  ] as [Call, unknown, string][]
).map(([call, value, shown]) => ({
  name: `${call[0]} rejects the value ${shown}`,
  code: 'ERR_DMA_INVALID_ARGUMENT',
  mentions: ['value', shown],
  call: (env: Env) => invoke(env, call, value),
}));

/** Ranges that touch the hole [64, 128) or run past the end of RAM at 192: `[call, addr, length, attrs]`. */
const faults: Case[] = (
  [
    [['ctx.read across the hole', 'ctx', 'read', [56, BUF]], 56, 16, READ],
    [['ctx.read past the end', 'ctx', 'read', [END - 8, BUF]], END - 8, 16, READ],
    [['ctx.read inside the hole', 'ctx', 'read', [80, BUF, RELAXED]], 80, 16, READ | RELAXED],
    [['ctx.read from the hole into RAM', 'ctx', 'read', [120, BUF]], 120, 16, READ],
    [['ctx.write across the hole', 'ctx', 'write', [56, BUF]], 56, 16, WRITE],
    [
      ['ctx.write past the end', 'ctx', 'write', [END - 1, BUF, { relaxed: true }]],
      END - 1,
      16,
      WRITE | RELAXED,
    ],
    [['ctx.write far past the end', 'ctx', 'write', [2 ** 40, BUF]], 2 ** 40, 16, WRITE],
    [['ctx.rw (WRITE) across the hole', 'ctx', 'rw', [60, BUF, WRITE]], 60, 16, WRITE],
    [['ctx.rw (READ) across the hole', 'ctx', 'rw', [60, BUF, 5]], 60, 16, READ | RELAXED],
    [['ctx.set across the hole', 'ctx', 'set', [60, 0, 8]], 60, 8, WRITE],
    [['ctx.set past the end', 'ctx', 'set', [END - 4, 0, 8]], END - 4, 8, WRITE],
    [['ctx.readU16LE across the hole', 'ctx', 'readU16LE', [63]], 63, 2, READ],
    [['ctx.readU32BE across the hole', 'ctx', 'readU32BE', [62]], 62, 4, READ],
    [['ctx.readU64LE past the end', 'ctx', 'readU64LE', [END - 4]], END - 4, 8, READ],
    [['ctx.readU8 in the hole', 'ctx', 'readU8', [HOLE]], HOLE, 1, READ],
    [['ctx.writeU8 past the end', 'ctx', 'writeU8', [END, 1]], END, 1, WRITE],
    [['ctx.writeU16BE across the hole', 'ctx', 'writeU16BE', [63, 0xffff]], 63, 2, WRITE],
    [['ctx.writeU32LE across the hole', 'ctx', 'writeU32LE', [62, 2 ** 32 - 1]], 62, 4, WRITE],
    [
      ['ctx.writeU64BE past the end', 'ctx', 'writeU64BE', [END - 4, 2n ** 64n - 1n]],
      END - 4,
      8,
      WRITE,
    ],
    [['ctx.writeU64LE relaxed, across the hole', 'ctx', 'writeU64LE', [60, 1n, RELAXED]], 60, 8, 6],
    [['ctx.map in the hole', 'ctx', 'map', [HOLE, 4, READ]], HOLE, 4, READ],
    [['ctx.map past the end', 'ctx', 'map', [END, 4, BIDIRECTIONAL]], END, 4, BIDIRECTIONAL],
    [['memory.read across the hole', 'memory', 'read', [56, BUF]], 56, 16, 0],
    [['memory.write across the hole', 'memory', 'write', [56, BUF]], 56, 16, 0],
    [['memory.write past the end', 'memory', 'write', [END - 8, BUF]], END - 8, 16, 0],
  ] as [Call, number, number, number][]
).map(([call, addr, length, attrs]) => ({
  name: `${call[0]} is an ERR_DMA_UNASSIGNED fault`,
  code: 'ERR_DMA_UNASSIGNED',
  mentions: [`0x${addr.toString(16)}`, `${length} bytes`, 'hole'],
  fault: { addr, length, attrs },
  call: (env: Env) => invoke(env, call, undefined),
}));

const badMemoryOptions: [string, unknown, string[]][] = [
  ['no options', undefined, ['options', 'undefined']],
  ['null options', null, ['options', 'null']],
  ['a string as options', 'big', ['options', '"big"']],
  ['a number as options', 64, ['options', '64']],
  ['neither size nor regions', {}, ['size', 'undefined']],
  ['size 0', { size: 0 }, ['size', '0']],
  ['a negative size', { size: -1 }, ['size', '-1']],
  ['a fractional size', { size: 1.5 }, ['size', '1.5']],
  ['a NaN size', { size: NaN }, ['size', 'NaN']],
  ['an infinite size', { size: Infinity }, ['size', 'Infinity']],
  ['a string size', { size: '64' }, ['size', '"64"']],
  ['a bigint size', { size: 64n }, ['size', '64n']],
  ['a size of 2^53', { size: 2 ** 53 }, ['size', '9007199254740992']],
  ['a size too large to allocate', { size: 2 ** 53 - 1 }, ['allocate', '9007199254740991']],
  ['both size and regions', { size: 64, regions: REGIONS }, ['size', 'regions']],
  ['empty regions', { regions: [] }, ['regions', 'an array of length 0']],
  ['regions that are a string', { regions: 'all' }, ['regions', '"all"']],
  ['a null region', { regions: [null] }, ['regions[0]', 'null']],
  [
    'a region with a negative base',
    { regions: [{ base: -8, size: 8 }] },
    ['regions[0].base', '-8'],
  ],
  [
    'a region with a fractional base',
    { regions: [{ base: 0.5, size: 8 }] },
    ['regions[0].base', '0.5'],
  ],
  [
    'a region with an unsafe base',
    { regions: [{ base: 2 ** 53, size: 8 }] },
    ['regions[0].base', '9007199254740992'],
  ],
  ['a region of size 0', { regions: [{ base: 0, size: 0 }] }, ['regions[0].size', '0']],
  ['a region with a bigint size', { regions: [{ base: 0, size: 8n }] }, ['regions[0].size', '8n']],
  [
    'a region ending past 2^53',
    { regions: [{ base: 2 ** 53 - 1, size: 2 }] },
    ['regions[0]', '2^53'],
  ],
  [
    'overlapping regions',
    {
      regions: [
        { base: 0, size: 64 },
        { base: 32, size: 64 },
      ],
    },
    ['overlap', '[0, 64)', '[32, 96)'],
  ],
  ['a non-boolean shared', { size: 64, shared: 'yes' }, ['shared', '"yes"']],
  ['an unknown barrier policy', { size: 64, barrierPolicy: 'weak' }, ['barrierPolicy', '"weak"']],
  [
    'a barrier policy in the wrong case',
    { size: 64, barrierPolicy: 'STRICT' },
    ['barrierPolicy', '"STRICT"'],
  ],
];

const constructors: Case[] = [
  ...badMemoryOptions.map(([label, options, mentions]) => ({
    name: `new GuestMemory rejects ${label}`,
    code: 'ERR_DMA_INVALID_ARGUMENT' as const,
    mentions,
    kinds: ONCE,
    call: () => new GuestMemory(options as GuestMemoryOptions),
  })),
  ...(
    [
      ['no memory', () => undefined, ['memory', 'undefined']],
      ['null memory', () => null, ['memory', 'null']],
      ['a string as memory', () => 'ram', ['memory', '"ram"']],
      ['a plain object as memory', () => ({}), ['memory', 'an object']],
      [
        'an object that only looks like memory',
        () => ({ bytes: new Uint8Array(8) }),
        ['memory', 'an object'],
      ],
      ['a Uint8Array as memory', () => new Uint8Array(8), ['memory', 'Uint8Array']],
      ['a context as memory', (env: Env) => env.ctx, ['memory', 'DMAContext']],
    ] as [string, (env: Env) => unknown, string[]][]
  ).map(([label, memory, mentions]) => ({
    name: `new DMAContext rejects ${label}`,
    code: 'ERR_DMA_INVALID_ARGUMENT' as const,
    mentions,
    call: (env: Env) => new DMAContext(memory(env) as GuestMemory),
  })),
  ...(
    [
      ['null options', null, ['options', 'null']],
      ['a string as options', 'trace', ['options', '"trace"']],
      ['a string trace', { trace: 'console' }, ['trace', '"console"']],
      ['a null trace', { trace: null }, ['trace', 'null']],
      ['an object trace', { trace: {} }, ['trace', 'an object']],
    ] as [string, unknown, string[]][]
  ).map(([label, options, mentions]) => ({
    name: `new DMAContext rejects ${label}`,
    code: 'ERR_DMA_INVALID_ARGUMENT' as const,
    mentions,
    call: (env: Env) => new DMAContext(env.memory, options as never),
  })),
];

/** Byte length of a test backing of `kind`: 256 bytes, or one wasm page. */
function backingBytes(kind: Exclude<MemoryKind, 'allocated'>): number {
  return kind.endsWith('Memory') ? WASM_PAGE : 256;
}

/** `[label, options given the case's own backing, pattern, mentions?]` */
type AdoptCase = [string, (backing: Backing) => unknown, RegExp, string[]?];

/**
 * Cases that build a memory on a backing of their own (the case's alien: filled with
 * non-zero bytes before, compared after, so a failed constructor must leave all of it as
 * it was) and must be refused naming the region or option and the value.
 */
function adoptCases(kind: Exclude<MemoryKind, 'allocated'>, cases: AdoptCase[]): Case[] {
  return cases.map(([label, options, pattern, mentions]) => ({
    name: `new GuestMemory on ${kindLabel(kind)} rejects ${label}`,
    code: 'ERR_DMA_INVALID_ARGUMENT' as const,
    mentions: mentions ?? [],
    pattern,
    kinds: ONCE,
    alien: () => makeBacking(kind, backingBytes(kind)),
    call: ({ alien }: Env) => new GuestMemory(options(alien as Backing) as GuestMemoryOptions),
  }));
}

/** Offsets that are not non-negative safe integers, and how a message shows them. */
const badOffsets: [unknown, string][] = [
  [-8, '-8'],
  [1.5, '1\\.5'],
  [2 ** 53, '9007199254740992'],
  [NaN, 'NaN'],
  [Infinity, 'Infinity'],
  ['8', '"8"'],
  [8n, '8n'],
  [null, 'null'],
  [{}, 'an object'],
];

const adoptedOptions: Case[] = ADOPTED_KINDS.flatMap((kind) => {
  const length = backingBytes(kind);
  const shared = isSharedBacking(kind);
  const region = { base: 0, size: 64, offset: 8 };
  return adoptCases(kind, [
    [
      'a region without an offset',
      (backing) => ({ backing, regions: [{ base: 0, size: 64 }] }),
      /regions\[0\]\.offset\b.*\bundefined\b/s,
    ],
    [
      'a second region without an offset',
      (backing) => ({ backing, regions: [region, { base: 128, size: 8 }] }),
      /regions\[1\]\.offset\b.*\bundefined\b/s,
    ],
    ...badOffsets.map(([offset, shown]): AdoptCase => [
      `the offset ${shown.replace('\\', '')}`,
      (backing) => ({ backing, regions: [{ base: 0, size: 64, offset }] }),
      new RegExp(`regions\\[0\\]\\.offset\\b.*${shown}`, 's'),
    ]),
    [
      'an offset that is not congruent to its base modulo 8',
      (backing) => ({ backing, regions: [{ base: 0, size: 8, offset: 4 }] }),
      /regions\[0\]\.offset\b.*\b4\b/s,
    ],
    [
      'an odd base at an even offset',
      (backing) => ({ backing, regions: [{ base: 3, size: 8, offset: 8 }] }),
      /regions\[0\]\.offset\b.*\b8\b/s,
    ],
    [
      'a second region whose offset is not congruent to its base',
      (backing) => ({ backing, regions: [region, { base: 64, size: 8, offset: 17 }] }),
      /regions\[1\]\.offset\b.*\b17\b/s,
    ],
    [
      'a region whose offset + size runs past the end of the backing',
      (backing) => ({ backing, regions: [{ base: 0, size: 64, offset: length - 32 }] }),
      new RegExp(`regions\\[0\\]\\D.*\\b${length - 32}\\b`, 's'),
    ],
    [
      'a region larger than the backing',
      (backing) => ({ backing, regions: [{ base: 0, size: length + 8, offset: 0 }] }),
      new RegExp(`regions\\[0\\]\\D.*\\b${length + 8}\\b`, 's'),
    ],
    [
      'a region that starts at the end of the backing',
      (backing) => ({ backing, regions: [{ base: 0, size: 8, offset: length }] }),
      new RegExp(`regions\\[0\\]\\D.*\\b${length}\\b`, 's'),
    ],
    [
      'a second region past the end of the backing',
      (backing) => ({
        backing,
        regions: [region, { base: 0x1000, size: 16, offset: length - 8 }],
      }),
      new RegExp(`regions\\[1\\]\\D.*\\b${length - 8}\\b`, 's'),
    ],
    [
      'regions that overlap in guest space (they may share backing bytes, not addresses)',
      (backing) => ({
        backing,
        regions: [
          { base: 0, size: 64, offset: 0 },
          { base: 32, size: 64, offset: 128 },
        ],
      }),
      /overlap/,
      ['[0, 64)', '[32, 96)'],
    ],
    [
      'size as well as regions',
      (backing) => ({ backing, size: 64, regions: [region] }),
      /\bsize\b/,
      ['regions'],
    ],
    ['no regions', (backing) => ({ backing }), /\bregions\b.*\bundefined\b/s],
    [
      `shared: ${!shared}, which contradicts the backing`,
      (backing) => ({ backing, regions: [region], shared: !shared }),
      new RegExp(`\\bshared\\b.*\\b${!shared}\\b`, 's'),
    ],
    [
      'a shared option that is not a boolean',
      (backing) => ({ backing, regions: [region], shared: 'yes' }),
      /\bshared\b.*"yes"/s,
    ],
    ...(shared
      ? ([
          ...(
            [
              [2, '2', 'not 4-aligned'],
              [length, String(length), 'past the end of the backing'],
              [length - 2, String(length - 2), 'straddling the end of the backing'],
              [-4, '-4', 'negative'],
              [1.5, '1\\.5', 'fractional'],
              [2 ** 53, '9007199254740992', 'unsafe'],
              ['0', '"0"', 'a string'],
              [undefined, 'undefined', 'missing'],
            ] as [unknown, string, string][]
          ).map(([byteOffset, shown, what]): AdoptCase => [
            `a fence byteOffset that is ${what}`,
            (backing) => ({ backing, regions: [region], fence: { buffer: backing, byteOffset } }),
            new RegExp(`\\bfence\\b.*${shown}`, 's'),
          ]),
          [
            'a fence in an ArrayBuffer',
            (backing) => ({
              backing,
              regions: [region],
              fence: { buffer: new ArrayBuffer(64), byteOffset: 0 },
            }),
            /\bfence\b.*\ban ArrayBuffer\b/s,
          ],
          [
            'a fence in an unshared WebAssembly.Memory',
            (backing) => ({
              backing,
              regions: [region],
              fence: { buffer: new WasmMemoryCtor({ initial: 1 }), byteOffset: 0 },
            }),
            /\bfence\b.*\bMemory\b/s,
          ],
          [
            'a fence in a proxy of a SharedArrayBuffer',
            (backing) => ({
              backing,
              regions: [region],
              fence: { buffer: new Proxy(new SharedArrayBuffer(64), {}), byteOffset: 0 },
            }),
            /\bfence\b.*\bSharedArrayBuffer\b/s,
          ],
          [
            'a fence without a buffer',
            (backing) => ({ backing, regions: [region], fence: { byteOffset: 0 } }),
            /\bfence\b.*\bundefined\b/s,
          ],
          [
            'a fence that is a string',
            (backing) => ({ backing, regions: [region], fence: 'x' }),
            /\bfence\b.*"x"/s,
          ],
          [
            'a fence that is null',
            (backing) => ({ backing, regions: [region], fence: null }),
            /\bfence\b.*\bnull\b/s,
          ],
        ] as AdoptCase[])
      : ([
          [
            'a fence, which unshared memory cannot have',
            (backing) => ({
              backing,
              regions: [region],
              fence: { buffer: new SharedArrayBuffer(64), byteOffset: 0 },
            }),
            /\bfence\b.*\ban object\b/s,
          ],
          [
            'a fence in the unshared backing itself',
            (backing) => ({
              backing,
              regions: [region],
              fence: { buffer: backing, byteOffset: 0 },
            }),
            /\bfence\b/,
          ],
        ] as AdoptCase[])),
    [
      'a dirty log with no clients',
      (backing) => ({ backing, regions: [region], dirtyLog: { clients: [] } }),
      /dirtyLog\.clients\b.*\ban array of length 0\b/s,
    ],
    [
      'a dirty log page size below 64',
      (backing) => ({ backing, regions: [region], dirtyLog: { clients: ['code'], pageSize: 32 } }),
      /dirtyLog\.pageSize\b.*\b32\b/s,
    ],
  ]);
});

/** A backing that is not one: `[label, value, how the message shows it]`. */
const badBackings: [string, () => unknown, string][] = [
  ['a number', () => 4096, '4096'],
  ['a string', () => 'ram', '"ram"'],
  ['null', () => null, 'null'],
  ['a boolean', () => true, 'true'],
  ['a plain object', () => ({}), 'an object'],
  ['an array', () => [], 'an array of length 0'],
  ['a function', () => () => 0, 'a function'],
  ['a Uint8Array (a view, not a buffer)', () => new Uint8Array(256), 'a Uint8Array of 256 bytes'],
  [
    'a Uint8Array of a SharedArrayBuffer',
    () => new Uint8Array(new SharedArrayBuffer(256)),
    'a Uint8Array of 256 bytes',
  ],
  ['a DataView', () => new DataView(new ArrayBuffer(256)), 'a DataView of 256 bytes'],
  [
    'an object made with the SharedArrayBuffer prototype',
    () => Object.create(SharedArrayBuffer.prototype) as unknown,
    'SharedArrayBuffer',
  ],
  [
    'an object made with the ArrayBuffer prototype',
    () => Object.create(ArrayBuffer.prototype) as unknown,
    'ArrayBuffer',
  ],
  [
    'an object made with the WebAssembly.Memory prototype',
    () => Object.create(WasmMemoryCtor.prototype) as unknown,
    'Memory',
  ],
  [
    'a proxy of a SharedArrayBuffer',
    () => new Proxy(new SharedArrayBuffer(256), {}),
    'SharedArrayBuffer',
  ],
  ['a proxy of an ArrayBuffer', () => new Proxy(new ArrayBuffer(256), {}), 'ArrayBuffer'],
  [
    'a proxy of a WebAssembly.Memory',
    () => new Proxy(new WasmMemoryCtor({ initial: 1 }), {}),
    'Memory',
  ],
  [
    'an object with a buffer and a grow method (a fake WebAssembly.Memory)',
    () => ({ buffer: new SharedArrayBuffer(256), grow: () => 0 }),
    'an object',
  ],
  [
    'an instance of a class that poses as WebAssembly.Memory',
    () => {
      class FakeMemory {
        readonly buffer = new SharedArrayBuffer(256);
        grow(): number {
          return 0;
        }
      }
      return new FakeMemory();
    },
    'a FakeMemory',
  ],
];

const backingOptions: Case[] = [
  ...badBackings.map(([label, make, shown]) => ({
    name: `new GuestMemory rejects ${label} as the backing`,
    code: 'ERR_DMA_INVALID_ARGUMENT' as const,
    mentions: [shown],
    pattern: /\bbacking\b/,
    kinds: ONCE,
    call: () =>
      new GuestMemory({
        backing: make(),
        regions: [{ base: 0, size: 64, offset: 0 }],
      } as unknown as GuestMemoryOptions),
  })),
  {
    name: 'new GuestMemory rejects a detached ArrayBuffer as the backing (no region fits in 0 bytes)',
    code: 'ERR_DMA_INVALID_ARGUMENT',
    mentions: [],
    pattern: /regions\[0\]/,
    kinds: ONCE,
    call: () => {
      const backing = new ArrayBuffer(256);
      structuredClone(backing, { transfer: [backing] });
      return new GuestMemory({ backing, regions: [{ base: 0, size: 64, offset: 0 }] });
    },
  },
  ...(
    [
      [
        'an offset without a backing',
        { regions: [{ base: 0, size: 64, offset: 16 }] },
        /regions\[0\]\.offset\b.*\b16\b/s,
      ],
      [
        'an offset 0 without a backing',
        {
          regions: [
            { base: 0, size: 64 },
            { base: 128, size: 8, offset: 0 },
          ],
          shared: false,
        },
        /regions\[1\]\.offset\b.*\b0\b/s,
      ],
      [
        'a fence with shared: false',
        { size: 64, shared: false, fence: { buffer: new SharedArrayBuffer(64), byteOffset: 0 } },
        /\bfence\b.*\ban object\b/s,
      ],
      [
        'a fence word that is not 4-aligned',
        { size: 64, fence: { buffer: new SharedArrayBuffer(64), byteOffset: 6 } },
        /\bfence\b.*\b6\b/s,
      ],
      [
        'a fence word past the end of its buffer',
        { size: 64, fence: { buffer: new SharedArrayBuffer(64), byteOffset: 64 } },
        /\bfence\b.*\b64\b/s,
      ],
      ['a dirty log that is a string', { size: 4096, dirtyLog: 'yes' }, /\bdirtyLog\b.*"yes"/s],
      ['a dirty log that is null', { size: 4096, dirtyLog: null }, /\bdirtyLog\b.*\bnull\b/s],
      [
        'a dirty log without clients',
        { size: 4096, dirtyLog: {} },
        /dirtyLog\.clients\b.*\bundefined\b/s,
      ],
      [
        'dirty log clients that are a string',
        { size: 4096, dirtyLog: { clients: 'code' } },
        /dirtyLog\.clients\b.*"code"/s,
      ],
      [
        'no dirty log clients',
        { size: 4096, dirtyLog: { clients: [] } },
        /dirtyLog\.clients\b.*\ban array of length 0\b/s,
      ],
      [
        '33 dirty log clients',
        {
          size: 4096,
          dirtyLog: { clients: Array.from({ length: 33 }, (_, index) => `c${index}`) },
        },
        /dirtyLog\.clients\b.*\ban array of length 33\b/s,
      ],
      [
        'a dirty log client named twice',
        { size: 4096, dirtyLog: { clients: ['code', 'display', 'code'] } },
        /dirtyLog\.clients\[2\].*"code"/s,
      ],
      [
        'an empty dirty log client name',
        { size: 4096, dirtyLog: { clients: ['code', ''] } },
        /dirtyLog\.clients\[1\].*""/s,
      ],
      [
        'a dirty log client that is not a string',
        { size: 4096, dirtyLog: { clients: [7] } },
        /dirtyLog\.clients\[0\].*\b7\b/s,
      ],
      ...(
        [
          [32, '32'],
          [100, '100'],
          [2 ** 31, '2147483648'],
          [0, '0'],
          [-4096, '-4096'],
          [4096.5, '4096\\.5'],
          ['4096', '"4096"'],
          [4096n, '4096n'],
          [NaN, 'NaN'],
          [null, 'null'],
        ] as [unknown, string][]
      ).map(([pageSize, shown]) => [
        `a dirty log page size of ${shown.replace('\\', '')}`,
        { size: 4096, dirtyLog: { clients: ['code'], pageSize } },
        new RegExp(`dirtyLog\\.pageSize\\b.*${shown}`, 's'),
      ]),
    ] as [string, unknown, RegExp][]
  ).map(([label, options, pattern]) => ({
    name: `new GuestMemory rejects ${label}`,
    code: 'ERR_DMA_INVALID_ARGUMENT' as const,
    mentions: [],
    pattern,
    kinds: ONCE,
    call: () => new GuestMemory(options as GuestMemoryOptions),
  })),
];

/** A handle of the env's memory with one field replaced. */
function handleWith(env: Env, change: Record<string, unknown>): GuestMemoryHandle {
  return { ...env.memory.handle(), ...change };
}

/** The byte length of a buffer or of a `WebAssembly.Memory`'s buffer. */
function lengthOf(buffer: unknown): number {
  return isWasmMemory(buffer)
    ? buffer.buffer.byteLength
    : (buffer as ArrayBuffer | SharedArrayBuffer).byteLength;
}

/** The env memory's dirty log as its handle carries it. */
function dirtyOf(env: Env): NonNullable<GuestMemoryHandle['dirtyLog']> {
  const dirty = env.memory.handle().dirtyLog;
  if (dirty === undefined) throw new Error('the env memory has a dirty log');
  return dirty;
}

/** `[label, handle, mentions, pattern]` */
type HandleCase = [string, (env: Env) => unknown, string[], (RegExp | ((env: Env) => RegExp))?];

/** A pattern for a message that names `what` (a RegExp source) and then `value`. */
function naming(what: string, value: (env: Env) => number): (env: Env) => RegExp {
  return (env) => new RegExp(`${what}\\D.*\\b${value(env)}\\b`, 's');
}

/** The byte length of the env memory's backing, and of its fence's buffer. */
const backingLength = (env: Env): number => lengthOf(env.memory.backing);
const fenceLength = (env: Env): number => lengthOf(env.memory.handle().fence.buffer);

const handles: Case[] = [
  ...(
    [
      ['null', () => null, ['handle', 'null']],
      ['undefined', () => undefined, ['handle', 'undefined']],
      ['a string', () => 'dma-attrs:guest-memory', ['handle', '"dma-attrs:guest-memory"']],
      ['an empty object', () => ({}), ['handle', 'an object']],
      ['the memory itself', (env: Env) => env.memory, ['handle', 'GuestMemory']],
      ['a handle of the wrong kind', (env: Env) => handleWith(env, { kind: 'other' }), ['handle']],
      [
        'a handle with an unknown policy',
        (env: Env) => handleWith(env, { barrierPolicy: 'auto' }),
        ['handle'],
      ],
      [
        'a handle with regions that are not an array',
        (env: Env) => handleWith(env, { regions: 5 }),
        ['regions', '5'],
      ],
      ['a handle with no regions', (env: Env) => handleWith(env, { regions: [] }), ['regions']],
      [
        'a handle with a bad region',
        (env: Env) => handleWith(env, { regions: [{ base: -1, size: 8, offset: 0 }] }),
        ['regions[0].base', '-1'],
      ],
      // The backing: shared memory, genuinely.
      [
        'a handle without a backing',
        (env: Env) => handleWith(env, { backing: undefined }),
        [],
        /\bbacking\b.*\bundefined\b/s,
      ],
      [
        'a handle whose backing is a proxy of the real one',
        (env: Env) =>
          handleWith(env, { backing: new Proxy(env.memory.backing as SharedArrayBuffer, {}) }),
        [],
        /\bbacking\b.*\b(SharedArrayBuffer|Memory)\b/s,
      ],
      [
        'a handle whose backing only looks like a WebAssembly.Memory',
        (env: Env) => handleWith(env, { backing: { buffer: env.memory.buffer, grow: () => 0 } }),
        [],
        /\bbacking\b.*\ban object\b/s,
      ],
      // The regions: inside the backing, each with an offset congruent to its base.
      [
        'a handle whose region has no offset',
        (env: Env) => handleWith(env, { regions: [{ base: 0, size: 8 }] }),
        [],
        /regions\[0\]\.offset\b.*\bundefined\b/s,
      ],
      [
        'a handle whose region has a misaligned offset',
        (env: Env) => handleWith(env, { regions: [{ base: 0, size: 8, offset: 4 }] }),
        [],
        /regions\[0\]\.offset\b.*\b4\b/s,
      ],
      [
        'a handle whose region runs past the end of its backing',
        (env: Env) => {
          const length = lengthOf(env.memory.backing);
          return handleWith(env, { regions: [{ base: 0, size: 64, offset: length - 32 }] });
        },
        [],
        naming('regions\\[0\\]', (env) => backingLength(env) - 32),
      ],
      [
        'a handle whose second region is larger than its backing',
        (env: Env) => {
          const length = lengthOf(env.memory.backing);
          return handleWith(env, {
            regions: [
              { base: 0, size: 8, offset: 0 },
              { base: 4096, size: length, offset: 8 },
            ],
          });
        },
        [],
        naming('regions\\[1\\]', backingLength),
      ],
      // The fence: a 4-aligned word inside a shared buffer.
      [
        'a handle whose fence is a bare SharedArrayBuffer (the old shape)',
        (env: Env) => handleWith(env, { fence: new SharedArrayBuffer(64) }),
        [],
        /\bfence\b/,
      ],
      [
        'a handle whose fence word is past the end of its buffer',
        (env: Env) => {
          const { fence } = env.memory.handle();
          return handleWith(env, {
            fence: { buffer: fence.buffer, byteOffset: lengthOf(fence.buffer) },
          });
        },
        [],
        naming('fence', fenceLength),
      ],
      [
        'a handle whose fence word straddles the end of its buffer',
        (env: Env) => {
          const { fence } = env.memory.handle();
          return handleWith(env, {
            fence: { buffer: fence.buffer, byteOffset: lengthOf(fence.buffer) - 2 },
          });
        },
        [],
        naming('fence', (env) => fenceLength(env) - 2),
      ],
      [
        'a handle whose fence word is not 4-aligned',
        (env: Env) => {
          const { fence } = env.memory.handle();
          return handleWith(env, {
            fence: { buffer: fence.buffer, byteOffset: fence.byteOffset + 1 },
          });
        },
        [],
        naming('fence', (env) => env.memory.handle().fence.byteOffset + 1),
      ],
      [
        'a handle whose fence is in an ArrayBuffer',
        (env: Env) => handleWith(env, { fence: { buffer: new ArrayBuffer(64), byteOffset: 0 } }),
        [],
        /\bfence\b.*\ban ArrayBuffer\b/s,
      ],
      [
        'a handle whose fence is in an unshared WebAssembly.Memory',
        (env: Env) =>
          handleWith(env, {
            fence: { buffer: new WasmMemoryCtor({ initial: 1 }), byteOffset: 0 },
          }),
        [],
        /\bfence\b.*\bMemory\b/s,
      ],
      // The dirty log: a shared bitmap as large as the log needs.
      [
        'a handle whose dirty bitmap is an ArrayBuffer',
        (env: Env) => {
          const dirty = dirtyOf(env);
          return handleWith(env, {
            dirtyLog: { ...dirty, bitmap: new ArrayBuffer(dirty.bitmap.byteLength) },
          });
        },
        [],
        /dirtyLog\.bitmap\b.*\ban ArrayBuffer\b/s,
      ],
      [
        'a handle whose dirty bitmap is half what the log needs',
        (env: Env) => {
          const dirty = dirtyOf(env);
          const half = Math.floor(dirty.bitmap.byteLength / 8) * 4;
          return handleWith(env, {
            dirtyLog: { ...dirty, bitmap: new SharedArrayBuffer(half) },
          });
        },
        [],
        /dirtyLog\.bitmap\b.*\ba SharedArrayBuffer\b/s,
      ],
      [
        'a handle whose dirty bitmap is empty',
        (env: Env) =>
          handleWith(env, { dirtyLog: { ...dirtyOf(env), bitmap: new SharedArrayBuffer(0) } }),
        [],
        /dirtyLog\.bitmap\b.*\ba SharedArrayBuffer\b/s,
      ],
      [
        'a handle whose dirty log has no bitmap',
        (env: Env) => handleWith(env, { dirtyLog: { ...dirtyOf(env), bitmap: undefined } }),
        [],
        /dirtyLog\.bitmap\b.*\bundefined\b/s,
      ],
      [
        'a handle whose dirty log has one client more than its bitmap holds',
        (env: Env) => {
          const dirty = dirtyOf(env);
          return handleWith(env, {
            dirtyLog: { ...dirty, clients: [...dirty.clients, 'display'] },
          });
        },
        [],
        /dirtyLog\.bitmap\b/,
      ],
      [
        'a handle whose dirty log has no clients',
        (env: Env) => handleWith(env, { dirtyLog: { ...dirtyOf(env), clients: [] } }),
        [],
        /dirtyLog\.clients\b.*\ban array of length 0\b/s,
      ],
      [
        'a handle whose dirty log page size is not a power of two',
        (env: Env) => handleWith(env, { dirtyLog: { ...dirtyOf(env), pageSize: 100 } }),
        [],
        /dirtyLog\.pageSize\b.*\b100\b/s,
      ],
      [
        'a handle whose dirty log is a string',
        (env: Env) => handleWith(env, { dirtyLog: 'yes' }),
        [],
        /dirtyLog\b.*"yes"/s,
      ],
    ] as HandleCase[]
  ).map(([label, handle, mentions, pattern]) => ({
    name: `GuestMemory.fromHandle rejects ${label}`,
    code: 'ERR_DMA_INVALID_ARGUMENT' as const,
    mentions,
    ...(pattern === undefined ? {} : { pattern }),
    kinds: SHARED_KINDS,
    call: (env: Env) => GuestMemory.fromHandle(handle(env) as GuestMemoryHandle),
  })),
  {
    name: 'memory.handle() refuses memory that is not shared',
    code: 'ERR_DMA_INVALID_ARGUMENT',
    mentions: ['shared'],
    kinds: ONCE,
    call: () => new GuestMemory({ size: 64, shared: false }).handle(),
  },
  {
    name: 'memory.handle() refuses memory adopted from an unshared backing',
    code: 'ERR_DMA_INVALID_ARGUMENT',
    mentions: ['shared'],
    kinds: ADOPTED_KINDS.filter((kind) => !isSharedBacking(kind)),
    call: (env: Env) => env.memory.handle(),
  },
];

/**
 * Refusals whose message once named neither the option nor the value (SPEC §7: messages name
 * the offending value): `size` given with a backing, a handle whose backing is not shared,
 * and a handle without a fence.
 */
const namedRefusals: Case[] = [
  ...adoptCases('SharedArrayBuffer', [
    ['size instead of regions', (backing) => ({ backing, size: 64 }), /\bsize\b.*\b64\b/s],
  ]),
  ...(
    [
      [
        'a handle whose backing is an ArrayBuffer',
        (env: Env) => handleWith(env, { backing: new ArrayBuffer(lengthOf(env.memory.backing)) }),
        [],
        /\bbacking\b.*\ban ArrayBuffer\b/s,
      ],
      [
        'a handle whose backing is an unshared WebAssembly.Memory',
        (env: Env) => handleWith(env, { backing: new WasmMemoryCtor({ initial: 1 }) }),
        [],
        /\bbacking\b.*\bMemory\b/s,
      ],
      [
        'a handle without a fence',
        (env: Env) => handleWith(env, { fence: undefined }),
        [],
        /\bfence\b.*\bundefined\b/s,
      ],
    ] as HandleCase[]
  ).map(([label, handle, mentions, pattern]) => ({
    name: `GuestMemory.fromHandle rejects ${label}`,
    code: 'ERR_DMA_INVALID_ARGUMENT' as const,
    mentions,
    ...(pattern === undefined ? {} : { pattern }),
    kinds: SHARED_KINDS,
    call: (env: Env) => GuestMemory.fromHandle(handle(env) as GuestMemoryHandle),
  })),
];

const barriers: Case[] = (
  [
    ['an unknown strength', 'strong', '"strong"'],
    ['an upper-case strength', 'FULL', '"FULL"'],
    ['the empty string', '', '""'],
    ['undefined', undefined, 'undefined'],
    ['null', null, 'null'],
    ['a number', 3, '3'],
    ['an object', {}, 'an object'],
  ] as [string, unknown, string][]
).flatMap(([label, strength, shown]) => [
  {
    name: `ctx.barrier rejects ${label}`,
    code: 'ERR_DMA_INVALID_ARGUMENT' as const,
    mentions: ['strength', shown],
    call: ({ ctx }: Env) => {
      ctx.barrier(strength as never);
    },
  },
  {
    name: `memory.barrier rejects ${label}`,
    code: 'ERR_DMA_INVALID_ARGUMENT' as const,
    mentions: ['strength', shown],
    call: ({ memory }: Env) => {
      memory.barrier(strength as never);
    },
  },
]);

const unmaps: Case[] = [
  {
    name: 'ctx.unmap rejects a view it never mapped',
    code: 'ERR_DMA_INVALID_ARGUMENT',
    mentions: ['view', 'Uint8Array'],
    alien: () => new Uint8Array(16),
    call: ({ ctx, alien }) => {
      ctx.unmap(alien as Uint8Array);
    },
  },
  {
    name: 'ctx.unmap rejects a subarray of a mapped view',
    code: 'ERR_DMA_INVALID_ARGUMENT',
    mentions: ['view', 'a Uint8Array of 4 bytes'],
    call: ({ ctx, view }) => {
      ctx.unmap(view.subarray(0, 4));
    },
  },
  {
    name: 'ctx.unmap rejects a view mapped by another context',
    code: 'ERR_DMA_INVALID_ARGUMENT',
    mentions: ['view'],
    call: ({ ctx, memory }) => {
      ctx.unmap(new DMAContext(memory).map(32, 8, READ));
    },
  },
  {
    name: 'ctx.unmap rejects a view it already unmapped',
    code: 'ERR_DMA_INVALID_ARGUMENT',
    mentions: ['view', 'not yet unmapped'],
    consumesView: true,
    prepare: ({ ctx, view }) => {
      ctx.unmap(view);
    },
    call: ({ ctx, view }) => {
      ctx.unmap(view);
    },
  },
  {
    name: "ctx.unmap rejects an accessed length beyond the view's length",
    code: 'ERR_DMA_INVALID_ARGUMENT',
    mentions: ['accessedLength', '17'],
    call: ({ ctx, view }) => {
      ctx.unmap(view, BUF_LENGTH + 1);
    },
  },
];

const matrix: [string, Case[]][] = [
  ['wrong types and unsafe numbers', wrongNumbers],
  ['ranges that end past 2^53', unsafeRanges],
  ['invalid attributes', wrongAttrs],
  ['conflicting directions', conflicting],
  ['buffers that are not Uint8Array', wrongBuffers],
  ['values that do not fit', wrongValues],
  ['holes and the end of RAM', faults],
  ['constructors', constructors],
  ['adopted memory: offsets, fence and dirty log on every kind of backing', adoptedOptions],
  ['the backing option, and options that need one', backingOptions],
  ['refusals that name the bad option and its value', namedRefusals],
  ['handles', handles],
  ['barrier strengths', barriers],
  ['unmap', unmaps],
];

// ---------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------

function caught(action: () => unknown): unknown {
  try {
    action();
  } catch (error) {
    return error;
  }
  return undefined;
}

let seed = 1;

/** The first index where two byte arrays differ outside `skip` ([start, end)), as text. */
function firstDifference(
  actual: Uint8Array,
  expected: Uint8Array,
  skip: readonly [number, number],
): string | undefined {
  if (actual.length !== expected.length) return `length ${actual.length}, was ${expected.length}`;
  if (sameOutside(actual, expected, skip)) return undefined;
  for (let index = 0; index < actual.length; index++) {
    if (actual[index] !== expected[index] && (index < skip[0] || index >= skip[1])) {
      return `backing byte ${index} is ${actual[index]}, expected ${expected[index]}`;
    }
  }
  return undefined;
}

/** Runs one case on memory of one kind; `where` names the kind in every failure. */
function runCase(entry: Case, kind: MemoryKind): void {
  // A case that runs once makes its own memory: the env's is only checked to be untouched.
  const where = entry.kinds === ONCE ? 'the call' : `on ${kindLabel(kind)}`;
  const env = makeEnv(seed++, entry.alien, kind);
  entry.prepare?.(env);
  env.events.length = 0;
  const logs = DIRTY_LOG.clients.map((client) => env.memory.dirtyLog(client));
  for (const log of logs) log.clear();
  // The whole backing: every region, and every canary byte around them.
  const memoryBefore = env.made.bytes().slice();
  const bufBefore = env.buf.slice();
  const alienBefore = snapshot(env.alien);
  // Barriers may write the fence word (the spec does not say what they add to it).
  const fence = env.made.fence;
  const skip =
    fence === undefined ? ([0, 0] as const) : ([fence.byteOffset, fence.byteOffset + 4] as const);

  const error = caught(() => entry.call(env));

  expect(error, where).toBeInstanceOf(DMAError);
  const dmaError = error as DMAError;
  expect(dmaError.code, where).toBe(entry.code);
  for (const text of entry.mentions) expect(dmaError.message, where).toContain(text);
  if (entry.pattern !== undefined) {
    const pattern = typeof entry.pattern === 'function' ? entry.pattern(env) : entry.pattern;
    expect(dmaError.message, where).toMatch(pattern);
  }
  if (entry.fault === undefined) {
    expect(dmaError, where).not.toBeInstanceOf(DMAFault);
  } else {
    expect(dmaError, where).toBeInstanceOf(DMAFault);
    const carried =
      dmaError instanceof DMAFault
        ? { addr: dmaError.addr, length: dmaError.length, attrs: dmaError.attrs }
        : undefined;
    expect(carried, where).toEqual(entry.fault);
  }
  expect(firstDifference(env.made.bytes(), memoryBefore, skip), where).toBeUndefined();
  expect(env.buf, where).toEqual(bufBefore);
  expect(snapshot(env.alien), where).toEqual(alienBefore);
  expect(env.events, where).toEqual([]);
  // A failed call marks nothing, for any client.
  expect(
    logs.map((log) => log.collect()),
    where,
  ).toEqual([[], []]);

  // The failure left nothing behind: the mapping survives and the next accesses work.
  const { ctx } = env;
  if (entry.consumesView !== true) ctx.unmap(env.view);
  for (const log of logs) log.clear();
  ctx.write(8, Uint8Array.of(1, 2, 3, 4));
  const back = new Uint8Array(4);
  ctx.read(8, back);
  expect(back, where).toEqual(Uint8Array.of(1, 2, 3, 4));
  ctx.writeU32BE(132, 0xdeadbeef);
  expect(ctx.readU32BE(132), where).toBe(0xdeadbeef);
  const expected = memoryBefore.slice();
  expected.set([1, 2, 3, 4], env.made.offsetOf(8));
  expected.set([0xde, 0xad, 0xbe, 0xef], env.made.offsetOf(132));
  expect(firstDifference(env.made.bytes(), expected, skip), where).toBeUndefined();
  expect(
    logs.map((log) => log.collect()),
    where,
  ).toEqual([
    [0, 128],
    [0, 128],
  ]);
}

describe.each(matrix)('bad input: %s', (_group, cases) => {
  it.each(cases.map((entry) => [entry.name, entry] as const))(
    '%s, changing no byte of the backing (regions and canaries) or of the caller’s buffer, on every kind of memory it applies to',
    (_name, entry) => {
      for (const kind of entry.kinds ?? MEMORY_KINDS) runCase(entry, kind);
    },
  );
});

describe('what is not bad input', () => {
  it('accepts a Buffer, which is a Uint8Array, for reads and writes', () => {
    const memory = new GuestMemory({ regions: REGIONS });
    const ctx = new DMAContext(memory);
    ctx.write(130, Buffer.from([9, 8, 7]));
    const out = Buffer.alloc(3);
    ctx.read(130, out);
    expect([...out]).toEqual([9, 8, 7]);
    memory.read(130, out);
    expect([...out]).toEqual([9, 8, 7]);
  });

  it('answers false from valid() for a range across the hole or past the end, without throwing', () => {
    const ctx = new DMAContext(new GuestMemory({ regions: REGIONS }));
    expect(ctx.valid(56, 16, READ)).toBe(false);
    expect(ctx.valid(HOLE, 1, WRITE)).toBe(false);
    expect(ctx.valid(END - 1, 2, BIDIRECTIONAL)).toBe(false);
    expect(ctx.valid(2 ** 40, 8, READ)).toBe(false);
    expect(ctx.valid(0, 64, READ)).toBe(true);
    expect(ctx.valid(HOLE, 0, READ)).toBe(true);
  });

  it('maps a range that runs into the hole as a shorter view, not an error', () => {
    const ctx = new DMAContext(new GuestMemory({ regions: REGIONS }));
    expect(ctx.map(56, 16, READ).length).toBe(8);
    expect(ctx.map(END - 1, 16, WRITE).length).toBe(1);
  });

  it('accepts -0 as address 0 and a zero-length access inside the hole', () => {
    const memory = new GuestMemory({ regions: REGIONS });
    const ctx = new DMAContext(memory);
    ctx.write(-0, Uint8Array.of(5));
    expect(ctx.readU8(0)).toBe(5);
    const before = memory.bytes.slice();
    ctx.write(HOLE, new Uint8Array(0));
    ctx.set(HOLE, 0xff, 0);
    expect(memory.bytes.slice()).toEqual(before);
  });

  it.each(ADOPTED_KINDS.map((kind) => [kindLabel(kind), kind] as const))(
    'accepts on %s: offset 0, a region ending exactly at the end of the backing, regions that share backing bytes, shared left out or agreeing',
    (_label, kind) => {
      const backing = makeBacking(kind, 256);
      const length = lengthOf(backing);
      const shared = isSharedBacking(kind);
      const memory = new GuestMemory({
        backing,
        regions: [
          { base: 0x1000, size: 64, offset: length - 64 },
          { base: 0, size: 32, offset: 0 },
          // An alias: guest 0x2000 shows the same bytes as guest 0x1000.
          { base: 0x2000, size: 64, offset: length - 64 },
        ],
        shared,
      });
      expect(memory.shared).toBe(shared);
      const ctx = new DMAContext(memory);
      ctx.writeU32LE(0x103c, 0x04030201);
      expect(ctx.readU32LE(0x203c)).toBe(0x04030201);
      expect(Array.from(new Uint8Array(memory.buffer, length - 4, 4))).toEqual([1, 2, 3, 4]);
      expect(memory.offsetOf(0, 32)).toBe(0);
      // Left out, sharing follows from the backing; a fence may sit in its last word.
      const again = new GuestMemory({
        backing,
        regions: [{ base: 0, size: 32, offset: 0 }],
        ...(shared
          ? { fence: { buffer: backing as SharedArrayBuffer, byteOffset: length - 4 } }
          : {}),
      });
      expect(again.shared).toBe(shared);
      expect(again.fenceLocation?.byteOffset).toBe(shared ? length - 4 : undefined);
      again.barrier('full');
    },
  );

  it('accepts addresses up to the last safe integer when RAM is there', () => {
    const top = 2 ** 53 - 8;
    const ctx = new DMAContext(new GuestMemory({ regions: [{ base: top, size: 8 }] }));
    ctx.writeU64LE(top, 0x0102030405060708n);
    expect(ctx.readU64LE(top)).toBe(0x0102030405060708n);
    expect(ctx.readU8(2 ** 53 - 1)).toBe(1);
  });
});

describe('the options of adopted memory are read once', () => {
  /** Counts reads by name; every getter answers well on its first read and badly after. */
  function counter(): {
    reads: Map<string, number>;
    object: (name: string, good: Record<string, unknown>, bad: Record<string, unknown>) => object;
    array: (name: string, elements: readonly unknown[], bad: unknown) => unknown[];
  } {
    const reads = new Map<string, number>();
    const count = (name: string): number => {
      const seen = (reads.get(name) ?? 0) + 1;
      reads.set(name, seen);
      return seen;
    };
    return {
      reads,
      object: (name: string, good: Record<string, unknown>, bad: Record<string, unknown>) => {
        const target = {};
        for (const [key, value] of Object.entries(good)) {
          Object.defineProperty(target, key, {
            enumerable: true,
            get: () => (count(`${name}.${key}`) === 1 ? value : bad[key]),
          });
        }
        return target;
      },
      // A proxy of a real array (Array.isArray holds), counting `length` and element reads.
      array: (name: string, elements: readonly unknown[], bad: unknown) =>
        new Proxy([...elements], {
          get: (target, key, receiver) => {
            if (key === 'length') return count(`${name}.length`) === 1 ? target.length : 0;
            if (typeof key === 'string' && /^\d+$/.test(key)) {
              return count(`${name}[${key}]`) === 1 ? target[Number(key)] : bad;
            }
            return Reflect.get(target, key, receiver) as unknown;
          },
        }),
    };
  }

  it.each(ADOPTED_KINDS.map((kind) => [kindLabel(kind), kind] as const))(
    'every option, region field, fence field and dirty log field of memory adopted from %s is read once; a second read that turns bad changes nothing',
    (_label, kind) => {
      const shared = isSharedBacking(kind);
      const layout = ADOPTED_LAYOUTS[kind];
      // The layout the test chose, through makeMemory (so the canary bookkeeping is the same).
      const reference = makeMemory(kind, ADOPTED_REGIONS, { layout });
      const { placed } = reference;
      const backing = reference.backing as Backing;
      const fenceOffset = reference.fence?.byteOffset ?? 0;
      fillNonZero(reference.bytes(), nonZeroBytes(7));
      const before = reference.bytes().slice();
      const { reads, object, array } = counter();
      const regions = array(
        'regions',
        placed.map((region, index) =>
          object(
            `regions[${index}]`,
            { ...region },
            { base: region.base + 8, size: 0, offset: -1 },
          ),
        ),
        { base: 0, size: 0 },
      );
      const fence = shared
        ? object(
            'fence',
            { buffer: backing, byteOffset: fenceOffset },
            { buffer: new ArrayBuffer(8), byteOffset: 2 },
          )
        : undefined;
      const dirtyLog = object(
        'dirtyLog',
        { clients: array('dirtyLog.clients', ['code', 'display'], ''), pageSize: 64 },
        { clients: [], pageSize: 3 },
      );
      const options = object(
        'options',
        {
          backing,
          regions,
          barrierPolicy: 'strict',
          shared,
          dirtyLog,
          ...(fence === undefined ? {} : { fence }),
        },
        {
          backing: new ArrayBuffer(1),
          regions: [],
          barrierPolicy: 'weak',
          shared: !shared,
          dirtyLog: 'x',
          fence: 'x',
        },
      );
      const memory = new GuestMemory(options);
      const once = [
        'options.backing',
        'options.regions',
        'options.barrierPolicy',
        'options.shared',
        'options.dirtyLog',
        ...(fence === undefined ? [] : ['options.fence', 'fence.buffer', 'fence.byteOffset']),
        'regions.length',
        ...placed.flatMap((_, index) => [
          `regions[${index}]`,
          `regions[${index}].base`,
          `regions[${index}].size`,
          `regions[${index}].offset`,
        ]),
        'dirtyLog.clients',
        'dirtyLog.pageSize',
        'dirtyLog.clients.length',
        'dirtyLog.clients[0]',
        'dirtyLog.clients[1]',
      ];
      expect(Object.fromEntries(reads)).toEqual(Object.fromEntries(once.map((name) => [name, 1])));

      // The memory is what was validated, and works where the test put it.
      expect(memory.backing).toBe(backing);
      expect(memory.regions.map(({ base, size, offset }) => ({ base, size, offset }))).toEqual(
        placed,
      );
      expect([memory.shared, memory.barrierPolicy]).toEqual([shared, 'strict']);
      expect(memory.fenceLocation).toEqual(
        fence === undefined ? undefined : { buffer: backing, byteOffset: fenceOffset },
      );
      expect(memory.dirtyLog('display').pageSize).toBe(64);
      const ctx = new DMAContext(memory);
      ctx.write(0x1e, Uint8Array.of(1, 2, 3, 4));
      const expected = before.slice();
      expected.set([1, 2], reference.offsetOf(0x1e));
      expected.set([3, 4], reference.offsetOf(0x20));
      const skip =
        reference.fence === undefined
          ? ([0, 0] as const)
          : ([fenceOffset, fenceOffset + 4] as const);
      expect(firstDifference(reference.bytes(), expected, skip)).toBeUndefined();
      expect(memory.dirtyLog('code').collect()).toEqual([0]);
    },
  );

  it.each(SHARED_KINDS.map((kind) => [kindLabel(kind), kind] as const))(
    'GuestMemory.fromHandle reads the dirty log of a handle of %s and each of its fields once',
    (_label, kind) => {
      const env = makeEnv(9, undefined, kind);
      const handle = env.memory.handle();
      const dirty = dirtyOf(env);
      const { reads, object, array } = counter();
      const dirtyLog = object(
        'dirtyLog',
        {
          clients: array('dirtyLog.clients', dirty.clients, ''),
          pageSize: dirty.pageSize,
          bitmap: dirty.bitmap,
        },
        { clients: [], pageSize: 3, bitmap: new ArrayBuffer(4) },
      );
      const adopted = GuestMemory.fromHandle({
        ...handle,
        dirtyLog: dirtyLog as GuestMemoryHandle['dirtyLog'] & object,
      });
      expect(Object.fromEntries(reads)).toEqual({
        'dirtyLog.clients': 1,
        'dirtyLog.pageSize': 1,
        'dirtyLog.bitmap': 1,
        'dirtyLog.clients.length': 1,
        'dirtyLog.clients[0]': 1,
        'dirtyLog.clients[1]': 1,
      });
      // The same bitmap: a write through the adopted memory is dirty in the original's log.
      for (const client of DIRTY_LOG.clients) env.memory.dirtyLog(client).clear();
      new DMAContext(adopted).writeU32LE(132, 7);
      expect(env.memory.dirtyLog('migration').collect()).toEqual([128]);
      expect(adopted.dirtyLog('migration').collect()).toEqual([]);
    },
  );
});
