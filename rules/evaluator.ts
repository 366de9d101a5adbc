import type { Direction, PodRecord, PolicyRecord, PolicyRule, Selector } from './model.js';
import type { Snapshot } from './snapshot.js';
import { DEFAULT_POLICY_BUDGET } from './policy-budget.js';
import type { Cluster, LocalNode, Packet } from './evaluator-cluster.js';
import { clusterOf, inCidr, labelsMatch, namespaceLabels } from './evaluator-cluster.js';
import type { ClusterRuleRef } from './evaluator-tiers.js';
import { describeRule, selectingPolicies, tierNote, walkTier } from './evaluator-tiers.js';

export type { LocalNode, Packet, PacketProtocol } from './evaluator-cluster.js';
export type { ClusterRuleRef } from './evaluator-tiers.js';

/**
 * NetworkPolicy semantics evaluated directly, as the Kubernetes documentation states them, with no
 * chains, sets or indexes: the reference the compiler is tested against, and the engine behind
 * `explain`. Deliberately written without the compiler's helpers (even its selector matcher), so a
 * mistake in one is not silently shared by the other.
 *
 * - A pod is isolated in a direction when a policy of its namespace selects it and has that type.
 * - A connection is allowed when the source's egress allows it and the destination's ingress allows it.
 * - A pod is never blocked from itself, even when its traffic to itself passes the node (a Service
 *   that sends it back to the same pod).
 * - NetworkPolicy always allows traffic between a pod and its own node (ClusterNetworkPolicy may deny
 *   the pod's egress to it, see decide). "Its own node" is every local address of the node where the
 *   daemon runs (EvaluatorOptions.localNode), and a Node object's InternalIP addresses elsewhere; an
 *   ExternalIP is never local to the node.
 * - Addresses that are not pods (external hosts, nodes, hostNetwork pods) have no policy of their own.
 * - Audit policies (annotated palisade.io/audit: "true") decide nothing. Where no enforced policy
 *   isolates a pod in a direction and audit ones select it, the packet "would be denied" when none of
 *   their rules allows it. Where an enforced one does isolate it, its verdict stands: enforcing an audit
 *   policy there could only allow more.
 * - ClusterNetworkPolicy adds a tier before NetworkPolicy (Admin) and one after it (Baseline); see
 *   decide and evaluator-tiers.ts. Packets carry pod addresses, never a Service's: a pod that reaches
 *   itself through a Service (Packet.viaService) is subject to ClusterNetworkPolicy; by its own pod
 *   address it is not.
 */

/** The tier whose word stands; Default when none had one. */
export type DecidingTier = 'Admin' | 'NetworkPolicy' | 'Baseline' | 'Default';

export interface RuleRef {
  readonly policy: string;
  readonly rule: number;
}

export interface DirectionVerdict {
  readonly direction: Direction;
  /** "namespace/name" of the pod whose policies decide this direction, or null when the address is no pod. */
  readonly pod: string | null;
  readonly isolated: boolean;
  readonly allowed: boolean;
  /** Policies that select the pod and isolate it in this direction. */
  readonly policies: readonly string[];
  /** Rules that allow the packet (empty when denied or not isolated). */
  readonly allowedBy: readonly RuleRef[];
  readonly reason: string;
  /** Audit policies selecting the pod in this direction, and what they would do; null when there are none. */
  readonly audit: AuditVerdict | null;
  /**
   * The tier that decided; null where no policy can apply (no pod, the pod itself, ingress from its
   * own node). In a cluster without ClusterNetworkPolicy: NetworkPolicy when isolated, else Default.
   */
  readonly tier: DecidingTier | null;
  /** ClusterNetworkPolicies selecting the pod in this direction, in the order they are walked (Admin, then Baseline). */
  readonly clusterPolicies: readonly string[];
  /** The ClusterNetworkPolicy rule whose Accept or Deny decided, or null. */
  readonly decidedBy: ClusterRuleRef | null;
  /** Pass rules that sent the packet on to the next tier, in order. */
  readonly passedBy: readonly ClusterRuleRef[];
}

export interface AuditVerdict {
  readonly policies: readonly string[];
  /** The packet is allowed now, and would be denied were these policies enforced. */
  readonly wouldDeny: boolean;
  /** Audit rules that allow the packet. */
  readonly allowedBy: readonly RuleRef[];
  readonly reason: string;
}

export interface Verdict {
  readonly allowed: boolean;
  readonly egress: DirectionVerdict;
  readonly ingress: DirectionVerdict;
}

function peerMatches(cluster: Cluster, policy: PolicyRecord, rule: PolicyRule, address: string): boolean {
  if (rule.peers === null) return true;
  const pod = cluster.podByIp.get(address);
  return rule.peers.some((peer) => {
    if (peer.kind === 'ipBlock') {
      return inCidr(address, peer.ipBlock.cidr) && !peer.ipBlock.except.some((e) => inCidr(address, e));
    }
    if (pod === undefined) return false;
    const namespaceOk = peer.namespaceSelector === null
      ? pod.namespace === policy.namespace
      : labelsMatch(peer.namespaceSelector, namespaceLabels(cluster, pod.namespace));
    return namespaceOk && labelsMatch(peer.podSelector, pod.labels);
  });
}

/** Ports are always the destination's; a named port is looked up among the destination pod's container ports. */
function portMatches(rule: PolicyRule, packet: Packet, destination: PodRecord | undefined): boolean {
  if (rule.ports === null) return true;
  return rule.ports.some((spec) => {
    if (spec.protocol !== packet.protocol || packet.port === null) return false;
    if (spec.kind === 'any') return true;
    if (spec.kind === 'number') return packet.port >= spec.port && packet.port <= spec.endPort;
    return destination !== undefined && destination.namedPorts.some((p) => p.name === spec.name && p.protocol === spec.protocol && p.port === packet.port);
  });
}

/** Whether a policy grants nothing: invalid, or naming more pods in its selector peers than the budget allows. */
type Refused = (policy: PolicyRecord) => string | null;

const NO_TIERS = { tier: null, clusterPolicies: [], decidedBy: null, passedBy: [] } as const;

function notes(first: string, ...rest: readonly (string | null)[]): string {
  return [first, ...rest.filter((n): n is string => n !== null)].join('; ');
}

/**
 * One direction, walked through the tiers: Admin ClusterNetworkPolicies, then NetworkPolicy (final for
 * a pod an enforced one isolates), then Baseline ClusterNetworkPolicies, then the default (allow).
 * Before the tiers: a pod reaching its own address, and a pod reached from its own node, are allowed
 * whatever any policy says. A pod reaching its own node is NetworkPolicy's to allow, but not the
 * ClusterNetworkPolicy tiers': a `nodes` or `networks` peer can deny it (kubelet's API on 10250, say).
 */
function decide(cluster: Cluster, direction: Direction, packet: Packet, refused: Refused): DirectionVerdict {
  const ownAddress = direction === 'ingress' ? packet.dst : packet.src;
  const peerAddress = direction === 'ingress' ? packet.src : packet.dst;
  const pod = cluster.podByIp.get(ownAddress);
  if (pod === undefined) {
    const claimants = cluster.contested.get(ownAddress);
    const reason = claimants === undefined
      ? `${ownAddress} is not a pod, so no policy applies`
      : `${ownAddress} is claimed by ${claimants.join(' and ')} with equal standing, so it belongs to no pod and no policy applies`;
    return { direction, pod: null, isolated: false, allowed: true, policies: [], allowedBy: [], reason, audit: null, ...NO_TIERS };
  }
  const who = `${pod.namespace}/${pod.name}`;
  const selecting = cluster.snapshot.policies.filter((p) =>
    p.namespace === pod.namespace && (direction === 'ingress' ? p.affectsIngress : p.affectsEgress) && labelsMatch(p.podSelector, pod.labels));
  const policies = selecting.filter((p) => !p.audit);
  const staged = selecting.filter((p) => p.audit);
  const names = policies.map((p) => `${p.namespace}/${p.name}`);
  const stagedNames = staged.map((p) => `${p.namespace}/${p.name}`);
  const admin = selectingPolicies(cluster, 'Admin', pod, direction);
  const baseline = selectingPolicies(cluster, 'Baseline', pod, direction);
  const clusterPolicies = [...admin, ...baseline].map((p) => p.name);
  const isolated = policies.length > 0;
  const base = { direction, pod: who, policies: names, isolated, clusterPolicies };
  const notJudged = (reason: string): AuditVerdict | null => (staged.length === 0 ? null : { policies: stagedNames, wouldDeny: false, allowedBy: [], reason });
  const outside = (reason: string): DirectionVerdict => ({ ...base, allowed: true, allowedBy: [], reason, audit: notJudged(reason), tier: null, decidedBy: null, passedBy: [] });
  const itself = cluster.podByIp.get(peerAddress) === pod;
  if (itself && (packet.viaService !== true || clusterPolicies.length === 0)) {
    return outside(clusterPolicies.length === 0 ? 'a pod is never blocked from itself' : 'a pod is never blocked from itself, by ClusterNetworkPolicy neither when it reaches its own pod address');
  }
  const selfReason = `a pod is never blocked from itself by NetworkPolicy (through a Service, ClusterNetworkPolicy applies)`;
  const ownNode = pod.nodeName !== null && cluster.nodeAddresses.get(pod.nodeName)?.has(peerAddress) === true;
  const known = pod.nodeName === cluster.liveNode ? 'a local address of the node' : 'as its Node object\'s InternalIP and its hostNetwork pods tell';
  const nodeReason = clusterPolicies.length === 0
    ? `${peerAddress} is ${pod.nodeName}'s own (${known}), and traffic between ${who} and its own node is always allowed`
    : `${peerAddress} is ${pod.nodeName}'s own (${known}), and NetworkPolicy always allows traffic between ${who} and its own node`;
  if (ownNode && direction === 'ingress') {
    return outside(clusterPolicies.length === 0 ? nodeReason : `${nodeReason}; ClusterNetworkPolicy does not apply to it either, so kubelet probes always reach the pod`);
  }

  const adminWord = walkTier(cluster, admin, direction, packet);
  if (adminWord !== null && adminWord.action !== 'Pass') {
    const reason = describeRule(adminWord, direction);
    return { ...base, allowed: adminWord.action === 'Accept', allowedBy: [], reason, audit: notJudged('an admin ClusterNetworkPolicy decides before NetworkPolicy, so audit policies cannot change the verdict'), tier: 'Admin', decidedBy: adminWord, passedBy: [] };
  }
  const adminNote = tierNote('Admin', admin, adminWord, direction);
  const judge = (list: readonly PolicyRecord[]): { allowedBy: RuleRef[]; closed: string[] } => {
    const allowedBy: RuleRef[] = [];
    const closed: string[] = [];
    const destination = cluster.podByIp.get(packet.dst);
    for (const policy of list) {
      const why = refused(policy);
      if (why !== null) closed.push(`${policy.namespace}/${policy.name} grants nothing (${why})`);
      const rules = why !== null ? [] : direction === 'ingress' ? policy.ingress : policy.egress;
      rules.forEach((rule, index) => {
        if (peerMatches(cluster, policy, rule, peerAddress) && portMatches(rule, packet, destination)) {
          allowedBy.push({ policy: `${policy.namespace}/${policy.name}`, rule: index });
        }
      });
    }
    return { allowedBy, closed };
  };
  const rulesText = (refs: readonly RuleRef[]): string => refs.map((r) => `${r.policy} ${direction} rule ${r.rule}`).join(', ');
  const passedBy = adminWord === null ? [] : [adminWord];
  if (isolated) {
    const tiers = { tier: 'NetworkPolicy', decidedBy: null, passedBy } as const;
    if (itself) return { ...base, allowed: true, allowedBy: [], reason: notes(selfReason, adminNote), audit: notJudged(selfReason), ...tiers };
    if (ownNode) return { ...base, allowed: true, allowedBy: [], reason: notes(nodeReason, adminNote), audit: notJudged(nodeReason), ...tiers };
    const { allowedBy, closed } = judge(policies);
    const allowed = allowedBy.length > 0;
    const reason = allowed
      ? `allowed by ${rulesText(allowedBy)}`
      : `${who} is isolated for ${direction} by ${names.join(', ')} and no rule allows this packet${closed.length === 0 ? '' : `; ${closed.join('; ')}`}`;
    return { ...base, allowed, allowedBy, reason: notes(reason, adminNote), audit: notJudged(`enforced policies isolate ${who} for ${direction}, so audit policies cannot change the verdict`), ...tiers };
  }

  const baselineWord = walkTier(cluster, baseline, direction, packet);
  const npNote = `no NetworkPolicy isolates ${who} for ${direction}`;
  const decided = baselineWord !== null && baselineWord.action !== 'Pass';
  const allowed = decided ? baselineWord.action === 'Accept' : true;
  let reason: string;
  if (decided) reason = notes(describeRule(baselineWord, direction), adminNote, npNote);
  else if (clusterPolicies.length === 0) reason = ownNode ? nodeReason : `no policy isolates ${who} for ${direction}`;
  else reason = notes(`no ClusterNetworkPolicy or NetworkPolicy decides for ${who} ${direction}, so it is allowed`, adminNote, npNote, ownNode ? nodeReason : null, tierNote('Baseline', baseline, baselineWord, direction));
  const tiers = decided
    ? { tier: 'Baseline', decidedBy: baselineWord, passedBy } as const
    : { tier: 'Default', decidedBy: null, passedBy: baselineWord === null ? passedBy : [...passedBy, baselineWord] } as const;
  if (staged.length === 0 || ownNode || itself) return { ...base, allowed, allowedBy: [], reason, audit: ownNode || itself ? notJudged(reason) : null, ...tiers };
  // Enforced, the audit policies would isolate the pod here, in the NetworkPolicy tier, before Baseline.
  const audited = judge(staged);
  const auditDenies = audited.allowedBy.length === 0;
  const closedText = audited.closed.length === 0 ? '' : `; ${audited.closed.join('; ')}`;
  const auditReason = auditDenies
    ? `audit policies ${stagedNames.join(', ')} would deny this packet${allowed ? '' : ' too'} were they enforced${closedText}`
    : `audit policies would allow it (${rulesText(audited.allowedBy)})${allowed ? '' : ', over the baseline ClusterNetworkPolicy\'s deny, were they enforced'}`;
  return { ...base, allowed, allowedBy: [], reason, audit: { policies: stagedNames, wouldDeny: allowed && auditDenies, allowedBy: audited.allowedBy, reason: auditReason }, ...tiers };
}

/**
 * What filling a selector peer's set costs, as the budget counts it (policy-budget.ts): the pods of
 * the namespaces in its scope that carry its most selective required label (In or Exists), or else
 * all of them. Every Pod object counts, whatever its state.
 */
function peerCost(cluster: Cluster, policy: PolicyRecord, peer: { podSelector: Selector; namespaceSelector: Selector | null }): number {
  const pods = cluster.snapshot.pods;
  const scope = new Set<string>();
  if (peer.namespaceSelector === null) scope.add(policy.namespace);
  else for (const pod of pods) if (labelsMatch(peer.namespaceSelector, namespaceLabels(cluster, pod.namespace))) scope.add(pod.namespace);
  const inScope = pods.filter((pod) => scope.has(pod.namespace));
  let cost = inScope.length;
  for (const r of peer.podSelector.requirements) {
    if (r.operator !== 'In' && r.operator !== 'Exists') continue;
    const carrying = inScope.filter((pod) => Object.hasOwn(pod.labels, r.key) && (r.operator === 'Exists' || r.values.includes(pod.labels[r.key]!))).length;
    cost = Math.min(cost, carrying);
  }
  return cost;
}

/** The cost of a policy's selector peers, each distinct peer counted once. */
function selectorCost(cluster: Cluster, policy: PolicyRecord): number {
  const peers = new Map<string, { podSelector: Selector; namespaceSelector: Selector | null }>();
  for (const rule of [...(policy.affectsIngress ? policy.ingress : []), ...(policy.affectsEgress ? policy.egress : [])]) {
    for (const peer of rule.peers ?? []) {
      if (peer.kind !== 'pods') continue;
      const scope = peer.namespaceSelector === null ? `own namespace` : `namespaces ${peer.namespaceSelector.canonical}`;
      peers.set(`${scope} pods ${peer.podSelector.canonical}`, peer);
    }
  }
  let n = 0;
  for (const peer of peers.values()) n += peerCost(cluster, policy, peer);
  return n;
}

export interface EvaluatorOptions {
  /** The budget's limit on the pods one policy's selector peers may have palisade look at (policy-budget.ts). */
  readonly selectorPods?: number;
  /** The node this runs on, when known: its live local addresses count as its own, beyond its Node object's. */
  readonly localNode?: LocalNode;
}

export class Evaluator {
  private readonly cluster: Cluster;
  private readonly selectorPods: number;
  private readonly costs = new Map<PolicyRecord, number>();

  constructor(snapshot: Snapshot, options: EvaluatorOptions = {}) {
    this.cluster = clusterOf(snapshot, options.localNode);
    this.selectorPods = options.selectorPods ?? DEFAULT_POLICY_BUDGET.selectorPods;
  }

  /** What the verdicts take as given about nodes, for the reader to weigh them by. */
  assumptions(): string[] {
    const live = this.cluster.liveNode;
    const fromObjects = 'a node\'s own addresses are the InternalIP addresses of its Node object and the addresses of its hostNetwork pods';
    if (live === null) {
      return [`${fromObjects}; on the node itself palisade counts every local address too (node-local DNS on 169.254.20.10, for one): ask the daemon's /explain there`, ...this.clusterAssumptions()];
    }
    const addresses = [...(this.cluster.nodeAddresses.get(live) ?? [])].sort();
    return [`${live}'s own addresses are its local addresses now: ${addresses.join(', ')}`, `for other nodes, ${fromObjects}`, ...this.clusterAssumptions()];
  }

  /** Said only where there are ClusterNetworkPolicies, so a NetworkPolicy-only explanation reads as it always has. */
  private clusterAssumptions(): string[] {
    if (this.cluster.snapshot.clusterPolicies.length === 0) return [];
    return [
      'the packet goes to the pod\'s address itself: a pod reaching itself through a Service is subject to ClusterNetworkPolicy, by its own pod address it is not',
      ...(this.cluster.snapshot.clusterPolicies.some((p) => p.egress.some((r) => r.peers.some((peer) => peer.kind === 'nodes')))
        ? ['a Node selected by a nodes peer is every IPv4 address in its status.addresses (InternalIP, ExternalIP), not its other local addresses']
        : []),
    ];
  }

  evaluate(packet: Packet): Verdict {
    const refused: Refused = (policy) => {
      if (policy.failed) return policy.overBudget ? 'over the per-policy budget' : 'invalid';
      let cost = this.costs.get(policy);
      if (cost === undefined) {
        cost = selectorCost(this.cluster, policy);
        this.costs.set(policy, cost);
      }
      return cost > this.selectorPods ? `its selector peers would have palisade look at ${cost} pods, over the budget of ${this.selectorPods}` : null;
    };
    const egress = decide(this.cluster, 'egress', packet, refused);
    const ingress = decide(this.cluster, 'ingress', packet, refused);
    return { allowed: egress.allowed && ingress.allowed, egress, ingress };
  }

  /** The pod that owns an address, if any, for callers that accept "namespace/pod" or an IP. */
  podAt(address: string): PodRecord | undefined {
    return this.cluster.podByIp.get(address);
  }

  findPod(namespace: string, name: string): PodRecord | undefined {
    return this.cluster.snapshot.pods.find((p) => p.namespace === namespace && p.name === name);
  }

  /** The pod's address if it is the pod's own; a claim that lost to a node or another pod gives none. */
  addressOf(pod: PodRecord): string | null {
    return pod.ip !== null && this.cluster.podByIp.get(pod.ip) === pod ? pod.ip : null;
  }
}

export function evaluate(snapshot: Snapshot, packet: Packet): Verdict {
  return new Evaluator(snapshot).evaluate(packet);
}
