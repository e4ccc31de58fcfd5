import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  DMAAttributes,
  DMAError,
  DMAFlagsSchema,
  barrierFor,
  formatAttributes,
  parseAttributes,
  toAttributes,
  toFlags,
  type BarrierStrength,
  type DMAAttributesLike,
  type DMAFlags,
} from '../src/index.js';

const { READ, WRITE, BIDIRECTIONAL, RELAXED } = DMAAttributes;

/** Every valid attribute number. */
const allBits = fc.integer({ min: 0, max: 7 });

/** A flag object with each key present or absent. */
const flagObjects: fc.Arbitrary<DMAFlags> = fc.record(
  { read: fc.boolean(), write: fc.boolean(), relaxed: fc.boolean() },
  { requiredKeys: [] },
);

/** Calls `action` and returns what it threw, failing the test when it returns normally. */
function thrown(action: () => unknown): DMAError {
  let caught: unknown;
  try {
    action();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(DMAError);
  return caught as DMAError;
}

describe('DMAAttributes', () => {
  it('has the IOMMU_RO / IOMMU_WO values and a separate RELAXED bit', () => {
    expect(DMAAttributes).toEqual({ READ: 1, WRITE: 2, BIDIRECTIONAL: 3, RELAXED: 4 });
    expect(BIDIRECTIONAL).toBe(READ | WRITE);
    expect(RELAXED & BIDIRECTIONAL).toBe(0);
  });
});

describe('toAttributes', () => {
  it('returns every valid number unchanged', () => {
    for (let bits = 0; bits <= 7; bits++) expect(toAttributes(bits)).toBe(bits);
  });

  it.each<[DMAFlags, number]>([
    [{}, 0],
    [{ read: true }, READ],
    [{ write: true }, WRITE],
    [{ read: true, write: true }, BIDIRECTIONAL],
    [{ relaxed: true }, RELAXED],
    [{ read: true, relaxed: true }, READ | RELAXED],
    [{ write: true, relaxed: true }, WRITE | RELAXED],
    [{ read: true, write: true, relaxed: true }, 7],
    [{ read: false, write: false, relaxed: false }, 0],
    // A key set to undefined is how JavaScript callers spell an absent key.
    [{ read: undefined, write: true } as unknown as DMAFlags, WRITE],
  ])('turns the flag object %o into %i', (flags, bits) => {
    expect(toAttributes(flags)).toBe(bits);
  });

  it.each<[string, unknown, string]>([
    ['a bit above RELAXED', 8, '8'],
    ['a byte of bits', 0xff, '255'],
    ['READ plus an unknown bit', READ | 8, '9'],
    ['a negative number', -1, '-1'],
    ['a fraction', 1.5, '1.5'],
    ['NaN', NaN, 'NaN'],
    ['Infinity', Infinity, 'Infinity'],
    ['-Infinity', -Infinity, '-Infinity'],
    ['a string', '1', '"1"'],
    ['a bigint', 1n, '1n'],
    ['a boolean', true, 'true'],
    ['null', null, 'null'],
    ['undefined', undefined, 'undefined'],
    ['an array', [1], 'an array of length 1'],
    ['an empty array', [], 'an array of length 0'],
    ['a typed array', new Uint8Array(2), 'a Uint8Array of 2 bytes'],
    ['a Date', new Date(0), 'a Date'],
    ['a Map', new Map(), 'a Map'],
  ])('rejects %s with ERR_DMA_INVALID_ATTRIBUTES naming the value', (_label, value, shown) => {
    const error = thrown(() => toAttributes(value as DMAAttributesLike));
    expect(error.code).toBe('ERR_DMA_INVALID_ATTRIBUTES');
    expect(error.message).toContain(shown);
  });

  it('rejects every integer outside 0..7', () => {
    fc.assert(
      fc.property(
        fc.integer().filter((value) => value < 0 || value > 7),
        (value) => {
          const error = thrown(() => toAttributes(value));
          expect(error.code).toBe('ERR_DMA_INVALID_ATTRIBUTES');
          expect(error.message).toContain(String(value));
        },
      ),
    );
  });

  it('rejects every double that is not an integer from 0 to 7', () => {
    fc.assert(
      fc.property(
        fc.double().filter((value) => !(Number.isInteger(value) && value >= 0 && value <= 7)),
        (value) => {
          expect(thrown(() => toAttributes(value)).code).toBe('ERR_DMA_INVALID_ATTRIBUTES');
        },
      ),
    );
  });

  it.each<[string, Record<string, unknown>, string[]]>([
    ['a misspelt RELAXED', { relaxd: true }, ['relaxd']],
    ['a misspelt key set to false', { raed: false }, ['raed']],
    ['an upper-case key', { READ: true }, ['READ']],
    ['a misspelt key beside a good one', { write: true, relaxd: true }, ['relaxd']],
    ['a string value', { read: 'yes' }, ['read', '"yes"']],
    ['a number value', { write: 1 }, ['write', '1']],
    ['a null value', { relaxed: null }, ['relaxed', 'null']],
  ])('rejects a flag object with %s, naming the key and value', (_label, flags, mentions) => {
    const error = thrown(() => toAttributes(flags));
    expect(error.code).toBe('ERR_DMA_INVALID_ATTRIBUTES');
    for (const text of mentions) expect(error.message).toContain(text);
  });

  it('names the argument it was given as `what`', () => {
    expect(thrown(() => toAttributes(9, 'perm')).message).toMatch(/^perm /);
  });
});

describe('toFlags', () => {
  it('gives all three keys for every valid number', () => {
    expect(toFlags(0)).toEqual({ read: false, write: false, relaxed: false });
    expect(toFlags(READ | RELAXED)).toEqual({ read: true, write: false, relaxed: true });
    expect(toFlags(BIDIRECTIONAL)).toEqual({ read: true, write: true, relaxed: false });
    for (let bits = 0; bits <= 7; bits++) {
      expect(Object.keys(toFlags(bits)).sort()).toEqual(['read', 'relaxed', 'write']);
    }
  });

  it('rejects invalid attributes', () => {
    expect(thrown(() => toFlags(8)).code).toBe('ERR_DMA_INVALID_ATTRIBUTES');
    expect(thrown(() => toFlags({ relaxd: true } as DMAFlags)).message).toContain('relaxd');
  });
});

describe('formatAttributes and parseAttributes', () => {
  it.each([
    [0, 'NONE'],
    [READ, 'READ'],
    [WRITE, 'WRITE'],
    [BIDIRECTIONAL, 'BIDIRECTIONAL'],
    [RELAXED, 'RELAXED'],
    [READ | RELAXED, 'READ|RELAXED'],
    [WRITE | RELAXED, 'WRITE|RELAXED'],
    [BIDIRECTIONAL | RELAXED, 'BIDIRECTIONAL|RELAXED'],
  ])('formats %i as %s', (bits, text) => {
    expect(formatAttributes(bits)).toBe(text);
    expect(formatAttributes(toFlags(bits))).toBe(text);
  });

  it.each([
    ['write|relaxed', WRITE | RELAXED],
    ['READ | RELAXED', READ | RELAXED],
    ['read|write', BIDIRECTIONAL],
    ['relaxed|read', READ | RELAXED],
    ['  Bidirectional  ', BIDIRECTIONAL],
    ['none', 0],
    ['NONE|READ', READ],
    ['read|read', READ],
  ])('parses %j as %i', (text, bits) => {
    expect(parseAttributes(text)).toBe(bits);
  });

  it.each([
    ['reed', 'reed'],
    ['read|relaxd', 'relaxd'],
    ['', '""'],
    ['READ||WRITE', '"READ||WRITE"'],
    ['READ,WRITE', 'READ,WRITE'],
    ['read|', '"read|"'],
  ])('rejects %j with ERR_DMA_INVALID_ATTRIBUTES naming %s', (text, shown) => {
    const error = thrown(() => parseAttributes(text));
    expect(error.code).toBe('ERR_DMA_INVALID_ATTRIBUTES');
    expect(error.message).toContain(shown);
  });

  it('rejects text that is not a string', () => {
    const error = thrown(() => parseAttributes(3 as unknown as string));
    expect(error.code).toBe('ERR_DMA_INVALID_ATTRIBUTES');
    expect(error.message).toContain('3');
  });

  it('rejects invalid attributes when formatting', () => {
    expect(thrown(() => formatAttributes(16)).code).toBe('ERR_DMA_INVALID_ATTRIBUTES');
  });
});

describe('round trips', () => {
  it('attributes -> flags -> attributes is the identity', () => {
    fc.assert(
      fc.property(allBits, (bits) => {
        expect(toAttributes(toFlags(bits))).toBe(bits);
      }),
    );
  });

  it('attributes -> text -> attributes is the identity', () => {
    fc.assert(
      fc.property(allBits, (bits) => {
        expect(parseAttributes(formatAttributes(bits))).toBe(bits);
      }),
    );
  });

  it('flags -> attributes -> flags keeps every true key and makes missing keys false', () => {
    fc.assert(
      fc.property(flagObjects, (flags) => {
        expect(toFlags(toAttributes(flags))).toEqual({
          read: flags.read === true,
          write: flags.write === true,
          relaxed: flags.relaxed === true,
        });
      }),
    );
  });

  it('flags -> text -> flags is the identity on the normalised flags', () => {
    fc.assert(
      fc.property(flagObjects, (flags) => {
        expect(toFlags(parseAttributes(formatAttributes(flags)))).toEqual(toFlags(flags));
      }),
    );
  });

  it('parsing ignores case, spaces and the order of names', () => {
    const names = fc.subarray(['READ', 'WRITE', 'BIDIRECTIONAL', 'RELAXED', 'NONE'], {
      minLength: 1,
    });
    const spelling = fc.tuple(names, fc.infiniteStream(fc.boolean()), fc.infiniteStream(fc.nat(3)));
    fc.assert(
      fc.property(spelling, ([picked, upper, spaces]) => {
        const expected = picked.reduce((bits, name) => bits | parseAttributes(name), 0);
        const upperIter = upper[Symbol.iterator]();
        const spaceIter = spaces[Symbol.iterator]();
        const pad = (): string => ' '.repeat(spaceIter.next().value as number);
        const text = [...picked]
          .reverse()
          .map((name) => {
            const cased = name
              .split('')
              .map((char) => (upperIter.next().value === true ? char : char.toLowerCase()))
              .join('');
            return `${pad()}${cased}${pad()}`;
          })
          .join('|');
        expect(parseAttributes(text)).toBe(expected);
      }),
    );
  });
});

describe('flag objects agree with DMAFlagsSchema', () => {
  const keys = fc.constantFrom(
    'read',
    'write',
    'relaxed',
    'relaxd',
    'reed',
    'writ',
    'Read',
    'WRITE',
    'relax',
    'readonly',
    '',
  );
  const values = fc.oneof(
    { weight: 6, arbitrary: fc.boolean() },
    { weight: 1, arbitrary: fc.constant(undefined) },
    { weight: 3, arbitrary: fc.anything() },
  );
  const objects = fc.oneof(
    fc.dictionary(keys, values, { maxKeys: 4 }),
    fc.object({ key: keys, values: [values], maxDepth: 0, maxKeys: 4 }),
  );

  function schemaBits(
    data: Partial<Record<'read' | 'write' | 'relaxed', boolean | undefined>>,
  ): number {
    return (
      (data.read === true ? READ : 0) |
      (data.write === true ? WRITE : 0) |
      (data.relaxed === true ? RELAXED : 0)
    );
  }

  it('accepts exactly what the schema accepts, with the same bits', () => {
    let accepted = 0;
    let rejected = 0;
    fc.assert(
      fc.property(objects, (flags) => {
        const parsed = DMAFlagsSchema.safeParse(flags);
        let outcome: { bits: number } | { error: unknown };
        try {
          outcome = { bits: toAttributes(flags) };
        } catch (error) {
          outcome = { error };
        }
        if (parsed.success) {
          accepted++;
          expect(outcome).toEqual({ bits: schemaBits(parsed.data) });
        } else {
          rejected++;
          expect('error' in outcome).toBe(true);
          const error = (outcome as { error: unknown }).error;
          expect(error).toBeInstanceOf(DMAError);
          expect((error as DMAError).code).toBe('ERR_DMA_INVALID_ATTRIBUTES');
          const record = flags;
          const offending = Object.keys(record).filter(
            (key) =>
              !['read', 'write', 'relaxed'].includes(key) ||
              (record[key] !== undefined && typeof record[key] !== 'boolean'),
          );
          expect(
            offending.some((key) => (error as DMAError).message.includes(JSON.stringify(key))),
          ).toBe(true);
        }
      }),
      { numRuns: 2000 },
    );
    expect(accepted).toBeGreaterThan(100);
    expect(rejected).toBeGreaterThan(100);
  });

  it('rejects what the schema rejects for non-plain objects too', () => {
    for (const value of [[], [true], new Uint8Array(1)]) {
      expect(DMAFlagsSchema.safeParse(value).success).toBe(false);
      expect(thrown(() => toAttributes(value as DMAFlags)).code).toBe('ERR_DMA_INVALID_ATTRIBUTES');
    }
  });

  it('takes an object whose keys set a flag whatever its prototype; one that sets none must be plain', () => {
    class Flags {
      relaxed = true;
      read = false;
    }
    class NoFlags {
      relaxed = false;
    }
    class Extra {
      relaxed = true;
      extra = 1;
    }
    const inherited = Object.create({ write: true }) as DMAFlags;
    expect(toAttributes(new Flags())).toBe(RELAXED);
    expect(toAttributes(inherited)).toBe(WRITE);
    expect(toAttributes(Object.assign(Object.create(null) as object, { read: true }))).toBe(READ);
    // Plain objects that set nothing are "no flags"; anything else that sets nothing is refused.
    expect(toAttributes({})).toBe(0);
    expect(toAttributes({ relaxed: false })).toBe(0);
    for (const value of [new NoFlags(), new Date(0), new Map(), Object.create([]) as object]) {
      const error = thrown(() => toAttributes(value));
      expect(error.code).toBe('ERR_DMA_INVALID_ATTRIBUTES');
      expect(error.message).toContain('plain DMAFlags object');
    }
    // An unknown key is refused on every object, and a non-plain one is not given to zod.
    expect(thrown(() => toAttributes(new Extra() as DMAFlags)).message).toContain(
      'plain DMAFlags object',
    );
    expect(thrown(() => toAttributes({ relaxed: true, extra: 1 } as DMAFlags)).message).toContain(
      '"extra"',
    );
  });

  it('refuses an array, even behind a Proxy, before listing its keys (V8 lists every index first)', () => {
    let listed = 0;
    const proxy = new Proxy([true, true], {
      ownKeys(inner) {
        listed++;
        return Reflect.ownKeys(inner);
      },
    });
    expect(thrown(() => toAttributes(proxy as DMAFlags)).message).toContain('an array of length 2');
    expect(listed).toBe(0);
    // A typed array is refused as a view (its keys are not observable without a Proxy, and a
    // Proxy of one is not a view: it is listed, as any other object is).
    expect(thrown(() => toAttributes(new Uint8Array(1 << 20) as DMAFlags)).message).toContain(
      'a Uint8Array of 1048576 bytes',
    );
  });
});

describe('barrierFor', () => {
  const table: [number, BarrierStrength | undefined][] = [
    [0, undefined],
    [READ, 'acquire'],
    [WRITE, 'release'],
    [BIDIRECTIONAL, 'full'],
    [RELAXED, 'none'],
    [READ | RELAXED, 'none'],
    [WRITE | RELAXED, 'none'],
    [BIDIRECTIONAL | RELAXED, 'none'],
  ];

  it.each(table)(
    'gives attributes %i the strength %s, as a number and as flags',
    (bits, strength) => {
      for (const like of [bits, toFlags(bits)] as DMAAttributesLike[]) {
        if (strength === undefined) {
          const error = thrown(() => barrierFor(like));
          expect(error.code).toBe('ERR_DMA_INVALID_ATTRIBUTES');
          expect(error.message).toContain('no direction');
        } else {
          expect(barrierFor(like)).toBe(strength);
        }
      }
    },
  );

  it('throws for the empty flag object, which names no direction', () => {
    expect(thrown(() => barrierFor({})).code).toBe('ERR_DMA_INVALID_ATTRIBUTES');
  });

  it('rejects invalid attributes before looking up the table', () => {
    expect(thrown(() => barrierFor(8)).message).toContain('8');
    expect(thrown(() => barrierFor({ relaxd: true } as DMAFlags)).message).toContain('relaxd');
  });
});
