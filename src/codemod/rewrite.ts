/**
 * The rewrite of every reference to a legacy binding, driven by the rule table (rules.ts): a call
 * of a legacy function becomes the new call of its row, `DMADirection.X` its attribute bit,
 * `DMADirection` as a type `DMAAttributes`; what cannot be followed is left for review.
 *
 * @module
 */
import type * as TS from 'typescript';
import type { LegacyBindings } from './bindings.js';
import { localEdit, type Edit, type Edits } from './edits.js';
import { isLengthOf, isMemberSafe, isPlainReceiver, isPure, wrapOperand } from './expressions.js';
import type { Imports } from './imports.js';
import {
  barrierChange,
  DIRECTION_ENUM,
  DIRECTION_MEMBERS,
  directionOfMember,
  directionOfValue,
  LEGACY_MODULE,
  type Direction,
  type DirectionBit,
  type Rule,
  type RuleParameter,
  type RuleTable,
} from './rules.js';
import { locate, type Findings, type Source } from './source.js';

/** The output style of the rewrite. */
export interface RewriteOptions {
  /** Flag objects instead of bit expressions. */
  flags: boolean;
  /** `--preserve-full-barriers`. */
  preserve: boolean;
}

/** An argument of the new call as it is built: its range, and the edit that renders it. */
interface Emitted {
  start: number;
  end: number;
  node: TS.Expression;
  edit: Edit | undefined;
}

/** Rewrites the references of one file into edits. */
export class Rewriter {
  readonly #source: Source;
  readonly #findings: Findings;
  readonly #bindings: LegacyBindings;
  readonly #imports: Imports;
  readonly #edits: Edits;
  readonly #rules: RuleTable;
  readonly #options: RewriteOptions;

  constructor(
    source: Source,
    context: {
      findings: Findings;
      bindings: LegacyBindings;
      imports: Imports;
      edits: Edits;
      rules: RuleTable;
    },
    options: RewriteOptions,
  ) {
    this.#source = source;
    this.#findings = context.findings;
    this.#bindings = context.bindings;
    this.#imports = context.imports;
    this.#edits = context.edits;
    this.#rules = context.rules;
    this.#options = options;
  }

  /** Visits `node` and everything under it. */
  visit(node: TS.Node): void {
    const ts = this.#source.ts;
    if (ts.isIdentifier(node)) {
      if (this.#bindings.mayReference(node)) this.#reference(node);
      return;
    }
    if (ts.isStringLiteral(node) && node.text === LEGACY_MODULE) {
      if (!this.#bindings.isFollowed(node)) {
        this.#findings.addReview(
          node,
          `'${LEGACY_MODULE}' loaded in a way the codemod does not follow`,
        );
      }
      return;
    }
    ts.forEachChild(node, (child) => {
      this.visit(child);
    });
  }

  // ---------------------------------------------------------------- references

  #reference(identifier: TS.Identifier): void {
    const { ts, sourceFile } = this.#source;
    const binding = this.#bindings.bindingOf(identifier);
    if (binding === undefined) return;
    if (binding.kind === 'named') {
      if (!this.#use(identifier, binding.legacyName as string)) binding.kept = true;
      return;
    }
    // A namespace: only `L.name` (or `L.name` in a type) can be followed.
    const parent = identifier.parent;
    if (
      (ts.isPropertyAccessExpression(parent) &&
        parent.expression === identifier &&
        parent.questionDotToken === undefined) ||
      (ts.isQualifiedName(parent) && parent.left === identifier)
    ) {
      const member = ts.isPropertyAccessExpression(parent) ? parent.name : parent.right;
      if (ts.isIdentifier(member) && this.#rules.isLegacyName(member.text)) {
        if (!this.#use(parent, member.text)) binding.kept = true;
        return;
      }
      this.#findings.addReview(parent, `'${member.getText(sourceFile)}' is not a legacy export`);
      binding.kept = true;
      return;
    }
    if (ts.isElementAccessExpression(parent) && parent.expression === identifier) {
      this.#findings.addReview(parent, 'computed access to the legacy entry: migrate by hand');
    } else if (ts.isExportSpecifier(parent) || ts.isExportAssignment(parent)) {
      this.#findings.addReview(
        parent,
        'the legacy entry is re-exported: its importers must migrate',
      );
    } else {
      this.#findings.addReview(
        identifier,
        'the legacy namespace is used as a value: migrate by hand',
      );
    }
    binding.kept = true;
  }

  /**
   * Rewrites one reference (`name` or `L.name`) to a legacy export.
   *
   * @returns false when it is left for review.
   */
  #use(reference: TS.Node, name: string): boolean {
    const ts = this.#source.ts;
    const parent = reference.parent;
    const rule = this.#rules.rule(name);
    if (rule === undefined) return this.#useDirection(reference);
    if (
      ts.isCallExpression(parent) &&
      parent.expression === reference &&
      parent.questionDotToken === undefined
    ) {
      return this.#rewriteCall(parent, rule);
    }
    if (ts.isExportSpecifier(parent) || ts.isExportAssignment(parent)) {
      this.#findings.addReview(reference, `${name} is re-exported: its importers must migrate`);
    } else if (ts.isTypeQueryNode(parent)) {
      this.#findings.addReview(reference, `typeof ${name}: migrate by hand`);
    } else {
      this.#findings.addReview(
        reference,
        `${name} is used as a value (not called): the new API is a method of the DMA context`,
      );
    }
    return false;
  }

  /** `DMADirection.X` becomes its bit, `DMADirection` (or `DMADirection.X`) as a type the attributes. */
  #useDirection(reference: TS.Node): boolean {
    const ts = this.#source.ts;
    const parent = reference.parent;
    if (ts.isPropertyAccessExpression(parent) && parent.expression === reference) {
      const bit = directionOfMember(parent.name.text);
      if (bit !== undefined) {
        this.#edits.replace(parent, () => `${this.#imports.attributes()}.${bit}`, true);
        return true;
      }
    }
    if (ts.isTypeReferenceNode(parent) && parent.typeName === reference) {
      this.#edits.replace(reference, () => this.#imports.attributes(), true);
      return true;
    }
    if (ts.isQualifiedName(parent) && parent.left === reference) {
      const bit = directionOfMember(parent.right.text);
      if (bit !== undefined && ts.isTypeReferenceNode(parent.parent)) {
        this.#edits.replace(
          parent.parent,
          () => `typeof ${this.#imports.attributes()}.${bit}`,
          true,
        );
        return true;
      }
    }
    const members = DIRECTION_MEMBERS.map((entry) => entry.member).join('/');
    this.#findings.addReview(
      reference,
      `${DIRECTION_ENUM} used other than as ${DIRECTION_ENUM}.${members} or as a type`,
    );
    return false;
  }

  // ---------------------------------------------------------------- calls

  /**
   * Rewrites a call of a legacy function per its rule.
   *
   * @returns false when it is left for review.
   */
  #rewriteCall(call: TS.CallExpression, rule: Rule): boolean {
    const { ts } = this.#source;
    const name = rule.name;
    const args = call.arguments;
    if (args.some((arg) => ts.isSpreadElement(arg))) {
      this.#findings.addReview(call, `${name} called with spread arguments: migrate by hand`);
      return false;
    }
    const arity = rule.parameters.length;
    if (args.length !== arity) {
      this.#findings.addReview(
        call,
        `${name} called with ${args.length} arguments (expected ${arity}): migrate by hand`,
      );
      return false;
    }
    const arg = (parameter: RuleParameter): TS.Expression => args[parameter.index] as TS.Expression;
    const direction: Direction | undefined =
      rule.direction === undefined ? rule.row.direction : this.#direction(arg(rule.direction));
    const shape = rule.row.becomes;
    let done: boolean;
    if (shape.kind === 'attributes') {
      const dir = arg(rule.direction as RuleParameter);
      this.#edits.replace(
        call,
        () =>
          direction === undefined || direction === 'dynamic'
            ? wrapOperand(ts, dir, this.#edits.renderNode(dir))
            : `${this.#imports.attributes()}.${direction}`,
        true,
      );
      done = true;
    } else if (shape.kind === 'fixed') {
      done = this.#rewriteFixed(call, rule, shape.method, shape.arguments);
    } else {
      done = this.#rewriteMethod(call, rule, shape.method, shape.attributes, direction);
    }
    if (done && !this.#options.preserve) this.#reportBarrier(call, rule, direction);
    return done;
  }

  /** `dma.<method>(<fixed arguments>)`: every argument but the context dropped. */
  #rewriteFixed(
    call: TS.CallExpression,
    rule: Rule,
    method: string,
    fixed: readonly string[],
  ): boolean {
    const args = call.arguments;
    if (!this.#droppable(call, rule, rule.parameters.slice(1))) return false;
    const receiver = args[0] as TS.Expression;
    this.#edits.replace(
      call,
      () =>
        `${this.#receiverText(receiver)}.${method}(${fixed.join(', ')})${this.#edits.commentsOf(receiver.end, call.end - 1)}`,
      true,
    );
    return true;
  }

  /**
   * `dma.<method>(…)` with the legacy arguments mapped by role. The call from its callee through
   * the first separator becomes `receiver.method(`; the rest of the argument list keeps its
   * layout, with the edits of the mapped arguments applied.
   */
  #rewriteMethod(
    call: TS.CallExpression,
    rule: Rule,
    method: string,
    attributes: 'direction' | 'optional' | 'none',
    direction: Direction | undefined,
  ): boolean {
    const { ts, text, sourceFile } = this.#source;
    const { preserve } = this.#options;
    const args = call.arguments;
    const receiver = args[0] as TS.Expression;
    // The 2012 full barrier kept as an explicit one, the access itself RELAXED.
    const explicitBarrier = preserve && rule.weakens;
    if (explicitBarrier && !isPlainReceiver(ts, receiver)) {
      this.#findings.addReview(
        call,
        `${rule.name} with a receiver that would be evaluated twice by --preserve-full-barriers: migrate by hand`,
      );
      return false;
    }
    const dropped = rule.parameters.filter((parameter) => parameter.role === 'dropped');
    if (!this.#droppable(call, rule, dropped)) return false;
    // Under --preserve-full-barriers every access whose barrier changed is RELAXED, maps included:
    // an unmap's barrier follows its map's attributes.
    const relaxed = rule.row.relaxed === true || (preserve && rule.changesBarrier);

    const local = this.#argumentEdits(call, rule, attributes, direction, relaxed);

    const second = args[1] as TS.Expression;
    let middleStart = second.pos;
    while (middleStart < second.end && /[ \t]/.test(text.charAt(middleStart))) middleStart++;
    const close = call.end - 1;
    const render = (): string => {
      const head =
        this.#edits.commentsOf(call.expression.end, receiver.getStart(sourceFile), 'before') +
        this.#edits.commentsOf(receiver.end, second.pos, 'before');
      const access = `${this.#receiverText(receiver)}.${method}(${head}${this.#edits.render(middleStart, close, local)})`;
      if (!explicitBarrier) return access;
      const barrier = `${this.#receiverText(receiver)}.barrier('full')`;
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
    this.#edits.replace(call, render, true);
    return true;
  }

  /**
   * The edits of a call's arguments inside `receiver.method(…)`, each argument per its role:
   * a buffer with its length, a direction as attributes, a run of dropped ones removed with
   * their separators (their comments kept), and the optional RELAXED after the last one.
   */
  #argumentEdits(
    call: TS.CallExpression,
    rule: Rule,
    attributes: 'direction' | 'optional' | 'none',
    direction: Direction | undefined,
    relaxed: boolean,
  ): Edit[] {
    const { sourceFile } = this.#source;
    const args = call.arguments;
    const local: Edit[] = [];
    let last: Emitted | undefined;
    const emit = (node: TS.Expression, start: number, end: number, edit?: Edit): void => {
      if (edit !== undefined) local.push(edit);
      last = { start, end, node, edit };
    };
    let drop: Edit | undefined;
    for (const parameter of rule.parameters) {
      const node = args[parameter.index] as TS.Expression;
      if (parameter.role !== 'dropped') drop = undefined;
      switch (parameter.role) {
        case 'context':
        case 'length': // rendered with its buffer
          break;
        case 'kept':
          emit(node, node.getStart(sourceFile), node.end);
          break;
        case 'buffer': {
          const len = args[parameter.index + 1] as TS.Expression;
          emit(node, node.getStart(sourceFile), len.end, this.#bufferEdit(node, len));
          break;
        }
        case 'direction': {
          const start = node.getStart(sourceFile);
          if (direction !== 'dynamic' || relaxed) {
            emit(
              node,
              start,
              node.end,
              localEdit(start, node.end, () => this.#attributesOf(node, direction, relaxed)),
            );
          } else {
            emit(node, start, node.end);
          }
          break;
        }
        case 'dropped': {
          // A run of dropped arguments goes with the separators before it; its comments stay.
          if (drop === undefined) {
            const from = (last as Emitted).end;
            const edit = localEdit(from, node.end, () => this.#edits.commentsOf(from, edit.end));
            drop = edit;
            local.push(edit);
          } else {
            drop.end = node.end;
          }
          break;
        }
      }
    }
    if (attributes === 'optional' && relaxed && last !== undefined) {
      const suffix = (): string => `, ${this.#attributesText(undefined, true)}`;
      const target: Emitted = last;
      if (target.edit === undefined) {
        local.push(
          localEdit(target.start, target.end, () => this.#edits.renderNode(target.node) + suffix()),
        );
      } else {
        const render = target.edit.render;
        target.edit.render = () => render() + suffix();
      }
    }
    return local;
  }

  /** `buf` when `len` is its length (the length's comments kept), else `buf.subarray(0, len)`. */
  #bufferEdit(buf: TS.Expression, len: TS.Expression): Edit {
    const { ts, sourceFile } = this.#source;
    const edits = this.#edits;
    if (isLengthOf(ts, sourceFile, len, buf)) {
      return localEdit(buf.end, len.end, () => edits.commentsOf(buf.end, len.end));
    }
    return localEdit(buf.getStart(sourceFile), len.end, () => {
      const bufText = edits.renderNode(buf);
      const bufMember = isMemberSafe(ts, buf) ? bufText : `(${bufText})`;
      const between = edits.commentsOf(buf.end, len.getStart(sourceFile), 'before');
      return `${bufMember}.subarray(0, ${between}${edits.renderNode(len)})`;
    });
  }

  /** Whether the arguments the new call drops have no side effect; else the call is reviewed. */
  #droppable(call: TS.CallExpression, rule: Rule, dropped: readonly RuleParameter[]): boolean {
    const ts = this.#source.ts;
    const effects = dropped.filter(
      (parameter) => !isPure(ts, call.arguments[parameter.index] as TS.Expression),
    );
    if (effects.length === 0) return true;
    const nouns = dropped.map((parameter) =>
      parameter.role === 'direction' ? 'direction' : parameter.name,
    );
    this.#findings.addReview(
      call,
      `${rule.name} with a ${nouns.join(' or ')} that has side effects: migrate by hand`,
    );
    return false;
  }

  /** Reports a call whose barrier is weaker or stronger than the 2012 helper's. */
  #reportBarrier(call: TS.CallExpression, rule: Rule, direction: Direction | undefined): void {
    const change = barrierChange(rule, direction);
    if (change === undefined) return;
    const site = locate(this.#source, call);
    if (change.kind === 'weakened') {
      this.#findings.weakened.push({ ...site, from: 'full', to: change.to });
    } else {
      this.#findings.strengthened.push({ ...site, from: 'none', to: change.to });
    }
  }

  #receiverText(receiver: TS.Expression): string {
    const text = this.#edits.renderNode(receiver);
    return isMemberSafe(this.#source.ts, receiver) ? text : `(${text})`;
  }

  /** The direction an argument names: `DMADirection.X` of the legacy entry, or its value. */
  #direction(node: TS.Expression): Direction {
    const ts = this.#source.ts;
    let expression = node;
    while (ts.isParenthesizedExpression(expression)) expression = expression.expression;
    if (ts.isNumericLiteral(expression)) return directionOfValue(expression.text) ?? 'dynamic';
    if (!ts.isPropertyAccessExpression(expression)) return 'dynamic';
    const bit = directionOfMember(expression.name.text);
    if (bit === undefined) return 'dynamic';
    if (this.#bindings.legacyNameOf(expression.expression) !== DIRECTION_ENUM) return 'dynamic';
    return bit;
  }

  /** The attributes replacing a direction argument: its bits, or `dir | RELAXED` when dynamic. */
  #attributesOf(dir: TS.Expression, direction: Direction | undefined, relaxed: boolean): string {
    if (direction !== undefined && direction !== 'dynamic') {
      return this.#attributesText(direction, relaxed);
    }
    const ts = this.#source.ts;
    const operand = wrapOperand(ts, dir, this.#edits.renderNode(dir));
    return `${operand} | ${this.#imports.attributes()}.RELAXED`;
  }

  /** `DMAAttributes.READ | DMAAttributes.RELAXED` or, with --flags, `{ read: true, relaxed: true }`. */
  #attributesText(direction: DirectionBit | undefined, relaxed: boolean): string {
    if (this.#options.flags) {
      const keys: string[] = [];
      if (direction !== undefined) keys.push(`${direction.toLowerCase()}: true`);
      if (relaxed) keys.push('relaxed: true');
      return `{ ${keys.join(', ')} }`;
    }
    const attrs = this.#imports.attributes();
    const bits: string[] = [];
    if (direction !== undefined) bits.push(`${attrs}.${direction}`);
    if (relaxed) bits.push(`${attrs}.RELAXED`);
    return bits.join(' | ');
  }
}
