/**
 * A read into the buffer the context read into last time is copied word by word
 * (`DMAContext.#readWords`): the same bytes as the ordinary copy, whatever happened to the
 * buffer in between, with and without an IOMMU.
 */
import { describe, expect, it } from 'vitest';
import { DMAAttributes, DMAContext, GuestMemory, IommuDomain } from '../src/index.js';

const { RELAXED, BIDIRECTIONAL } = DMAAttributes;
// ES2024 resizable buffers, in Node 20 but not in this project's ES2022 lib types.
const Resizable = ArrayBuffer as unknown as new (
  length: number,
  options: { maxByteLength: number },
) => ArrayBuffer & { resize(length: number): void };
const SIZE = 1 << 16;
const IOVA = 0x100000;

/** Fills `length` bytes of guest memory at `addr` with a pattern that depends on `seed`. */
function fill(memory: GuestMemory, addr: number, length: number, seed: number): number[] {
  const bytes = Array.from({ length }, (_, index) => (index * 7 + seed) & 0xff);
  memory.write(addr, Uint8Array.from(bytes));
  return bytes;
}

/** The real bytes of a buffer, read past an own `length` it was given. */
function realBytes(view: Uint8Array): number[] {
  return [...new Uint8Array(view.buffer, view.byteOffset, view.byteLength)];
}

function contexts(): [string, GuestMemory, DMAContext, number][] {
  const memory = new GuestMemory({ size: SIZE });
  const domain = new IommuDomain();
  domain.map(IOVA, 0, SIZE, BIDIRECTIONAL);
  return [
    ['direct', memory, new DMAContext(memory), 0],
    ['through an IOMMU', memory, new DMAContext(memory, { iommu: domain }), IOVA],
  ];
}

describe.each(contexts())('a read into the same buffer again (%s)', (_, memory, ctx, base) => {
  it.each([4, 6, 8, 12, 16, 20, 64, 128, 192, 196, 256])(
    'copies %i bytes right on every read',
    (length) => {
      const buf = new Uint8Array(length);
      for (let round = 0; round < 4; round++) {
        const addr = 0x1000 + round * 4;
        const bytes = fill(memory, addr, length, round);
        ctx.read(base + addr, buf, RELAXED);
        expect([...buf]).toEqual(bytes);
      }
    },
  );

  it('reads the real length of a buffer used again, whatever `length` it claims since', () => {
    const buf = new Uint8Array(16);
    fill(memory, 0x1800, 16, 1);
    ctx.read(base + 0x1800, buf, RELAXED);
    ctx.read(base + 0x1800, buf, RELAXED);
    Object.defineProperty(buf, 'length', { value: 8 });
    const bytes = fill(memory, 0x1800, 16, 2);
    ctx.read(base + 0x1800, buf, RELAXED);
    expect(realBytes(buf)).toEqual(bytes);
  });

  it('copies right at an address that is not word-aligned, and into an unaligned buffer', () => {
    const backing = new ArrayBuffer(80);
    const unaligned = new Uint8Array(backing, 1, 64);
    for (let round = 0; round < 3; round++) {
      const bytes = fill(memory, 0x2001 + round, 64, round + 9);
      ctx.read(base + 0x2001 + round, unaligned, RELAXED);
      expect([...unaligned]).toEqual(bytes);
    }
    expect(new Uint8Array(backing)[0]).toBe(0);
    expect(new Uint8Array(backing)[65]).toBe(0);
  });

  it('copies the buffer’s real length after its resizable backing shrinks and grows', () => {
    const backing = new Resizable(64, { maxByteLength: 256 });
    const buf = new Uint8Array(backing);
    fill(memory, 0x3000, 256, 3);
    ctx.read(base + 0x3000, buf, RELAXED);
    ctx.read(base + 0x3000, buf, RELAXED);
    backing.resize(32);
    const shorter = fill(memory, 0x3000, 32, 4);
    ctx.read(base + 0x3000, buf, RELAXED);
    expect([...buf]).toEqual(shorter);
    backing.resize(128);
    const longer = fill(memory, 0x3000, 128, 5);
    ctx.read(base + 0x3000, buf, RELAXED);
    expect([...buf]).toEqual(longer);
  });

  it.each([8, 64])(
    'writes nothing into a %i-byte buffer detached since its last read, and reads a new one right',
    (length) => {
      const buf = new Uint8Array(length);
      fill(memory, 0x4000, length, 6);
      ctx.read(base + 0x4000, buf, RELAXED);
      ctx.read(base + 0x4000, buf, RELAXED);
      const moved = structuredClone(buf.buffer, { transfer: [buf.buffer] });
      expect(buf.length).toBe(0);
      ctx.read(base + 0x4000, buf, RELAXED);
      expect(buf.length).toBe(0);
      expect(new Uint8Array(moved)).toEqual(Uint8Array.from(fill(memory, 0x4000, length, 6)));
      const other = new Uint8Array(64);
      const bytes = fill(memory, 0x4000, 64, 7);
      ctx.read(base + 0x4000, other, RELAXED);
      ctx.read(base + 0x4000, other, RELAXED);
      expect([...other]).toEqual(bytes);
    },
  );

  it('copies right into two buffers used in turn, and into a view of shared memory', () => {
    const first = new Uint8Array(64);
    const second = new Uint8Array(new SharedArrayBuffer(64));
    for (let round = 0; round < 4; round++) {
      const buf = round % 2 === 0 ? first : second;
      const bytes = fill(memory, 0x5000, 64, round + 20);
      ctx.read(base + 0x5000, buf, RELAXED);
      expect([...buf]).toEqual(bytes);
    }
  });
});
