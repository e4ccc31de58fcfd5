/**
 * The "What it rewrites" table of `docs/migration.md`, rendered from the rule table (rules.ts), so
 * that the guide and the codemod cannot disagree. `node scripts/migration-table.mjs` writes it
 * into the guide; test/codemod-table.test.ts fails when the guide's copy differs.
 *
 * @module
 */
import {
  ATTRIBUTES,
  DIRECTION_ENUM,
  DIRECTION_MEMBERS,
  LEGACY_FUNCTIONS,
  type Barrier,
  type BarrierByDirection,
  type LegacyFunction,
} from './rules.js';

/** The table's columns. */
export const MIGRATION_TABLE_HEADER = ['legacy', 'barrier then', 'becomes', 'barrier now'] as const;

/** What the table shows where a row has no barrier (it is no access). */
const NOTHING = '—';

/** A code span, with `|` escaped for a table cell. */
function code(text: string): string {
  return `\`${text.replaceAll('|', '\\|')}\``;
}

function barrierText(barrier: Barrier): string {
  let text: string = barrier.strength;
  if (barrier.side !== undefined) text += `, ${barrier.side}`;
  if (barrier.when !== undefined) text += `, ${barrier.when}`;
  return text;
}

function nowText(now: Barrier | BarrierByDirection | undefined): string {
  if (now === undefined) return NOTHING;
  if (!('READ' in now)) return barrierText(now);
  const read = barrierText(now.READ);
  const write = barrierText(now.WRITE);
  return read === write ? read : `${read} (READ) / ${write} (WRITE)`;
}

/** The new call of a row, written with the row's parameter names (`attrs` for a direction). */
function becomesText(row: LegacyFunction): string {
  const parameters = Object.entries(row.parameters);
  const context = parameters.find(([, role]) => role === 'context')?.[0] ?? 'dma';
  const relaxed = `${ATTRIBUTES}.RELAXED`;
  const shape = row.becomes;
  switch (shape.kind) {
    case 'attributes': {
      const [first, ...others] = DIRECTION_MEMBERS.map((entry) => entry.attribute);
      const constants = [code(`${ATTRIBUTES}.${first ?? ''}`), ...others.map(code)].join(' / ');
      return `${constants} for a constant, else ${code(parameters[0]?.[0] ?? 'dir')} itself`;
    }
    case 'fixed':
      return code(`${context}.${shape.method}(${shape.arguments.join(', ')})`);
    case 'method': {
      const args: string[] = [];
      for (const [name, role] of parameters) {
        if (role === 'kept' || role === 'buffer') args.push(name);
        if (role === 'direction') args.push(row.relaxed === true ? `attrs | ${relaxed}` : 'attrs');
      }
      if (shape.attributes === 'optional' && row.relaxed === true) args.push(relaxed);
      return code(`${context}.${shape.method}(${args.join(', ')})`);
    }
  }
}

/**
 * The table's rows, cell by cell as Markdown: `DMADirection` first, then one row per legacy
 * function.
 *
 * @param rows - the legacy functions; the table of SPEC §8 by default.
 * @returns the cells of each row, in the columns of {@link MIGRATION_TABLE_HEADER}.
 */
export function migrationTableRows(rows: readonly LegacyFunction[] = LEGACY_FUNCTIONS): string[][] {
  const [first, ...others] = DIRECTION_MEMBERS;
  const members = [
    code(`${DIRECTION_ENUM}.${first?.member ?? ''}`),
    ...others.map((entry) => code(entry.member)),
  ].join(' / ');
  const values = DIRECTION_MEMBERS.map((entry) => code(String(entry.value))).join(' / ');
  const bits = [
    code(`${ATTRIBUTES}.${first?.attribute ?? ''}`),
    ...others.map((entry) => code(entry.attribute)),
  ].join(' / ');
  const typed = `${code(DIRECTION_ENUM)} / ${code(`${DIRECTION_ENUM}.${first?.member ?? ''}`)}`;
  return [
    [`${members} (also ${values} as a direction argument)`, NOTHING, bits, NOTHING],
    [
      `${typed} as a type`,
      NOTHING,
      `${code(ATTRIBUTES)} / ${code(`typeof ${ATTRIBUTES}.${first?.attribute ?? ''}`)}`,
      NOTHING,
    ],
    ...rows.map((row) => [
      code(`${row.name}(${Object.keys(row.parameters).join(', ')})`),
      row.then === undefined ? NOTHING : barrierText(row.then),
      becomesText(row),
      nowText(row.now),
    ]),
  ];
}

/**
 * The table as Markdown, not yet aligned (prettier aligns it in the guide).
 *
 * @param rows - the legacy functions; the table of SPEC §8 by default.
 * @returns the table's lines, joined by `\n`, without a final line break.
 */
export function renderMigrationTable(rows: readonly LegacyFunction[] = LEGACY_FUNCTIONS): string {
  const line = (cells: readonly string[]): string => `| ${cells.join(' | ')} |`;
  return [
    line(MIGRATION_TABLE_HEADER),
    line(MIGRATION_TABLE_HEADER.map(() => '---')),
    ...migrationTableRows(rows).map(line),
  ].join('\n');
}
