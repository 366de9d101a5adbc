/**
 * The normalised cluster model the compiler and the evaluator work on. Objects from the API server or
 * from manifest files are parsed into these records once (see pod.ts, namespace.ts, policy.ts); nothing
 * downstream looks at raw Kubernetes objects again.
 */

export type Protocol = 'TCP' | 'UDP' | 'SCTP';
export const PROTOCOLS: readonly Protocol[] = ['TCP', 'UDP', 'SCTP'];

export type Labels = Readonly<Record<string, string>>;

export type SelectorOperator = 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';

export interface SelectorRequirement {
  readonly key: string;
  readonly operator: SelectorOperator;
  /** Sorted and de-duplicated, so equal selectors have equal canonical forms. */
  readonly values: readonly string[];
}

/** A parsed label selector: every requirement must hold. No requirements selects everything. */
export interface Selector {
  readonly requirements: readonly SelectorRequirement[];
  /** Canonical text form, used as a map key and hashed into set names. */
  readonly canonical: string;
}

export interface NamedContainerPort {
  readonly name: string;
  readonly protocol: Protocol;
  readonly port: number;
}

export type AddressSource = 'status' | 'annotation';

/** What the compiler needs to know of a pod, nothing more (the daemon keeps only these). */
export interface PodRecord {
  /** "namespace/name", made once: every index holds this one string. */
  readonly key: string;
  readonly namespace: string;
  readonly name: string;
  readonly labels: Labels;
  /**
   * The IPv4 address the pod claims, canonical, or null while it has none. A claim is not ownership:
   * two pods can claim one address, and only the claim that wins (see address-claims.ts) is used.
   */
  readonly ip: string | null;
  /**
   * Where the claim comes from. `status` is written by kubelet alone; `annotation` is the VPC CNI's
   * early hint, which any pod author can write too, so it never beats a status claim.
   */
  readonly ipSource: AddressSource | null;
  readonly nodeName: string | null;
  readonly hostNetwork: boolean;
  /** Succeeded or Failed: its IP may already belong to another pod. */
  readonly finished: boolean;
  readonly namedPorts: readonly NamedContainerPort[];
  /**
   * Asks the VPC CNI for an interface on every network card (multi-NIC). The further interfaces'
   * addresses are in no Pod field; the node's routes tell them.
   */
  readonly multiNic: boolean;
}

export interface NamespaceRecord {
  readonly name: string;
  readonly labels: Labels;
}

export interface NodeRecord {
  readonly name: string;
  /** Selected by ClusterNetworkPolicy `nodes` peers. */
  readonly labels: Labels;
  /** Every IPv4 address its status lists (InternalIP, ExternalIP): none of them is ever a pod's. */
  readonly addresses: readonly string[];
  /**
   * Its InternalIP addresses: the ones that are local to the node. An ExternalIP is an address the
   * cloud translates to the node, never one the node holds, so traffic to it leaves the node.
   */
  readonly internalAddresses: readonly string[];
}

export interface Cidr {
  /** Network address as an unsigned 32-bit integer. */
  readonly base: number;
  readonly prefix: number;
  /** Canonical text, e.g. "10.1.0.0/16". */
  readonly text: string;
}

export interface IpBlock {
  readonly cidr: Cidr;
  readonly except: readonly Cidr[];
}

/**
 * One entry of `from`/`to`. A selector peer selects pods: those of the policy's own namespace when
 * `namespaceSelector` is null, else those of every namespace the namespaceSelector matches.
 */
export type Peer =
  | { readonly kind: 'pods'; readonly podSelector: Selector; readonly namespaceSelector: Selector | null }
  | { readonly kind: 'ipBlock'; readonly ipBlock: IpBlock };

/** One entry of `ports`. `port` null means every port of the protocol. */
export type PortSpec =
  | { readonly kind: 'number'; readonly protocol: Protocol; readonly port: number; readonly endPort: number }
  | { readonly kind: 'named'; readonly protocol: Protocol; readonly name: string }
  | { readonly kind: 'any'; readonly protocol: Protocol };

/**
 * A rule: `peers` null means from/to was absent or empty (any peer); `ports` null means ports was absent
 * or empty (every port of every protocol, ICMP included). A rule whose every listed peer was unusable
 * (an IPv6 ipBlock, say) is dropped by the parser rather than widened to "any peer".
 */
export interface PolicyRule {
  readonly peers: readonly Peer[] | null;
  readonly ports: readonly PortSpec[] | null;
}

export type Direction = 'ingress' | 'egress';

export interface PolicyRecord {
  readonly namespace: string;
  readonly name: string;
  readonly podSelector: Selector;
  /** After defaulting: does this policy isolate the pods it selects in that direction? */
  readonly affectsIngress: boolean;
  readonly affectsEgress: boolean;
  readonly ingress: readonly PolicyRule[];
  readonly egress: readonly PolicyRule[];
  /**
   * The policy could not be compiled whole (invalid, or over the per-policy budget). It still isolates
   * what it selects, and grants nothing: failing closed never opens traffic the author meant to deny.
   */
  readonly failed: boolean;
  /** What the policy would cost on a node; null when it failed before it could be measured. */
  readonly cost: PolicyCost | null;
  /** Failed because its cost is over the budget (not because it is invalid). */
  readonly overBudget: boolean;
  /**
   * Annotated `palisade.io/audit: "true"`: compiled, but it isolates nothing and never drops; what it
   * would deny, were it enforced, is logged as would-deny instead.
   */
  readonly audit: boolean;
}

/** The annotation that turns a NetworkPolicy into an audit (staged) policy, and the one value that does. */
export const AUDIT_ANNOTATION = 'palisade.io/audit';
export const AUDIT_VALUE = 'true';

/** What one policy puts on a node that installs it: iptables rules, ipsets, and entries of the ipsets its ipBlocks fill. */
export interface PolicyCost {
  readonly rules: number;
  readonly sets: number;
  readonly setEntries: number;
}

/**
 * ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2), parsed by cluster-policy.ts. Its tier
 * places it before NetworkPolicy (Admin) or after it (Baseline); within a tier, lower priorities go
 * first; within a policy, rules go in written order, and the first one that matches decides.
 */
export type ClusterTier = 'Admin' | 'Baseline';
export const CLUSTER_TIERS: readonly ClusterTier[] = ['Admin', 'Baseline'];

export type ClusterAction = 'Accept' | 'Deny' | 'Pass';
export const CLUSTER_ACTIONS: readonly ClusterAction[] = ['Accept', 'Deny', 'Pass'];

/**
 * Whom a policy applies to, or whom a rule's peer names. `namespaces` is every pod of the matching
 * namespaces; `pods` needs both selectors to match (an absent namespaceSelector there selects every
 * namespace, unlike NetworkPolicy's). hostNetwork pods are never selected by either.
 */
export type ClusterPodSelection =
  | { readonly kind: 'namespaces'; readonly namespaceSelector: Selector }
  | { readonly kind: 'pods'; readonly namespaceSelector: Selector; readonly podSelector: Selector };

/**
 * An egress `nodes` peer matches every IPv4 address in the status.addresses of the Nodes it selects
 * (InternalIP and ExternalIP: the Hostname and DNS types hold names); `networks` matches any address
 * in its CIDRs, pods' included. IPv6 CIDRs are left out: they match no IPv4 packet.
 */
export type ClusterPeer =
  | ClusterPodSelection
  | { readonly kind: 'nodes'; readonly nodeSelector: Selector }
  | { readonly kind: 'networks'; readonly networks: readonly Cidr[] };

/** One entry of `protocols`: a destination port range of one protocol (a single port is a range of one), or a named port of the destination pod. */
export type ClusterPortMatch =
  | { readonly kind: 'range'; readonly protocol: Protocol; readonly start: number; readonly end: number }
  | { readonly kind: 'named'; readonly name: string };

export interface ClusterRule {
  /** The rule's `name`, '' when it has none: verdicts and problems name rules by index and by it. */
  readonly name: string;
  readonly action: ClusterAction;
  /** The peers palisade understood. A rule needs one to match (its `from`/`to` is never empty). */
  readonly peers: readonly ClusterPeer[];
  /** Null: every protocol, ICMP included. Otherwise the packet must match one entry. */
  readonly protocols: readonly ClusterPortMatch[] | null;
  /**
   * Why palisade cannot honour the rule as written (a peer of a newer CRD, domainNames, an invalid
   * policy), or null. Such a rule fails closed as the API prescribes: an Accept rule matches nothing,
   * and a Deny or a Pass rule is taken as Deny for every packet of its direction.
   */
  readonly failClosed: string | null;
}

export interface ClusterPolicyRecord {
  readonly name: string;
  readonly tier: ClusterTier;
  /** 0 to 1000; lower goes first within the tier. */
  readonly priority: number;
  readonly subject: ClusterPodSelection;
  /** No rules in a direction: the policy leaves that direction alone (there is no implicit isolation). */
  readonly ingress: readonly ClusterRule[];
  readonly egress: readonly ClusterRule[];
  /**
   * Invalid: each direction it declares holds one fail-closed rule (Deny everything) for its subject,
   * or for every pod when the subject is unreadable. A guardrail that cannot be read must not open
   * what it was written to close.
   */
  readonly failed: boolean;
}

export function clusterRulesFor(policy: ClusterPolicyRecord, direction: Direction): readonly ClusterRule[] {
  return direction === 'ingress' ? policy.ingress : policy.egress;
}

export function objectKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

export function podKey(pod: PodRecord): string {
  return pod.key;
}

export function policyKey(policy: Pick<PolicyRecord, 'namespace' | 'name'>): string {
  return objectKey(policy.namespace, policy.name);
}

/**
 * A pod takes part in policy (as an endpoint or a peer) only with an IPv4 address, when it is not
 * finished, and when it has its own network namespace.
 */
export function podCounts(pod: PodRecord): pod is PodRecord & { readonly ip: string } {
  return pod.ip !== null && !pod.finished && !pod.hostNetwork;
}

export function rulesFor(policy: PolicyRecord, direction: Direction): readonly PolicyRule[] {
  return direction === 'ingress' ? policy.ingress : policy.egress;
}

export function affects(policy: PolicyRecord, direction: Direction): boolean {
  return direction === 'ingress' ? policy.affectsIngress : policy.affectsEgress;
}
