/**
 * What the rewrite needs to know of an argument expression before it moves, drops or repeats it:
 * whether evaluating it has effects, whether it can be a method's receiver as it is.
 *
 * @module
 */
import type * as TS from 'typescript';
import type { TypeScript } from './typescript.js';

/** Evaluating it has no side effect (property getters aside): it may be dropped or repeated. */
export function isPure(ts: TypeScript, node: TS.Expression): boolean {
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
  if (ts.isParenthesizedExpression(node)) return isPure(ts, node.expression);
  if (ts.isPropertyAccessExpression(node)) return isPure(ts, node.expression);
  if (ts.isPrefixUnaryExpression(node)) {
    return (
      (node.operator === ts.SyntaxKind.MinusToken || node.operator === ts.SyntaxKind.PlusToken) &&
      ts.isNumericLiteral(node.operand)
    );
  }
  return false;
}

/** `len` is textually `buf.length` or `buf.byteLength`, and reading `buf` twice is harmless. */
export function isLengthOf(
  ts: TypeScript,
  sourceFile: TS.SourceFile,
  len: TS.Expression,
  buf: TS.Expression,
): boolean {
  let expression = len;
  while (ts.isParenthesizedExpression(expression)) expression = expression.expression;
  if (!ts.isPropertyAccessExpression(expression)) return false;
  if (expression.name.text !== 'length' && expression.name.text !== 'byteLength') return false;
  if (!isPure(ts, buf)) return false;
  const squash = (node: TS.Node): string => node.getText(sourceFile).replace(/\s+/g, '');
  return squash(expression.expression) === squash(buf);
}

/** An identifier, `this`, or a property chain of those: safe to evaluate twice. */
export function isPlainReceiver(ts: TypeScript, node: TS.Expression): boolean {
  if (ts.isIdentifier(node) || node.kind === ts.SyntaxKind.ThisKeyword) return true;
  return (
    ts.isPropertyAccessExpression(node) &&
    node.questionDotToken === undefined &&
    (node.flags & ts.NodeFlags.OptionalChain) === 0 &&
    isPlainReceiver(ts, node.expression)
  );
}

/** `node.method(...)` parses as intended without parentheses around `node`. */
export function isMemberSafe(ts: TypeScript, node: TS.Expression): boolean {
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

/** `text` (the rendering of `node`) as an operand of `|`, or in place of a call. */
export function wrapOperand(ts: TypeScript, node: TS.Expression, text: string): string {
  return isMemberSafe(ts, node) ||
    ts.isNumericLiteral(node) ||
    ts.isPrefixUnaryExpression(node) ||
    ts.isStringLiteral(node)
    ? text
    : `(${text})`;
}
