import type { Chain, Dataplane, HookRule, IpSet, Rule } from './dataplane.js';
import { POLICY_TABLE } from './dataplane.js';
import { ruleHashes, taggedComment } from './rule-hash.js';

/**
 * Restore text from the desired dataplane. The only place that turns rules into text, so quoting
 * lives here alone. Output is deterministic: chains and sets sorted by name, members sorted, so the
 * same input gives byte-identical text.
 */

const SAFE_TOKEN = /^[A-Za-z0-9_.:/,+=!-]+$/;

/** iptables-restore splits on whitespace and honours double quotes; anything else unusual is quoted. */
export function quoteToken(token: string): string {
  if (SAFE_TOKEN.test(token)) return token;
  return `"${token.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** The rule's arguments with its hash-stamped comment, as iptables-restore takes them after the chain name. */
export function ruleArgs(rule: Rule, hash: string): string[] {
  return [...rule.match, '-m', 'comment', '--comment', taggedComment(hash, rule.comment), ...rule.target];
}

export function renderRule(chain: string, rule: Rule, hash: string, verb: '-A' | '-I' | '-D' = '-A'): string {
  const position = verb === '-I' ? [chain, '1'] : [chain];
  return [verb, ...position, ...ruleArgs(rule, hash)].map(quoteToken).join(' ');
}

/** A chain's rules as `-A` lines. */
export function renderChainRules(chain: Chain): string[] {
  const hashes = ruleHashes(chain.name, chain.rules);
  return chain.rules.map((rule, i) => renderRule(chain.name, rule, hashes[i]!));
}

/** A hook rule is the only rule palisade writes in a built-in chain; its hash is that of a one-rule chain. */
export function hookHash(hook: HookRule): string {
  return ruleHashes(hook.chain, [hook.rule])[0]!;
}

export function renderHook(hook: HookRule, verb: '-I' | '-D'): string {
  return renderRule(hook.chain, hook.rule, hookHash(hook), verb);
}

function byName<T extends { readonly name: string }>(a: T, b: T): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/** The chain declarations and rules, in one transaction on palisade's table, for `iptables-restore --noflush`. */
export function renderChains(chains: Iterable<Chain>, hooks: readonly HookRule[] = []): string {
  const sorted = [...chains].sort(byName);
  const lines = [`*${POLICY_TABLE}`];
  for (const chain of sorted) lines.push(`:${chain.name} - [0:0]`);
  for (const chain of sorted) lines.push(...renderChainRules(chain));
  for (const hook of hooks) lines.push(renderHook(hook, '-I'));
  lines.push('COMMIT');
  return `${lines.join('\n')}\n`;
}

/**
 * The whole ruleset, hooks included, as it loads into a namespace that has none of it yet. The daemon
 * does not use the hook lines: it places and keeps hooks at position 1 itself.
 */
export function renderIptables(dataplane: Dataplane): string {
  return renderChains(dataplane.chains.values(), dataplane.hooks);
}

/** Numeric order of the leading address, so "10.0.0.9" sorts before "10.0.0.10" and diffs read naturally. */
export function sortedMembers(set: IpSet): string[] {
  // Keys are computed once per member, not once per comparison: sets hold tens of thousands of members.
  const keyed = [...set.members].map((member) => ({ member, key: memberSortKey(member) }));
  keyed.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return keyed.map((k) => k.member);
}

function memberSortKey(member: string): string {
  const match = /^(\d+)\.(\d+)\.(\d+)\.(\d+)(.*)$/.exec(member);
  if (match === null) return member;
  const octets = match.slice(1, 5).map((o) => o.padStart(3, '0')).join('.');
  return `${octets}${match[5] ?? ''}`;
}

/** Creates and fills every set, for `ipset restore`; `-exist` makes it safe to load over existing sets. */
export function renderIpsets(sets: Iterable<IpSet>): string {
  const lines: string[] = [];
  for (const set of [...sets].sort(byName)) {
    lines.push(createSetLine(set.name, set.type));
    for (const member of sortedMembers(set)) lines.push(`add ${set.name} ${member} -exist`);
  }
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}

export function createSetLine(name: string, type: IpSet['type']): string {
  return `create ${name} ${type} family inet hashsize 1024 maxelem ${IPSET_MAX_ELEMENTS} -exist`;
}

/**
 * One fixed limit, far above any cluster's pod count: maxelem cannot be raised on a live set, and a
 * create line that changed with the member count would no longer match the set it recreates.
 */
export const IPSET_MAX_ELEMENTS = 1048576;
