import type { ClusterPolicyRecord, ClusterRule, Direction, PortSpec } from './model.js';
import { PROTOCOLS } from './model.js';
import type { Chain, Rule } from './dataplane.js';
import type { Names } from './names.js';
import { sanitizeComment } from './names.js';
import type { CompilerSettings } from './settings.js';
import { tierMarks } from './settings.js';
import type { SetDefinition } from './set-definitions.js';
import { clusterPeerSetDefinition, ipBlockSetDefinition, nodeSetDefinition, setName } from './set-definitions.js';
import { MATCH_ALL } from './selector.js';
import { ownChain, portItems, portMatch } from './policy-chains.js';
import type { ClusterDenyLog } from './drop-log.js';
import { clusterDenyLog, clusterDenyLogRule } from './drop-log.js';

/**
 * One chain per ClusterNetworkPolicy and direction, shared by every local pod its subject selects
 * (cluster-tier-chains.ts walks them). A rule that matches ends the policy by goto to the chain of its
 * action, which sets that action's bit (settings.tierMarks) and returns straight to the pod's tier
 * chain, so the first matching rule is the policy's word:
 *
 *   Accept ► pal-allow (the allow bit)   Pass ► pal-pass   Deny ► pal-deny, or with the drop log on
 *   pal-cd-<rule>: an NFLOG rule naming the policy and rule, then the deny bit
 *
 * Peers are ipset lookups (pods and namespaces share NetworkPolicy's selector sets; nodes get a set
 * of their addresses; networks one hash:net set per rule), so rule counts follow the policy's text.
 * A rule with many peers and many ports gets a chain of its own holding its peers, reached by goto
 * from each port match; since a packet that fails the peers under one port fails them under every
 * port, that chain ends by going on to the policy's next rule, held in a continuation chain:
 *
 *   pal-co-<policy>:  <rules before> · <port 1> -g pal-ko-<rule> ... <port M> -g pal-ko-<rule> · -g pal-ko-<rest>
 *   pal-ko-<rule>:    <peer 1> -g <action> ... <peer N> -g <action> · -g pal-ko-<rest>
 *   pal-ko-<rest>:    <rules after>
 *
 * Every step is a goto, so nothing of one policy's walk can be mistaken for another's word: policies
 * of one priority all run before their bits are read.
 *
 * A rule palisade cannot honour (ClusterRule.failClosed) fails closed: an Accept rule is left out (it
 * matches nothing), a Deny or Pass rule denies every packet.
 */

export interface ClusterPolicyChains {
  readonly chains: readonly Chain[];
  readonly sets: ReadonlyMap<string, SetDefinition>;
  /** The drop-log sources of its Deny rules (with the drop log on). */
  readonly denyLogs: readonly ClusterDenyLog[];
}

/** A named port is the destination pod's, of whichever protocol the packet has. */
function portSpecs(rule: ClusterRule): PortSpec[] | null {
  if (rule.protocols === null) return null;
  return rule.protocols.flatMap((match): PortSpec[] => (match.kind === 'range'
    ? [{ kind: 'number', protocol: match.protocol, port: match.start, endPort: match.end }]
    : PROTOCOLS.map((protocol) => ({ kind: 'named', protocol, name: match.name }))));
}

function peerMatches(rule: ClusterRule, direction: Direction, names: Names, sets: Map<string, SetDefinition>): string[][] {
  const side = direction === 'ingress' ? 'src' : 'dst';
  const definitions = new Map<string, SetDefinition>();
  const networks = rule.peers.flatMap((peer) => (peer.kind === 'networks' ? peer.networks : []));
  for (const peer of rule.peers) {
    const definition = peer.kind === 'pods' ? clusterPeerSetDefinition(peer.namespaceSelector, peer.podSelector)
      : peer.kind === 'namespaces' ? clusterPeerSetDefinition(peer.namespaceSelector, MATCH_ALL)
        : peer.kind === 'nodes' ? nodeSetDefinition(peer.nodeSelector) : null;
    if (definition !== null) definitions.set(definition.key, definition);
  }
  if (networks.length > 0) {
    const definition = ipBlockSetDefinition(networks.map((cidr) => ({ cidr, except: [] })));
    definitions.set(definition.key, definition);
  }
  return [...definitions.values()].map((definition) => {
    const set = setName(definition, names);
    sets.set(set, definition);
    return ['-m', 'set', '--match-set', set, side];
  });
}

export function buildClusterPolicyChains(policy: ClusterPolicyRecord, direction: Direction, names: Names, settings: CompilerSettings): ClusterPolicyChains {
  const sets = new Map<string, SetDefinition>();
  const denyLogs: ClusterDenyLog[] = [];
  const chains: Chain[] = [];
  const marks = tierMarks(settings);
  const label = `${policy.tier.toLowerCase()} ${policy.name} ${direction}`;
  let current: { name: string; rules: Rule[] } = { name: names.clusterPolicy(direction, policy.name), rules: [] };
  const rules = direction === 'ingress' ? policy.ingress : policy.egress;
  for (const [index, rule] of rules.entries()) {
    const comment = sanitizeComment(`${label} rule ${index}${rule.name === '' ? '' : ` ${rule.name}`}`);
    const failed = rule.failClosed;
    if (failed !== null && rule.action === 'Accept') continue;
    const action = failed !== null ? 'Deny' : rule.action;
    let target: string[];
    if (action === 'Accept') target = ['-g', names.allow()];
    else if (action === 'Pass') target = ['-g', names.pass()];
    else if (settings.dropLog === null) target = ['-g', names.deny()];
    else {
      const log = clusterDenyLog(names, policy, direction, index, rule.name);
      denyLogs.push(log);
      chains.push({
        name: log.chain,
        rules: [
          clusterDenyLogRule(log, names, settings.dropLog),
          { match: [], target: ['-j', 'MARK', '--set-xmark', `0x${marks.deny.toString(16)}/0x${marks.deny.toString(16)}`], comment: sanitizeComment(`denied by ${label} rule ${index}`) },
        ],
      });
      target = ['-g', log.chain];
    }
    if (failed !== null) {
      current.rules.push({ match: [], target, comment: sanitizeComment(`${label} rule ${index} failed closed`) });
      // Nothing after an unconditional goto is ever reached.
      break;
    }
    const specs = portSpecs(rule);
    const peers = peerMatches(rule, direction, names, sets);
    // Every peer palisade understood matches no IPv4 address (IPv6 networks only): the rule matches nothing.
    if (peers.length === 0) continue;
    const ports = specs === null ? [[]] : portItems(specs).map((item) => portMatch(item, names, sets));
    if (!ownChain(peers.length, ports.length)) {
      for (const port of ports) for (const peer of peers) current.rules.push({ match: [...port, ...peer], target, comment });
      continue;
    }
    const ruleChain = names.clusterRule(direction, policy.name, `${index}`);
    const rest = names.clusterRule(direction, policy.name, `${index} rest`);
    chains.push({ name: ruleChain, rules: [...peers.map((match) => ({ match, target, comment })), { match: [], target: ['-g', rest], comment: sanitizeComment(`${label} after rule ${index}`) }] });
    for (const match of ports) current.rules.push({ match, target: ['-g', ruleChain], comment });
    current.rules.push({ match: [], target: ['-g', rest], comment: sanitizeComment(`${label} after rule ${index}`) });
    chains.push(current);
    current = { name: rest, rules: [] };
  }
  chains.push(current);
  return { chains, sets, denyLogs };
}
