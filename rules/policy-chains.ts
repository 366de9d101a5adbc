import type { Direction, IpBlock, Peer, PolicyCost, PolicyRecord, PolicyRule, PortSpec, Protocol } from './model.js';
import { PROTOCOLS, rulesFor } from './model.js';
import type { Chain, Rule } from './dataplane.js';
import type { Names } from './names.js';
import { sanitizeComment } from './names.js';
import type { SetDefinition } from './set-definitions.js';
import { ipBlockCover } from './address-ranges.js';
import { ipBlockSetDefinition, namedPortSetDefinition, peerSetDefinition, setName } from './set-definitions.js';

/**
 * One chain per policy and direction, shared by every endpoint the policy selects. A matching rule
 * jumps (goto) to the allow chain, which sets the allow mark; control then returns straight to the
 * endpoint chain, which stops at the first policy that allowed. Peers are always ipset lookups, so a
 * policy's rule count depends on its text, never on how many pods its selectors match.
 *
 * A rule needs a match on one of its peers and one of its port groups. With few of either, each pair
 * is one iptables rule. With many of both, the pairs would grow as their product (300 peers and 300
 * named ports: 90,000 rules), so the rule gets a chain of its own holding one rule per peer, and the
 * policy chain jumps there once per port group; a mark check after them leaves at the first allow:
 *
 *   pal-pi-<policy>: <port group 1> -j pal-ri-<rule> ... <port group M> -j pal-ri-<rule> · mark set? RETURN
 *   pal-ri-<rule>:   <peer 1> -g pal-allow ... <peer N> -g pal-allow
 *
 * Every ipBlock peer of a rule shares one set holding the exact union of their addresses.
 */

/** multiport takes at most 15 ports, a range counting as two. */
const MULTIPORT_SLOTS = 15;

export interface PolicyChains {
  readonly chains: readonly Chain[];
  readonly sets: ReadonlyMap<string, SetDefinition>;
}

/** A rule's peer and port matches before set names are given, so cost can be measured without hashing. */
type PeerItem = { readonly kind: 'selector'; readonly peer: Peer & { kind: 'pods' } } | { readonly kind: 'blocks'; readonly blocks: readonly IpBlock[] };
export type PortItem =
  | { readonly kind: 'protocol'; readonly protocol: Protocol }
  | { readonly kind: 'numbers'; readonly protocol: Protocol; readonly ranges: readonly string[] }
  | { readonly kind: 'named'; readonly protocol: Protocol; readonly name: string };

interface RuleShape {
  /** null: any peer. */
  readonly peers: readonly PeerItem[] | null;
  /** null: any port of any protocol. */
  readonly ports: readonly PortItem[] | null;
}

function shapeOf(rule: PolicyRule): RuleShape {
  let peers: PeerItem[] | null = null;
  if (rule.peers !== null) {
    const selectors = new Map<string, PeerItem>();
    const blocks: IpBlock[] = [];
    for (const peer of rule.peers) {
      if (peer.kind === 'ipBlock') blocks.push(peer.ipBlock);
      else selectors.set(`${peer.namespaceSelector?.canonical ?? '\u0000own'}\u0000${peer.podSelector.canonical}`, { kind: 'selector', peer });
    }
    peers = [...selectors.values()];
    if (blocks.length > 0) peers.push({ kind: 'blocks', blocks });
  }
  return { peers, ports: rule.ports === null ? null : portItems(rule.ports) };
}

/**
 * Ports grouped per protocol: a port-less entry covers its whole protocol; numbers and ranges share
 * multiport rules; each named port is a lookup of "destination ip,proto:port" in the set of pods that
 * declare that name, which is how one name maps to different numbers on different pods.
 */
export function portItems(ports: readonly PortSpec[]): PortItem[] {
  const out: PortItem[] = [];
  for (const protocol of PROTOCOLS) {
    const mine = ports.filter((p) => p.protocol === protocol);
    if (mine.length === 0) continue;
    if (mine.some((s) => s.kind === 'any')) {
      out.push({ kind: 'protocol', protocol });
      continue;
    }
    for (const ranges of numericChunks(mine)) out.push({ kind: 'numbers', protocol, ranges });
    const named = new Set<string>();
    for (const spec of mine) if (spec.kind === 'named') named.add(spec.name);
    for (const name of named) out.push({ kind: 'named', protocol, name });
  }
  return out;
}

function numericChunks(specs: readonly PortSpec[]): string[][] {
  const ranges = [...new Set(specs.flatMap((s) => (s.kind === 'number' ? [s.port === s.endPort ? `${s.port}` : `${s.port}:${s.endPort}`] : [])))];
  ranges.sort((a, b) => parseInt(a, 10) - parseInt(b, 10) || a.length - b.length);
  const out: string[][] = [];
  let chunk: string[] = [];
  let used = 0;
  for (const range of ranges) {
    const cost = range.includes(':') ? 2 : 1;
    if (used + cost > MULTIPORT_SLOTS) {
      out.push(chunk);
      chunk = [];
      used = 0;
    }
    chunk.push(range);
    used += cost;
  }
  if (chunk.length > 0) out.push(chunk);
  return out;
}

/** Whether a rule with this many peer and port matches gets a chain of its own (fewer rules than the product). */
export function ownChain(peers: number, ports: number): boolean {
  return peers * ports > peers + ports + 1;
}

/** The rules, sets and ipBlock entries a policy would put on a node, computed from its text alone. */
export function policyCost(policy: PolicyRecord): PolicyCost {
  let rules = 0;
  const sets = new Set<string>();
  let setEntries = 0;
  for (const direction of ['ingress', 'egress'] as const) {
    if (direction === 'ingress' ? !policy.affectsIngress : !policy.affectsEgress) continue;
    for (const rule of rulesFor(policy, direction)) {
      const shape = shapeOf(rule);
      const peers = shape.peers?.length ?? 1;
      const ports = shape.ports?.length ?? 1;
      rules += ownChain(peers, ports) ? peers + ports + 1 : peers * ports;
      for (const item of shape.peers ?? []) {
        if (item.kind === 'selector') sets.add(peerSetDefinition(item.peer, policy.namespace).key);
        else {
          const cidrs = ipBlockCover(item.blocks);
          const key = `net ${cidrs.join(',')}`;
          if (!sets.has(key)) setEntries += cidrs.length;
          sets.add(key);
        }
      }
      for (const item of shape.ports ?? []) if (item.kind === 'named') sets.add(namedPortSetDefinition(item.protocol, item.name).key);
    }
  }
  return { rules, sets: sets.size, setEntries };
}

/** The distinct selector sets a policy refers to, in both directions it affects. */
export function selectorSetDefinitions(policy: PolicyRecord): (SetDefinition & { kind: 'pods' })[] {
  const out = new Map<string, SetDefinition & { kind: 'pods' }>();
  for (const direction of ['ingress', 'egress'] as const) {
    if (direction === 'ingress' ? !policy.affectsIngress : !policy.affectsEgress) continue;
    for (const rule of rulesFor(policy, direction)) {
      for (const peer of rule.peers ?? []) {
        if (peer.kind !== 'pods') continue;
        const definition = peerSetDefinition(peer, policy.namespace) as SetDefinition & { kind: 'pods' };
        out.set(definition.key, definition);
      }
    }
  }
  return [...out.values()];
}

export function buildPolicyChains(policy: PolicyRecord, direction: Direction, names: Names, allowMark: number): PolicyChains {
  const name = names.policy(direction, policy.namespace, policy.name);
  const sets = new Map<string, SetDefinition>();
  const rules: Rule[] = [];
  const chains: Chain[] = [];
  const label = `${policy.namespace}/${policy.name} ${direction}`;
  const allow = ['-g', names.allow()];
  const bit = `0x${allowMark.toString(16)}`;
  for (const [index, rule] of rulesFor(policy, direction).entries()) {
    const comment = sanitizeComment(`${label} rule ${index}`);
    const shape = shapeOf(rule);
    const peers = shape.peers === null ? [[]] : shape.peers.map((item) => peerMatch(item, policy.namespace, direction, names, sets));
    const ports = shape.ports === null ? [[]] : shape.ports.map((item) => portMatch(item, names, sets));
    if (ownChain(peers.length, ports.length)) {
      const ruleChain = names.policyRule(direction, policy.namespace, policy.name, index);
      chains.push({ name: ruleChain, rules: peers.map((match) => ({ match, target: allow, comment })) });
      for (const match of ports) rules.push({ match, target: ['-j', ruleChain], comment });
      rules.push({ match: ['-m', 'mark', '--mark', `${bit}/${bit}`], target: ['-j', 'RETURN'], comment: sanitizeComment(`${label} rule ${index} allowed`) });
    } else {
      for (const port of ports) for (const peer of peers) rules.push({ match: [...port, ...peer], target: allow, comment });
    }
  }
  return { chains: [{ name, rules }, ...chains], sets };
}

function peerMatch(item: PeerItem, namespace: string, direction: Direction, names: Names, sets: Map<string, SetDefinition>): string[] {
  const definition = item.kind === 'selector' ? peerSetDefinition(item.peer, namespace) : ipBlockSetDefinition(item.blocks);
  const set = setName(definition, names);
  sets.set(set, definition);
  return ['-m', 'set', '--match-set', set, direction === 'ingress' ? 'src' : 'dst'];
}

export function portMatch(item: PortItem, names: Names, sets: Map<string, SetDefinition>): string[] {
  const p = item.protocol.toLowerCase();
  switch (item.kind) {
    case 'protocol':
      return ['-p', p];
    case 'numbers':
      return item.ranges.length === 1 ? ['-p', p, '-m', p, '--dport', item.ranges[0]!] : ['-p', p, '-m', 'multiport', '--dports', item.ranges.join(',')];
    case 'named': {
      const definition = namedPortSetDefinition(item.protocol, item.name);
      const set = setName(definition, names);
      sets.set(set, definition);
      return ['-p', p, '-m', 'set', '--match-set', set, 'dst,dst'];
    }
  }
}
