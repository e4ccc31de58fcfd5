/**
 * The pure transform: one source text in, the migrated text and a report out. It resolves
 * identifiers with the TypeScript checker (symbols, not names) and edits text ranges of the
 * original, so that everything outside a rewritten span stays byte-for-byte.
 *
 * @module
 */
import type * as TS from 'typescript';
import type {
  MigrateOptions,
  MigrateResult,
  ReviewSite,
  StrengthenedSite,
  WeakenedSite,
  WeakenedStrength,
} from './report.js';
import { loadTypeScript, type TypeScript } from './typescript.js';

const LEGACY_MODULE = 'dma-attrs/legacy';
const MAIN_MODULE = 'dma-attrs';
const ATTRIBUTES = 'DMAAttributes';

/** Each legacy function and its arity. */
const FUNCTIONS = {
  dmaMemoryRw: 5,
  dmaMemoryRwRelaxed: 5,
  dmaMemoryRead: 4,
  dmaMemoryReadRelaxed: 4,
  dmaMemoryWrite: 4,
  dmaMemoryWriteRelaxed: 4,
  dmaMemorySet: 4,
  dmaMemoryMap: 4,
  dmaMemoryUnmap: 5,
  dmaBarrier: 2,
  directionToAttributes: 1,
} as const;
type LegacyFunction = keyof typeof FUNCTIONS;
type LegacyName = LegacyFunction | 'DMADirection';

function isLegacyName(name: string): name is LegacyName {
  return name === 'DMADirection' || Object.hasOwn(FUNCTIONS, name);
}

/** A direction known at migration time, or one only known at run time. */
type Direction = 'READ' | 'WRITE' | 'dynamic';

/**
 * A replacement of `[start, end)` of the original text. `render` runs when the output is
 * assembled, so that edits nested inside the span (a `DMADirection.X` inside an argument)
 * are applied to the argument texts it reuses.
 */
interface Edit {
  start: number;
  end: number;
  render: () => string;
  /** Counted as a rewritten site when rendered. */
  site: boolean;
  local: boolean;
  /** A removed legacy statement: rendered last, once `DMAAttributes` use is known. */
  deferred?: boolean;
}

/** One binding of the legacy entry: a named import, a namespace, a require. */
interface Binding {
  kind: 'named' | 'namespace';
  /** The legacy export it names (named bindings only). */
  legacyName: LegacyName | undefined;
  /** Set when a reference is left unchanged: the binding must stay. */
  kept: boolean;
  /** The specifier / binding element, or the whole declaration for a namespace. */
  node: TS.Node;
  statement: TS.Statement;
}

/** How a legacy import or require statement ends up. */
interface LegacyStatement {
  statement: TS.Statement;
  /** Elements of `{ ... }` (import specifiers or binding elements); empty for a namespace. */
  elements: TS.Node[];
  /** The element list node replaced when some elements go. */
  list: TS.Node | undefined;
  bindings: Binding[];
  /** Elements not naming a legacy export: always kept. */
  foreign: Set<TS.Node>;
  commonJs: boolean;
  quote: string;
  semicolon: boolean;
}

function scriptKindOf(ts: TypeScript, fileName: string): TS.ScriptKind {
  const lower = fileName.toLowerCase();
  if (lower.endsWith('.tsx')) return ts.ScriptKind.TSX;
  if (lower.endsWith('.jsx')) return ts.ScriptKind.JSX;
  if (lower.endsWith('.js') || lower.endsWith('.mjs') || lower.endsWith('.cjs')) {
    return ts.ScriptKind.JS;
  }
  return ts.ScriptKind.TS;
}

function extensionOf(fileName: string): string {
  const match = /\.(?:d\.)?[mc]?[jt]sx?$/i.exec(fileName);
  return match === null ? '.ts' : match[0].toLowerCase();
}

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
  if (!text.includes(LEGACY_MODULE)) return unchangedResult(text);
  const ts = loadTypeScript();
  const migration = new Migration(ts, text, options);
  return migration.run();
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

function parse(
  ts: TypeScript,
  text: string,
  fileName: string,
): { sourceFile: TS.SourceFile; checker: TS.TypeChecker; syntaxErrors: readonly TS.Diagnostic[] } {
  const virtualName = `/dma-attrs-migrate/input${extensionOf(fileName)}`;
  const sourceFile = ts.createSourceFile(
    virtualName,
    text,
    ts.ScriptTarget.Latest,
    true,
    scriptKindOf(ts, fileName),
  );
  const host: TS.CompilerHost = {
    getSourceFile: (name) => (name === virtualName ? sourceFile : undefined),
    getDefaultLibFileName: () => '/dma-attrs-migrate/lib.d.ts',
    writeFile: () => undefined,
    getCurrentDirectory: () => '/dma-attrs-migrate',
    getCanonicalFileName: (name) => name,
    useCaseSensitiveFileNames: () => true,
    getNewLine: () => '\n',
    fileExists: (name) => name === virtualName,
    readFile: () => undefined,
  };
  const program = ts.createProgram({
    rootNames: [virtualName],
    options: {
      noLib: true,
      noResolve: true,
      allowJs: true,
      checkJs: false,
      jsx: ts.JsxEmit.Preserve,
      target: ts.ScriptTarget.Latest,
      module: ts.ModuleKind.ESNext,
      types: [],
      noEmit: true,
    },
    host,
  });
  return {
    sourceFile,
    checker: program.getTypeChecker(),
    syntaxErrors: program.getSyntacticDiagnostics(sourceFile),
  };
}

class Migration {
  readonly #ts: TypeScript;
  readonly #text: string;
  readonly #file: string;
  readonly #flags: boolean;
  readonly #preserve: boolean;
  #sourceFile!: TS.SourceFile;
  #checker!: TS.TypeChecker;
  readonly #edits: Edit[] = [];
  readonly #counted = new Set<Edit>();
  readonly #review: ReviewSite[] = [];
  readonly #weakened: WeakenedSite[] = [];
  readonly #strengthened: StrengthenedSite[] = [];
  readonly #bindingsBySymbol = new Map<TS.Symbol, Binding>();
  readonly #localNames = new Set<string>();
  readonly #declarationNames = new Set<TS.Node>();
  readonly #handledModuleStrings = new Set<TS.Node>();
  readonly #statements: LegacyStatement[] = [];
  /** How the output names `DMAAttributes`, and whether the file already imports it. */
  #attributesName = ATTRIBUTES;
  #attributesImported = false;
  #attributesUsed = false;
  #mainImport: TS.ImportDeclaration | TS.VariableStatement | undefined;

  constructor(ts: TypeScript, text: string, options: MigrateOptions) {
    this.#ts = ts;
    this.#text = text;
    this.#file = options.fileName;
    this.#flags = options.flags === true;
    this.#preserve = options.preserveFullBarriers === true;
  }

  run(): MigrateResult {
    const ts = this.#ts;
    const parsed = parse(ts, this.#text, this.#file);
    if (parsed.syntaxErrors.length > 0) {
      const first = parsed.syntaxErrors[0] as TS.Diagnostic;
      const where =
        first.start === undefined
          ? ''
          : (() => {
              const { line, character } = parsed.sourceFile.getLineAndCharacterOfPosition(
                first.start,
              );
              return `${line + 1}:${character + 1}: `;
            })();
      return {
        ...unchangedResult(this.#text),
        errors: [
          {
            file: this.#file,
            message: `does not parse: ${where}${ts.flattenDiagnosticMessageText(first.messageText, '\n')}`,
          },
        ],
      };
    }
    this.#sourceFile = parsed.sourceFile;
    this.#checker = parsed.checker;
    this.#collectBindings();
    if (this.#statements.length > 0 && !this.#resolveAttributesName()) {
      return { ...unchangedResult(this.#text), review: this.#review };
    }
    this.#visit(this.#sourceFile);
    this.#fixImports();
    let output: string;
    try {
      output = this.#assemble();
    } catch (error) {
      return {
        ...unchangedResult(this.#text),
        errors: [{ file: this.#file, message: (error as Error).message }],
      };
    }
    this.#review.sort((a, b) => a.line - b.line || a.column - b.column);
    return {
      text: output,
      changed: output !== this.#text,
      rewritten: this.#counted.size,
      review: this.#review,
      weakened: this.#weakened,
      strengthened: this.#strengthened,
      errors: [],
    };
  }

  // ---------------------------------------------------------------- bindings

  #isLegacyModule(node: TS.Node | undefined): node is TS.StringLiteral {
    return node !== undefined && this.#ts.isStringLiteral(node) && node.text === LEGACY_MODULE;
  }

  #isMainModule(node: TS.Node | undefined): node is TS.StringLiteral {
    return node !== undefined && this.#ts.isStringLiteral(node) && node.text === MAIN_MODULE;
  }

  /** `require('<module>')` with a string literal. */
  #requiredModule(node: TS.Expression | undefined): TS.StringLiteral | undefined {
    const ts = this.#ts;
    if (node === undefined || !ts.isCallExpression(node)) return undefined;
    if (!ts.isIdentifier(node.expression) || node.expression.text !== 'require') return undefined;
    const [arg] = node.arguments;
    if (node.arguments.length !== 1 || arg === undefined || !ts.isStringLiteral(arg)) {
      return undefined;
    }
    return arg;
  }

  #collectBindings(): void {
    const ts = this.#ts;
    for (const statement of this.#sourceFile.statements) {
      if (ts.isImportDeclaration(statement) && this.#isLegacyModule(statement.moduleSpecifier)) {
        this.#handledModuleStrings.add(statement.moduleSpecifier);
        const clause = statement.importClause;
        if (clause === undefined) continue; // a side-effect import binds nothing
        if (clause.name !== undefined) {
          this.#addReview(statement, `default import of '${LEGACY_MODULE}': migrate by hand`);
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
            if (isLegacyName(imported)) {
              this.#bind(record, 'named', imported, element.name, element);
            } else {
              record.foreign.add(element);
            }
          }
        }
        this.#statements.push(record);
      } else if (
        ts.isImportEqualsDeclaration(statement) &&
        ts.isExternalModuleReference(statement.moduleReference) &&
        this.#isLegacyModule(statement.moduleReference.expression)
      ) {
        this.#handledModuleStrings.add(statement.moduleReference.expression);
        if (statement.modifiers !== undefined && statement.modifiers.length > 0) {
          this.#addReview(statement, `exported import of '${LEGACY_MODULE}': migrate by hand`);
          continue;
        }
        const record = this.#newStatement(statement, statement.moduleReference.expression, false);
        this.#bind(record, 'namespace', undefined, statement.name, statement);
        this.#statements.push(record);
      } else if (ts.isVariableStatement(statement)) {
        this.#collectRequire(statement);
      } else if (
        ts.isExportDeclaration(statement) &&
        this.#isLegacyModule(statement.moduleSpecifier)
      ) {
        this.#handledModuleStrings.add(statement.moduleSpecifier);
        this.#addReview(
          statement,
          `re-export of '${LEGACY_MODULE}': its importers must migrate, then remove it`,
        );
      }
    }
  }

  #collectRequire(statement: TS.VariableStatement): void {
    const ts = this.#ts;
    const declarations = statement.declarationList.declarations;
    for (const declaration of declarations) {
      const moduleName = this.#requiredModule(declaration.initializer);
      if (moduleName?.text !== LEGACY_MODULE) continue;
      this.#handledModuleStrings.add(moduleName);
      if (declarations.length !== 1) {
        this.#addReview(
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
            isLegacyName(imported) &&
            element.initializer === undefined
          ) {
            this.#bind(record, 'named', imported, element.name, element);
          } else {
            record.foreign.add(element);
            if (element.dotDotDotToken !== undefined || !ts.isIdentifier(element.name)) {
              this.#addReview(element, 'rest or nested destructuring of the legacy entry');
            }
          }
        }
      } else {
        this.#addReview(declaration, `array destructuring of '${LEGACY_MODULE}'`);
        continue;
      }
      this.#statements.push(record);
    }
  }

  #newStatement(
    statement: TS.Statement,
    moduleName: TS.StringLiteral,
    commonJs: boolean,
  ): LegacyStatement {
    const quote = this.#text.charAt(moduleName.getStart(this.#sourceFile)) === '"' ? '"' : "'";
    return {
      statement,
      elements: [],
      list: undefined,
      bindings: [],
      foreign: new Set(),
      commonJs,
      quote,
      semicolon: this.#text.charAt(statement.end - 1) === ';',
    };
  }

  #bind(
    record: LegacyStatement,
    kind: Binding['kind'],
    legacyName: LegacyName | undefined,
    name: TS.Identifier,
    node: TS.Node,
  ): void {
    const symbol = this.#checker.getSymbolAtLocation(name);
    const binding: Binding = {
      kind,
      legacyName,
      kept: false,
      node,
      statement: record.statement,
    };
    record.bindings.push(binding);
    this.#declarationNames.add(name);
    if (symbol === undefined) {
      binding.kept = true;
      return;
    }
    this.#bindingsBySymbol.set(symbol, binding);
    this.#localNames.add(name.text);
  }

  /**
   * Finds how the output may name `DMAAttributes`: an existing import from `dma-attrs`
   * (aliased or a namespace), else the bare name when nothing in the file declares it.
   *
   * @returns false when the file declares its own `DMAAttributes` (nothing is migrated).
   */
  #resolveAttributesName(): boolean {
    const ts = this.#ts;
    for (const statement of this.#sourceFile.statements) {
      if (ts.isImportDeclaration(statement) && this.#isMainModule(statement.moduleSpecifier)) {
        const clause = statement.importClause;
        // `phaseModifier` replaces `isTypeOnly` in TypeScript 6 only; the peer range starts at 5.
        // eslint-disable-next-line @typescript-eslint/no-deprecated
        if (clause === undefined || clause.isTypeOnly) continue;
        const bindings = clause.namedBindings;
        if (bindings === undefined) continue;
        if (ts.isNamespaceImport(bindings)) {
          this.#attributesName = `${bindings.name.text}.${ATTRIBUTES}`;
          this.#attributesImported = true;
          return true;
        }
        for (const element of bindings.elements) {
          if ((element.propertyName ?? element.name).text === ATTRIBUTES && !element.isTypeOnly) {
            this.#attributesName = element.name.text;
            this.#attributesImported = true;
            return true;
          }
        }
        this.#mainImport ??= statement;
      } else if (ts.isVariableStatement(statement)) {
        const [declaration] = statement.declarationList.declarations;
        if (
          statement.declarationList.declarations.length !== 1 ||
          declaration === undefined ||
          !this.#isMainModule(this.#requiredModule(declaration.initializer))
        ) {
          continue;
        }
        if (ts.isIdentifier(declaration.name)) {
          this.#attributesName = `${declaration.name.text}.${ATTRIBUTES}`;
          this.#attributesImported = true;
          return true;
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
              this.#attributesName = element.name.text;
              this.#attributesImported = true;
              return true;
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
    find(this.#sourceFile);
    if (clash !== undefined) {
      this.#addReview(
        clash,
        `the file declares its own ${ATTRIBUTES}: nothing migrated, migrate by hand`,
      );
      return false;
    }
    return true;
  }

  // ---------------------------------------------------------------- references

  #visit(node: TS.Node): void {
    const ts = this.#ts;
    if (ts.isIdentifier(node)) {
      if (this.#localNames.has(node.text) && !this.#declarationNames.has(node)) {
        this.#reference(node);
      }
      return;
    }
    if (ts.isStringLiteral(node) && node.text === LEGACY_MODULE) {
      if (!this.#handledModuleStrings.has(node)) {
        this.#addReview(node, `'${LEGACY_MODULE}' loaded in a way the codemod does not follow`);
      }
      return;
    }
    ts.forEachChild(node, (child) => {
      this.#visit(child);
    });
  }

  #reference(identifier: TS.Identifier): void {
    const ts = this.#ts;
    const parent = identifier.parent;
    let symbol: TS.Symbol | undefined;
    if (ts.isShorthandPropertyAssignment(parent) && parent.name === identifier) {
      symbol = this.#checker.getShorthandAssignmentValueSymbol(parent);
    } else if (
      (ts.isPropertyAccessExpression(parent) && parent.name === identifier) ||
      (ts.isQualifiedName(parent) && parent.right === identifier) ||
      (ts.isPropertyAssignment(parent) && parent.name === identifier) ||
      (ts.isPropertyDeclaration(parent) && parent.name === identifier) ||
      (ts.isMethodDeclaration(parent) && parent.name === identifier)
    ) {
      return; // a property name, not a reference
    } else {
      symbol = this.#checker.getSymbolAtLocation(identifier);
    }
    if (symbol === undefined) return;
    const binding = this.#bindingsBySymbol.get(symbol);
    if (binding === undefined) return;
    if (binding.kind === 'named') {
      if (!this.#use(identifier, binding.legacyName as LegacyName)) binding.kept = true;
      return;
    }
    // A namespace: only `L.name` (or `L.name` in a type) can be followed.
    if (
      (ts.isPropertyAccessExpression(parent) &&
        parent.expression === identifier &&
        parent.questionDotToken === undefined) ||
      (ts.isQualifiedName(parent) && parent.left === identifier)
    ) {
      const member = ts.isPropertyAccessExpression(parent) ? parent.name : parent.right;
      if (ts.isIdentifier(member) && isLegacyName(member.text)) {
        if (!this.#use(parent, member.text)) binding.kept = true;
        return;
      }
      this.#addReview(parent, `'${member.getText(this.#sourceFile)}' is not a legacy export`);
      binding.kept = true;
      return;
    }
    if (ts.isElementAccessExpression(parent) && parent.expression === identifier) {
      this.#addReview(parent, 'computed access to the legacy entry: migrate by hand');
    } else if (ts.isExportSpecifier(parent) || ts.isExportAssignment(parent)) {
      this.#addReview(parent, 'the legacy entry is re-exported: its importers must migrate');
    } else {
      this.#addReview(identifier, 'the legacy namespace is used as a value: migrate by hand');
    }
    binding.kept = true;
  }

  /**
   * Rewrites one reference (`name` or `L.name`) to a legacy export.
   *
   * @returns false when it is left for review.
   */
  #use(reference: TS.Node, name: LegacyName): boolean {
    const ts = this.#ts;
    const parent = reference.parent;
    if (name === 'DMADirection') return this.#useDirection(reference);
    if (
      ts.isCallExpression(parent) &&
      parent.expression === reference &&
      parent.questionDotToken === undefined
    ) {
      return this.#rewriteCall(parent, name);
    }
    if (ts.isExportSpecifier(parent) || ts.isExportAssignment(parent)) {
      this.#addReview(reference, `${name} is re-exported: its importers must migrate`);
    } else if (ts.isTypeQueryNode(parent)) {
      this.#addReview(reference, `typeof ${name}: migrate by hand`);
    } else {
      this.#addReview(
        reference,
        `${name} is used as a value (not called): the new API is a method of the DMA context`,
      );
    }
    return false;
  }

  #useDirection(reference: TS.Node): boolean {
    const ts = this.#ts;
    const parent = reference.parent;
    if (ts.isPropertyAccessExpression(parent) && parent.expression === reference) {
      const member = parent.name.text;
      if (member === 'TO_DEVICE' || member === 'FROM_DEVICE') {
        const bit = member === 'TO_DEVICE' ? 'READ' : 'WRITE';
        this.#addEdit(parent, () => `${this.#attributes()}.${bit}`, true);
        return true;
      }
    }
    if (ts.isTypeReferenceNode(parent) && parent.typeName === reference) {
      this.#addEdit(reference, () => this.#attributes(), true);
      return true;
    }
    if (
      ts.isQualifiedName(parent) &&
      parent.left === reference &&
      ts.isTypeReferenceNode(parent.parent) &&
      (parent.right.text === 'TO_DEVICE' || parent.right.text === 'FROM_DEVICE')
    ) {
      const bit = parent.right.text === 'TO_DEVICE' ? 'READ' : 'WRITE';
      this.#addEdit(parent.parent, () => `typeof ${this.#attributes()}.${bit}`, true);
      return true;
    }
    this.#addReview(
      reference,
      'DMADirection used other than as DMADirection.TO_DEVICE/FROM_DEVICE or as a type',
    );
    return false;
  }

  // ---------------------------------------------------------------- calls

  #rewriteCall(call: TS.CallExpression, name: LegacyFunction): boolean {
    const ts = this.#ts;
    const args = call.arguments;
    if (args.some((arg) => ts.isSpreadElement(arg))) {
      this.#addReview(call, `${name} called with spread arguments: migrate by hand`);
      return false;
    }
    if (args.length !== FUNCTIONS[name]) {
      this.#addReview(
        call,
        `${name} called with ${args.length} arguments (expected ${FUNCTIONS[name]}): migrate by hand`,
      );
      return false;
    }
    const arg = (index: number): TS.Expression => args[index] as TS.Expression;

    if (name === 'directionToAttributes') {
      const dir = arg(0);
      const direction = this.#direction(dir);
      if (direction === 'dynamic') {
        this.#addEdit(call, () => this.#wrapOperand(dir, this.#renderNode(dir)), true);
      } else {
        this.#addEdit(call, () => `${this.#attributes()}.${direction}`, true);
      }
      return true;
    }

    const receiver = arg(0);
    const plainReceiver = this.#isPlainReceiver(receiver);
    const receiverText = (): string => {
      const text = this.#renderNode(receiver);
      return this.#isMemberSafe(receiver) ? text : `(${text})`;
    };

    if (name === 'dmaBarrier') {
      if (!this.#isPure(arg(1))) {
        this.#addReview(call, 'dmaBarrier with a direction that has side effects: migrate by hand');
        return false;
      }
      this.#addEdit(
        call,
        () => `${receiverText()}.barrier('full')${this.#commentsOf(receiver.end, call.end - 1)}`,
        true,
      );
      return true;
    }

    const relaxedForm =
      name === 'dmaMemoryRwRelaxed' ||
      name === 'dmaMemoryReadRelaxed' ||
      name === 'dmaMemoryWriteRelaxed';
    const weakenedForm =
      name === 'dmaMemoryRw' ||
      name === 'dmaMemoryRead' ||
      name === 'dmaMemoryWrite' ||
      name === 'dmaMemorySet';
    const explicitBarrier = weakenedForm && this.#preserve;
    if (explicitBarrier && !plainReceiver) {
      this.#addReview(
        call,
        `${name} with a receiver that would be evaluated twice by --preserve-full-barriers: migrate by hand`,
      );
      return false;
    }
    const relaxed = relaxedForm || explicitBarrier;
    const local: Edit[] = [];
    const replace = (start: number, end: number, render: () => string): void => {
      local.push({ start, end, render, site: false, local: true });
    };
    let method: string;
    let direction: Direction | undefined;

    switch (name) {
      case 'dmaMemoryRead':
      case 'dmaMemoryReadRelaxed':
      case 'dmaMemoryWrite':
      case 'dmaMemoryWriteRelaxed':
      case 'dmaMemoryRw':
      case 'dmaMemoryRwRelaxed': {
        const rw = name === 'dmaMemoryRw' || name === 'dmaMemoryRwRelaxed';
        method = rw ? 'rw' : name.startsWith('dmaMemoryRead') ? 'read' : 'write';
        direction = rw ? this.#direction(arg(4)) : method === 'read' ? 'READ' : 'WRITE';
        const buf = arg(2);
        const len = arg(3);
        const attrsSuffix = (): string =>
          !rw && relaxed ? `, ${this.#attributesText(undefined, true)}` : '';
        if (this.#isLengthOf(len, buf)) {
          replace(buf.end, len.end, () => `${this.#commentsOf(buf.end, len.end)}${attrsSuffix()}`);
        } else {
          replace(buf.getStart(this.#sourceFile), len.end, () => {
            const bufText = this.#renderNode(buf);
            const bufMember = this.#isMemberSafe(buf) ? bufText : `(${bufText})`;
            const between = this.#commentsOf(buf.end, len.getStart(this.#sourceFile), 'before');
            return `${bufMember}.subarray(0, ${between}${this.#renderNode(len)})${attrsSuffix()}`;
          });
        }
        if (rw) {
          const dir = arg(4);
          const dirDirection = direction;
          if (dirDirection !== 'dynamic' || relaxed) {
            replace(dir.getStart(this.#sourceFile), dir.end, () => {
              if (dirDirection !== 'dynamic') return this.#attributesText(dirDirection, relaxed);
              const attrs = this.#attributes();
              return `${this.#wrapOperand(dir, this.#renderNode(dir))} | ${attrs}.RELAXED`;
            });
          }
        }
        break;
      }
      case 'dmaMemorySet': {
        method = 'set';
        direction = 'WRITE';
        const len = arg(3);
        if (relaxed) {
          replace(
            len.getStart(this.#sourceFile),
            len.end,
            () => `${this.#renderNode(len)}, ${this.#attributesText(undefined, true)}`,
          );
        }
        break;
      }
      case 'dmaMemoryMap': {
        method = 'map';
        const dir = arg(3);
        direction = this.#direction(dir);
        const mapDirection = direction;
        if (mapDirection !== 'dynamic' || this.#preserve) {
          replace(dir.getStart(this.#sourceFile), dir.end, () => {
            if (mapDirection !== 'dynamic') {
              return this.#attributesText(mapDirection, this.#preserve);
            }
            return `${this.#wrapOperand(dir, this.#renderNode(dir))} | ${this.#attributes()}.RELAXED`;
          });
        }
        break;
      }
      case 'dmaMemoryUnmap': {
        method = 'unmap';
        const [, buffer, len, dir] = args as unknown as TS.Expression[];
        if (!this.#isPure(len as TS.Expression) || !this.#isPure(dir as TS.Expression)) {
          this.#addReview(
            call,
            'dmaMemoryUnmap with a len or dir that has side effects: migrate by hand',
          );
          return false;
        }
        const view = buffer as TS.Expression;
        const dropEnd = (dir as TS.Expression).end;
        replace(view.end, dropEnd, () => this.#commentsOf(view.end, dropEnd));
        break;
      }
    }

    // The call from its callee through the first separator becomes `receiver.method(`;
    // the rest of the argument list keeps its layout, with the local edits applied.
    const second = arg(1);
    let middleStart = second.pos;
    while (middleStart < second.end && /[ \t]/.test(this.#text.charAt(middleStart))) middleStart++;
    const close = call.end - 1;
    const render = (): string => {
      const head =
        this.#commentsOf(call.expression.end, receiver.getStart(this.#sourceFile), 'before') +
        this.#commentsOf(receiver.end, second.pos, 'before');
      const access = `${receiverText()}.${method}(${head}${this.#render(middleStart, close, local)})`;
      if (!explicitBarrier) return access;
      const barrier = `${receiverText()}.barrier('full')`;
      const statement = call.parent;
      if (
        ts.isExpressionStatement(statement) &&
        (ts.isBlock(statement.parent) ||
          ts.isSourceFile(statement.parent) ||
          ts.isModuleBlock(statement.parent) ||
          ts.isCaseClause(statement.parent) ||
          ts.isDefaultClause(statement.parent))
      ) {
        return `${barrier}; ${access}`;
      }
      return `(${barrier}, ${access})`;
    };
    this.#addEdit(call, render, true);

    const site = this.#location(call);
    if (weakenedForm && !this.#preserve) {
      const to: WeakenedStrength =
        direction === 'READ' ? 'acquire' : direction === 'WRITE' ? 'release' : 'acquire-or-release';
      this.#weakened.push({ ...site, from: 'full', to });
    } else if (!this.#preserve && name === 'dmaMemoryMap' && direction !== 'WRITE') {
      this.#strengthened.push({
        ...site,
        from: 'none',
        to: direction === 'READ' ? 'acquire' : 'acquire-or-none',
      });
    } else if (!this.#preserve && name === 'dmaMemoryUnmap') {
      this.#strengthened.push({ ...site, from: 'none', to: 'release' });
    }
    return true;
  }

  /** The direction an argument names: `DMADirection.X` of the legacy entry, or 0 / 1. */
  #direction(node: TS.Expression): Direction {
    const ts = this.#ts;
    let expression = node;
    while (ts.isParenthesizedExpression(expression)) expression = expression.expression;
    if (ts.isNumericLiteral(expression)) {
      if (expression.text === '0') return 'READ';
      if (expression.text === '1') return 'WRITE';
      return 'dynamic';
    }
    if (!ts.isPropertyAccessExpression(expression)) return 'dynamic';
    const member = expression.name.text;
    if (member !== 'TO_DEVICE' && member !== 'FROM_DEVICE') return 'dynamic';
    if (this.#legacyNameOf(expression.expression) !== 'DMADirection') return 'dynamic';
    return member === 'TO_DEVICE' ? 'READ' : 'WRITE';
  }

  /** Which legacy export `name` or `L.name` refers to, if any. */
  #legacyNameOf(node: TS.Expression): LegacyName | undefined {
    const ts = this.#ts;
    if (ts.isIdentifier(node)) {
      const symbol = this.#checker.getSymbolAtLocation(node);
      const binding = symbol === undefined ? undefined : this.#bindingsBySymbol.get(symbol);
      return binding?.kind === 'named' ? binding.legacyName : undefined;
    }
    if (ts.isPropertyAccessExpression(node) && ts.isIdentifier(node.expression)) {
      const symbol = this.#checker.getSymbolAtLocation(node.expression);
      const binding = symbol === undefined ? undefined : this.#bindingsBySymbol.get(symbol);
      if (binding?.kind === 'namespace' && isLegacyName(node.name.text)) return node.name.text;
    }
    return undefined;
  }

  /** `len` is textually `buf.length` or `buf.byteLength`, and reading `buf` twice is harmless. */
  #isLengthOf(len: TS.Expression, buf: TS.Expression): boolean {
    const ts = this.#ts;
    let expression = len;
    while (ts.isParenthesizedExpression(expression)) expression = expression.expression;
    if (!ts.isPropertyAccessExpression(expression)) return false;
    if (expression.name.text !== 'length' && expression.name.text !== 'byteLength') return false;
    if (!this.#isPure(buf)) return false;
    const squash = (node: TS.Node): string => node.getText(this.#sourceFile).replace(/\s+/g, '');
    return squash(expression.expression) === squash(buf);
  }

  /** Evaluating it has no side effect (property getters aside): it may be dropped or repeated. */
  #isPure(node: TS.Expression): boolean {
    const ts = this.#ts;
    if (
      ts.isIdentifier(node) ||
      ts.isNumericLiteral(node) ||
      ts.isStringLiteral(node) ||
      ts.isNoSubstitutionTemplateLiteral(node) ||
      node.kind === ts.SyntaxKind.ThisKeyword ||
      node.kind === ts.SyntaxKind.TrueKeyword ||
      node.kind === ts.SyntaxKind.FalseKeyword ||
      node.kind === ts.SyntaxKind.NullKeyword
    ) {
      return true;
    }
    if (ts.isParenthesizedExpression(node)) return this.#isPure(node.expression);
    if (ts.isPropertyAccessExpression(node)) return this.#isPure(node.expression);
    if (ts.isPrefixUnaryExpression(node)) {
      return (
        (node.operator === ts.SyntaxKind.MinusToken || node.operator === ts.SyntaxKind.PlusToken) &&
        ts.isNumericLiteral(node.operand)
      );
    }
    return false;
  }

  /** An identifier, `this`, or a property chain of those: safe to evaluate twice. */
  #isPlainReceiver(node: TS.Expression): boolean {
    const ts = this.#ts;
    if (ts.isIdentifier(node) || node.kind === ts.SyntaxKind.ThisKeyword) return true;
    return (
      ts.isPropertyAccessExpression(node) &&
      node.questionDotToken === undefined &&
      (node.flags & ts.NodeFlags.OptionalChain) === 0 &&
      this.#isPlainReceiver(node.expression)
    );
  }

  /** `node.method(...)` parses as intended without parentheses around `node`. */
  #isMemberSafe(node: TS.Expression): boolean {
    const ts = this.#ts;
    if ((node.flags & ts.NodeFlags.OptionalChain) !== 0) return false;
    return (
      ts.isIdentifier(node) ||
      node.kind === ts.SyntaxKind.ThisKeyword ||
      ts.isPropertyAccessExpression(node) ||
      ts.isElementAccessExpression(node) ||
      ts.isCallExpression(node) ||
      ts.isParenthesizedExpression(node) ||
      ts.isNonNullExpression(node)
    );
  }

  /** `text` stands for `node` as an operand of `|` (or in place of a call). */
  #wrapOperand(node: TS.Expression, text: string): string {
    const ts = this.#ts;
    return this.#isMemberSafe(node) ||
      ts.isNumericLiteral(node) ||
      ts.isPrefixUnaryExpression(node) ||
      ts.isStringLiteral(node)
      ? text
      : `(${text})`;
  }

  #attributes(): string {
    this.#attributesUsed = true;
    return this.#attributesName;
  }

  /** `DMAAttributes.READ | DMAAttributes.RELAXED` or, with --flags, `{ read: true, relaxed: true }`. */
  #attributesText(direction: 'READ' | 'WRITE' | undefined, relaxed: boolean): string {
    if (this.#flags) {
      const keys: string[] = [];
      if (direction !== undefined) keys.push(`${direction.toLowerCase()}: true`);
      if (relaxed) keys.push('relaxed: true');
      return `{ ${keys.join(', ')} }`;
    }
    const attrs = this.#attributes();
    const bits: string[] = [];
    if (direction !== undefined) bits.push(`${attrs}.${direction}`);
    if (relaxed) bits.push(`${attrs}.RELAXED`);
    return bits.join(' | ');
  }

  // ---------------------------------------------------------------- imports

  #fixImports(): void {
    let replaceable: LegacyStatement | undefined;
    let last: LegacyStatement | undefined;
    for (const record of this.#statements) {
      last = record;
      const removed = new Set(
        record.bindings.filter((binding) => !binding.kept).map((binding) => binding.node),
      );
      if (record.list === undefined) {
        if (removed.size > 0 && record.bindings.length === removed.size) {
          replaceable ??= record;
          this.#removeStatement(record, () => this.#replacementImport(record, replaceable));
        }
        continue;
      }
      const kept = record.elements.filter((element) => !removed.has(element));
      if (kept.length === 0) {
        replaceable ??= record;
        this.#removeStatement(record, () => this.#replacementImport(record, replaceable));
      } else if (kept.length < record.elements.length) {
        const list = record.list;
        this.#addEdit(
          list,
          () => `{ ${kept.map((element) => element.getText(this.#sourceFile)).join(', ')} }`,
          false,
        );
      }
    }
    this.#lastLegacy = last;
  }

  #lastLegacy: LegacyStatement | undefined;

  /** The statement's text up to its line break goes; a needed `DMAAttributes` import may take its place. */
  #removeStatement(record: LegacyStatement, replacement: () => string): void {
    const statement = record.statement;
    const end = statement.end;
    const lineBreak = /^[ \t]*(?:\r?\n)?/.exec(this.#text.slice(end))?.[0] ?? '';
    this.#edits.push({
      start: statement.getStart(this.#sourceFile),
      end: end + lineBreak.length,
      render: () => {
        const text = replacement();
        return text === '' ? '' : `${text}${lineBreak}`;
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

  #importPlaced = false;

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

  // ---------------------------------------------------------------- output

  #assemble(): string {
    // Render every edit once first so that `#attributesUsed` is known before the import edits.
    const top = this.#outermost(0, this.#text.length, []);
    const rendered = new Map<Edit, string>();
    for (const edit of top) {
      // Removed statements render last: they depend on whether DMAAttributes is used.
      if (edit.deferred !== true) rendered.set(edit, this.#renderEdit(edit));
    }
    for (const edit of top) {
      if (!rendered.has(edit)) rendered.set(edit, this.#renderEdit(edit));
    }
    const extra: { at: number; text: string }[] = [];
    if (this.#needsImport() && !this.#importPlaced) {
      extra.push(this.#importInsertion());
    }
    let output = '';
    let cursor = 0;
    const pieces = [
      ...top.map((edit) => ({
        start: edit.start,
        end: edit.end,
        text: rendered.get(edit) ?? '',
      })),
      ...extra.map(({ at, text }) => ({ start: at, end: at, text })),
    ].sort((a, b) => a.start - b.start || a.end - b.end);
    for (const piece of pieces) {
      output += this.#text.slice(cursor, piece.start) + piece.text;
      cursor = Math.max(cursor, piece.end);
    }
    return output + this.#text.slice(cursor);
  }

  /** The last element of an existing `{ ... }` import (or require) of `dma-attrs`, to append to. */
  #mergeTarget(): TS.Node | undefined {
    const ts = this.#ts;
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

  /** Where a new `DMAAttributes` import goes when no legacy statement was replaced by it. */
  #importInsertion(): { at: number; text: string } {
    const lastElement = this.#mergeTarget();
    if (lastElement !== undefined) return { at: lastElement.end, text: `, ${ATTRIBUTES}` };
    const record = this.#lastLegacy;
    if (record === undefined) return { at: 0, text: '' };
    return { at: record.statement.end, text: `\n${this.#importStatement(record)}` };
  }

  #renderEdit(edit: Edit): string {
    if (edit.site) this.#counted.add(edit);
    return edit.render();
  }

  /** Edits inside `[start, end)` that are not inside another one, in order. */
  #outermost(start: number, end: number, local: Edit[]): Edit[] {
    const candidates = [
      ...local,
      ...this.#edits.filter((edit) => edit.start >= start && edit.end <= end),
    ].sort(
      (a, b) =>
        a.start - b.start ||
        Number(a.end !== a.start) - Number(b.end !== b.start) ||
        b.end - a.end ||
        Number(b.local) - Number(a.local),
    );
    const chosen: Edit[] = [];
    let reach = start;
    for (const edit of candidates) {
      if (edit.start < reach) {
        if (edit.end > reach) {
          throw new Error(`internal error: overlapping edits at ${this.#describe(edit.start)}`);
        }
        continue;
      }
      chosen.push(edit);
      reach = edit.end;
    }
    return chosen;
  }

  /** The original text of `[start, end)` with the edits inside it applied. */
  #render(start: number, end: number, local: Edit[] = []): string {
    let output = '';
    let cursor = start;
    for (const edit of this.#outermost(start, end, local)) {
      output += this.#text.slice(cursor, edit.start) + this.#renderEdit(edit);
      cursor = edit.end;
    }
    return output + this.#text.slice(cursor, end);
  }

  #renderNode(node: TS.Node): string {
    return this.#render(node.getStart(this.#sourceFile), node.end);
  }

  /**
   * The comments in `[start, end)`, so that a comment inside a rewritten call survives:
   * `'after'` puts a space before each (to follow code), `'before'` one after (to precede code).
   */
  #commentsOf(start: number, end: number, style: 'after' | 'before' = 'after'): string {
    const ts = this.#ts;
    if (!this.#text.slice(start, end).includes('/')) return '';
    const scanner = ts.createScanner(
      ts.ScriptTarget.Latest,
      false,
      this.#sourceFile.languageVariant,
      this.#text,
      undefined,
      start,
      end - start,
    );
    let comments = '';
    for (
      let token = scanner.scan();
      token !== ts.SyntaxKind.EndOfFileToken;
      token = scanner.scan()
    ) {
      if (token === ts.SyntaxKind.MultiLineCommentTrivia) {
        const comment = scanner.getTokenText();
        comments += style === 'after' ? ` ${comment}` : `${comment} `;
      } else if (token === ts.SyntaxKind.SingleLineCommentTrivia) {
        const comment = scanner.getTokenText();
        comments += style === 'after' ? ` ${comment}\n` : `${comment}\n`;
      }
    }
    return comments;
  }

  #addEdit(node: TS.Node, render: () => string, site: boolean): void {
    this.#edits.push({
      start: node.getStart(this.#sourceFile),
      end: node.end,
      render,
      site,
      local: false,
    });
  }

  #location(node: TS.Node): { file: string; line: number; column: number } {
    const { line, character } = this.#sourceFile.getLineAndCharacterOfPosition(
      node.getStart(this.#sourceFile),
    );
    return { file: this.#file, line: line + 1, column: character + 1 };
  }

  #describe(position: number): string {
    const { line, character } = this.#sourceFile.getLineAndCharacterOfPosition(position);
    return `${this.#file}:${line + 1}:${character + 1}`;
  }

  #addReview(node: TS.Node, reason: string): void {
    this.#review.push({ ...this.#location(node), reason });
  }
}
