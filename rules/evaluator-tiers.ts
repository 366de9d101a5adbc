import type { ClusterAction, ClusterPeer, ClusterPodSelection, ClusterPolicyRecord, ClusterRule, ClusterTier, Direction, PodRecord } from './model.js';
import type { Cluster, Packet } from './evaluator-cluster.js';
import { inCidr, labelsMatch, namespaceLabels } from './evaluator-cluster.js';

/**
 * The ClusterNetworkPolicy tiers (Admin before NetworkPolicy, Baseline after it), evaluated directly
 * from the API's documentation, for one pod and one direction:
 * - A policy applies to the pods its subject selects (never hostNetwork ones: they are no endpoints)
 *   in each direction it has rules for.
 * - Within a tier policies go by priority, lower first; within a policy, rules in written order. A
 *   policy's first matching rule is its word; the first priority at which any policy has a word decides.
 * - Several policies of one priority with a word (the API leaves the choice to the implementation):
 *   Deny before Pass before Accept, then the first by name. See breakTie.
 * - A rule that failed closed (ClusterRule.failClosed): Accept matches nothing; Deny and Pass deny all.
 */

export interface ClusterRuleRef {
  readonly tier: ClusterTier;
  readonly policy: string;
  readonly priority: number;
  readonly rule: number;
  /** The rule's name, '' when it has none. */
  readonly name: string;
  /** What the rule did: its action, or Deny for a Deny or Pass rule that failed closed. */
  readonly action: ClusterAction;
  /** Why the rule failed closed (and what it was written as), or null when it was honoured as written. */
  readonly failClosed: string | null;
  /** How a tie with other policies of the same tier and priority was broken, or null when there was none. */
  readonly tie: string | null;
}

function selects(cluster: Cluster, subject: ClusterPodSelection, pod: PodRecord): boolean {
  if (!labelsMatch(subject.namespaceSelector, namespaceLabels(cluster, pod.namespace))) return false;
  return subject.kind === 'namespaces' || labelsMatch(subject.podSelector, pod.labels);
}

function rulesOf(policy: ClusterPolicyRecord, direction: Direction): readonly ClusterRule[] {
  return direction === 'ingress' ? policy.ingress : policy.egress;
}

/** The tier's policies that apply to the pod in this direction, in the order they are walked. */
export function selectingPolicies(cluster: Cluster, tier: ClusterTier, pod: PodRecord, direction: Direction): ClusterPolicyRecord[] {
  return cluster.snapshot.clusterPolicies
    .filter((p) => p.tier === tier && rulesOf(p, direction).length > 0 && selects(cluster, p.subject, pod))
    .sort((a, b) => a.priority - b.priority || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** hostNetwork pods are no peers: their address is their node's, which podByIp never holds. */
function peerMatches(cluster: Cluster, peer: ClusterPeer, address: string): boolean {
  if (peer.kind === 'networks') return peer.networks.some((cidr) => inCidr(address, cidr));
  if (peer.kind === 'nodes') return cluster.snapshot.nodes.some((n) => n.addresses.includes(address) && labelsMatch(peer.nodeSelector, n.labels));
  const pod = cluster.podByIp.get(address);
  if (pod === undefined || !labelsMatch(peer.namespaceSelector, namespaceLabels(cluster, pod.namespace))) return false;
  return peer.kind === 'namespaces' || labelsMatch(peer.podSelector, pod.labels);
}

/** No protocols: every protocol, ICMP included. A named port is the destination pod's container port of that name and the packet's protocol. */
function protocolsMatch(rule: ClusterRule, packet: Packet, destination: PodRecord | undefined): boolean {
  if (rule.protocols === null) return true;
  const port = packet.port;
  if (port === null) return false;
  return rule.protocols.some((match) => {
    if (match.kind === 'range') return match.protocol === packet.protocol && port >= match.start && port <= match.end;
    return destination !== undefined && destination.namedPorts.some((p) => p.name === match.name && p.protocol === packet.protocol && p.port === port);
  });
}

type Word = Omit<ClusterRuleRef, 'tie'>;

function firstMatch(cluster: Cluster, policy: ClusterPolicyRecord, direction: Direction, packet: Packet): Word | null {
  const peer = direction === 'ingress' ? packet.src : packet.dst;
  const destination = cluster.podByIp.get(packet.dst);
  const rules = rulesOf(policy, direction);
  for (let index = 0; index < rules.length; index++) {
    const rule = rules[index]!;
    const ref = { tier: policy.tier, policy: policy.name, priority: policy.priority, rule: index, name: rule.name };
    if (rule.failClosed !== null) {
      if (rule.action === 'Accept') continue;
      return { ...ref, action: 'Deny', failClosed: `${rule.action} rule failed closed: ${rule.failClosed}` };
    }
    if (rule.peers.some((p) => peerMatches(cluster, p, peer)) && protocolsMatch(rule, packet, destination)) return { ...ref, action: rule.action, failClosed: null };
  }
  return null;
}

const ACTION_RANK: Readonly<Record<ClusterAction, number>> = { Deny: 0, Pass: 1, Accept: 2 };

/**
 * Policies of one priority that all have a word on the packet: the API lets an implementation apply
 * any of them, so the choice is palisade's. Deny beats Pass beats Accept: each lets through no more
 * than the next (a Pass can still end in a deny further down, an Accept cannot), so when two admins'
 * policies collide the one that opens less wins, whatever they are called. Renaming a policy then
 * never changes a verdict; the name only picks which of several equal words is reported.
 */
function breakTie(words: readonly Word[]): ClusterRuleRef {
  const sorted = [...words].sort((a, b) => ACTION_RANK[a.action] - ACTION_RANK[b.action] || (a.policy < b.policy ? -1 : 1));
  const [first, ...others] = sorted as [Word, ...Word[]];
  if (others.length === 0) return { ...first, tie: null };
  const with_ = others.map((o) => `${o.policy} (${o.action})`).join(', ');
  const how = others.some((o) => o.action !== first.action)
    ? 'broken by action: Deny before Pass before Accept'
    : 'all with the same action, the first by name named';
  return { ...first, tie: `tie at priority ${first.priority} with ${with_} ${how}` };
}

/** The rule that has the tier's word on the packet (Accept, Deny or Pass), or null when no rule matches. */
export function walkTier(cluster: Cluster, policies: readonly ClusterPolicyRecord[], direction: Direction, packet: Packet): ClusterRuleRef | null {
  for (let i = 0; i < policies.length;) {
    const priority = policies[i]!.priority;
    const words: Word[] = [];
    for (; i < policies.length && policies[i]!.priority === priority; i++) {
      const word = firstMatch(cluster, policies[i]!, direction, packet);
      if (word !== null) words.push(word);
    }
    if (words.length > 0) return breakTie(words);
  }
  return null;
}

const VERB: Readonly<Record<ClusterAction, string>> = { Accept: 'accepted by', Deny: 'denied by', Pass: 'passed on by' };

/** "denied by admin ClusterNetworkPolicy block-imds (priority 10) egress rule 0 deny-metadata", and why it failed closed or how a tie went. */
export function describeRule(ref: ClusterRuleRef, direction: Direction): string {
  const name = ref.name === '' ? '' : ` ${ref.name}`;
  const notes = [ref.failClosed, ref.tie].filter((n): n is string => n !== null);
  const tail = notes.length === 0 ? '' : ` (${notes.join('; ')})`;
  return `${VERB[ref.action]} ${ref.tier.toLowerCase()} ClusterNetworkPolicy ${ref.policy} (priority ${ref.priority}) ${direction} rule ${ref.rule}${name}${tail}`;
}

/** What a tier said when it decided nothing, for the reason of the tier that did; null when it has no policy for the pod. */
export function tierNote(tier: ClusterTier, policies: readonly ClusterPolicyRecord[], word: ClusterRuleRef | null, direction: Direction): string | null {
  if (word !== null) return describeRule(word, direction);
  if (policies.length === 0) return null;
  const s = policies.length === 1 ? 'y' : 'ies';
  return `no rule of ${tier.toLowerCase()} ClusterNetworkPolic${s} ${policies.map((p) => p.name).join(', ')} matches`;
}
