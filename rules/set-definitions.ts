import type { IpBlock, Peer, Protocol, Selector } from './model.js';
import type { Names } from './names.js';
import type { IpSetType } from './dataplane.js';
import { ipBlockCover } from './address-ranges.js';

/**
 * What an ipset stands for. Policies that say the same thing share one set: the definition's key is
 * canonical, and the set's name is a hash of it.
 */
export type SetDefinition =
  | {
      readonly kind: 'pods';
      readonly key: string;
      /** Pods of this one namespace, or (when null) of every namespace namespaceSelector matches. */
      readonly namespace: string | null;
      readonly namespaceSelector: Selector | null;
      readonly podSelector: Selector;
    }
  | {
      readonly kind: 'ipBlock';
      readonly key: string;
      /** Disjoint CIDRs covering exactly the rule's ipBlocks, excepts taken out (address-ranges.ts). */
      readonly cidrs: readonly string[];
    }
  | { readonly kind: 'namedPort'; readonly key: string; readonly protocol: Protocol; readonly portName: string }
  /** Every IPv4 address in the status of the Nodes the selector matches (ClusterNetworkPolicy `nodes` peers). */
  | { readonly kind: 'nodes'; readonly key: string; readonly nodeSelector: Selector };

export function peerSetDefinition(peer: Peer & { kind: 'pods' }, policyNamespace: string): SetDefinition {
  const scope = peer.namespaceSelector === null ? `ns=${policyNamespace}` : `nssel=${peer.namespaceSelector.canonical}`;
  return {
    kind: 'pods',
    key: `pods ${scope} pod=${peer.podSelector.canonical}`,
    namespace: peer.namespaceSelector === null ? policyNamespace : null,
    namespaceSelector: peer.namespaceSelector,
    podSelector: peer.podSelector,
  };
}

/**
 * A ClusterNetworkPolicy's pod or namespace peer: pods of every namespace its namespaceSelector
 * matches. Keyed as a NetworkPolicy peer with a namespaceSelector is, so the two share sets.
 */
export function clusterPeerSetDefinition(namespaceSelector: Selector, podSelector: Selector): SetDefinition & { kind: 'pods' } {
  return { kind: 'pods', key: `pods nssel=${namespaceSelector.canonical} pod=${podSelector.canonical}`, namespace: null, namespaceSelector, podSelector };
}

export function nodeSetDefinition(nodeSelector: Selector): SetDefinition {
  return { kind: 'nodes', key: `nodes ${nodeSelector.canonical}`, nodeSelector };
}

/** One set for all the ipBlock peers of a rule: the exact union of their addresses. */
export function ipBlockSetDefinition(blocks: readonly IpBlock[]): SetDefinition {
  const cidrs = ipBlockCover(blocks);
  return { kind: 'ipBlock', key: `net ${cidrs.join(',')}`, cidrs };
}

/** Named ports resolve per destination pod, so the set holds "ip,proto:port" for every pod declaring the name. */
export function namedPortSetDefinition(protocol: Protocol, portName: string): SetDefinition {
  return { kind: 'namedPort', key: `port ${protocol}/${portName}`, protocol, portName };
}

export function setName(definition: SetDefinition, names: Names): string {
  switch (definition.kind) {
    case 'pods':
      return names.peerSet(definition.key);
    case 'ipBlock':
      return names.ipBlockSet(definition.key);
    case 'namedPort':
      return names.namedPortSet(definition.key);
    case 'nodes':
      return names.nodeSet(definition.key);
  }
}

export function setType(definition: SetDefinition): IpSetType {
  switch (definition.kind) {
    case 'pods':
      return 'hash:ip';
    case 'ipBlock':
      return 'hash:net';
    case 'namedPort':
      return 'hash:ip,port';
    case 'nodes':
      return 'hash:ip';
  }
}

export function namedPortMember(ip: string, protocol: Protocol, port: number): string {
  return `${ip},${protocol.toLowerCase()}:${port}`;
}

