import type { Dataplane, HookRule } from '../../rules/dataplane.js';
import { POLICY_TABLE } from '../../rules/dataplane.js';
import type { Names } from '../../rules/names.js';
import { createSetLine, hookHash, renderChainRules, renderHook } from '../../rules/render.js';
import { PalisadeError } from '../errors.js';
import type { LiveSet } from '../ipset.js';
import type { LiveState } from './live-state.js';
import { canonicalMembers, chainHashes } from './live-state.js';

/**
 * The difference between the desired dataplane and what is in the kernel, as the three writes that
 * close it, in the order Felix uses:
 *
 *   1. ipsets before: new sets created and filled; members leaving a set removed
 *   2. one iptables-restore: changed chains rewritten, hooks put back at position 1, stale chains deleted
 *   3. ipsets after: members joining a set added; sets no longer referenced destroyed
 *
 * Sets only ever allow, so removing members before the rules change and adding them after means every
 * intermediate state allows no more than the old state or the new one: traffic both deny never passes.
 * Pure: it only computes text; the applier runs it.
 */

export type FindingKind =
  | 'hook-missing' | 'hook-moved' | 'hook-duplicated' | 'foreign-jump'
  | 'chain-missing' | 'chain-modified' | 'chain-stale'
  | 'set-missing' | 'set-changed' | 'set-stale';

/** One difference between desired and actual state, in words an operator can act on. */
export interface Finding {
  readonly kind: FindingKind;
  readonly subject: string;
  readonly detail: string;
}

export interface Plan {
  readonly ipsetBefore: string;
  readonly iptables: string;
  readonly ipsetAfter: string;
  /** Puts back members that ipsetBefore removed, should the iptables step fail. */
  readonly ipsetRollback: string;
  readonly destroySets: readonly string[];
  readonly findings: readonly Finding[];
  readonly chainsWritten: readonly string[];
  readonly chainsDeleted: readonly string[];
  readonly setsWritten: readonly string[];
}

/** Above this many changed members (and half the set), a set is rebuilt aside and swapped in. */
const SWAP_THRESHOLD = 64;

export function planIsEmpty(plan: Plan): boolean {
  return plan.ipsetBefore === '' && plan.iptables === '' && plan.ipsetAfter === '' && plan.destroySets.length === 0;
}

export function plan(desired: Dataplane, live: LiveState, names: Names): Plan {
  const findings: Finding[] = [];
  const sets = planSets(desired, live, names, findings);
  const chains = planChains(desired, live, names, findings);
  return { ...sets, ...chains, findings };
}

function planChains(desired: Dataplane, live: LiveState, names: Names, findings: Finding[]) {
  const declare: string[] = [];
  const rules: string[] = [];
  const tail: string[] = [];
  const chainsWritten: string[] = [];
  const chainsDeleted: string[] = [];
  for (const chain of [...desired.chains.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const want = chainHashes(chain);
    const have = live.chains.get(chain.name);
    if (have !== undefined && have.length === want.length && have.every((h, i) => h === want[i])) continue;
    findings.push(have === undefined
      ? { kind: 'chain-missing', subject: chain.name, detail: `chain ${chain.name} is missing` }
      : { kind: 'chain-modified', subject: chain.name, detail: `chain ${chain.name} has ${have.length} rules (${have.filter((h) => h === null).length} not written by palisade), expected ${want.length}` });
    declare.push(`:${chain.name} - [0:0]`);
    rules.push(...renderChainRules(chain));
    chainsWritten.push(chain.name);
  }
  const hooks = planHooks(desired.hooks, live, names, findings);
  for (const rule of live.foreignJumps) {
    findings.push({ kind: 'foreign-jump', subject: rule.target ?? '', detail: `a chain palisade does not own jumps into ${rule.target}: ${rule.text}` });
    hooks.push(rule.text.replace(/^-A /, '-D '));
  }
  for (const name of [...live.chains.keys()].sort()) {
    if (desired.chains.has(name)) continue;
    findings.push({ kind: 'chain-stale', subject: name, detail: `chain ${name} is no longer needed` });
    declare.push(`:${name} - [0:0]`);
    tail.push(`-X ${name}`);
    chainsDeleted.push(name);
  }
  const body = [...declare, ...rules, ...hooks, ...tail];
  return { iptables: body.length === 0 ? '' : `*${POLICY_TABLE}\n${body.join('\n')}\nCOMMIT\n`, chainsWritten, chainsDeleted };
}

/** Each hook must be the first rule of its chain, and the only rule there that enters palisade's chains. */
function planHooks(hooks: readonly HookRule[], live: LiveState, names: Names, findings: Finding[]): string[] {
  const lines: string[] = [];
  const chains = new Set([...live.builtin.keys(), ...hooks.map((h) => h.chain)]);
  for (const chain of [...chains].sort()) {
    const rules = live.builtin.get(chain) ?? [];
    const ours = rules.filter((r) => r.target !== null && names.owns(r.target));
    const hook = hooks.find((h) => h.chain === chain);
    if (hook === undefined) {
      for (const rule of ours) findings.push({ kind: 'foreign-jump', subject: chain, detail: `${chain} jumps to ${rule.target} outside palisade's hook: ${rule.text}` });
    } else {
      const first = rules[0];
      if (first !== undefined && first.hash === hookHash(hook) && ours.length === 1) continue;
      const at = rules.findIndex((r) => r.hash === hookHash(hook));
      if (ours.length === 0) findings.push({ kind: 'hook-missing', subject: chain, detail: `the hook into palisade's chains is missing from ${chain}` });
      else if (at !== 0) findings.push({ kind: 'hook-moved', subject: chain, detail: `the hook in ${chain} is at position ${at < 0 ? 'none (a different jump is there)' : at + 1}, not 1` });
      if (ours.length > 1) findings.push({ kind: 'hook-duplicated', subject: chain, detail: `${chain} has ${ours.length} jumps into palisade's chains` });
    }
    // Delete by the rule's own text, not by position: a position read a moment ago may point elsewhere now.
    for (const rule of ours) if (rule.text !== '') lines.push(rule.text.replace(/^-A /, '-D '));
    if (hook !== undefined) lines.push(renderHook(hook, '-I'));
  }
  return lines;
}

function planSets(desired: Dataplane, live: LiveState, names: Names, findings: Finding[]) {
  const before: string[] = [];
  const after: string[] = [];
  const rollback: string[] = [];
  const setsWritten: string[] = [];
  for (const set of [...desired.ipsets.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const want = canonicalMembers(set);
    const have: LiveSet | undefined = live.sets.get(set.name);
    if (have === undefined) {
      findings.push({ kind: 'set-missing', subject: set.name, detail: `set ${set.name} (${set.description}) is missing` });
      before.push(createSetLine(set.name, set.type), `flush ${set.name}`, ...[...want].map((m) => `add ${set.name} ${m}`));
      setsWritten.push(set.name);
      continue;
    }
    // Unchanged sets share their member Set with the remembered state: skip diffing tens of thousands.
    if (have.members === want && have.type === set.type) continue;
    if (have.type !== set.type) throw new PalisadeError('IPSET_TYPE_CONFLICT', `ipset ${set.name} exists with type ${have.type}, but palisade needs ${set.type}; run "palisade cleanup" to remove it`);
    const removed = [...have.members].filter((m) => !want.has(m));
    const added = [...want].filter((m) => !have.members.has(m));
    if (removed.length === 0 && added.length === 0) continue;
    findings.push({ kind: 'set-changed', subject: set.name, detail: `set ${set.name}: ${added.length} members to add, ${removed.length} to remove` });
    setsWritten.push(set.name);
    const swap = removed.length + added.length > SWAP_THRESHOLD && removed.length + added.length > want.size / 2;
    const temp = names.tempSet(set.name);
    if (removed.length > 0) {
      if (swap) {
        const kept = [...have.members].filter((m) => want.has(m));
        before.push(createSetLine(temp, set.type), `flush ${temp}`, ...kept.map((m) => `add ${temp} ${m}`), `swap ${temp} ${set.name}`, `destroy ${temp}`);
      } else {
        before.push(...removed.map((m) => `del ${set.name} ${m} -exist`));
      }
      rollback.push(...removed.map((m) => `add ${set.name} ${m} -exist`));
    }
    if (added.length > 0) {
      if (swap) after.push(createSetLine(temp, set.type), `flush ${temp}`, ...[...want].map((m) => `add ${temp} ${m}`), `swap ${temp} ${set.name}`, `destroy ${temp}`);
      else after.push(...added.map((m) => `add ${set.name} ${m} -exist`));
    }
  }
  const destroySets: string[] = [];
  for (const name of [...live.sets.keys()].sort()) {
    if (desired.ipsets.has(name)) continue;
    findings.push({ kind: 'set-stale', subject: name, detail: `set ${name} is no longer needed` });
    destroySets.push(name);
  }
  const text = (lines: string[]) => (lines.length === 0 ? '' : `${lines.join('\n')}\n`);
  return { ipsetBefore: text(before), ipsetAfter: text(after), ipsetRollback: text(rollback), destroySets, setsWritten };
}
