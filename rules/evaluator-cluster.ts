import type { Labels, PodRecord, Selector } from './model.js';
import type { Snapshot } from './snapshot.js';
import { parseIPv4 } from './ipv4.js';

/**
 * The cluster as the evaluator sees it: who owns each address, which addresses are a node's, and the
 * matching it does by hand. Shared by the NetworkPolicy tier (evaluator.ts) and the ClusterNetworkPolicy
 * tiers (evaluator-tiers.ts), and by nothing the compiler uses, so a mistake in one is not silently
 * shared by the other.
 */

export type PacketProtocol = 'TCP' | 'UDP' | 'SCTP' | 'ICMP';

export interface Packet {
  readonly src: string;
  readonly dst: string;
  readonly protocol: PacketProtocol;
  /** Destination port; null for ICMP. */
  readonly port: number | null;
  /**
   * A pod's packet to its own address that went through a Service (kube-proxy sent it back to the
   * pod): it leaves the pod and is subject to ClusterNetworkPolicy. Without it, a packet from a pod
   * to its own address never leaves the pod.
   */
  readonly viaService?: boolean;
}

export interface LocalNode {
  readonly name: string;
  /** Every address local to the node now, as the kernel lists them (what `addrtype LOCAL` matches). */
  readonly addresses: ReadonlySet<string>;
}

export interface Cluster {
  readonly snapshot: Snapshot;
  /** The pod each address belongs to, once claims are settled. */
  readonly podByIp: ReadonlyMap<string, PodRecord>;
  /** Addresses claimed with equal standing by several pods: they belong to none. */
  readonly contested: ReadonlyMap<string, readonly string[]>;
  readonly nodeAddresses: ReadonlyMap<string, ReadonlySet<string>>;
  /** The node whose addresses are known from the node itself, not only from its Node object. */
  readonly liveNode: string | null;
}

export function labelsMatch(selector: Selector, labels: Labels): boolean {
  return selector.requirements.every((r) => {
    const value = Object.prototype.hasOwnProperty.call(labels, r.key) ? labels[r.key] : undefined;
    if (r.operator === 'Exists') return value !== undefined;
    if (r.operator === 'DoesNotExist') return value === undefined;
    if (r.operator === 'In') return value !== undefined && r.values.includes(value);
    return value === undefined || !r.values.includes(value);
  });
}

export function namespaceLabels(cluster: Cluster, namespace: string): Labels {
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

export function clusterOf(snapshot: Snapshot, localNode: LocalNode | undefined): Cluster {
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

export function inCidr(address: string, cidr: { base: number; prefix: number }): boolean {
  const value = parseIPv4(address);
  if (value === null) return false;
  const size = 2 ** (32 - cidr.prefix);
  return value >= cidr.base && value < cidr.base + size;
}
