import type { Chain, Rule } from './dataplane.js';
import type { Direction } from './model.js';
import type { Names } from './names.js';
import { sanitizeComment } from './names.js';
import type { CompilerSettings } from './settings.js';
import type { DropLogSource } from './drop-log.js';
import { dropLogRule, WOULD_DENY_COMMENT } from './drop-log.js';
import { tierMarks } from './settings.js';
import type { TierWalk } from './cluster-tier-chains.js';
import { tierRules } from './cluster-tier-chains.js';

/**
 * Each local pod gets two chains. The `from` chain sees what the pod sends: anti-spoofing first
 * (ingress rules elsewhere trust source addresses), then traffic to its own node passes, then its
 * egress policies. The `to` chain sees what the pod receives: its ingress policies. An isolated chain
 * ends with a counted drop, whose packet counter is the pod's dropped traffic in that direction.
 *
 * A pod is never blocked from itself. Its traffic to its own addresses stays inside the pod, except
 * when a Service sends it back to its address (hairpin): then it leaves and re-enters through the
 * node, and both chains let it pass. The `to` chain checks the interface too: a packet claiming the
 * pod's address from anywhere else is not the pod's. (Services lead to a pod's first address only, so
 * a multi-NIC pod's further addresses need no such rule; routes, which name them, could be stale.)
 *
 * A pod with further interfaces (multi-NIC) has one small chain per further interface that checks
 * that interface's own address and then continues in the pod's `from` chain; the pod's first check
 * then names the interfaces its main address may come from.
 *
 * With the drop log on, a rate-limited NFLOG rule comes just before each drop (drop-log.ts). A
 * direction that only audit policies select runs their chains the same way, but ends in that log rule
 * and a counted RETURN instead of a drop: it is never isolated.
 *
 * A direction that ClusterNetworkPolicies select walks the tiers (cluster-tier-chains.ts): Admin
 * first, right after anti-spoofing, so a pod's traffic to its own node and to itself through a
 * Service (the only way its traffic to itself reaches the node) is subject to it; then the
 * NetworkPolicy part with those two exemptions; then, where no NetworkPolicy isolates the pod,
 * Baseline, and after it the audit policies, so what Baseline denies is denied and not would-deny.
 */

/** An interface beyond a pod's first, and the address the node routes to it. */
export interface ExtraInterface {
  readonly iface: string;
  readonly address: string;
}

export interface EndpointPolicies {
  readonly namespace: string;
  readonly name: string;
  readonly ip: string;
  /** Host-side names of the pod's first interface, one per configured prefix. */
  readonly interfaces: readonly string[];
  readonly extraInterfaces: readonly ExtraInterface[];
  /** Policy chains in evaluation order; empty with isolated=false means "not isolated". */
  readonly ingress: DirectionPolicies;
  readonly egress: DirectionPolicies;
}

/** The ClusterNetworkPolicy tiers a pod's direction walks; null where no policy of the tier selects it. */
export interface DirectionTiers {
  readonly admin: TierWalk | null;
  readonly baseline: TierWalk | null;
}

export interface DirectionPolicies {
  /** Enforced policies select the pod: the chain ends in a drop. */
  readonly isolated: boolean;
  /** Only audit policies select it (and the drop log is on): the chain ends in a would-deny log, never a drop. */
  readonly audit: boolean;
  /** Policy chains in evaluation order: the enforced ones when isolated, else the audit ones. */
  readonly chains: readonly { chain: string; policy: string }[];
  /** The drop-log prefix for this direction; null when the log is off or nothing selects the pod. */
  readonly log: DropLogSource | null;
}

export const DROP_COMMENT = { ingress: 'drop ingress', egress: 'drop egress' } as const;

/** A pod chain's drop whose packet counter is what the pod had denied: the isolation drop, or a ClusterNetworkPolicy tier's (cluster-tier-chains.ts). */
export function isCountedDrop(rule: Rule): boolean {
  return rule.target.length === 2 && rule.target[0] === '-j' && rule.target[1] === 'DROP' && rule.comment.startsWith('drop ');
}

function markHex(mark: number): string {
  return `0x${mark.toString(16)}`;
}

function policyRules(chains: DirectionPolicies['chains'], mark: number): Rule[] {
  const bit = markHex(mark);
  const rules: Rule[] = [{ match: [], target: ['-j', 'MARK', '--set-xmark', `0x0/${bit}`], comment: 'clear allow mark' }];
  for (const { chain, policy } of chains) {
    rules.push({ match: [], target: ['-j', chain], comment: sanitizeComment(`policy ${policy}`) });
    rules.push({ match: ['-m', 'mark', '--mark', `${bit}/${bit}`], target: ['-j', 'RETURN'], comment: sanitizeComment(`allowed by ${policy}`) });
  }
  return rules;
}

export interface EndpointChains {
  readonly from: Chain;
  readonly to: Chain;
  /** Per further interface, the chain its dispatch entry leads to. */
  readonly extra: readonly { readonly iface: string; readonly chain: Chain }[];
}

const NO_TIERS: DirectionTiers = { admin: null, baseline: null };

export function buildEndpointChains(endpoint: EndpointPolicies, names: Names, settings: CompilerSettings, tiers: { readonly ingress: DirectionTiers; readonly egress: DirectionTiers } | null = null): EndpointChains {
  const who = `${endpoint.namespace}/${endpoint.name}`;
  const fromName = names.endpoint('from', endpoint.namespace, endpoint.name);
  const spoofed = sanitizeComment(`anti-spoof ${who}`);
  const antiSpoof: Rule[] = endpoint.extraInterfaces.length === 0
    ? [{ match: ['!', '-s', `${endpoint.ip}/32`], target: ['-j', 'DROP'], comment: spoofed }]
    : endpoint.interfaces.map((iface): Rule => ({ match: ['-i', iface, '!', '-s', `${endpoint.ip}/32`], target: ['-j', 'DROP'], comment: spoofed }));
  const ending = (direction: 'ingress' | 'egress'): Rule[] => {
    const policies = endpoint[direction];
    const log = policies.log !== null && settings.dropLog !== null ? [dropLogRule(policies.log, names, settings.dropLog)] : [];
    // The last rule's packet counter is what the pod had denied (or would have) in that direction.
    const last: Rule = policies.isolated
      ? { match: [], target: ['-j', 'DROP'], comment: sanitizeComment(`${DROP_COMMENT[direction]} ${who}`) }
      : { match: [], target: ['-j', 'RETURN'], comment: sanitizeComment(`${WOULD_DENY_COMMENT[direction]} ${who}`) };
    return [...policyRules(policies.chains, settings.allowMark), ...log, last];
  };
  const selected = (p: DirectionPolicies): boolean => p.isolated || p.audit;
  const ownNode: Rule = { match: ['-m', 'addrtype', '--dst-type', 'LOCAL'], target: ['-j', 'RETURN'], comment: 'pod to its own node is always allowed' };
  const selfEgress: Rule = { match: ['-d', `${endpoint.ip}/32`], target: ['-j', 'RETURN'], comment: 'a pod is never blocked from itself' };
  const selfIngress = endpoint.interfaces.map((iface): Rule => ({ match: ['-i', iface, '-s', `${endpoint.ip}/32`], target: ['-j', 'RETURN'], comment: 'a pod is never blocked from itself' }));
  const egressTiers = tiers?.egress ?? NO_TIERS;
  const ingressTiers = tiers?.ingress ?? NO_TIERS;
  /**
   * One direction's rules after anti-spoofing: the tiers around the NetworkPolicy part, whose
   * exemptions (own node, itself) come first. Without tiers, exactly as before they existed.
   */
  const walk = (direction: Direction, exemptions: readonly Rule[], t: DirectionTiers): Rule[] => {
    const policies = endpoint[direction];
    const out: Rule[] = [];
    const marks = tierMarks(settings);
    if (t.admin !== null) out.push(...tierRules(t.admin, direction, who, marks));
    if (policies.isolated) {
      out.push(...exemptions, ...ending(direction));
      return out;
    }
    // Baseline decides before audit policies log: a packet Baseline denies is denied, not would-deny.
    if (t.baseline !== null) out.push(...tierRules(t.baseline, direction, who, marks));
    if (policies.audit) out.push(...exemptions, ...ending(direction));
    return out;
  };
  const fromRules: Rule[] = [...antiSpoof];
  if (egressTiers.admin === null && egressTiers.baseline === null) {
    fromRules.push(ownNode);
    if (selected(endpoint.egress)) fromRules.push(selfEgress, ...ending('egress'));
  } else fromRules.push(...walk('egress', [ownNode, selfEgress], egressTiers));
  const toName = names.endpoint('to', endpoint.namespace, endpoint.name);
  const to: Rule[] = [];
  if (ingressTiers.admin === null && ingressTiers.baseline === null) {
    if (selected(endpoint.ingress)) to.push(...selfIngress, ...ending('ingress'));
  } else to.push(...walk('ingress', selfIngress, ingressTiers));
  const extra = endpoint.extraInterfaces.map(({ iface, address }) => ({
    iface,
    chain: {
      name: names.extraInterface(endpoint.namespace, endpoint.name, iface),
      rules: [
        { match: ['!', '-s', `${address}/32`], target: ['-j', 'DROP'], comment: spoofed },
        { match: [], target: ['-g', fromName], comment: sanitizeComment(`${who} further interface`) },
      ],
    },
  }));
  return {
    from: { name: fromName, rules: fromRules },
    to: { name: toName, rules: to },
    extra,
  };
}

/** The allow chain: policies goto it, so after setting the mark control returns to the endpoint chain. */
export function buildAllowChain(names: Names, settings: CompilerSettings): Chain {
  const bit = markHex(settings.allowMark);
  return { name: names.allow(), rules: [{ match: [], target: ['-j', 'MARK', '--set-xmark', `${bit}/${bit}`], comment: 'allowed by policy' }] };
}
