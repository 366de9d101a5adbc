import { createHash } from 'node:crypto';
import type { Direction } from './model.js';

/**
 * Every name palisade gives a chain or set: owned (one prefix), short (chains at most 28 characters,
 * sets at most 31) and derived from what it stands for, so the same input always yields the same names.
 * Nothing taken from a Kubernetes object reaches iptables except through a hash.
 */

export const MAX_CHAIN_NAME = 28;
export const MAX_IPSET_NAME = 31;

function hash16(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

/**
 * The suffix the AWS VPC CNI (and Calico) use for a pod's host-side veth: sha1("<namespace>.<pod>"),
 * 11 hex chars. The VPC CNI names a multi-NIC pod's further interfaces (index 1, 2, ...) after
 * "<pod>.<index>" the same way.
 */
export function vethSuffix(namespace: string, pod: string): string {
  return createHash('sha1').update(`${namespace}.${pod}`).digest('hex').slice(0, 11);
}

/** The name the VPC CNI hashes for a pod's interface number `index` (0 is the first). */
export function interfaceIdentity(pod: string, index: number): string {
  return index === 0 ? pod : `${pod}.${index}`;
}

export function hostInterfaceName(prefix: string, namespace: string, pod: string, suffix: VethSuffix = vethSuffix): string {
  return prefix + suffix(namespace, pod);
}

/** How host-side interface names are derived; injectable so tests can make names collide at will. */
export type VethSuffix = (namespace: string, pod: string) => string;

export class Names {
  readonly prefix: string;

  constructor(prefix: string) {
    this.prefix = prefix;
  }

  /** Entry chains the hook rules jump to. */
  forward(): string {
    return `${this.prefix}-FORWARD`;
  }

  input(): string {
    return `${this.prefix}-INPUT`;
  }

  /** Sets the allow mark; reached by goto, so it returns straight to the endpoint chain. */
  allow(): string {
    return `${this.prefix}-allow`;
  }

  dispatchRoot(side: 'from' | 'to'): string {
    return `${this.prefix}-${side}-wl-dispatch`;
  }

  /** A dispatch subtree for interfaces starting with `interfacePrefix` (our own hex names, so safe). */
  dispatchNode(side: 'from' | 'to', interfacePrefix: string): string {
    return `${this.prefix}-${side === 'from' ? 'fd' : 'td'}-${interfacePrefix}`;
  }

  /**
   * `from` chains see traffic leaving the pod (egress), `to` chains traffic entering it (ingress).
   * Named by the pod's identity, never by its interface name: 44 bits of an interface name can be made
   * to collide, and a chain two pods shared would hand one pod's enforcement to the other.
   */
  endpoint(side: 'from' | 'to', namespace: string, pod: string): string {
    return `${this.prefix}-${side === 'from' ? 'fw' : 'tw'}-${hash16(`${namespace}/${pod}`)}`;
  }

  /** The anti-spoofing step of one of a pod's further interfaces (multi-NIC) before its `from` chain. */
  extraInterface(namespace: string, pod: string, iface: string): string {
    return `${this.prefix}-fx-${hash16(`${namespace}/${pod}\u0000${iface}`)}`;
  }

  policy(direction: Direction, namespace: string, name: string): string {
    return `${this.prefix}-${direction === 'ingress' ? 'pi' : 'po'}-${hash16(`${namespace}/${name}`)}`;
  }

  /** The peers of one rule of a policy, when the rule has many peers and many ports (see policy-chains.ts). */
  policyRule(direction: Direction, namespace: string, name: string, rule: number): string {
    return `${this.prefix}-${direction === 'ingress' ? 'ri' : 'ro'}-${hash16(`${namespace}/${name}\u0000${rule}`)}`;
  }

  /** One set per distinct selector peer (scope + pod selector), shared by every rule that uses it. */
  peerSet(definition: string): string {
    return `${this.prefix}-p-${hash16(definition)}`;
  }

  ipBlockSet(definition: string): string {
    return `${this.prefix}-n-${hash16(definition)}`;
  }

  namedPortSet(definition: string): string {
    return `${this.prefix}-np-${hash16(definition)}`;
  }

  /** One chain per ClusterNetworkPolicy and direction, shared by every local pod it selects. */
  clusterPolicy(direction: Direction, name: string): string {
    return `${this.prefix}-${direction === 'ingress' ? 'ci' : 'co'}-${hash16(name)}`;
  }

  /** The peers of one rule of a ClusterNetworkPolicy with many peers and many ports (as policyRule). */
  clusterRule(direction: Direction, name: string, rule: string): string {
    return `${this.prefix}-${direction === 'ingress' ? 'ki' : 'ko'}-${hash16(`${name}\u0000${rule}`)}`;
  }

  /** A Deny rule's last step with the drop log on: logs under the rule's own prefix, then sets the deny bit. */
  clusterDeny(direction: Direction, name: string, rule: number): string {
    return `${this.prefix}-cd-${hash16(`${direction}\u0000${name}\u0000${rule}`)}`;
  }

  /** Set the Pass and Deny bits (Accept sets the allow bit: allow()); reached by goto, like allow(). */
  pass(): string {
    return `${this.prefix}-pass`;
  }

  deny(): string {
    return `${this.prefix}-deny`;
  }

  /** A walk through one ClusterNetworkPolicy tier in one direction, shared by the pods the same policies select. */
  tier(tier: 'Admin' | 'Baseline', side: 'from' | 'to', policies: readonly string[]): string {
    return `${this.prefix}-${tier === 'Admin' ? 'a' : 'b'}${side === 'from' ? 'f' : 't'}-${hash16(policies.join('\u0000'))}`;
  }

  /** Addresses of the Nodes a `nodes` peer selects. */
  nodeSet(definition: string): string {
    return `${this.prefix}-nd-${hash16(definition)}`;
  }

  /** A scratch set to build a replacement in before swapping it in; leftovers are ours, so they get cleaned. */
  tempSet(name: string): string {
    return `${this.prefix}-t-${hash16(name)}`;
  }

  owns(name: string): boolean {
    return name.startsWith(`${this.prefix}-`);
  }

  /**
   * The xt_hashlimit table every drop-log rule shares: the node's budget of records. The kernel keeps
   * a table's rate from the rule that created it, for as long as any rule names it, so the name carries
   * the rate and burst: new settings get a new table. At most 8 + 3 + 4 of the kernel's 15 characters.
   */
  dropLogLimit(rate: number, burst: number): string {
    return `${this.prefix}-dl${hash16(`${rate}/${burst}`).slice(0, 4)}`;
  }

  /**
   * The xt_hashlimit table of ClusterNetworkPolicy Deny logs, one bucket per pod address (source for
   * egress, destination for ingress): their rules are shared by every pod, so xt_limit's one bucket per
   * rule cannot give each pod its share. At most 8 + 3 + 3.
   */
  clusterDropLogLimit(direction: Direction, rate: number, burst: number): string {
    return `${this.prefix}-c${direction === 'ingress' ? 'i' : 'o'}${hash16(`${rate}/${burst}`).slice(0, 3)}`;
  }

  /** An NFLOG prefix for one ClusterNetworkPolicy Deny rule: the pod is the packet's own address. */
  clusterDropLogPrefix(direction: Direction, identity: string): string {
    return `${this.prefix}:cnp:${direction === 'ingress' ? 'in' : 'out'}:${hash16(identity)}`;
  }

  /**
   * An NFLOG prefix for one pod, direction and verdict with the policies it names: readable at a
   * glance, and a hash of the rest, which the daemon looks up in the dataplane it installed. At most
   * 8 + 12 + 17 characters, inside NFLOG's 63.
   */
  dropLogPrefix(verdict: 'denied' | 'would-deny', direction: Direction, identity: string): string {
    return `${this.prefix}:${verdict === 'denied' ? 'deny' : 'audit'}:${direction === 'ingress' ? 'in' : 'out'}:${hash16(identity)}`;
  }
}

/**
 * Keeps comment text to characters that mean nothing to iptables-restore's tokenizer (all ASCII, so
 * characters are bytes). Length is not limited here: rule-hash.ts cuts the whole tagged comment to
 * what iptables keeps.
 */
export function sanitizeComment(text: string): string {
  return text.replace(/[^A-Za-z0-9 ._:/=,()-]/g, '_');
}
