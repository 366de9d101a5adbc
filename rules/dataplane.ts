import type { ClusterDenyLog, DropLogSource } from './drop-log.js';

/**
 * The compiler's output: the desired dataplane as plain data. Rendering to restore text (render.ts)
 * and applying it to the kernel (lib/) are separate steps that only read this.
 */

/** One iptables rule as argv-style tokens; quoting and comment escaping happen only in render.ts. */
export interface Rule {
  readonly match: readonly string[];
  /** e.g. ['-j', 'DROP'], ['-g', 'pal-fw-0123456789a'], ['-j', 'MARK', '--set-xmark', '0x100000/0x100000']. */
  readonly target: readonly string[];
  /** Human-readable, already free of Kubernetes-controlled characters that iptables could misread. */
  readonly comment: string;
}

export interface Chain {
  readonly name: string;
  readonly rules: readonly Rule[];
}

export type IpSetType = 'hash:ip' | 'hash:net' | 'hash:ip,port';

export interface IpSet {
  readonly name: string;
  readonly type: IpSetType;
  /**
   * In `ipset add` syntax: "10.0.0.1", "10.0.0.0/8", "10.1.0.0/16 nomatch", "10.0.0.1,tcp:8080".
   * Unordered: a set of cluster-wide pods changes one member at a time, and sorting ten thousand
   * members on every change would cost more than the change; render.ts sorts when it writes text.
   */
  readonly members: ReadonlySet<string>;
  /** What the set stands for, for status pages and debugging. */
  readonly description: string;
}

/**
 * The table palisade's chains and hooks live in. Netfilter runs mangle's FORWARD and INPUT before
 * filter's, so nothing in filter can let a packet past policy, whatever order the filter chains are in
 * and whoever rewrites them: kube-proxy's KUBE-FORWARD accepts every packet it marked for
 * masquerading, and it prepends its jump to filter FORWARD whenever it finds it missing. Neither
 * kube-proxy nor the VPC CNI writes rules in mangle FORWARD or INPUT.
 */
export const POLICY_TABLE = 'mangle';

/** Tables earlier versions kept their chains and hooks in: emptied of them at start and by cleanup. */
export const HISTORIC_TABLES: readonly string[] = ['filter'];

/** A rule palisade places at the top of a built-in chain to send traffic into its own chains. */
export interface HookRule {
  readonly table: typeof POLICY_TABLE;
  readonly chain: 'FORWARD' | 'INPUT';
  readonly rule: Rule;
}

export interface EndpointInfo {
  readonly namespace: string;
  readonly name: string;
  readonly ip: string;
  /** Host-side interface names this pod may have: its first, one per configured prefix, then its further ones. */
  readonly interfaces: readonly string[];
  /** Further interfaces (multi-NIC) with the address the node routes to each. */
  readonly extraInterfaces: readonly { readonly iface: string; readonly address: string }[];
  readonly isolatedIngress: boolean;
  readonly isolatedEgress: boolean;
  /** "namespace/name" of the (enforced) policies that select the pod and isolate it in that direction. */
  readonly ingressPolicies: readonly string[];
  readonly egressPolicies: readonly string[];
  /** "namespace/name" of the audit policies that select it in that direction: they isolate nothing. */
  readonly ingressAudit: readonly string[];
  readonly egressAudit: readonly string[];
  /** Names of the ClusterNetworkPolicies selecting the pod in that direction, in walk order: Admin ones, then Baseline ones. */
  readonly ingressClusterPolicies: readonly string[];
  readonly egressClusterPolicies: readonly string[];
  /** What the drop-log rule of each direction stands for (denied, or would-deny); null: none. */
  readonly ingressLog: DropLogSource | null;
  readonly egressLog: DropLogSource | null;
  /** The pod's own chains: `to` holds its ingress checks, `from` its egress checks and anti-spoofing. */
  readonly toChain: string;
  readonly fromChain: string;
}

export interface Dataplane {
  readonly ipsets: ReadonlyMap<string, IpSet>;
  readonly chains: ReadonlyMap<string, Chain>;
  readonly hooks: readonly HookRule[];
  /** Local endpoints, sorted by namespace/name. */
  readonly endpoints: readonly EndpointInfo[];
  /** What the log rule of each installed ClusterNetworkPolicy Deny rule stands for (drop log on). */
  readonly clusterDenyLogs: readonly ClusterDenyLog[];
}
