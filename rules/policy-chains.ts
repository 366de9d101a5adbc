import type { Direction, Peer, PolicyRecord, PolicyRule, PortSpec, Protocol } from './model.js';
import { PROTOCOLS, rulesFor } from './model.js';
import type { Chain, Rule } from './dataplane.js';
import type { Names } from './names.js';
import { sanitizeComment } from './names.js';
import type { SetDefinition } from './set-definitions.js';
import { ipBlockSetDefinition, namedPortSetDefinition, peerSetDefinition, setName } from './set-definitions.js';

/**
 * One chain per policy and direction, shared by every endpoint the policy selects. A matching rule
 * jumps (goto) to the allow chain, which sets the allow mark; control then returns straight to the
 * endpoint chain, which stops at the first policy that allowed. Peers are always ipset lookups, so a
 * policy's rule count depends on its text, never on how many pods its selectors match.
 */

/** multiport takes at most 15 ports, a range counting as two. */
const MULTIPORT_SLOTS = 15;

export interface PolicyChain {
  readonly chain: Chain;
  readonly sets: ReadonlyMap<string, SetDefinition>;
}

export function buildPolicyChain(policy: PolicyRecord, direction: Direction, names: Names): PolicyChain {
  const name = names.policy(direction, policy.namespace, policy.name);
  const sets = new Map<string, SetDefinition>();
  const rules: Rule[] = [];
  const label = `${policy.namespace}/${policy.name} ${direction}`;
  rulesFor(policy, direction).forEach((rule, index) => {
    if (rules.at(-1)?.match.length === 0) return; // an unconditional allow already ends the chain
    const comment = sanitizeComment(`${label} rule ${index}`);
    for (const match of ruleMatches(rule, policy.namespace, direction, names, sets)) {
      rules.push({ match, target: ['-g', names.allow()], comment });
      if (match.length === 0) break;
    }
  });
  return { chain: { name, rules }, sets };
}

/** Every combination of one peer match and one port match; either list may be "anything". */
function ruleMatches(rule: PolicyRule, namespace: string, direction: Direction, names: Names, sets: Map<string, SetDefinition>): string[][] {
  const peerMatches = rule.peers === null ? [[]] : rule.peers.map((peer) => peerMatch(peer, namespace, direction, names, sets));
  const portMatches = rule.ports === null ? [[]] : portMatchesOf(rule.ports, names, sets);
  const out: string[][] = [];
  for (const ports of portMatches) for (const peer of peerMatches) out.push([...ports, ...peer]);
  return out;
}

function peerMatch(peer: Peer, namespace: string, direction: Direction, names: Names, sets: Map<string, SetDefinition>): string[] {
  const definition = peer.kind === 'pods' ? peerSetDefinition(peer, namespace) : ipBlockSetDefinition(peer.ipBlock);
  const set = setName(definition, names);
  sets.set(set, definition);
  return ['-m', 'set', '--match-set', set, direction === 'ingress' ? 'src' : 'dst'];
}

/**
 * Ports grouped per protocol: a port-less entry covers its whole protocol; numbers and ranges share
 * multiport rules; each named port is a lookup of "destination ip,proto:port" in the set of pods that
 * declare that name, which is how one name maps to different numbers on different pods.
 */
function portMatchesOf(ports: readonly PortSpec[], names: Names, sets: Map<string, SetDefinition>): string[][] {
  const out: string[][] = [];
  const seen = new Set<string>();
  for (const protocol of PROTOCOLS) {
    const mine = ports.filter((p) => p.protocol === protocol);
    if (mine.length === 0) continue;
    const p = protocol.toLowerCase();
    if (mine.some((s) => s.kind === 'any')) {
      out.push(['-p', p]);
      continue;
    }
    out.push(...numericMatches(protocol, mine));
    for (const spec of mine) {
      if (spec.kind !== 'named') continue;
      const definition = namedPortSetDefinition(protocol, spec.name);
      const set = setName(definition, names);
      if (seen.has(set)) continue;
      seen.add(set);
      sets.set(set, definition);
      out.push(['-p', p, '-m', 'set', '--match-set', set, 'dst,dst']);
    }
  }
  return out;
}

function numericMatches(protocol: Protocol, specs: readonly PortSpec[]): string[][] {
  const p = protocol.toLowerCase();
  const ranges = [...new Set(specs.flatMap((s) => (s.kind === 'number' ? [s.port === s.endPort ? `${s.port}` : `${s.port}:${s.endPort}`] : [])))];
  ranges.sort((a, b) => parseInt(a, 10) - parseInt(b, 10) || a.length - b.length);
  if (ranges.length === 1) return [['-p', p, '-m', p, '--dport', ranges[0]!]];
  const out: string[][] = [];
  let chunk: string[] = [];
  let used = 0;
  for (const range of ranges) {
    const cost = range.includes(':') ? 2 : 1;
    if (used + cost > MULTIPORT_SLOTS) {
      out.push(['-p', p, '-m', 'multiport', '--dports', chunk.join(',')]);
      chunk = [];
      used = 0;
    }
    chunk.push(range);
    used += cost;
  }
  if (chunk.length > 0) out.push(['-p', p, '-m', 'multiport', '--dports', chunk.join(',')]);
  return out;
}
