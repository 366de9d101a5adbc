import type { Dataplane, IpSet } from '../../rules/dataplane.js';
import { hookHash } from '../../rules/render.js';
import { ruleHashes } from '../../rules/rule-hash.js';
import { canonicalMember } from '../ipset.js';
import type { LiveSet } from '../ipset.js';
import type { SavedRule, SavedTable } from '../iptables/saved-table.js';

/**
 * What is (or is believed to be) in the kernel, in the form the planner compares: palisade's chains as
 * rule-hash lists, the built-in chains' rules, and palisade's sets. Read from the kernel after a
 * failure or on a refresh; otherwise derived from the last state written.
 */
export interface LiveState {
  readonly chains: ReadonlyMap<string, readonly (string | null)[]>;
  readonly builtin: ReadonlyMap<string, readonly SavedRule[]>;
  /** Rules in other programs' chains that jump into palisade's: they would keep a stale chain alive. */
  readonly foreignJumps: readonly SavedRule[];
  readonly sets: ReadonlyMap<string, LiveSet>;
}

export const BUILTIN_FILTER_CHAINS = ['INPUT', 'FORWARD', 'OUTPUT'] as const;

/** Hashes are deterministic per chain object; the compiler keeps unchanged chains' identity, so cache by it. */
const hashCache = new WeakMap<object, readonly string[]>();

export function chainHashes(chain: Dataplane['chains'] extends ReadonlyMap<string, infer C> ? C : never): readonly string[] {
  let hashes = hashCache.get(chain);
  if (hashes === undefined) {
    hashes = ruleHashes(chain.name, chain.rules);
    hashCache.set(chain, hashes);
  }
  return hashes;
}

export function liveStateFromKernel(table: SavedTable, sets: ReadonlyMap<string, LiveSet>, owns: (name: string) => boolean): LiveState {
  const chains = new Map<string, (string | null)[]>();
  const builtin = new Map<string, readonly SavedRule[]>();
  const foreignJumps: SavedRule[] = [];
  for (const chain of table.values()) {
    if (chain.builtin) builtin.set(chain.name, chain.rules);
    else if (owns(chain.name)) chains.set(chain.name, chain.rules.map((r) => r.hash));
    else foreignJumps.push(...chain.rules.filter((r) => r.target !== null && owns(r.target)));
  }
  return { chains, builtin, foreignJumps, sets };
}

/** The state a successful apply of `desired` leaves behind. */
export function liveStateFromDesired(desired: Dataplane): LiveState {
  const chains = new Map<string, readonly string[]>();
  for (const chain of desired.chains.values()) chains.set(chain.name, chainHashes(chain));
  const builtin = new Map<string, readonly SavedRule[]>();
  for (const hook of desired.hooks) {
    builtin.set(hook.chain, [{ text: '', hash: hookHash(hook), target: hook.rule.target[1] ?? null, packets: 0, bytes: 0 }]);
  }
  const sets = new Map<string, LiveSet>();
  for (const set of desired.ipsets.values()) sets.set(set.name, { type: set.type, members: canonicalMembers(set) });
  return { chains, builtin, foreignJumps: [], sets };
}

const memberCache = new WeakMap<object, ReadonlySet<string>>();

/** Members as `ipset save` prints them; only hash:net needs rewriting, and sets keep identity while unchanged. */
export function canonicalMembers(set: IpSet): ReadonlySet<string> {
  if (set.type !== 'hash:net') return set.members;
  let members = memberCache.get(set);
  if (members === undefined) {
    members = new Set([...set.members].map((m) => canonicalMember(set.type, m)));
    memberCache.set(set, members);
  }
  return members;
}
