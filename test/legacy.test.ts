/* eslint-disable @typescript-eslint/no-deprecated -- these tests exercise the deprecated API */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import {
  DMAAttributes,
  DMAContext,
  DMAError,
  GuestMemory,
  type DMATraceEvent,
} from '../src/index.js';
import {
  DMADirection,
  directionToAttributes,
  dmaBarrier,
  dmaMemoryMap,
  dmaMemoryRead,
  dmaMemoryReadRelaxed,
  dmaMemoryRw,
  dmaMemoryRwRelaxed,
  dmaMemorySet,
  dmaMemoryUnmap,
  dmaMemoryWrite,
  dmaMemoryWriteRelaxed,
} from '../src/legacy.js';

const { READ, WRITE, RELAXED } = DMAAttributes;

function setUp(): { memory: GuestMemory; dma: DMAContext; events: string[] } {
  const events: string[] = [];
  const memory = new GuestMemory({ regions: [{ base: 0, size: 256 }], barrierPolicy: 'strict' });
  const trace = (event: DMATraceEvent): void => {
    events.push(`${event.op}:${event.barrier}`);
  };
  return { memory, dma: new DMAContext(memory, { trace }), events };
}

const bytes = (...values: number[]): Uint8Array => Uint8Array.from(values);

describe('legacy barriers are the 2012 helpers’ barriers', () => {
  interface Case {
    name: string;
    run: (dma: DMAContext) => void;
    trace: string[];
  }
  const cases: Case[] = [
    {
      name: 'dmaMemoryRw TO_DEVICE',
      run: (dma) => {
        dmaMemoryRw(dma, 8, new Uint8Array(4), 4, DMADirection.TO_DEVICE);
      },
      trace: ['barrier:full', 'read:none'],
    },
    {
      name: 'dmaMemoryRw FROM_DEVICE',
      run: (dma) => {
        dmaMemoryRw(dma, 8, bytes(1, 2), 2, DMADirection.FROM_DEVICE);
      },
      trace: ['barrier:full', 'write:none'],
    },
    {
      name: 'dmaMemoryRwRelaxed',
      run: (dma) => {
        dmaMemoryRwRelaxed(dma, 8, bytes(1, 2), 2, DMADirection.FROM_DEVICE);
      },
      trace: ['write:none'],
    },
    {
      name: 'dmaMemoryRead',
      run: (dma) => {
        dmaMemoryRead(dma, 8, new Uint8Array(4), 4);
      },
      trace: ['barrier:full', 'read:none'],
    },
    {
      name: 'dmaMemoryWrite',
      run: (dma) => {
        dmaMemoryWrite(dma, 8, bytes(1), 1);
      },
      trace: ['barrier:full', 'write:none'],
    },
    {
      name: 'dmaMemoryReadRelaxed',
      run: (dma) => {
        dmaMemoryReadRelaxed(dma, 8, new Uint8Array(4), 4);
      },
      trace: ['read:none'],
    },
    {
      name: 'dmaMemoryWriteRelaxed',
      run: (dma) => {
        dmaMemoryWriteRelaxed(dma, 8, bytes(1), 1);
      },
      trace: ['write:none'],
    },
    {
      name: 'dmaMemorySet',
      run: (dma) => {
        dmaMemorySet(dma, 8, 0xaa, 4);
      },
      trace: ['barrier:full', 'set:none'],
    },
    {
      name: 'dmaBarrier',
      run: (dma) => {
        dmaBarrier(dma, DMADirection.TO_DEVICE);
      },
      trace: ['barrier:full'],
    },
    {
      name: 'dmaMemoryMap and dmaMemoryUnmap',
      run: (dma) => {
        const view = dmaMemoryMap(dma, 8, 16, DMADirection.FROM_DEVICE);
        dmaMemoryUnmap(dma, view, 16, DMADirection.FROM_DEVICE, 16);
      },
      trace: ['map:none', 'unmap:none'],
    },
  ];
  it.each(cases)('$name traces $trace', ({ run, trace }) => {
    const { dma, events } = setUp();
    run(dma);
    expect(events).toEqual(trace);
  });
});

describe('legacy helpers move the same bytes as the new API', () => {
  it('uses only the first len bytes of buf', () => {
    const { memory, dma } = setUp();
    dmaMemoryWrite(dma, 0, bytes(1, 2, 3, 4), 2);
    const seen = new Uint8Array(4);
    memory.read(0, seen);
    expect([...seen]).toEqual([1, 2, 0, 0]);
    const into = bytes(9, 9, 9);
    dmaMemoryRead(dma, 0, into, 2);
    expect([...into]).toEqual([1, 2, 9]);
  });

  it('dmaMemoryRw moves data in the direction given', () => {
    const { memory, dma } = setUp();
    dmaMemoryRw(dma, 4, bytes(7, 8), 2, DMADirection.FROM_DEVICE);
    const back = new Uint8Array(2);
    dmaMemoryRwRelaxed(dma, 4, back, 2, DMADirection.TO_DEVICE);
    expect([...back]).toEqual([7, 8]);
    const cpu = new Uint8Array(2);
    memory.read(4, cpu);
    expect([...cpu]).toEqual([7, 8]);
  });

  it('dmaMemorySet fills len bytes', () => {
    const { memory, dma } = setUp();
    dmaMemorySet(dma, 10, 0x5a, 3);
    const seen = new Uint8Array(5);
    memory.read(9, seen);
    expect([...seen]).toEqual([0, 0x5a, 0x5a, 0x5a, 0]);
  });

  it('dmaMemoryMap gives a view that writes guest memory', () => {
    const { memory, dma } = setUp();
    const view = dmaMemoryMap(dma, 32, 4, DMADirection.FROM_DEVICE);
    view.set([1, 2, 3, 4]);
    dmaMemoryUnmap(dma, view, 4, DMADirection.FROM_DEVICE, 4);
    const seen = new Uint8Array(4);
    memory.read(32, seen);
    expect([...seen]).toEqual([1, 2, 3, 4]);
  });

  it('directionToAttributes maps TO_DEVICE to READ and FROM_DEVICE to WRITE', () => {
    expect(directionToAttributes(DMADirection.TO_DEVICE)).toBe(READ);
    expect(directionToAttributes(DMADirection.FROM_DEVICE)).toBe(WRITE);
    expect(DMADirection.TO_DEVICE).toBe(0);
    expect(DMADirection.FROM_DEVICE).toBe(1);
    expect(RELAXED).toBe(4);
  });
});

describe('legacy bad input', () => {
  it.each([
    [
      'a direction of 2',
      // A JavaScript caller can pass any number.
      () => directionToAttributes(2 as unknown as DMADirection),
      'ERR_DMA_INVALID_ATTRIBUTES',
      '2',
    ],
    [
      'len beyond the buffer',
      (dma: DMAContext) => {
        dmaMemoryWrite(dma, 0, bytes(1), 2);
      },
      'ERR_DMA_INVALID_ARGUMENT',
      'len',
    ],
    [
      'a negative len',
      (dma: DMAContext) => {
        dmaMemoryRead(dma, 0, new Uint8Array(2), -1);
      },
      'ERR_DMA_INVALID_ARGUMENT',
      '-1',
    ],
    [
      'a byte of 256',
      (dma: DMAContext) => {
        dmaMemorySet(dma, 0, 256, 1);
      },
      'ERR_DMA_INVALID_ARGUMENT',
      '256',
    ],
    [
      'a plain array',
      (dma: DMAContext) => {
        dmaMemoryRw(dma, 0, [1] as unknown as Uint8Array, 1, DMADirection.FROM_DEVICE);
      },
      'ERR_DMA_INVALID_ARGUMENT',
      'array',
    ],
    [
      'a direction of "in"',
      (dma: DMAContext) => {
        dmaBarrier(dma, 'in' as unknown as DMADirection);
      },
      'ERR_DMA_INVALID_ATTRIBUTES',
      '"in"',
    ],
  ] as const)(
    '%s is a DMAError that issues no barrier and changes no byte',
    (_name, run, code, mention) => {
      const { memory, dma, events } = setUp();
      memory.write(
        0,
        Uint8Array.from({ length: 256 }, (_, index) => (index * 7 + 1) & 0xff),
      );
      const before = new Uint8Array(256);
      memory.read(0, before);
      let error: unknown;
      try {
        run(dma);
      } catch (caught) {
        error = caught;
      }
      expect(error).toBeInstanceOf(DMAError);
      expect((error as DMAError).code).toBe(code);
      expect((error as DMAError).message).toContain(mention);
      expect(events).toEqual([]);
      const after = new Uint8Array(256);
      memory.read(0, after);
      expect(after).toEqual(before);
    },
  );
});

describe('one DMAError class for both entries', () => {
  it('under import, a fault thrown through dma-attrs/legacy is the main entry’s DMAError', async () => {
    // The built entries, as a user imports them; typed as the sources they are built from.
    // (Paths in variables, so that the type check does not need a build.)
    const mainPath = '../dist/index.js';
    const legacyPath = '../dist/legacy.js';
    const main = (await import(mainPath)) as typeof import('../src/index.js');
    const legacy = (await import(legacyPath)) as typeof import('../src/legacy.js');
    const memory = new main.GuestMemory({ size: 16 });
    const dma = new main.DMAContext(memory);
    let error: unknown;
    try {
      legacy.dmaMemoryRead(dma, 12, new Uint8Array(8), 8);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(main.DMAError);
    expect(error).toBeInstanceOf(main.DMAFault);
  });

  it('under require, the same holds', () => {
    const script = `
      const main = require('./dist/index.cjs');
      const legacy = require('./dist/legacy.cjs');
      const dma = new main.DMAContext(new main.GuestMemory({ size: 16 }));
      try { legacy.dmaMemoryRead(dma, 12, new Uint8Array(8), 8); process.stdout.write('no error'); }
      catch (error) { process.stdout.write(String(error instanceof main.DMAError && error instanceof main.DMAFault && error.code)); }
    `;
    const output = execFileSync(process.execPath, ['-e', script], {
      cwd: new URL('..', import.meta.url),
      encoding: 'utf8',
    });
    expect(output).toBe('ERR_DMA_UNASSIGNED');
  });
});
