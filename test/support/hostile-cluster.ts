import fc from 'fast-check';
import { vethSuffix } from '../../rules/names.js';
import type { PodRecord } from '../../rules/model.js';
import type { Snapshot } from '../../rules/snapshot.js';
import { namespace, pod, policy } from './builders.js';
import { EXTERNAL_ADDRESSES, NODES, POD_LABELS, policySpec, randomCluster } from './random-cluster.js';

/**
 * Random clusters with an attacker in them: a tenant who can create Pods and NetworkPolicies in one
 * namespace of their own, and nothing else. The victims are the random cluster of random-cluster.ts,
 * fenced so their policies never trust the attacker's namespace (their namespaceSelectors require a
 * label the attacker's namespace lacks) and with every pod running (its address in status). The
 * attacker writes what the API server accepts and a tenant can write:
 *
 *   - names at their maximum length (a 63-character namespace, 253-character pods and policies);
 *   - VPC CNI annotations claiming 0.0.0.0, loopback, multicast, broadcast, link-local, a node's
 *     address, a victim's address, an outsider's address, or another attacker pod's;
 *   - pods whose host interface name collides with a victim's (through an injectable name hash, as a
 *     2^22-hash birthday search or a 2^44-hash preimage would give for real);
 *   - random policies selecting their own pods, with peers reaching anywhere;
 *   - policies over the test budget (many peers times many named ports, long except lists).
 */

type Obj = Record<string, unknown>;

/** A DNS label of the maximum length. */
export const ATTACKER_NS = `${'x'.repeat(54)}-attacker`;
export const VICTIM_LABEL = { tenant: 'victim' } as const;

/** A small budget, so oversized policies are cheap to generate. */
export const TEST_BUDGET = { rules: 40, sets: 12, setEntries: 64, selectorPods: 6 } as const;

/** The prefix of a pod name whose interface name collides with victim `ns/pod`. */
function collidingName(ns: string, victim: string): string {
  return `collide-${ns}--${victim}--`;
}

/**
 * The name hash the compiler and the simulator use in hostile tests: the VPC CNI's, except that an
 * attacker pod named "collide-<ns>--<pod>--..." gets victim ns/pod's interface name.
 */
export function collidingVethSuffix(ns: string, podName: string): string {
  const match = /^collide-(.+?)--(.+?)--/.exec(podName);
  if (ns === ATTACKER_NS && match !== null) return vethSuffix(match[1]!, match[2]!);
  return vethSuffix(ns, podName);
}

/** Pads a name to the API server's 253-character limit for object names. */
function maxLength(prefix: string): string {
  return (prefix + 'z'.repeat(253)).slice(0, 253).replace(/-+$/, 'z');
}

const HOSTILE_ADDRESSES = ['0.0.0.0', '127.0.0.1', '255.255.255.255', '224.0.0.1', '169.254.20.10', '240.1.2.3', '010.001.001.001', 'not-an-ip', NODES[0].address, NODES[1].address, ...EXTERNAL_ADDRESSES, '10.1.9.99'] as const;

type AttackerAddress =
  | { readonly kind: 'own' }
  | { readonly kind: 'none' }
  | { readonly kind: 'annotation'; readonly address: string }
  | { readonly kind: 'victim' }
  | { readonly kind: 'sibling' };

const attackerAddress: fc.Arbitrary<AttackerAddress> = fc.oneof(
  fc.constant({ kind: 'own' as const }),
  fc.constant({ kind: 'none' as const }),
  fc.constantFrom(...HOSTILE_ADDRESSES).map((address) => ({ kind: 'annotation' as const, address })),
  fc.constant({ kind: 'victim' as const }),
  fc.constant({ kind: 'sibling' as const }),
);

const attackerPod = fc.record({
  labels: fc.record({ app: fc.constantFrom(...POD_LABELS.app), role: fc.constantFrom(...POD_LABELS.role) }, { requiredKeys: [] }),
  node: fc.constantFrom('node-a', 'node-b'),
  address: attackerAddress,
  collide: fc.boolean(),
  pick: fc.nat(),
  ports: fc.uniqueArray(fc.constantFrom('http', 'dns', 'metrics', 'p0', 'p1'), { maxLength: 2 }),
});

/** One rule with many selector peers and many named ports, or one ipBlock with a long except list. */
const oversizedSpec = fc.oneof(
  fc.integer({ min: 7, max: 12 }).map((n) => ({
    podSelector: {},
    ingress: [{
      from: Array.from({ length: n }, (_, i) => ({ podSelector: { matchLabels: { app: 'a', idx: `i${i}` } } })),
      ports: Array.from({ length: n }, (_, i) => ({ port: `p${i}` })),
    }],
  })),
  fc.integer({ min: 70, max: 120 }).map((n) => ({
    podSelector: {},
    policyTypes: ['Egress'],
    egress: [{ to: [{ ipBlock: { cidr: '10.0.0.0/8', except: Array.from({ length: n }, (_, i) => `10.${i}.0.0/16`) } }] }],
  })),
);

export interface HostileCluster {
  /** The victims' objects alone: what the cluster would be without the attacker. */
  readonly victim: readonly Obj[];
  /** The attacker's objects. */
  readonly attacker: readonly Obj[];
  /** Addresses packets may use: pods, nodes, outsiders. */
  readonly addresses: readonly string[];
  /** Victim pod addresses, nodes and outsiders the attacker did not claim: their traffic must not change. */
  readonly victimAddresses: readonly string[];
}

/** Running victims, fenced off from the attacker's namespace. */
function fenceVictims(objects: readonly Obj[]): Obj[] {
  return objects.map((object) => {
    if (object['kind'] === 'Namespace') {
      const metadata = object['metadata'] as Obj;
      return { ...object, metadata: { ...metadata, labels: { ...(metadata['labels'] as Obj), ...VICTIM_LABEL } } };
    }
    if (object['kind'] === 'Pod') {
      const annotations = (object['metadata'] as Obj)['annotations'] as Record<string, string> | undefined;
      const claimed = annotations?.['vpc.amazonaws.com/pod-ips'];
      if (claimed === undefined) return object;
      const metadata = { ...(object['metadata'] as Obj) };
      delete metadata['annotations'];
      return { ...object, metadata, status: { ...(object['status'] as Obj), phase: 'Running', podIP: claimed, podIPs: [{ ip: claimed }] } };
    }
    if (object['kind'] === 'NetworkPolicy') return JSON.parse(JSON.stringify(object, (key, value: unknown) => (key === 'namespaceSelector' ? fenceSelector(value as Obj) : value))) as Obj;
    return object;
  });
}

function fenceSelector(selector: Obj): Obj {
  return { ...selector, matchLabels: { ...((selector['matchLabels'] as Obj | undefined) ?? {}), ...VICTIM_LABEL } };
}

function victimPods(objects: readonly Obj[]): { ns: string; name: string; ip: string | null }[] {
  return objects.filter((o) => o['kind'] === 'Pod').map((o) => {
    const metadata = o['metadata'] as { namespace: string; name: string };
    const status = o['status'] as { podIP?: string; phase?: string };
    return { ns: metadata.namespace, name: metadata.name, ip: status.phase === 'Failed' ? null : status.podIP ?? null };
  });
}

export const hostileCluster: fc.Arbitrary<HostileCluster> = fc.record({
  victims: randomCluster,
  pods: fc.array(attackerPod, { minLength: 1, maxLength: 6 }),
  policies: fc.array(fc.oneof(policySpec, policySpec, oversizedSpec), { maxLength: 3 }),
}).map(({ victims, pods, policies }) => {
  const victim = fenceVictims(victims.objects);
  const targets = victimPods(victim);
  const attacker: Obj[] = [namespace(ATTACKER_NS, { team: 'x' })];
  const claimed = new Set<string>();
  pods.forEach((p, i) => {
    const target = targets[p.pick % targets.length]!;
    const name = p.collide ? maxLength(`${collidingName(target.ns, target.name)}${i}-`) : maxLength(`p${i}-`);
    const own = `10.1.9.${10 + i}`;
    let address: { ip?: string; annotationIp?: string } = {};
    // A colliding pod never has kubelet's word: had the CNI wired it, the victim's veth would be gone.
    const kind = p.collide && p.address.kind === 'own' ? 'none' : p.address.kind;
    if (kind === 'own') address = { ip: own };
    else if (kind === 'annotation' && p.address.kind === 'annotation') address = { annotationIp: p.address.address };
    else if (kind === 'victim' && target.ip !== null) address = { annotationIp: target.ip };
    else if (kind === 'sibling') address = { annotationIp: `10.1.9.${10 + ((i + 1) % pods.length)}` };
    if (address.annotationIp !== undefined) claimed.add(address.annotationIp);
    if (address.ip !== undefined) claimed.add(address.ip);
    attacker.push(pod(ATTACKER_NS, name, { ...address, labels: p.labels, node: p.node, ports: p.ports.map((n, k) => ({ name: n, port: 8000 + k })) }));
  });
  policies.forEach((spec, i) => attacker.push(policy(ATTACKER_NS, maxLength(`pol${i}-`), spec)));
  const podAddresses = targets.flatMap((t) => (t.ip === null ? [] : [t.ip]));
  const outsiders = [...NODES.map((n) => n.address), ...EXTERNAL_ADDRESSES];
  const addresses = [...new Set([...podAddresses, ...outsiders, ...[...claimed].filter((a) => /^10\.1\.9\./.test(a))])];
  const nodes = NODES.map((n) => n.address);
  const victimAddresses = [...podAddresses, ...nodes, ...EXTERNAL_ADDRESSES.filter((a) => !claimed.has(a))];
  return { victim, attacker, addresses, victimAddresses };
});

/**
 * Addresses where nothing tells which pod a packet comes from: claimed by pods of equal standing, or
 * by a pod that lost its interface name (its traffic enters through another pod's interface). The
 * evaluator and the rules may answer differently there, and neither answer can open anything: the
 * rules drop such pods' traffic.
 */
export function ambiguousAddresses(snapshot: Snapshot, suffix: (ns: string, pod: string) => string): Set<string> {
  const nodeHeld = new Set(snapshot.nodes.flatMap((n) => n.addresses));
  const standing = (p: PodRecord): number => (p.ipSource === 'status' ? 2 : 1);
  const live = snapshot.pods.filter((p): p is PodRecord & { ip: string } => p.ip !== null && !p.finished && !p.hostNetwork && !nodeHeld.has(p.ip));
  const out = new Set<string>();
  const owners: (PodRecord & { ip: string })[] = [];
  const byAddress = new Map<string, (PodRecord & { ip: string })[]>();
  for (const p of live) byAddress.set(p.ip, [...(byAddress.get(p.ip) ?? []), p]);
  for (const [address, claimants] of byAddress) {
    const best = Math.max(...claimants.map(standing));
    const top = claimants.filter((p) => standing(p) === best);
    if (top.length > 1) out.add(address);
    else owners.push(top[0]!);
  }
  // Among pods that own their address, those sharing an interface name on one node.
  const byInterface = new Map<string, (PodRecord & { ip: string })[]>();
  for (const p of owners) {
    const key = `${p.nodeName}/${suffix(p.namespace, p.name)}`;
    byInterface.set(key, [...(byInterface.get(key) ?? []), p]);
  }
  for (const sharing of byInterface.values()) {
    if (sharing.length < 2) continue;
    const best = Math.max(...sharing.map(standing));
    const top = sharing.filter((p) => standing(p) === best);
    for (const p of sharing) if (top.length > 1 || p !== top[0]) out.add(p.ip);
  }
  return out;
}
