/**
 * The pure transform: one source text in, the migrated text and a report out. It parses the text
 * (source.ts), finds the legacy bindings (bindings.ts), rewrites their references per the rule
 * table (rewrite.ts, rules.ts), fixes the imports (imports.ts) and applies the edits to the
 * original text (edits.ts), so that everything outside a rewritten span stays byte-for-byte.
 *
 * @module
 */
import { LegacyBindings } from './bindings.js';
import { Edits } from './edits.js';
import { Imports } from './imports.js';
import type { MigrateOptions, MigrateResult } from './report.js';
import { Rewriter } from './rewrite.js';
import { LEGACY_MODULE, RULES, type RuleTable } from './rules.js';
import { Findings, parseSource } from './source.js';
import { loadTypeScript } from './typescript.js';

/**
 * Migrates one source text from `dma-attrs/legacy` to the attributes API (SPEC §8, §9).
 * A text that does not mention `dma-attrs/legacy` is returned as is, without parsing.
 *
 * @param text - the file's contents.
 * @param options - the file name (for the parser and the report) and the output style.
 * @returns the new text, whether it changed, and the report of this file.
 * @throws Error when the `typescript` package is not installed.
 * @example
 * ```ts
 * const { text, weakened } = migrateSource(source, { fileName: 'src/virtio.ts' });
 * ```
 */
export function migrateSource(text: string, options: MigrateOptions): MigrateResult {
  return migrateWithRules(text, options, RULES);
}

/**
 * {@link migrateSource} with another rule table: what the table's tests use to show that a row
 * is all a new legacy function needs.
 *
 * @internal
 */
export function migrateWithRules(
  text: string,
  options: MigrateOptions,
  rules: RuleTable,
): MigrateResult {
  if (!text.includes(LEGACY_MODULE)) return unchangedResult(text);
  const parsed = parseSource(loadTypeScript(), text, options.fileName);
  if ('error' in parsed) return { ...unchangedResult(text), errors: [parsed.error] };
  const { source } = parsed;
  const findings = new Findings(source);
  const bindings = new LegacyBindings(source, findings, rules);
  const imports = new Imports(source, findings, bindings);
  if (bindings.statements.length > 0 && !imports.resolveAttributesName()) {
    return { ...unchangedResult(text), review: findings.review };
  }
  const edits = new Edits(source);
  const rewriter = new Rewriter(
    source,
    { findings, bindings, imports, edits, rules },
    { flags: options.flags === true, preserve: options.preserveFullBarriers === true },
  );
  rewriter.visit(source.sourceFile);
  imports.fix(edits);
  let output: string;
  try {
    output = edits.assemble(() => imports.lateInsertion());
  } catch (error) {
    return {
      ...unchangedResult(text),
      errors: [{ file: options.fileName, message: (error as Error).message }],
    };
  }
  findings.review.sort((a, b) => a.line - b.line || a.column - b.column);
  return {
    text: output,
    changed: output !== text,
    rewritten: edits.sites,
    review: findings.review,
    weakened: findings.weakened,
    strengthened: findings.strengthened,
    errors: [],
  };
}

function unchangedResult(text: string): MigrateResult {
  return {
    text,
    changed: false,
    rewritten: 0,
    review: [],
    weakened: [],
    strengthened: [],
    errors: [],
  };
}
