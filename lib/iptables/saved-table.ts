import { PalisadeError } from '../errors.js';
import { hashFromComment } from '../../rules/rule-hash.js';
import { splitRuleLine } from './tokens.js';

/**
 * One table as iptables-save prints it, reduced to what the dataplane compares: each chain's
 * rules with their palisade hash (null for a rule palisade did not write), jump target and counters.
 */

export interface SavedRule {
  /** The rule as saved, from "-A CHAIN" on, without counters: it can be replayed as "-D CHAIN ...". */
  readonly text: string;
  readonly hash: string | null;
  /** The -j or -g target, or null for a rule without one. */
  readonly target: string | null;
  readonly packets: number;
  readonly bytes: number;
}

export interface SavedChain {
  readonly name: string;
  readonly builtin: boolean;
  readonly rules: readonly SavedRule[];
}

export type SavedTable = ReadonlyMap<string, SavedChain>;

export class SaveOutputError extends PalisadeError {
  constructor(message: string) {
    super('IPTABLES_SAVE_MALFORMED', message);
    this.name = 'SaveOutputError';
  }
}

/**
 * Parses one table. The output's shape is checked, not just the exit code: a save that printed an
 * error but exited 0 must not read as "no rules" (which would make the caller rewrite everything, or
 * worse, believe a hook is missing and add another).
 */
export function parseSavedTable(text: string, table: string): SavedTable {
  const chains = new Map<string, { name: string; builtin: boolean; rules: SavedRule[] }>();
  let inTable = false;
  let committed = false;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('*')) {
      inTable = line === `*${table}`;
      continue;
    }
    if (!inTable) continue;
    if (line === 'COMMIT') {
      committed = true;
      inTable = false;
      continue;
    }
    if (line.startsWith(':')) {
      const [name = '', policy = '-'] = line.slice(1).split(/\s+/);
      chains.set(name, { name, builtin: policy !== '-', rules: [] });
      continue;
    }
    const rule = parseRuleLine(line);
    const chain = chains.get(rule.chain);
    if (chain === undefined) throw new SaveOutputError(`iptables-save output has a rule for undeclared chain ${rule.chain}: ${line}`);
    chain.rules.push(rule.rule);
  }
  if (!committed) throw new SaveOutputError(`iptables-save output has no complete *${table} table (no COMMIT); got: ${text.slice(0, 200)}`);
  return chains;
}

function parseRuleLine(line: string): { chain: string; rule: SavedRule } {
  let packets = 0;
  let bytes = 0;
  let rest = line;
  const counters = /^\[(\d+):(\d+)\]\s+/.exec(line);
  if (counters !== null) {
    packets = Number(counters[1]);
    bytes = Number(counters[2]);
    rest = line.slice(counters[0].length);
  }
  const tokens = splitRuleLine(rest);
  if (tokens[0] !== '-A' || tokens[1] === undefined) throw new SaveOutputError(`unexpected line in iptables-save output: ${line}`);
  let hash: string | null = null;
  let target: string | null = null;
  for (let i = 2; i < tokens.length; i++) {
    if (tokens[i] === '--comment' && hash === null) hash = hashFromComment(tokens[i + 1] ?? '');
    if ((tokens[i] === '-j' || tokens[i] === '-g') && target === null) target = tokens[i + 1] ?? null;
  }
  return { chain: tokens[1], rule: { text: rest, hash, target, packets, bytes } };
}
