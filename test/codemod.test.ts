import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { fc, test as propertyTest } from '@fast-check/vitest';
import ts from 'typescript';
import { afterAll, describe, expect, it } from 'vitest';
import { migrateSource, type MigrateOptions, type MigrateResult } from '../src/codemod/index.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const FIXTURES = path.join(ROOT, 'test/fixtures/codemod');

interface Fixture {
  name: string;
  extension: string;
  input: string;
  /** Expected outputs by variant: '' (default), 'flags', 'preserve'. */
  outputs: Map<string, string>;
}

const VARIANTS: Record<string, Partial<MigrateOptions>> = {
  '': {},
  flags: { flags: true },
  preserve: { preserveFullBarriers: true },
};

const fixtures: Fixture[] = readdirSync(FIXTURES)
  .sort()
  .map((name) => {
    const files = readdirSync(path.join(FIXTURES, name));
    const inputFile = files.find((file) => file.startsWith('input.'));
    if (inputFile === undefined) throw new Error(`fixture ${name} has no input`);
    const extension = inputFile.slice('input'.length);
    const outputs = new Map<string, string>();
    for (const variant of Object.keys(VARIANTS)) {
      const file = `output${variant === '' ? '' : `.${variant}`}${extension}`;
      if (files.includes(file)) {
        outputs.set(variant, readFileSync(path.join(FIXTURES, name, file), 'utf8'));
      }
    }
    return {
      name,
      extension,
      input: readFileSync(path.join(FIXTURES, name, inputFile), 'utf8'),
      outputs,
    };
  });

function migrate(fixture: Fixture, variant: string): MigrateResult {
  return migrateSource(fixture.input, {
    fileName: `${fixture.name}/input${fixture.extension}`,
    ...VARIANTS[variant],
  });
}

/** The expected output of a variant: its own file, else the default output. */
function expected(fixture: Fixture, variant: string): string {
  const output = fixture.outputs.get(variant) ?? fixture.outputs.get('');
  if (output === undefined) throw new Error(`fixture ${fixture.name} has no output`);
  return output;
}

describe('codemod fixtures', () => {
  it('cover .ts, .tsx, .js, .mjs, .cjs and .cts', () => {
    const extensions = new Set(fixtures.map((fixture) => fixture.extension));
    for (const extension of ['.ts', '.tsx', '.js', '.mjs', '.cjs', '.cts']) {
      expect(extensions).toContain(extension);
    }
  });

  for (const fixture of fixtures) {
    for (const variant of Object.keys(VARIANTS)) {
      it(`${fixture.name}${variant === '' ? '' : ` --${variant}`}: input migrates to the expected output`, () => {
        const result = migrate(fixture, variant);
        expect(result.errors).toEqual([]);
        expect(result.text).toBe(expected(fixture, variant));
        expect(result.changed).toBe(result.text !== fixture.input);
      });
      it(`${fixture.name}${variant === '' ? '' : ` --${variant}`}: migrating the output again changes nothing`, () => {
        const again = migrateSource(expected(fixture, variant), {
          fileName: `${fixture.name}/output${fixture.extension}`,
          ...VARIANTS[variant],
        });
        expect(again.text).toBe(expected(fixture, variant));
        expect(again.changed).toBe(false);
        expect(again.rewritten).toBe(0);
      });
    }
  }

  it('no-op fixtures come out byte-identical', () => {
    for (const name of ['noop-comment-ts', 'noop-other-js', 'other-module-ts']) {
      const fixture = fixtures.find((candidate) => candidate.name === name) as Fixture;
      const result = migrate(fixture, '');
      expect(result.text).toBe(fixture.input);
      expect(result.changed).toBe(false);
      expect(result.review).toEqual([]);
    }
  });

  it('reports what it cannot rewrite as file:line:column with a reason, and leaves it', () => {
    const fixture = fixtures.find((candidate) => candidate.name === 'review-ts') as Fixture;
    const result = migrate(fixture, '');
    const sites = result.review.map((site) => `${site.file}:${site.line}:${site.column}`);
    expect(sites).toEqual([
      'review-ts/input.ts:5:1', // export { dmaMemoryWrite } from
      'review-ts/input.ts:6:1', // export * from
      'review-ts/input.ts:8:25', // { read: dmaMemoryRead }
      'review-ts/input.ts:12:3', // spread arguments
      'review-ts/input.ts:13:3', // wrong arity
      'review-ts/input.ts:14:3', // legacy['dmaMemorySet']
      'review-ts/input.ts:17:32', // Object.keys(DMADirection)
    ]);
    expect(result.review.map((site) => site.reason).join('\n')).toMatch(/re-export/);
    expect(result.review[2]?.reason).toMatch(/used as a value/);
    expect(result.review[5]?.reason).toMatch(/computed access/);
    expect(result.text).toContain('dmaMemoryRead(...args);');
    expect(result.text).toContain("legacy['dmaMemorySet'](dma, 0, 0, 4);");
    expect(result.text).toContain("export * from 'dma-attrs/legacy';");
  });

  it('reports each weakened barrier with its location and new strength', () => {
    const fixture = fixtures.find((candidate) => candidate.name === 'table-ts') as Fixture;
    const result = migrate(fixture, '');
    expect(result.weakened).toEqual([
      { file: 'table-ts/input.ts', line: 22, column: 3, from: 'full', to: 'acquire' },
      { file: 'table-ts/input.ts', line: 23, column: 3, from: 'full', to: 'release' },
      { file: 'table-ts/input.ts', line: 26, column: 3, from: 'full', to: 'acquire' },
      { file: 'table-ts/input.ts', line: 27, column: 3, from: 'full', to: 'release' },
      { file: 'table-ts/input.ts', line: 30, column: 3, from: 'full', to: 'release' },
    ]);
    expect(result.strengthened.map((site) => `${site.line}:${site.to}`)).toEqual([
      '32:acquire',
      '34:release',
      '37:release',
    ]);
    expect(migrate(fixture, 'preserve').weakened).toEqual([]);
    const dynamic = migrateSource(
      "import { dmaMemoryRw } from 'dma-attrs/legacy';\ndmaMemoryRw(dma, 0, buf, 4, dir);\n",
      { fileName: 'x.ts' },
    );
    expect(dynamic.weakened[0]?.to).toBe('acquire-or-release');
  });

  it('names a file that does not parse and leaves it untouched', () => {
    const text =
      "import { dmaMemoryRead } from 'dma-attrs/legacy';\ndmaMemoryRead(dma, 0, buf, 4;\n";
    const result = migrateSource(text, { fileName: 'broken.ts' });
    expect(result.text).toBe(text);
    expect(result.changed).toBe(false);
    expect(result.errors).toHaveLength(1);
    expect(result.errors[0]?.file).toBe('broken.ts');
    expect(result.errors[0]?.message).toMatch(/does not parse: 2:/);
  });

  it('keeps the receiver evaluated once under --preserve-full-barriers', () => {
    const text =
      "import { dmaMemoryRead } from 'dma-attrs/legacy';\nconst x = dmaMemoryRead(get(), 0, buf, 4);\nconst y = dmaMemoryRead(this.dma, 0, buf, 4);\n";
    const result = migrateSource(text, { fileName: 'x.ts', preserveFullBarriers: true });
    expect(result.review).toHaveLength(1);
    expect(result.review[0]?.line).toBe(2);
    expect(result.text).toContain(
      "const y = (this.dma.barrier('full'), this.dma.read(0, buf.subarray(0, 4), DMAAttributes.RELAXED));",
    );
  });

  it('merges DMAAttributes into an existing import from dma-attrs, or reuses an alias', () => {
    const merged = migrateSource(
      "import { dmaMemoryRw, DMADirection } from 'dma-attrs/legacy';\nimport { DMAContext } from 'dma-attrs';\ndmaMemoryRw(dma, 0, buf, 4, DMADirection.TO_DEVICE);\n",
      { fileName: 'x.ts' },
    );
    expect(merged.text).toBe(
      "import { DMAContext, DMAAttributes } from 'dma-attrs';\ndma.rw(0, buf.subarray(0, 4), DMAAttributes.READ);\n",
    );
    const aliased = migrateSource(
      "import { DMAAttributes as A } from 'dma-attrs';\nimport { DMADirection } from 'dma-attrs/legacy';\nconst d = DMADirection.FROM_DEVICE;\n",
      { fileName: 'x.mjs' },
    );
    expect(aliased.text).toBe(
      "import { DMAAttributes as A } from 'dma-attrs';\nconst d = A.WRITE;\n",
    );
  });

  it('adds no import when the output does not need DMAAttributes', () => {
    const result = migrateSource(
      "import { dmaMemoryRead } from 'dma-attrs/legacy';\ndmaMemoryRead(dma, 0, buf, buf.length);\n",
      { fileName: 'x.js' },
    );
    expect(result.text).toBe('dma.read(0, buf);\n');
  });
});

it('examples/migration/after.ts is the codemod output of before.ts', () => {
  const before = readFileSync(path.join(ROOT, 'examples/migration/before.ts'), 'utf8');
  const after = readFileSync(path.join(ROOT, 'examples/migration/after.ts'), 'utf8');
  expect(migrateSource(before, { fileName: 'examples/migration/before.ts' }).text).toBe(after);
});

describe('files that do not import the legacy entry', () => {
  propertyTest.prop([fc.string({ maxLength: 400 })])(
    'come out byte-identical (random text)',
    (text) => {
      const result = migrateSource(text, { fileName: 'random.ts' });
      expect(result.text).toBe(text);
      expect(result.changed).toBe(false);
    },
  );

  const legacyName = fc.constantFrom(
    'dmaMemoryRead',
    'dmaMemoryWrite',
    'dmaMemoryRw',
    'dmaMemoryMap',
    'dmaBarrier',
    'directionToAttributes',
  );
  const program = fc
    .record({
      names: fc.uniqueArray(legacyName, { minLength: 1, maxLength: 4 }),
      source: fc.constantFrom('./legacy.js', 'dma-attrs', 'dma-attrs/legacy-compat', 'other'),
      mention: fc.boolean(),
      local: fc.boolean(),
      indent: fc.constantFrom('', '  ', '\t'),
    })
    .map(({ names, source, mention, local, indent }) => {
      const head = mention ? "// migrated from 'dma-attrs/legacy'\n" : '';
      const declarations = local
        ? names.map((name) => `function ${name}(...args) { return args; }\n`).join('')
        : `import { ${names.join(', ')} } from '${source}';\n`;
      const calls = names
        .map((name) => `${indent}${name}(dma, 0x10, buf, buf.length, DMADirection.TO_DEVICE);\n`)
        .join('');
      return `${head}${declarations}export function run(dma, buf) {\n${calls}}\n`;
    });
  propertyTest.prop([program, fc.constantFrom('.ts', '.js', '.mjs', '.tsx')])(
    'come out byte-identical (programs using legacy names from elsewhere)',
    (text, extension) => {
      const result = migrateSource(text, { fileName: `program${extension}` });
      expect(result.text).toBe(text);
      expect(result.changed).toBe(false);
      expect(result.rewritten).toBe(0);
    },
  );
});

// ------------------------------------------------------------------ against the build

const DIST = path.join(ROOT, 'dist');
const built = existsSync(path.join(DIST, 'index.d.ts')) && existsSync(path.join(DIST, 'legacy.js'));
const work = mkdtempSync(path.join(tmpdir(), 'dma-attrs-codemod-'));
afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

describe.skipIf(!built)('migrated fixtures against the built package', () => {
  const typed = fixtures.filter(
    (fixture) =>
      ['.ts', '.tsx', '.mts', '.cts'].includes(fixture.extension) &&
      // review-ts calls with a wrong arity on purpose; other-module-ts imports a file that does not exist.
      !['review-ts', 'other-module-ts'].includes(fixture.name),
  );

  it('every .ts/.tsx/.cts fixture type-checks before and after migration (tsc --noEmit)', () => {
    const files: string[] = [];
    for (const fixture of typed) {
      for (const variant of Object.keys(VARIANTS)) {
        const file = path.join(
          work,
          'types',
          `${fixture.name}.${variant || 'default'}${fixture.extension}`,
        );
        files.push(file);
      }
      files.push(path.join(work, 'types', `${fixture.name}.input${fixture.extension}`));
    }
    execFileSync('mkdir', ['-p', path.join(work, 'types')]);
    for (const fixture of typed) {
      writeFileSync(
        path.join(work, 'types', `${fixture.name}.input${fixture.extension}`),
        fixture.input,
      );
      for (const variant of Object.keys(VARIANTS)) {
        writeFileSync(
          path.join(work, 'types', `${fixture.name}.${variant || 'default'}${fixture.extension}`),
          migrate(fixture, variant).text,
        );
      }
    }
    // The migration guide's example: before and after (the codemod's actual output).
    for (const file of ['before.ts', 'after.ts']) {
      const target = path.join(work, 'types', `example-${file}`);
      writeFileSync(target, readFileSync(path.join(ROOT, 'examples/migration', file), 'utf8'));
      files.push(target);
    }
    const jsx = path.join(work, 'types', 'jsx.d.ts');
    writeFileSync(
      jsx,
      'declare namespace JSX { interface IntrinsicElements { [name: string]: unknown } }\n',
    );
    const program = ts.createProgram([...files, jsx], {
      strict: true,
      noEmit: true,
      target: ts.ScriptTarget.ES2022,
      lib: ['lib.es2022.d.ts'],
      types: [],
      module: ts.ModuleKind.Preserve,
      moduleResolution: ts.ModuleResolutionKind.Bundler,
      jsx: ts.JsxEmit.Preserve,
      noUnusedLocals: true,
      skipLibCheck: true,
      paths: {
        'dma-attrs': [path.join(DIST, 'index.d.ts')],
        'dma-attrs/legacy': [path.join(DIST, 'legacy.d.ts')],
      },
    });
    const diagnostics = ts.getPreEmitDiagnostics(program).map((diagnostic) => {
      const where =
        diagnostic.file === undefined || diagnostic.start === undefined
          ? ''
          : `${path.basename(diagnostic.file.fileName)}:${diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start).line + 1}: `;
      return where + ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n');
    });
    expect(diagnostics).toEqual([]);
  });

  const behaviour = fixtures.filter(
    (fixture) =>
      /\bexport function run\b|module\.exports = \{ run \}/.test(fixture.input) &&
      !['review-ts', 'noop-comment-ts', 'noop-other-js'].includes(fixture.name),
  );

  it('covers the behaviour fixtures', () => {
    expect(behaviour.map((fixture) => fixture.name)).toEqual(
      expect.arrayContaining([
        'table-ts',
        'aliases-tsx',
        'namespace-mjs',
        'require-cjs',
        'import-equals-cts',
        'plain-js',
        'length-ts',
        'types-ts',
        'comments-ts',
        'shadowing-ts',
      ]),
    );
  });

  /** Writes a fixture text as a runnable module that loads the built package; returns its path. */
  function runnable(fixture: Fixture, label: string, text: string): string {
    const commonJs = fixture.extension === '.cjs' || fixture.extension === '.cts';
    let code = text;
    if (['.ts', '.tsx', '.mts', '.cts'].includes(fixture.extension)) {
      code = ts.transpileModule(text, {
        compilerOptions: {
          module: commonJs ? ts.ModuleKind.CommonJS : ts.ModuleKind.ESNext,
          target: ts.ScriptTarget.ES2022,
          jsx: ts.JsxEmit.React,
          verbatimModuleSyntax: false,
        },
        fileName: `input${fixture.extension}`,
      }).outputText;
    }
    const target = (entry: string): string =>
      commonJs
        ? JSON.stringify(path.join(DIST, `${entry}.cjs`))
        : JSON.stringify(pathToFileURL(path.join(DIST, `${entry}.js`)).href);
    code = code
      .replace(/(['"])dma-attrs\/legacy\1/g, target('legacy'))
      .replace(/(['"])dma-attrs\1/g, target('index'));
    const file = path.join(work, 'run', `${fixture.name}.${label}${commonJs ? '.cjs' : '.mjs'}`);
    writeFileSync(file, code);
    return file;
  }

  interface Event {
    op: string;
    addr: number;
    length: number;
    attrs: number;
    barrier: string;
  }
  interface Run {
    memory: string;
    trace: Event[];
    error?: string;
  }

  /** Runs modules in one Node process; each gets fresh guest memory with the same contents. */
  function runAll(files: string[]): Run[] {
    const runner = path.join(work, 'run', 'runner.mjs');
    writeFileSync(
      runner,
      `import { createRequire } from 'node:module';
import * as esm from ${JSON.stringify(pathToFileURL(path.join(DIST, 'index.js')).href)};
const require = createRequire(import.meta.url);
// A CommonJS fixture gets a context of the CommonJS build: the two builds' classes differ.
const cjs = require(${JSON.stringify(path.join(DIST, 'index.cjs'))});
const results = [];
for (const file of JSON.parse(process.argv[2])) {
  const { DMAContext, GuestMemory } = file.endsWith('.cjs') ? cjs : esm;
  const memory = new GuestMemory({ size: 4096, barrierPolicy: 'strict' });
  memory.write(0, Uint8Array.from({ length: 4096 }, (_, i) => (i * 7 + 3) & 0xff));
  const trace = [];
  const dma = new DMAContext(memory, { trace: (event) => trace.push({ ...event }) });
  const mod = file.endsWith('.cjs') ? require(file) : await import(file);
  let error;
  try { mod.run(dma); } catch (e) { error = String(e); }
  const bytes = new Uint8Array(4096);
  memory.read(0, bytes);
  results.push({ memory: Buffer.from(bytes).toString('hex'), trace, error });
}
process.stdout.write(JSON.stringify(results));
`,
    );
    return JSON.parse(
      execFileSync(process.execPath, [runner, JSON.stringify(files)], { encoding: 'utf8' }),
    ) as Run[];
  }

  /** Per access: how many explicit barriers came just before it, and the barrier it asked for. */
  function accesses(trace: Event[]): { key: string; explicit: number; implied: string }[] {
    const result: { key: string; explicit: number; implied: string }[] = [];
    let explicit = 0;
    for (const event of trace) {
      if (event.op === 'barrier') {
        if (event.attrs === 0) explicit++;
        continue;
      }
      result.push({
        key: `${event.op}@${event.addr}+${event.length}/${event.attrs & 3}`,
        explicit,
        implied: event.barrier,
      });
      explicit = 0;
    }
    result.push({ key: 'end', explicit, implied: 'none' });
    return result;
  }

  it('runs each fixture before and after migration: same memory; traces differ only at reported sites', () => {
    execFileSync('mkdir', ['-p', path.join(work, 'run')]);
    const files: string[] = [];
    const results: MigrateResult[] = [];
    for (const fixture of behaviour) {
      files.push(runnable(fixture, 'input', fixture.input));
      for (const variant of Object.keys(VARIANTS)) {
        const result = migrate(fixture, variant);
        results.push(result);
        files.push(runnable(fixture, variant || 'default', result.text));
      }
    }
    const runs = runAll(files);
    const per = Object.keys(VARIANTS).length + 1;
    behaviour.forEach((fixture, index) => {
      const before = runs[index * per] as Run;
      expect(before.error, fixture.name).toBeUndefined();
      expect(before.trace.length, fixture.name).toBeGreaterThan(0);
      Object.keys(VARIANTS).forEach((variant, offset) => {
        const label = `${fixture.name} ${variant || 'default'}`;
        const after = runs[index * per + 1 + offset] as Run;
        const report = results[index * (per - 1) + offset] as MigrateResult;
        expect(after.error, label).toBeUndefined();
        expect(after.memory, label).toBe(before.memory);
        if (variant === 'preserve') {
          expect(after.trace, label).toEqual(before.trace);
          return;
        }
        const old = accesses(before.trace);
        const now = accesses(after.trace);
        expect(
          now.map((access) => access.key),
          label,
        ).toEqual(old.map((access) => access.key));
        let changed = 0;
        old.forEach((access, i) => {
          const next = now[i] as (typeof now)[number];
          if (access.explicit === next.explicit && access.implied === next.implied) return;
          changed++;
          const op = access.key.slice(0, access.key.indexOf('@'));
          const weakened =
            access.explicit === next.explicit + 1 &&
            access.implied === 'none' &&
            ((op === 'read' && next.implied === 'acquire') ||
              ((op === 'write' || op === 'set') && next.implied === 'release'));
          const strengthened =
            access.explicit === next.explicit &&
            access.implied === 'none' &&
            ((op === 'map' && next.implied === 'acquire') ||
              (op === 'unmap' && next.implied === 'release'));
          expect(weakened || strengthened, `${label}: access ${access.key}`).toBe(true);
        });
        // Each site runs once or more; a loop may repeat one, so compare with executions.
        expect(changed, label).toBeLessThanOrEqual(
          (report.weakened.length + report.strengthened.length) * 2,
        );
        if (report.weakened.length + report.strengthened.length === 0) expect(changed).toBe(0);
      });
    });
  });
});
