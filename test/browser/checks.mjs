/**
 * What the page and the workers both run: every accessor of a DMAContext on a 112-byte area
 * of guest memory, and an IOMMU permission fault. Each returns a plain, structured-cloneable
 * report, so that a worker can post it as it is.
 */
import { DMAAttributes, DMAContext, DMAError, DMAFault, ScatterGatherList } from 'dma-attrs';

const { READ, WRITE, RELAXED } = DMAAttributes;

/** The bytes `exerciseAccessors` leaves at its base address. */
export const AREA = 112;

/** The expected contents of the area after `exerciseAccessors`. */
export function expectedArea() {
  const bytes = new Uint8Array(AREA);
  bytes[0] = 0xab;
  bytes.set([0x34, 0x12], 2);
  bytes.set([0x12, 0x34], 4);
  bytes.set([0xef, 0xbe, 0xad, 0xde], 8);
  bytes.set([0xde, 0xad, 0xbe, 0xef], 12);
  bytes.set([8, 7, 6, 5, 4, 3, 2, 1], 16);
  bytes.set([1, 2, 3, 4, 5, 6, 7, 8], 24);
  for (let i = 0; i < 16; i++) bytes[32 + i] = i + 1;
  bytes.fill(0x5a, 48, 64);
  for (let i = 0; i < 8; i++) bytes[64 + i] = 0xc0 + i;
  bytes.fill(0x77, 80, 96);
  bytes.set([0x11, 0x12, 0x13, 0x14], 96);
  bytes.set([0x15, 0x16, 0x17, 0x18], 104);
  return bytes;
}

/**
 * Runs every accessor against `memory` at `base` and returns the mismatches it saw (empty when
 * all is well) and the number of checks made.
 */
export function exerciseAccessors(memory, base) {
  const ctx = new DMAContext(memory);
  const region = memory.regions[0];
  const end = region.base + region.size;
  const failures = [];
  let checks = 0;
  const same = (what, actual, expected) => {
    checks++;
    if (actual !== expected)
      failures.push(`${what}: got ${String(actual)}, expected ${String(expected)}`);
  };
  const sameBytes = (what, actual, expected) => {
    same(`${what} (bytes)`, Array.from(actual).join(','), Array.from(expected).join(','));
  };

  ctx.writeU8(base, 0xab);
  ctx.writeU16LE(base + 2, 0x1234);
  ctx.writeU16BE(base + 4, 0x1234, RELAXED);
  ctx.writeU32LE(base + 8, 0xdeadbeef);
  ctx.writeU32BE(base + 12, 0xdeadbeef, { relaxed: true });
  ctx.writeU64LE(base + 16, 0x0102030405060708n);
  ctx.writeU64BE(base + 24, 0x0102030405060708n);

  same('readU8', ctx.readU8(base), 0xab);
  same('readU16LE', ctx.readU16LE(base + 2), 0x1234);
  same('readU16BE', ctx.readU16BE(base + 4, RELAXED), 0x1234);
  same('readU16LE of a big-endian value', ctx.readU16LE(base + 4), 0x3412);
  same('readU32LE', ctx.readU32LE(base + 8), 0xdeadbeef);
  same('readU32BE', ctx.readU32BE(base + 12, { relaxed: true }), 0xdeadbeef);
  same('readU32LE of a big-endian value', ctx.readU32LE(base + 12), 0xefbeadde);
  same('readU64LE', ctx.readU64LE(base + 16), 0x0102030405060708n);
  same('readU64BE', ctx.readU64BE(base + 24), 0x0102030405060708n);
  same('readU64LE of a big-endian value', ctx.readU64LE(base + 24), 0x0807060504030201n);

  const sixteen = Uint8Array.from({ length: 16 }, (_, i) => i + 1);
  ctx.write(base + 32, sixteen);
  const back = new Uint8Array(16);
  ctx.read(base + 32, back);
  sameBytes('write then read', back, sixteen);
  const relaxedBack = new Uint8Array(16);
  ctx.read(base + 32, relaxedBack, RELAXED);
  sameBytes('RELAXED read', relaxedBack, sixteen);

  ctx.set(base + 48, 0x5a, 16);
  const setBack = new Uint8Array(16);
  ctx.rw(base + 48, setBack, READ);
  sameBytes('set then rw READ', setBack, new Uint8Array(16).fill(0x5a));

  const eight = Uint8Array.from({ length: 8 }, (_, i) => 0xc0 + i);
  ctx.rw(base + 64, eight, WRITE);
  same('rw WRITE then readU64LE', ctx.readU64LE(base + 64), 0xc7c6c5c4c3c2c1c0n);

  const view = ctx.map(base + 80, 16, WRITE);
  same('map WRITE length', view.length, 16);
  view.fill(0x77);
  ctx.unmap(view, 16);
  const readView = ctx.map(base + 80, 16, READ);
  sameBytes('map READ after map WRITE', readView, new Uint8Array(16).fill(0x77));
  ctx.unmap(readView);
  same('valid WRITE in memory', ctx.valid(base, 16, WRITE), true);
  same('valid READ past the end', ctx.valid(end, 16, READ), false);

  const sg = new ScatterGatherList(ctx);
  sg.add(base + 96, 4).add(base + 104, 4);
  sg.scatter(Uint8Array.from([0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]));
  const gathered = new Uint8Array(8);
  sg.gather(gathered);
  sameBytes('scatter then gather', gathered, [0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]);

  let outOfRange;
  try {
    ctx.read(end - 4, new Uint8Array(8));
  } catch (error) {
    outOfRange = error instanceof DMAError ? error.code : String(error);
  }
  same('read past the end', outOfRange, 'ERR_DMA_UNASSIGNED');

  const area = new Uint8Array(AREA);
  memory.read(base, area);
  sameBytes('the area', area, expectedArea());
  return { failures, checks };
}

/**
 * Writes through `domain`, which must map `iova` READ only: reports what was thrown, and
 * whether a READ through the same mapping still works.
 */
export function exercisePermissionFault(memory, domain, iova) {
  const ctx = new DMAContext(memory, { iommu: domain });
  const readBack = new Uint8Array(4);
  ctx.read(iova, readBack);
  try {
    ctx.write(iova, Uint8Array.from([1, 2, 3, 4]));
    return { thrown: false, readBack: Array.from(readBack) };
  } catch (error) {
    return {
      thrown: true,
      isDMAFault: error instanceof DMAFault,
      isDMAError: error instanceof DMAError,
      code: error.code,
      access: error.access,
      reason: error.reason,
      addr: error.addr,
      length: error.length,
      message: String(error.message),
      readBack: Array.from(readBack),
    };
  }
}
