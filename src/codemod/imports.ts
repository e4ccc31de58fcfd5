/**
 * Fixing imports: how the output names `DMAAttributes` (an existing import of `dma-attrs`, else a
 * new one), and the legacy import and require statements, whose unused specifiers go. A new
 * `DMAAttributes` import is added only when the output uses it: it takes the place of the first
 * removed legacy statement, else is merged into an existing `{ … }` import of `dma-attrs`, else
 * follows the last legacy statement.
 *
 * @module
 */
import type * as TS from 'typescript';
import {
  isModuleString,
  requiredModule,
  type LegacyBindings,
  type LegacyStatement,
} from './bindings.js';
import type { Edits, Insertion } from './edits.js';
import { ATTRIBUTES, MAIN_MODULE } from './rules.js';
import type { Findings, Source } from './source.js';

/** The `DMAAttributes` name of one file, and its legacy statements' fate. */
export class Imports {
  readonly #source: Source;
  readonly #findings: Findings;
  readonly #bindings: LegacyBindings;
  /** How the output names `DMAAttributes`, and whether the file already imports it. */
  #attributesName = ATTRIBUTES;
  #attributesImported = false;
  #attributesUsed = false;
  #mainImport: TS.ImportDeclaration | TS.VariableStatement | undefined;
  #lastLegacy: LegacyStatement | undefined;
  #importPlaced = false;

  constructor(source: Source, findings: Findings, bindings: LegacyBindings) {
    this.#source = source;
    this.#findings = findings;
    this.#bindings = bindings;
  }

  /** The name the output uses for `DMAAttributes`; using it makes the import needed. */
  attributes(): string {
    this.#attributesUsed = true;
    return this.#attributesName;
  }

  /**
   * Finds how the output may name `DMAAttributes`: an existing import from `dma-attrs`
   * (aliased or a namespace), else the bare name when nothing in the file declares it.
   *
   * @returns false when the file declares its own `DMAAttributes` (nothing is migrated).
   */
  resolveAttributesName(): boolean {
    const { ts, sourceFile } = this.#source;
    for (const statement of sourceFile.statements) {
      if (
        ts.isImportDeclaration(statement) &&
        isModuleString(ts, statement.moduleSpecifier, MAIN_MODULE)
      ) {
        const clause = statement.importClause;
        // `phaseModifier` replaces `isTypeOnly` in TypeScript 6 only; the peer range starts at 5.
        // eslint-disable-next-line @typescript-eslint/no-deprecated
        if (clause === undefined || clause.isTypeOnly) continue;
        const bindings = clause.namedBindings;
        if (bindings === undefined) continue;
        if (ts.isNamespaceImport(bindings)) {
          return this.#found(`${bindings.name.text}.${ATTRIBUTES}`);
        }
        for (const element of bindings.elements) {
          if ((element.propertyName ?? element.name).text === ATTRIBUTES && !element.isTypeOnly) {
            return this.#found(element.name.text);
          }
        }
        this.#mainImport ??= statement;
      } else if (ts.isVariableStatement(statement)) {
        const [declaration] = statement.declarationList.declarations;
        if (
          statement.declarationList.declarations.length !== 1 ||
          declaration === undefined ||
          !isModuleString(ts, requiredModule(ts, declaration.initializer), MAIN_MODULE)
        ) {
          continue;
        }
        if (ts.isIdentifier(declaration.name)) {
          return this.#found(`${declaration.name.text}.${ATTRIBUTES}`);
        }
        if (ts.isObjectBindingPattern(declaration.name)) {
          for (const element of declaration.name.elements) {
            const property = element.propertyName ?? element.name;
            if (
              ts.isIdentifier(property) &&
              property.text === ATTRIBUTES &&
              ts.isIdentifier(element.name) &&
              element.dotDotDotToken === undefined
            ) {
              return this.#found(element.name.text);
            }
          }
          this.#mainImport ??= statement;
        }
      }
    }
    // Another declaration of the name would be shadowed or clash with the new import.
    let clash: TS.Node | undefined;
    const find = (node: TS.Node): void => {
      if (clash !== undefined) return;
      if (ts.isIdentifier(node) && node.text === ATTRIBUTES) {
        const parent = node.parent as TS.Node & { name?: TS.Node };
        if (parent.name === node && !ts.isPropertyAccessExpression(parent)) clash = node;
      }
      ts.forEachChild(node, find);
    };
    find(sourceFile);
    if (clash !== undefined) {
      this.#findings.addReview(
        clash,
        `the file declares its own ${ATTRIBUTES}: nothing migrated, migrate by hand`,
      );
      return false;
    }
    return true;
  }

  #found(name: string): true {
    this.#attributesName = name;
    this.#attributesImported = true;
    return true;
  }

  /**
   * Adds the edits of the legacy statements: a statement none of whose bindings is still used
   * goes (with its line break), one with some still used keeps those.
   */
  fix(edits: Edits): void {
    let replaceable: LegacyStatement | undefined;
    let last: LegacyStatement | undefined;
    for (const record of this.#bindings.statements) {
      last = record;
      const removed = new Set(
        record.bindings.filter((binding) => !binding.kept).map((binding) => binding.node),
      );
      if (record.list === undefined) {
        if (removed.size > 0 && record.bindings.length === removed.size) {
          replaceable ??= record;
          this.#removeStatement(edits, record, () => this.#replacementImport(record, replaceable));
        }
        continue;
      }
      const kept = record.elements.filter((element) => !removed.has(element));
      if (kept.length === 0) {
        replaceable ??= record;
        this.#removeStatement(edits, record, () => this.#replacementImport(record, replaceable));
      } else if (kept.length < record.elements.length) {
        edits.replace(
          record.list,
          () => `{ ${kept.map((element) => element.getText(this.#source.sourceFile)).join(', ')} }`,
          false,
        );
      }
    }
    this.#lastLegacy = last;
  }

  /**
   * Where a needed `DMAAttributes` import goes when no removed legacy statement took it: to
   * call once every edit is rendered.
   *
   * @returns the insertion, or undefined when none is needed.
   */
  lateInsertion(): Insertion | undefined {
    if (!this.#needsImport() || this.#importPlaced) return undefined;
    const lastElement = this.#mergeTarget();
    if (lastElement !== undefined) return { at: lastElement.end, text: `, ${ATTRIBUTES}` };
    const record = this.#lastLegacy;
    if (record === undefined) return { at: 0, text: '' };
    return { at: record.statement.end, text: `\n${this.#importStatement(record)}` };
  }

  /** The statement's text up to its line break goes; a needed `DMAAttributes` import may take its place. */
  #removeStatement(edits: Edits, record: LegacyStatement, replacement: () => string): void {
    const { text, sourceFile } = this.#source;
    const statement = record.statement;
    const end = statement.end;
    const lineBreak = /^[ \t]*(?:\r?\n)?/.exec(text.slice(end))?.[0] ?? '';
    edits.add({
      start: statement.getStart(sourceFile),
      end: end + lineBreak.length,
      render: () => {
        const replaced = replacement();
        return replaced === '' ? '' : `${replaced}${lineBreak}`;
      },
      site: false,
      local: false,
      deferred: true,
    });
  }

  /** Text that replaces a removed legacy statement: the `DMAAttributes` import when needed. */
  #replacementImport(record: LegacyStatement, first: LegacyStatement | undefined): string {
    if (record !== first || !this.#needsImport() || this.#mergeTarget() !== undefined) return '';
    this.#importPlaced = true;
    return this.#importStatement(record);
  }

  #needsImport(): boolean {
    return this.#attributesUsed && !this.#attributesImported;
  }

  #importStatement(record: LegacyStatement): string {
    const q = record.quote;
    const semi = record.semicolon ? ';' : '';
    return record.commonJs
      ? `const { ${ATTRIBUTES} } = require(${q}${MAIN_MODULE}${q})${semi}`
      : `import { ${ATTRIBUTES} } from ${q}${MAIN_MODULE}${q}${semi}`;
  }

  /** The last element of an existing `{ ... }` import (or require) of `dma-attrs`, to append to. */
  #mergeTarget(): TS.Node | undefined {
    const ts = this.#source.ts;
    const main = this.#mainImport;
    if (main === undefined) return undefined;
    let list: TS.NodeArray<TS.Node> | undefined;
    if (ts.isImportDeclaration(main)) {
      const bindings = main.importClause?.namedBindings;
      if (bindings !== undefined && ts.isNamedImports(bindings)) list = bindings.elements;
    } else {
      const declaration = main.declarationList.declarations[0];
      if (declaration !== undefined && ts.isObjectBindingPattern(declaration.name)) {
        list = declaration.name.elements;
      }
    }
    return list?.[list.length - 1];
  }
}
