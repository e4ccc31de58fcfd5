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

const { READ, WRITE, BIDIRECTIONAL, RELAXED } = DMAAttributes;

/** Two RAM regions with a hole [64, 128) between them; RAM ends at 192. */
const REGIONS = [
  { base: 0, size: 64 },
  { base: 128, size: 64 },
];
const HOLE = 64;
const END = 192;
const BUF_LENGTH = 16;

/** What a case works on: a traced context on freshly randomised memory. */
interface Env {
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

function fillNonZero(target: unknown, next: () => number): void {
  if (Array.isArray(target)) {
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
  if (Array.isArray(target)) return [...(target as unknown[])];
  if (ArrayBuffer.isView(target)) {
    return Array.from(new Uint8Array(target.buffer, target.byteOffset, target.byteLength));
  }
  if (target instanceof ArrayBuffer || target instanceof SharedArrayBuffer) {
    return Array.from(new Uint8Array(target));
  }
  return target;
}

function makeEnv(seed: number, alien?: () => unknown): Env {
  const next = nonZeroBytes(seed);
  const events: DMATraceEvent[] = [];
  const memory = new GuestMemory({ regions: REGIONS, barrierPolicy: 'strict' });
  const ctx = new DMAContext(memory, {
    trace: (event) => {
      events.push(event);
    },
  });
  const view = ctx.map(0, BUF_LENGTH, BIDIRECTIONAL);
  fillNonZero(memory.bytes, next);
  const buf = new Uint8Array(BUF_LENGTH);
  fillNonZero(buf, next);
  const made = alien?.();
  fillNonZero(made, next);
  events.length = 0;
  return { memory, ctx, buf, view, alien: made, events };
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

/** A handle of the env's memory with one field replaced. */
function handleWith(env: Env, change: Record<string, unknown>): GuestMemoryHandle {
  return { ...env.memory.handle(), ...change };
}

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
        'a handle with an ArrayBuffer',
        (env: Env) => handleWith(env, { buffer: new ArrayBuffer(192) }),
        ['handle'],
      ],
      ['a handle without a fence', (env: Env) => handleWith(env, { fence: undefined }), ['handle']],
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
        (env: Env) => handleWith(env, { regions: [{ base: -1, size: 8 }] }),
        ['regions[0].base', '-1'],
      ],
      [
        'a handle whose regions need more than its buffer',
        (env: Env) => handleWith(env, { regions: [{ base: 0, size: 4096 }] }),
        ['handle', 'size matches'],
      ],
      [
        'a handle whose regions need less than its buffer',
        (env: Env) => handleWith(env, { regions: [{ base: 0, size: 64 }] }),
        ['handle', 'size matches'],
      ],
    ] as [string, (env: Env) => unknown, string[]][]
  ).map(([label, handle, mentions]) => ({
    name: `GuestMemory.fromHandle rejects ${label}`,
    code: 'ERR_DMA_INVALID_ARGUMENT' as const,
    mentions,
    call: (env: Env) => GuestMemory.fromHandle(handle(env) as GuestMemoryHandle),
  })),
  {
    name: 'memory.handle() refuses memory that is not shared',
    code: 'ERR_DMA_INVALID_ARGUMENT',
    mentions: ['shared'],
    call: () => new GuestMemory({ size: 64, shared: false }).handle(),
  },
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

describe.each(matrix)('bad input: %s', (_group, cases) => {
  it.each(cases.map((entry) => [entry.name, entry] as const))(
    '%s, changing no byte of memory or of the caller’s buffer',
    (_name, entry) => {
      const env = makeEnv(seed++, entry.alien);
      entry.prepare?.(env);
      env.events.length = 0;
      const memoryBefore = env.memory.bytes.slice();
      const bufBefore = env.buf.slice();
      const alienBefore = snapshot(env.alien);

      const error = caught(() => entry.call(env));

      expect(error).toBeInstanceOf(DMAError);
      const dmaError = error as DMAError;
      expect(dmaError.code).toBe(entry.code);
      for (const text of entry.mentions) expect(dmaError.message).toContain(text);
      if (entry.fault === undefined) {
        expect(dmaError).not.toBeInstanceOf(DMAFault);
      } else {
        expect(dmaError).toBeInstanceOf(DMAFault);
        const carried =
          dmaError instanceof DMAFault
            ? { addr: dmaError.addr, length: dmaError.length, attrs: dmaError.attrs }
            : undefined;
        expect(carried).toEqual(entry.fault);
      }
      expect(env.memory.bytes.slice()).toEqual(memoryBefore);
      expect(env.buf).toEqual(bufBefore);
      expect(snapshot(env.alien)).toEqual(alienBefore);
      expect(env.events).toEqual([]);

      // The failure left nothing behind: the mapping survives and the next accesses work.
      const { ctx, memory } = env;
      if (entry.consumesView !== true) ctx.unmap(env.view);
      ctx.write(8, Uint8Array.of(1, 2, 3, 4));
      const back = new Uint8Array(4);
      ctx.read(8, back);
      expect(back).toEqual(Uint8Array.of(1, 2, 3, 4));
      ctx.writeU32BE(132, 0xdeadbeef);
      expect(ctx.readU32BE(132)).toBe(0xdeadbeef);
      expect(memory.bytes.slice()).toEqual(
        (() => {
          const expected = memoryBefore.slice();
          expected.set([1, 2, 3, 4], 8);
          expected.set([0xde, 0xad, 0xbe, 0xef], 64 + 4);
          return expected;
        })(),
      );
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

  it('accepts addresses up to the last safe integer when RAM is there', () => {
    const top = 2 ** 53 - 8;
    const ctx = new DMAContext(new GuestMemory({ regions: [{ base: top, size: 8 }] }));
    ctx.writeU64LE(top, 0x0102030405060708n);
    expect(ctx.readU64LE(top)).toBe(0x0102030405060708n);
    expect(ctx.readU8(2 ** 53 - 1)).toBe(1);
  });
});
