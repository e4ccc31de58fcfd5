/**
 * Finding the legacy bindings of a file: the names that `import`, `import … = require` and
 * `require` (destructured or not) bind to `dma-attrs/legacy`, under any alias, and which of them
 * a reference resolves to, by symbol rather than by name.
 *
 * @module
 */
import type * as TS from 'typescript';
import { LEGACY_MODULE, type RuleTable } from './rules.js';
import type { Findings, Source } from './source.js';
import type { TypeScript } from './typescript.js';

/** One binding of the legacy entry: a named import, a namespace, a require. */
export interface Binding {
  kind: 'named' | 'namespace';
  /** The legacy export it names (named bindings only). */
  legacyName: string | undefined;
  /** Set when a reference is left unchanged: the binding must stay. */
  kept: boolean;
  /** The specifier / binding element, or the whole declaration for a namespace. */
  node: TS.Node;
  statement: TS.Statement;
}

/** A legacy import or require statement, and what it binds. */
export interface LegacyStatement {
  statement: TS.Statement;
  /** Elements of `{ ... }` (import specifiers or binding elements); empty for a namespace. */
  elements: TS.Node[];
  /** The element list node replaced when some elements go. */
  list: TS.Node | undefined;
  bindings: Binding[];
  /** Elements not naming a legacy export: always kept. */
  foreign: Set<TS.Node>;
  commonJs: boolean;
  /** The quote of its module string, reused by a replacing import. */
  quote: string;
  semicolon: boolean;
}

/** Whether `node` is the string literal `name` (a module specifier). */
export function isModuleString(
  ts: TypeScript,
  node: TS.Node | undefined,
  name: string,
): node is TS.StringLiteral {
  return node !== undefined && ts.isStringLiteral(node) && node.text === name;
}

/** The module string of `require('<module>')`, if `node` is such a call. */
export function requiredModule(
  ts: TypeScript,
  node: TS.Expression | undefined,
): TS.StringLiteral | undefined {
  if (node === undefined || !ts.isCallExpression(node)) return undefined;
  if (!ts.isIdentifier(node.expression) || node.expression.text !== 'require') return undefined;
  const [arg] = node.arguments;
  if (node.arguments.length !== 1 || arg === undefined || !ts.isStringLiteral(arg)) {
    return undefined;
  }
  return arg;
}

/** The legacy bindings of one file, collected from its top-level statements. */
export class LegacyBindings {
  /** The statements that bind the legacy entry, in source order. */
  readonly statements: LegacyStatement[] = [];
  readonly #source: Source;
  readonly #findings: Findings;
  readonly #rules: RuleTable;
  readonly #bySymbol = new Map<TS.Symbol, Binding>();
  /** The local names bound: only identifiers spelled so can be references. */
  readonly #localNames = new Set<string>();
  readonly #declarationNames = new Set<TS.Node>();
  readonly #handledModuleStrings = new Set<TS.Node>();

  /** Collects the bindings; what cannot be followed is reported to `findings`. */
  constructor(source: Source, findings: Findings, rules: RuleTable) {
    this.#source = source;
    this.#findings = findings;
    this.#rules = rules;
    this.#collect();
  }

  /** Whether `identifier` may be a reference to a legacy binding (and is not its declaration). */
  mayReference(identifier: TS.Identifier): boolean {
    return this.#localNames.has(identifier.text) && !this.#declarationNames.has(identifier);
  }

  /** Whether a `'dma-attrs/legacy'` string is one of the statements followed here. */
  isFollowed(moduleString: TS.Node): boolean {
    return this.#handledModuleStrings.has(moduleString);
  }

  /** The binding `identifier` refers to; undefined for a property name or another symbol. */
  bindingOf(identifier: TS.Identifier): Binding | undefined {
    const { ts, checker } = this.#source;
    const parent = identifier.parent;
    let symbol: TS.Symbol | undefined;
    if (ts.isShorthandPropertyAssignment(parent) && parent.name === identifier) {
      symbol = checker.getShorthandAssignmentValueSymbol(parent);
    } else if (
      (ts.isPropertyAccessExpression(parent) && parent.name === identifier) ||
      (ts.isQualifiedName(parent) && parent.right === identifier) ||
      (ts.isPropertyAssignment(parent) && parent.name === identifier) ||
      (ts.isPropertyDeclaration(parent) && parent.name === identifier) ||
      (ts.isMethodDeclaration(parent) && parent.name === identifier)
    ) {
      return undefined; // a property name, not a reference
    } else {
      symbol = checker.getSymbolAtLocation(identifier);
    }
    return symbol === undefined ? undefined : this.#bySymbol.get(symbol);
  }

  /** Which legacy export `name` or `L.name` refers to, if any. */
  legacyNameOf(node: TS.Expression): string | undefined {
    const { ts, checker } = this.#source;
    if (ts.isIdentifier(node)) {
      const symbol = checker.getSymbolAtLocation(node);
      const binding = symbol === undefined ? undefined : this.#bySymbol.get(symbol);
      return binding?.kind === 'named' ? binding.legacyName : undefined;
    }
    if (ts.isPropertyAccessExpression(node) && ts.isIdentifier(node.expression)) {
      const symbol = checker.getSymbolAtLocation(node.expression);
      const binding = symbol === undefined ? undefined : this.#bySymbol.get(symbol);
      if (binding?.kind === 'namespace' && this.#rules.isLegacyName(node.name.text)) {
        return node.name.text;
      }
    }
    return undefined;
  }

  #collect(): void {
    const { ts, sourceFile } = this.#source;
    const isLegacy = (node: TS.Node | undefined): node is TS.StringLiteral =>
      isModuleString(ts, node, LEGACY_MODULE);
    for (const statement of sourceFile.statements) {
      if (ts.isImportDeclaration(statement) && isLegacy(statement.moduleSpecifier)) {
        this.#handledModuleStrings.add(statement.moduleSpecifier);
        const clause = statement.importClause;
        if (clause === undefined) continue; // a side-effect import binds nothing
        if (clause.name !== undefined) {
          this.#findings.addReview(
            statement,
            `default import of '${LEGACY_MODULE}': migrate by hand`,
          );
          continue;
        }
        const record = this.#newStatement(statement, statement.moduleSpecifier, false);
        const bindings = clause.namedBindings;
        if (bindings === undefined) continue;
        if (ts.isNamespaceImport(bindings)) {
          this.#bind(record, 'namespace', undefined, bindings.name, bindings);
        } else {
          record.list = bindings;
          for (const element of bindings.elements) {
            record.elements.push(element);
            const imported = (element.propertyName ?? element.name).text;
            if (this.#rules.isLegacyName(imported)) {
              this.#bind(record, 'named', imported, element.name, element);
            } else {
              record.foreign.add(element);
            }
          }
        }
        this.statements.push(record);
      } else if (
        ts.isImportEqualsDeclaration(statement) &&
        ts.isExternalModuleReference(statement.moduleReference) &&
        isLegacy(statement.moduleReference.expression)
      ) {
        this.#handledModuleStrings.add(statement.moduleReference.expression);
        if (statement.modifiers !== undefined && statement.modifiers.length > 0) {
          this.#findings.addReview(
            statement,
            `exported import of '${LEGACY_MODULE}': migrate by hand`,
          );
          continue;
        }
        const record = this.#newStatement(statement, statement.moduleReference.expression, false);
        this.#bind(record, 'namespace', undefined, statement.name, statement);
        this.statements.push(record);
      } else if (ts.isVariableStatement(statement)) {
        this.#collectRequire(statement);
      } else if (ts.isExportDeclaration(statement) && isLegacy(statement.moduleSpecifier)) {
        this.#handledModuleStrings.add(statement.moduleSpecifier);
        this.#findings.addReview(
          statement,
          `re-export of '${LEGACY_MODULE}': its importers must migrate, then remove it`,
        );
      }
    }
  }

  #collectRequire(statement: TS.VariableStatement): void {
    const ts = this.#source.ts;
    const declarations = statement.declarationList.declarations;
    for (const declaration of declarations) {
      const moduleName = requiredModule(ts, declaration.initializer);
      if (moduleName?.text !== LEGACY_MODULE) continue;
      this.#handledModuleStrings.add(moduleName);
      if (declarations.length !== 1) {
        this.#findings.addReview(
          declaration,
          `require of '${LEGACY_MODULE}' among other declarations: migrate by hand`,
        );
        continue;
      }
      const record = this.#newStatement(statement, moduleName, true);
      const name = declaration.name;
      if (ts.isIdentifier(name)) {
        this.#bind(record, 'namespace', undefined, name, declaration);
      } else if (ts.isObjectBindingPattern(name)) {
        record.list = name;
        for (const element of name.elements) {
          record.elements.push(element);
          const property = element.propertyName;
          const imported =
            property === undefined
              ? ts.isIdentifier(element.name)
                ? element.name.text
                : undefined
              : ts.isIdentifier(property) || ts.isStringLiteral(property)
                ? property.text
                : undefined;
          if (
            element.dotDotDotToken === undefined &&
            ts.isIdentifier(element.name) &&
            imported !== undefined &&
            this.#rules.isLegacyName(imported) &&
            element.initializer === undefined
          ) {
            this.#bind(record, 'named', imported, element.name, element);
          } else {
            record.foreign.add(element);
            if (element.dotDotDotToken !== undefined || !ts.isIdentifier(element.name)) {
              this.#findings.addReview(element, 'rest or nested destructuring of the legacy entry');
            }
          }
        }
      } else {
        this.#findings.addReview(declaration, `array destructuring of '${LEGACY_MODULE}'`);
        continue;
      }
      this.statements.push(record);
    }
  }

  #newStatement(
    statement: TS.Statement,
    moduleName: TS.StringLiteral,
    commonJs: boolean,
  ): LegacyStatement {
    const { text, sourceFile } = this.#source;
    const quote = text.charAt(moduleName.getStart(sourceFile)) === '"' ? '"' : "'";
    return {
      statement,
      elements: [],
      list: undefined,
      bindings: [],
      foreign: new Set(),
      commonJs,
      quote,
      semicolon: text.charAt(statement.end - 1) === ';',
    };
  }

  #bind(
    record: LegacyStatement,
    kind: Binding['kind'],
    legacyName: string | undefined,
    name: TS.Identifier,
    node: TS.Node,
  ): void {
    const symbol = this.#source.checker.getSymbolAtLocation(name);
    const binding: Binding = { kind, legacyName, kept: false, node, statement: record.statement };
    record.bindings.push(binding);
    this.#declarationNames.add(name);
    if (symbol === undefined) {
      binding.kept = true;
      return;
    }
    this.#bySymbol.set(symbol, binding);
    this.#localNames.add(name.text);
  }
}
