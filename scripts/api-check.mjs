#!/usr/bin/env node
/**
 * The API report check: for every public entry in package.json `exports` (`dma-attrs`,
 * `dma-attrs/legacy`, ...), API Extractor reads the built declaration file (dist/*.d.ts) and
 * writes a report of its exported signatures; the committed copy lives in etc/api/.
 *
 *   node scripts/api-check.mjs            compare; exit 1 when a report differs (npm run api:check)
 *   node scripts/api-check.mjs --update   rewrite etc/api/ from dist/ (npm run api:update builds first)
 *
 * The check never writes etc/api/: a changed API fails until the report is regenerated and
 * committed with the change (CONTRIBUTING.md says when that is a breaking change).
 */
import { CompilerState, Extractor, ExtractorConfig } from '@microsoft/api-extractor';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { basename, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = resolve(fileURLToPath(new URL('..', import.meta.url)));
const configPath = join(repoRoot, 'config/api-extractor/api-extractor.json');
const reportSuffix = '.api.md';

/**
 * The public entries of a package.json: every `exports` subpath whose `import` condition has
 * types (`./package.json` has none). The report of `dma-attrs/virtio` is `dma-attrs-virtio`.
 *
 * @returns {Array<{ name: string, types: string, requireTypes: string | undefined, reportName: string }>}
 */
export function publicEntries() {
  const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8'));
  const entries = [];
  for (const [subpath, target] of Object.entries(pkg.exports ?? {})) {
    if (typeof target !== 'object' || target === null) continue;
    const types = target.import?.types ?? target.types;
    if (typeof types !== 'string') {
      throw new Error(`package.json exports["${subpath}"] has no types for "import"`);
    }
    const name = subpath === '.' ? pkg.name : `${pkg.name}/${subpath.replace(/^\.\//, '')}`;
    entries.push({
      name,
      types: resolve(repoRoot, types),
      requireTypes:
        typeof target.require?.types === 'string'
          ? resolve(repoRoot, target.require.types)
          : undefined,
      reportName: name.replaceAll('/', '-'),
    });
  }
  return entries;
}

/**
 * The declaration files a types file pulls in through relative imports (tsup's shared chunks
 * such as dist/context-XXXX.d.ts), the file itself included.
 */
function declarationClosure(file) {
  const seen = new Set();
  const pending = [file];
  while (pending.length > 0) {
    const current = pending.pop();
    if (seen.has(current) || !existsSync(current)) continue;
    seen.add(current);
    const text = readFileSync(current, 'utf8');
    for (const match of text.matchAll(/from\s+'(\.{1,2}\/[^']+)'/g)) {
      const specifier = match[1].replace(/\.(c?)js$/, '.d.$1ts');
      pending.push(resolve(current, '..', specifier));
    }
  }
  return [...seen];
}

/**
 * The `require` types must declare the same API as the `import` types: tsup emits the .d.cts
 * files from the same source, with `.cjs` import specifiers. Only the `import` types are
 * reported, so this is what keeps the `require` ones honest.
 *
 * @param {{ requireTypes: string | undefined }} entry the entry (see {@link publicEntries}).
 * @returns {string[]} one line per declaration file that is missing or differs.
 */
export function typesConditionMismatches(entry) {
  if (entry.requireTypes === undefined) return [];
  const mismatches = [];
  const cjsPaths = [entry.requireTypes, ...declarationClosure(entry.requireTypes).slice(1)];
  for (const cjsPath of cjsPaths) {
    const esmPath = cjsPath.replace(/\.d\.cts$/, '.d.ts');
    if (!existsSync(cjsPath) || !existsSync(esmPath)) {
      mismatches.push(
        `${relative(repoRoot, cjsPath)} or ${relative(repoRoot, esmPath)} is missing`,
      );
      continue;
    }
    const cjs = readFileSync(cjsPath, 'utf8').replace(/(from\s+'\.{1,2}\/[^']+)\.cjs'/g, "$1.js'");
    if (cjs !== readFileSync(esmPath, 'utf8')) {
      mismatches.push(`${relative(repoRoot, cjsPath)} differs from ${relative(repoRoot, esmPath)}`);
    }
  }
  return mismatches;
}

/** The newest modification time of the files under a folder (0 when it does not exist). */
function newestMtime(folder) {
  if (!existsSync(folder)) return 0;
  let newest = 0;
  for (const entry of readdirSync(folder, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    newest = Math.max(newest, statSync(join(entry.parentPath, entry.name)).mtimeMs);
  }
  return newest;
}

let cachedProgram = { key: '', state: undefined };

/**
 * One TypeScript program for all entries: they share declaration chunks, and building the
 * program is most of the cost of a run. It is reused by later runs in the same process while
 * no declaration file under dist/ has changed.
 */
function sharedCompilerState(extractorConfig, entries) {
  const files = entries.flatMap((entry) => declarationClosure(entry.types));
  const key = [...new Set(files)]
    .sort()
    .map((file) => {
      const stat = statSync(file);
      return `${file}:${stat.size}:${stat.mtimeMs}`;
    })
    .join('|');
  if (cachedProgram.key !== key || cachedProgram.state === undefined) {
    const state = CompilerState.create(extractorConfig, {
      additionalEntryPoints: entries.map((entry) => entry.types),
    });
    cachedProgram = { key, state };
  }
  return cachedProgram.state;
}

/**
 * Runs API Extractor for every public entry against one shared compiler program.
 *
 * @param {object} [options]
 * @param {boolean} [options.update] write the reports instead of comparing them.
 * @param {string} [options.reportFolder] where the committed reports are (etc/api/).
 * @param {string} [options.tempFolder] where the fresh reports are written (temp/api/).
 * @param {(line: string) => void} [options.log] receives the human-readable output.
 * @returns {{ ok: boolean, results: Array<{ name: string, report: string, status: string, details: string[] }>, orphans: string[] }}
 *   `status` is `unchanged`, `changed`, `missing`, `updated`, `created` or `error`; `orphans`
 *   lists committed reports no public entry produces any more.
 */
export function checkApi(options = {}) {
  const update = options.update === true;
  const reportFolder = resolve(options.reportFolder ?? join(repoRoot, 'etc/api'));
  const tempFolder = resolve(options.tempFolder ?? join(repoRoot, 'temp/api'));
  const log = options.log ?? ((line) => console.log(line));
  const entries = publicEntries();

  const missing = entries.filter((entry) => !existsSync(entry.types));
  if (missing.length > 0) {
    const names = missing
      .map((entry) => `${entry.name} (${relative(repoRoot, entry.types)})`)
      .join(', ');
    throw new Error(`API check: no declaration file for ${names}; build first with \`npx tsup\``);
  }
  const sourceTime = newestMtime(join(repoRoot, 'src'));
  const buildTime = Math.min(...entries.map((entry) => statSync(entry.types).mtimeMs));
  if (sourceTime > buildTime) {
    log(
      'API check: warning: src/ is newer than dist/; the reports describe the last build (run `npx tsup`)',
    );
  }
  mkdirSync(tempFolder, { recursive: true });
  if (update) mkdirSync(reportFolder, { recursive: true });

  const baseConfig = ExtractorConfig.loadFile(configPath);
  const prepare = (entry) => {
    const configObject = JSON.parse(JSON.stringify(baseConfig));
    configObject.mainEntryPointFilePath = entry.types;
    configObject.apiReport = {
      ...configObject.apiReport,
      reportFileName: entry.reportName,
      reportFolder,
      reportTempFolder: tempFolder,
    };
    return ExtractorConfig.prepare({
      configObject,
      configObjectFullPath: configPath,
      packageJsonFullPath: join(repoRoot, 'package.json'),
    });
  };
  const configs = entries.map(prepare);
  const compilerState = sharedCompilerState(configs[0], entries);

  const results = [];
  entries.forEach((entry, index) => {
    const report = relative(repoRoot, join(reportFolder, entry.reportName + reportSuffix));
    const details = [];
    let reportEvent = 'none';
    const result = Extractor.invoke(configs[index], {
      localBuild: update,
      compilerState,
      printApiReportDiff: !update,
      messageCallback(message) {
        message.handled = true;
        if (message.messageId === 'console-api-report-diff') {
          details.push(message.text.replace(/^Changes to the API report:\s*/, ''));
        } else if (message.messageId === 'console-api-report-not-copied') {
          reportEvent = message.text.startsWith('The API report file is missing')
            ? 'missing'
            : 'changed';
        } else if (message.messageId === 'console-api-report-created') {
          reportEvent = 'created';
        } else if (message.messageId === 'console-api-report-copied') {
          reportEvent = 'updated';
        } else if (message.logLevel === 'error' || message.logLevel === 'warning') {
          if (!message.messageId.startsWith('console-api-report')) {
            details.push(message.formatMessageWithLocation(repoRoot));
          }
        }
      },
    });
    for (const mismatch of typesConditionMismatches(entry))
      details.push(`require types: ${mismatch}`);
    let status = result.apiReportChanged ? reportEvent : 'unchanged';
    if (status === 'none' || details.some((line) => line.startsWith('require types:')))
      status = 'error';
    if (result.errorCount > 0 || (status === 'unchanged' && !result.succeeded)) status = 'error';
    results.push({ name: entry.name, report, status, details });
  });

  const expected = new Set(entries.map((entry) => entry.reportName + reportSuffix));
  const orphans = existsSync(reportFolder)
    ? readdirSync(reportFolder)
        .filter((file) => file.endsWith(reportSuffix) && !expected.has(file))
        .map((file) => relative(repoRoot, join(reportFolder, file)))
    : [];
  if (update) for (const orphan of orphans) rmSync(join(repoRoot, orphan));

  for (const { name, report, status, details } of results) {
    if (status === 'unchanged') log(`${name}: API unchanged (${report})`);
    else if (status === 'updated' || status === 'created') log(`${name}: ${report} ${status}`);
    else if (status === 'missing') log(`${name}: FAIL: no API report ${report}`);
    else if (status === 'changed')
      log(`${name}: FAIL: the public API differs from ${report} (-: the report, +: dist/):`);
    else log(`${name}: FAIL: API Extractor reported errors:`);
    for (const line of details) log(line.replace(/^/gm, '    '));
  }
  for (const orphan of orphans) {
    log(
      update
        ? `${orphan} removed: no public entry produces it`
        : `FAIL: ${orphan} belongs to no public entry`,
    );
  }
  const failed = results.filter(
    (result) => !['unchanged', 'updated', 'created'].includes(result.status),
  );
  const ok = failed.length === 0 && (update || orphans.length === 0);
  if (!ok && update) {
    log(`API update failed for ${failed.map((result) => result.name).join(', ')}: see above.`);
  } else if (!ok) {
    log(
      `API check failed for ${[...failed.map((result) => result.name), ...orphans.map((orphan) => basename(orphan))].join(', ')}. ` +
        'If the change is intended, run `npm run api:update` and commit etc/api/ with it; ' +
        'CONTRIBUTING.md says which changes are breaking.',
    );
  }
  return { ok, results, orphans };
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const unknown = args.filter((arg) => arg !== '--update');
  if (unknown.length > 0) {
    console.error(`api-check: unknown argument ${unknown.join(' ')} (only --update)`);
    process.exit(2);
  }
  const started = performance.now();
  try {
    const { ok } = checkApi({ update: args.includes('--update') });
    console.log(`API check: ${((performance.now() - started) / 1000).toFixed(1)} s`);
    process.exitCode = ok ? 0 : 1;
  } catch (error) {
    console.error(error instanceof Error ? error.message : error);
    process.exitCode = 1;
  }
}
