import type { Direction, Labels, PodRecord, PolicyRecord, PolicyRule, Selector } from './model.js';
import type { Snapshot } from './snapshot.js';
import { parseIPv4 } from './ipv4.js';
import { DEFAULT_POLICY_BUDGET } from './policy-budget.js';

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
 * - Traffic between a pod and its own node is always allowed. "Its own node" is every local address
 *   of the node where the daemon runs (EvaluatorOptions.localNode), and a Node object's InternalIP
 *   addresses elsewhere; an ExternalIP is never local to the node.
 * - Addresses that are not pods (external hosts, nodes, hostNetwork pods) have no policy of their own.
 * - Audit policies (annotated palisade.io/audit: "true") decide nothing. Where no enforced policy
 *   isolates a pod in a direction and audit ones select it, the packet "would be denied" when none of
 *   their rules allows it. Where an enforced one does isolate it, its verdict stands: enforcing an audit
 *   policy there could only allow more.
 */

export type PacketProtocol = 'TCP' | 'UDP' | 'SCTP' | 'ICMP';

export interface Packet {
  readonly src: string;
  readonly dst: string;
  readonly protocol: PacketProtocol;
  /** Destination port; null for ICMP. */
  readonly port: number | null;
}

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

interface Cluster {
  readonly snapshot: Snapshot;
  /** The pod each address belongs to, once claims are settled. */
  readonly podByIp: ReadonlyMap<string, PodRecord>;
  /** Addresses claimed with equal standing by several pods: they belong to none. */
  readonly contested: ReadonlyMap<string, readonly string[]>;
  readonly nodeAddresses: ReadonlyMap<string, ReadonlySet<string>>;
  /** The node whose addresses are known from the node itself, not only from its Node object. */
  readonly liveNode: string | null;
}

function labelsMatch(selector: Selector, labels: Labels): boolean {
  return selector.requirements.every((r) => {
    const value = Object.prototype.hasOwnProperty.call(labels, r.key) ? labels[r.key] : undefined;
    if (r.operator === 'Exists') return value !== undefined;
    if (r.operator === 'DoesNotExist') return value === undefined;
    if (r.operator === 'In') return value !== undefined && r.values.includes(value);
    return value === undefined || !r.values.includes(value);
  });
}

function namespaceLabels(cluster: Cluster, namespace: string): Labels {
  const found = cluster.snapshot.namespaces.find((n) => n.name === namespace);
  return found?.labels ?? { 'kubernetes.io/metadata.name': namespace };
}

/** Only pods with their own network namespace, an IPv4 address and not finished are endpoints or peers. */
function isEndpoint(pod: PodRecord): boolean {
  return !pod.hostNetwork && !pod.finished && pod.ip !== null;
}

/**
 * Who an address belongs to when several claim it: a Node's address is never a pod's; a claim from
 * status.podIPs (kubelet's) beats one from the VPC CNI annotation (anyone's); equal claims cancel out.
 */
function settleClaims(snapshot: Snapshot): { podByIp: Map<string, PodRecord>; contested: Map<string, string[]> } {
  const nodeHeld = new Set(snapshot.nodes.flatMap((n) => n.addresses));
  const strength = (pod: PodRecord): number => (pod.ipSource === 'status' ? 2 : 1);
  const strongest = new Map<string, PodRecord[]>();
  for (const pod of snapshot.pods) {
    if (!isEndpoint(pod) || nodeHeld.has(pod.ip!)) continue;
    const current = strongest.get(pod.ip!);
    if (current === undefined || strength(pod) > strength(current[0]!)) strongest.set(pod.ip!, [pod]);
    else if (strength(pod) === strength(current[0]!)) current.push(pod);
  }
  const podByIp = new Map<string, PodRecord>();
  const contested = new Map<string, string[]>();
  for (const [address, pods] of strongest) {
    if (pods.length === 1) podByIp.set(address, pods[0]!);
    else contested.set(address, pods.map((p) => `${p.namespace}/${p.name}`).sort());
  }
  return { podByIp, contested };
}

function clusterOf(snapshot: Snapshot, localNode: LocalNode | undefined): Cluster {
  const { podByIp, contested } = settleClaims(snapshot);
  const nodeAddresses = new Map<string, Set<string>>();
  const addAddress = (node: string, address: string): void => {
    const set = nodeAddresses.get(node) ?? new Set<string>();
    set.add(address);
    nodeAddresses.set(node, set);
  };
  for (const node of snapshot.nodes) for (const address of node.internalAddresses) addAddress(node.name, address);
  // A hostNetwork pod's address is its node's address.
  for (const pod of snapshot.pods) if (pod.hostNetwork && pod.ip !== null && pod.nodeName !== null) addAddress(pod.nodeName, pod.ip);
  if (localNode !== undefined) for (const address of localNode.addresses) addAddress(localNode.name, address);
  return { snapshot, podByIp, contested, nodeAddresses, liveNode: localNode?.name ?? null };
}

function inCidr(address: string, cidr: { base: number; prefix: number }): boolean {
  const value = parseIPv4(address);
  if (value === null) return false;
  const size = 2 ** (32 - cidr.prefix);
  return value >= cidr.base && value < cidr.base + size;
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

function decide(cluster: Cluster, direction: Direction, packet: Packet, refused: Refused): DirectionVerdict {
  const ownAddress = direction === 'ingress' ? packet.dst : packet.src;
  const peerAddress = direction === 'ingress' ? packet.src : packet.dst;
  const pod = cluster.podByIp.get(ownAddress);
  if (pod === undefined) {
    const claimants = cluster.contested.get(ownAddress);
    const reason = claimants === undefined
      ? `${ownAddress} is not a pod, so no policy applies`
      : `${ownAddress} is claimed by ${claimants.join(' and ')} with equal standing, so it belongs to no pod and no policy applies`;
    return { direction, pod: null, isolated: false, allowed: true, policies: [], allowedBy: [], reason, audit: null };
  }
  const who = `${pod.namespace}/${pod.name}`;
  const selecting = cluster.snapshot.policies.filter((p) =>
    p.namespace === pod.namespace && (direction === 'ingress' ? p.affectsIngress : p.affectsEgress) && labelsMatch(p.podSelector, pod.labels));
  const policies = selecting.filter((p) => !p.audit);
  const staged = selecting.filter((p) => p.audit);
  const names = policies.map((p) => `${p.namespace}/${p.name}`);
  const stagedNames = staged.map((p) => `${p.namespace}/${p.name}`);
  const base = { direction, pod: who, policies: names };
  const notJudged = (reason: string): AuditVerdict | null => (staged.length === 0 ? null : { policies: stagedNames, wouldDeny: false, allowedBy: [], reason });
  if (cluster.podByIp.get(peerAddress) === pod) {
    const reason = 'a pod is never blocked from itself';
    return { ...base, isolated: policies.length > 0, allowed: true, allowedBy: [], reason, audit: notJudged(reason) };
  }
  if (pod.nodeName !== null && cluster.nodeAddresses.get(pod.nodeName)?.has(peerAddress) === true) {
    const known = pod.nodeName === cluster.liveNode ? 'a local address of the node' : 'as its Node object\'s InternalIP and its hostNetwork pods tell';
    const reason = `${peerAddress} is ${pod.nodeName}'s own (${known}), and traffic between ${who} and its own node is always allowed`;
    return { ...base, isolated: policies.length > 0, allowed: true, allowedBy: [], reason, audit: notJudged(reason) };
  }
  const destination = cluster.podByIp.get(packet.dst);
  const judge = (list: readonly PolicyRecord[]): { allowedBy: RuleRef[]; closed: string[] } => {
    const allowedBy: RuleRef[] = [];
    const closed: string[] = [];
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
  if (policies.length === 0) {
    const reason = `no policy isolates ${who} for ${direction}`;
    if (staged.length === 0) return { ...base, isolated: false, allowed: true, allowedBy: [], reason, audit: null };
    const { allowedBy, closed } = judge(staged);
    const wouldDeny = allowedBy.length === 0;
    const auditReason = wouldDeny
      ? `audit policies ${stagedNames.join(', ')} would deny this packet were they enforced${closed.length === 0 ? '' : `; ${closed.join('; ')}`}`
      : `audit policies would allow it (${rulesText(allowedBy)})`;
    return { ...base, isolated: false, allowed: true, allowedBy: [], reason, audit: { policies: stagedNames, wouldDeny, allowedBy, reason: auditReason } };
  }
  const { allowedBy, closed } = judge(policies);
  const allowed = allowedBy.length > 0;
  const reason = allowed
    ? `allowed by ${rulesText(allowedBy)}`
    : `${who} is isolated for ${direction} by ${names.join(', ')} and no rule allows this packet${closed.length === 0 ? '' : `; ${closed.join('; ')}`}`;
  return { ...base, isolated: true, allowed, allowedBy, reason, audit: notJudged(`enforced policies isolate ${who} for ${direction}, so audit policies cannot change the verdict`) };
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

export interface LocalNode {
  readonly name: string;
  /** Every address local to the node now, as the kernel lists them (what `addrtype LOCAL` matches). */
  readonly addresses: ReadonlySet<string>;
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
      return [`${fromObjects}; on the node itself palisade counts every local address too (node-local DNS on 169.254.20.10, for one): ask the daemon's /explain there`];
    }
    const addresses = [...(this.cluster.nodeAddresses.get(live) ?? [])].sort();
    return [`${live}'s own addresses are its local addresses now: ${addresses.join(', ')}`, `for other nodes, ${fromObjects}`];
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
