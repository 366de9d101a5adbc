import type { PolicyCost } from './model.js';

/**
 * What one NetworkPolicy may cost a node. Any tenant can write a policy, and every node that runs one
 * of the tenant's pods installs it; without a limit one policy could make every such node write
 * hundreds of thousands of rules on each change, delaying every other tenant's enforcement. A policy
 * over budget fails closed, like an invalid one: it isolates what it selects and grants nothing.
 *
 * The defaults are far above what real policies use (tens of peers and ports, hundreds of CIDRs) and
 * low enough that a node holding many such policies still rewrites a chain in milliseconds.
 */
export interface PolicyBudget {
  /** iptables rules in the policy's chains. */
  readonly rules: number;
  /** ipsets the policy refers to (one per distinct selector peer and named port, one per rule's ipBlocks). */
  readonly sets: number;
  /** Entries of the sets its ipBlocks fill. */
  readonly setEntries: number;
  /**
   * Pods palisade must look at to fill the sets of its selector peers, each distinct peer counted
   * once: the pods of the namespaces in the peer's scope that carry its most selective required label
   * (an In or Exists requirement), or else all of them. Pods of namespaces a peer does not name never
   * count, so one tenant's pods can weigh on another tenant's policy only where it names them. It bounds both the work and the members (a set holds
   * no more than the pods looked at), and is known from counts alone, so a policy over it is refused
   * before anything is filled. It depends on the cluster's pods, so it is checked where the policy is
   * installed, and again on every refresh. Named-port sets are not counted: their size is bounded by
   * the ports pods declare, so a tenant adding pods can never push another tenant's policy over.
   */
  readonly selectorPods: number;
}

export const DEFAULT_POLICY_BUDGET: PolicyBudget = Object.freeze({ rules: 2000, sets: 500, setEntries: 20_000, selectorPods: 250_000 });

/** The limits a policy's text alone decides, checked when it is parsed. */
export type TextBudget = Omit<PolicyBudget, 'selectorPods'>;

/** What is over, in words ("3000 rules, the limit is 2000"); empty when within budget. */
export function overBudget(cost: PolicyCost, budget: TextBudget): string[] {
  const over: string[] = [];
  if (cost.rules > budget.rules) over.push(`${cost.rules} iptables rules, the limit is ${budget.rules}`);
  if (cost.sets > budget.sets) over.push(`${cost.sets} ipsets, the limit is ${budget.sets}`);
  if (cost.setEntries > budget.setEntries) over.push(`${cost.setEntries} ipBlock set entries, the limit is ${budget.setEntries}`);
  return over;
}

/** The limits given, leaving out those not given so the defaults apply. */
export function budgetOf(limits: { readonly [K in keyof PolicyBudget]: number | undefined }): Partial<PolicyBudget> {
  return Object.fromEntries(Object.entries(limits).filter(([, v]) => v !== undefined)) as Partial<PolicyBudget>;
}
