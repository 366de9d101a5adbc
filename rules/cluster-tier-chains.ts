import type { Chain, Rule } from './dataplane.js';
import type { ClusterTier, Direction } from './model.js';
import { sanitizeComment } from './names.js';
import type { TierMarks } from './settings.js';

/**
 * A walk through one ClusterNetworkPolicy tier in one direction: a chain that clears the tier bits and
 * runs the policies selecting a pod by priority, every policy of one priority before the bits are
 * read, so a tie between them is broken by the bits and not by the order. Pods that the same policies
 * select share the chain (named after the policies, not their priorities, so a new priority rewrites
 * the shared chain alone):
 *
 *   pal-af-<pod>:  clear bits · -j pal-co-<p1> · denied? RETURN · -j pal-co-<p2> (same priority) · a word? RETURN · -j pal-co-<p3> ...
 *
 * Back in the pod's chain the bits are read in the order of palisade's tie rule (evaluator-tiers.ts):
 * Deny drops, and is counted there per pod; Pass goes on to the next tier; Accept leaves palisade's
 * chains for that direction (only the Admin tier needs the rule: after Baseline the chain ends).
 */

export interface TierPolicy {
  readonly name: string;
  readonly priority: number;
  /** The policy's chain for this direction. */
  readonly chain: string;
}

export interface TierWalk {
  readonly tier: ClusterTier;
  /** The chain of this walk, shared by the pods it is theirs. */
  readonly chain: string;
  /** In walk order: priority, then name. */
  readonly policies: readonly TierPolicy[];
}

const hex = (n: number): string => `0x${n.toString(16)}`;

export function buildTierChain(walk: TierWalk, marks: TierMarks): Chain {
  const rules: Rule[] = [{ match: [], target: ['-j', 'MARK', '--set-xmark', `0x0/${hex(marks.mask)}`], comment: 'clear tier marks' }];
  const tier = walk.tier.toLowerCase();
  walk.policies.forEach((policy, i) => {
    rules.push({ match: [], target: ['-j', policy.chain], comment: sanitizeComment(`${tier} ClusterNetworkPolicy ${policy.name}`) });
    const next = walk.policies[i + 1];
    if (next === undefined) return;
    if (next.priority !== policy.priority) {
      rules.push({ match: ['-m', 'mark', '!', '--mark', `0x0/${hex(marks.mask)}`], target: ['-j', 'RETURN'], comment: sanitizeComment(`${tier} word at priority ${policy.priority}`) });
    } else {
      // A Deny wins the tie whatever the others say: the rest need not run, nor log a second record.
      rules.push({ match: ['-m', 'mark', '--mark', `${hex(marks.deny)}/${hex(marks.deny)}`], target: ['-j', 'RETURN'], comment: sanitizeComment(`${tier} denied at priority ${policy.priority}`) });
    }
  });
  return { name: walk.chain, rules };
}

/** The comment of a tier's counted drop, which the daemon sums into the pod's dropped packets. */
export function tierDropComment(tier: ClusterTier, direction: Direction, who: string): string {
  return sanitizeComment(`drop ${tier.toLowerCase()} ${direction} ${who}`);
}

/** In the pod's chain: walk the tier, then act on its word. */
export function tierRules(walk: TierWalk, direction: Direction, who: string, marks: TierMarks): Rule[] {
  const tier = walk.tier.toLowerCase();
  const rules: Rule[] = [
    { match: [], target: ['-j', walk.chain], comment: sanitizeComment(`${tier} tier ${direction}`) },
    { match: ['-m', 'mark', '--mark', `${hex(marks.deny)}/${hex(marks.deny)}`], target: ['-j', 'DROP'], comment: tierDropComment(walk.tier, direction, who) },
  ];
  if (walk.tier === 'Admin') {
    rules.push({ match: ['-m', 'mark', '--mark', `${hex(marks.accept)}/${hex(marks.accept | marks.pass)}`], target: ['-j', 'RETURN'], comment: sanitizeComment(`accepted by admin ClusterNetworkPolicy ${direction}`) });
  }
  return rules;
}
