/**
 * What `npm publish` would ship: the file list of `npm pack --dry-run --json` against an
 * allow-list, with test files, fixtures, builds of the examples and stale chunks denied by
 * name; and the CHANGELOG that ships with it in Keep a Changelog form. Needs the built dist/,
 * which `npm test` builds (from an empty dist/) before vitest runs.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const root = new URL('..', import.meta.url).pathname;

interface PackedFile {
  path: string;
  size: number;
}
interface PackResult {
  size: number;
  unpackedSize: number;
  entryCount: number;
  files: PackedFile[];
}
interface PackageJson {
  name: string;
  version: string;
  main?: string;
  module?: string;
  types?: string;
  bin?: Record<string, string>;
  exports: Record<string, unknown>;
}

const pkg = JSON.parse(readFileSync(root + 'package.json', 'utf8')) as PackageJson;

/** `npm pack --dry-run --json`, without lifecycle scripts: it lists, it does not build. */
function dryRunPack(): PackResult {
  const stdout = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
    cwd: root,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const [result] = JSON.parse(stdout) as PackResult[];
  if (result === undefined)
    throw new Error(`npm pack --dry-run --json printed no package: ${stdout}`);
  return result;
}

/** Every path the package may contain. dist/ holds only build output and its maps. */
const ALLOWED: readonly RegExp[] = [
  /^package\.json$/,
  /^README\.md$/,
  /^CHANGELOG\.md$/,
  /^LICENSE$/,
  /^dist\/[\w.-]+\.(?:js|cjs|d\.ts|d\.cts)$/,
  /^dist\/[\w.-]+\.(?:js|cjs)\.map$/,
  /^bench\/[\w-]+\.mjs$/,
  /^examples\/(?:[\w-]+\/)*[\w.-]+\.(?:mjs|ts|html|md)$/,
];

/** Paths denied even where a pattern above would let them through, with the reason. */
const DENIED: readonly (readonly [RegExp, string])[] = [
  [/(?:^|\/)(?:test|tests|__tests__)\//, 'a test folder'],
  [/(?:^|\/)fixtures?\//, 'test fixtures'],
  [/\.(?:test|spec)\.[cm]?[jt]sx?(?:\.map)?$/, 'a test file or its source map'],
  [/(?:^|\/)node_modules\//, 'installed dependencies'],
  [/^examples\/web\/dist\//, "the web demo's Vite build (examples/web/dist)"],
  [/(?:^|\/)(?:coverage|site|temp|etc)\//, 'generated output that is not the library'],
  [/\.(?:tgz|tsbuildinfo|cpuprofile|log)$/, 'a build or profiling artefact'],
  [/(?:^|\/)\.[^/]+$/, 'a dotfile'],
];

/** The files package.json points to: exports targets, main/module/types and bin. */
function referencedFiles(): string[] {
  const targets: string[] = [];
  const walk = (value: unknown): void => {
    if (typeof value === 'string') targets.push(value);
    else if (typeof value === 'object' && value !== null) Object.values(value).forEach(walk);
  };
  walk(pkg.exports);
  walk([pkg.main, pkg.module, pkg.types]);
  walk(pkg.bin);
  return [...new Set(targets.map((target) => target.replace(/^\.\//, '')))].sort();
}

/**
 * The dist/ files reachable from `roots` through relative module specifiers ('./chunk-X.js',
 * new URL('./litmus-worker.js', ...)); a declaration file's './context-X.js' means the
 * declaration file of that chunk.
 */
function reachableFromRoots(roots: readonly string[]): Set<string> {
  const reached = new Set<string>();
  const pending = [...roots];
  for (let path = pending.pop(); path !== undefined; path = pending.pop()) {
    if (reached.has(path) || !path.startsWith('dist/')) continue;
    reached.add(path);
    const declaration = /\.d\.c?ts$/.test(path);
    const text = readFileSync(root + path, 'utf8');
    for (const match of text.matchAll(/["'](\.\/[\w.-]+\.c?js)["']/g)) {
      const file = 'dist/' + (match[1] as string).slice(2);
      pending.push(declaration ? file.replace(/\.(c?)js$/, '.d.$1ts') : file);
    }
  }
  return reached;
}

describe('npm pack', () => {
  const pack = dryRunPack();
  const paths = pack.files.map((file) => file.path).sort();

  it('prints the packed and unpacked size', () => {
    console.log(
      `npm pack: ${pack.entryCount} files, ${(pack.size / 1024).toFixed(1)} KiB packed, ${(pack.unpackedSize / 1024).toFixed(1)} KiB unpacked`,
    );
    expect(pack.entryCount).toBe(paths.length);
    expect(pack.unpackedSize).toBe(pack.files.reduce((sum, file) => sum + file.size, 0));
  });

  it('ships only allowed paths', () => {
    const unexpected = paths.filter((path) => !ALLOWED.some((pattern) => pattern.test(path)));
    expect(unexpected, 'not on the allow-list of test/pack.test.ts').toEqual([]);
  });

  it('ships no test file, fixture, example build or artefact', () => {
    const denied = paths.flatMap((path) =>
      DENIED.filter(([pattern]) => pattern.test(path)).map(([, reason]) => `${path}: ${reason}`),
    );
    expect(denied).toEqual([]);
  });

  it('ships every file package.json points to, and the license', () => {
    const missing = [...referencedFiles(), 'LICENSE', 'README.md', 'CHANGELOG.md'].filter(
      (path) => !paths.includes(path),
    );
    expect(missing, 'run `npm run build` first').toEqual([]);
  });

  it('ships no chunk that no entry imports (a stale `npx tsup` leftover: `npm run build` empties dist/)', () => {
    const reached = reachableFromRoots(
      referencedFiles().filter((path) => path.startsWith('dist/')),
    );
    const chunks = paths.filter((path) =>
      /^dist\/(?:chunk-[\w-]+\.c?js|[\w]+-[\w-]{8}\.d\.c?ts)$/.test(path),
    );
    expect(chunks.length).toBeGreaterThan(0);
    expect(chunks.filter((path) => !reached.has(path))).toEqual([]);
  });

  it("ships source maps of src/ only (no test's, no fixture's)", () => {
    const maps = paths.filter((path) => path.endsWith('.map'));
    expect(maps.length).toBeGreaterThan(0);
    const foreign = maps.flatMap((path) => {
      const { sources } = JSON.parse(readFileSync(root + path, 'utf8')) as { sources: string[] };
      return sources
        .filter((source) => !/^\.\.\/src\/|(?:^|\/)node_modules\/tsup\/assets\//.test(source))
        .map((source) => `${path}: ${source}`);
    });
    expect(foreign).toEqual([]);
  });
});

describe('CHANGELOG.md', () => {
  const changelog = readFileSync(root + 'CHANGELOG.md', 'utf8');
  const headings = [...changelog.matchAll(/^## \[([^\]]+)\](.*)$/gm)].map((match) => ({
    version: match[1] as string,
    rest: match[2] as string,
  }));
  const links = new Map(
    [...changelog.matchAll(/^\[([^\]]+)\]: (\S+)$/gm)].map((match) => [
      match[1] as string,
      match[2] as string,
    ]),
  );

  it('opens with [Unreleased], then releases newest first, each with an ISO date', () => {
    expect(headings[0]).toEqual({ version: 'Unreleased', rest: '' });
    const releases = headings.slice(1);
    expect(releases.length).toBeGreaterThan(0);
    for (const { version, rest } of releases) {
      expect(version, 'a release heading is a semver version').toMatch(
        /^\d+\.\d+\.\d+(?:-[\w.]+)?$/,
      );
      expect(rest, `## [${version}] - YYYY-MM-DD`).toMatch(/^ - \d{4}-\d{2}-\d{2}$/);
    }
    const order = releases.map(({ version }) => version.split(/[.-]/).slice(0, 3).map(Number));
    const sorted = [...order].sort(
      (a, b) =>
        (b[0] as number) - (a[0] as number) ||
        (b[1] as number) - (a[1] as number) ||
        (b[2] as number) - (a[2] as number),
    );
    expect(order).toEqual(sorted);
  });

  it("has a section for package.json's version", () => {
    expect(headings.map(({ version }) => version)).toContain(pkg.version);
  });

  it('links every heading: [Unreleased] compares the newest tag with HEAD, each release the one before', () => {
    const releases = headings.slice(1).map(({ version }) => version);
    const newest = releases[0] as string;
    expect(links.get('Unreleased')).toMatch(
      new RegExp(`/compare/v${newest.replaceAll('.', '\\.')}\\.\\.\\.HEAD$`),
    );
    releases.forEach((version, index) => {
      const previous = releases[index + 1];
      const expected =
        previous === undefined
          ? `/releases/tag/v${version}`
          : `/compare/v${previous}...v${version}`;
      expect(links.get(version), `the link of [${version}]`).toMatch(
        new RegExp(`${expected.replaceAll('.', '\\.')}$`),
      );
    });
    const bases = new Set(
      [...links.values()].map((url) => url.replace(/\/(?:compare|releases)\/.*$/, '')),
    );
    expect(bases.size, 'all links point into one repository').toBe(1);
  });

  it('groups entries under the Keep a Changelog kinds only', () => {
    const kinds = [...changelog.matchAll(/^### (.+)$/gm)].map((match) => match[1]);
    for (const kind of kinds)
      expect(['Added', 'Changed', 'Deprecated', 'Removed', 'Fixed', 'Security']).toContain(kind);
  });
});
