import type { Chain, HookRule, Rule } from './dataplane.js';
import { POLICY_TABLE } from './dataplane.js';
import type { Names } from './names.js';
import { sanitizeComment } from './names.js';
import type { CompilerSettings } from './settings.js';

/**
 * Dispatch from a packet's interface to its endpoint chain. A flat list would make every new
 * connection walk hundreds of rules on a busy node, so, as Felix does, the interfaces are arranged in a
 * tree on the characters of their names: each level matches a longer name prefix with `+`, and a
 * leaf holds at most LEAF_SIZE exact names. Interface names are prefix + hex, so each level splits up
 * to sixteen ways.
 *
 * Every dispatch chain ends with the unknown-interface rule: branches are reached by goto, so falling
 * off a branch would return to the entry chain and skip a final rule kept only at the root.
 *
 * A pod's interface is a prefix and hex, never a dot: a name that continues with a dot after the
 * prefix is a link of the node's, such as the VLAN (vlan.eth.<id>) that carries a branch-ENI pod's
 * traffic to the VPC. The root lets those through before anything else, or the unknown-interface rule
 * would cut every branch-ENI pod off from the VPC.
 */

const LEAF_SIZE = 16;

export interface DispatchEntry {
  readonly iface: string;
  /** The endpoint chain, or null for an interface no pod may use (claimed by several): dropped whatever the setting for unknown interfaces. */
  readonly target: string | null;
  /** The pod, for the rule comment: "namespace/name". */
  readonly pod: string;
}

export function buildDispatch(side: 'from' | 'to', entries: readonly DispatchEntry[], names: Names, settings: CompilerSettings): Chain[] {
  const flag = side === 'from' ? '-i' : '-o';
  const sorted = [...entries].sort((a, b) => (a.iface < b.iface ? -1 : a.iface > b.iface ? 1 : 0));
  const unknown: Rule = settings.unknownEndpoint === 'drop'
    ? { match: [], target: ['-j', 'DROP'], comment: 'unknown endpoint interface' }
    : { match: [], target: ['-j', 'RETURN'], comment: 'unknown endpoint interface (allowed by setting)' };
  const chains: Chain[] = [];
  const nodeLinks = settings.interfacePrefixes.map((p): Rule => ({ match: [flag, `${p}.+`], target: ['-j', 'RETURN'], comment: sanitizeComment(`node link ${p}.*, not a pod`) }));
  const visit = (chainName: string, group: readonly DispatchEntry[], first: readonly Rule[] = []): void => {
    const rules: Rule[] = [...first];
    if (group.length <= LEAF_SIZE) {
      for (const entry of group) rules.push(leaf(flag, entry));
    } else {
      for (const [prefix, members] of splitByNextCharacter(group)) {
        if (members.length === 1) {
          rules.push(leaf(flag, members[0]!));
          continue;
        }
        const child = names.dispatchNode(side, prefix);
        rules.push({ match: [flag, `${prefix}+`], target: ['-g', child], comment: '' });
        visit(child, members);
      }
    }
    rules.push(unknown);
    chains.push({ name: chainName, rules });
  };
  visit(names.dispatchRoot(side), sorted, nodeLinks);
  return chains.sort((a, b) => (a.name < b.name ? -1 : 1));
}

function leaf(flag: string, entry: DispatchEntry): Rule {
  const target = entry.target === null ? ['-j', 'DROP'] : ['-g', entry.target];
  return { match: [flag, entry.iface], target, comment: sanitizeComment(entry.pod) };
}

/** Groups by the first character after the group's common prefix; a lone group would add a useless level. */
function splitByNextCharacter(group: readonly DispatchEntry[]): Map<string, DispatchEntry[]> {
  const depth = commonPrefixLength(group.map((e) => e.iface)) + 1;
  const out = new Map<string, DispatchEntry[]>();
  for (const entry of group) {
    const key = entry.iface.slice(0, depth);
    const list = out.get(key);
    if (list === undefined) out.set(key, [entry]);
    else list.push(entry);
  }
  return out;
}

function commonPrefixLength(values: readonly string[]): number {
  const first = values[0] ?? '';
  let n = 0;
  while (n < first.length && values.every((v) => v[n] === first[n])) n++;
  return n;
}

/**
 * The entry chains and the hooks into them. Replies of connections that were allowed when they began
 * pass at once (conntrack). Traffic from a pod is checked against its egress, then traffic to a pod
 * against its ingress, in one FORWARD pass for pod-to-pod traffic on the same node. INPUT catches
 * what a pod sends to its own node: only anti-spoofing and the unknown-interface rule apply there.
 * Host-to-pod traffic (OUTPUT) is always allowed, so it needs no hook.
 */
export function buildEntryChains(names: Names, settings: CompilerSettings): { chains: Chain[]; hooks: HookRule[] } {
  const established: Rule = { match: ['-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED'], target: ['-j', 'RETURN'], comment: 'replies of allowed connections' };
  const fromPods = settings.interfacePrefixes.map((p): Rule => ({ match: ['-i', `${p}+`], target: ['-j', names.dispatchRoot('from')], comment: sanitizeComment(`from ${p} pods`) }));
  const toPods = settings.interfacePrefixes.map((p): Rule => ({ match: ['-o', `${p}+`], target: ['-j', names.dispatchRoot('to')], comment: sanitizeComment(`to ${p} pods`) }));
  const forward: Chain = { name: names.forward(), rules: [established, ...fromPods, ...toPods] };
  const input: Chain = { name: names.input(), rules: [established, ...fromPods] };
  const hook = (chain: 'FORWARD' | 'INPUT', target: string): HookRule => ({
    table: POLICY_TABLE,
    chain,
    rule: { match: [], target: ['-j', target], comment: 'palisade network policy' },
  });
  return { chains: [forward, input], hooks: [hook('FORWARD', forward.name), hook('INPUT', input.name)] };
}
