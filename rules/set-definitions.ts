import type { IpBlock, Peer, Protocol, Selector } from './model.js';
import type { Names } from './names.js';
import type { IpSetType } from './dataplane.js';

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
  | { readonly kind: 'ipBlock'; readonly key: string; readonly ipBlock: IpBlock }
  | { readonly kind: 'namedPort'; readonly key: string; readonly protocol: Protocol; readonly portName: string };

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

export function ipBlockSetDefinition(ipBlock: IpBlock): SetDefinition {
  const except = ipBlock.except.map((c) => c.text).join(',');
  return { kind: 'ipBlock', key: `net ${ipBlock.cidr.text} except=${except}`, ipBlock };
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
  }
}

/**
 * ipBlock members: the CIDR, with each `except` as a `nomatch` entry. hash:net looks up the most
 * specific entry, so an address inside an except never matches. hash:net cannot hold /0, so 0.0.0.0/0
 * becomes its two halves, and an except equal to a half simply removes that half.
 */
export function ipBlockMembers(ipBlock: IpBlock): string[] {
  const { cidr } = ipBlock;
  let matching = cidr.prefix === 0 ? ['0.0.0.0/1', '128.0.0.0/1'] : [cidr.text];
  const nomatch: string[] = [];
  for (const except of ipBlock.except) {
    if (matching.includes(except.text)) matching = matching.filter((m) => m !== except.text);
    else nomatch.push(`${except.text} nomatch`);
  }
  return [...matching, ...nomatch].sort();
}

export function namedPortMember(ip: string, protocol: Protocol, port: number): string {
  return `${ip},${protocol.toLowerCase()}:${port}`;
}

