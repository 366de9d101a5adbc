import fc from 'fast-check';
import { clusterPolicy, namespace, node, pod, policy } from './builders.js';

/**
 * fast-check arbitraries for small random clusters, as raw objects. The vocabularies are tiny on
 * purpose: with few labels, ports and addresses, random selectors and packets collide often, which is
 * where the interesting cases (overlaps, excepts, shared named ports) happen.
 */

type Obj = Record<string, unknown>;

export const NODES = [{ name: 'node-a', address: '10.0.0.1', zone: 'a' }, { name: 'node-b', address: '10.0.0.2', zone: 'b' }] as const;
export const EXTERNAL_ADDRESSES = ['198.51.100.7', '10.2.0.9', '172.16.5.5'] as const;
export const PORTS = [53, 80, 443, 8080, 8081, 9090] as const;

const NAMESPACES = ['n1', 'n2', 'n3'] as const;
const labelValue = (values: readonly string[]) => fc.option(fc.constantFrom(...values), { nil: undefined });

const labels = (keys: Readonly<Record<string, readonly string[]>>) =>
  fc.record(Object.fromEntries(Object.entries(keys).map(([k, v]) => [k, labelValue(v)]))).map((r) =>
    Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined)) as Record<string, string>);

export const POD_LABELS = { app: ['a', 'b', 'c'], role: ['db', 'web'] } as const;
const NS_LABELS = { team: ['x', 'y'], env: ['p'] } as const;

const selector = (keys: Readonly<Record<string, readonly string[]>>) => {
  const key = fc.constantFrom(...Object.keys(keys));
  const expression = key.chain((k) => fc.oneof(
    fc.record({ key: fc.constant(k), operator: fc.constantFrom('In', 'NotIn'), values: fc.uniqueArray(fc.constantFrom(...keys[k]!), { minLength: 1, maxLength: 2 }) }),
    fc.record({ key: fc.constant(k), operator: fc.constantFrom('Exists', 'DoesNotExist') }),
  ));
  return fc.record({ matchLabels: labels(keys), matchExpressions: fc.array(expression, { maxLength: 2 }) }, { requiredKeys: [] });
};

const CIDRS: readonly { cidr: string; excepts: readonly string[] }[] = [
  { cidr: '10.1.0.0/16', excepts: ['10.1.1.0/24', '10.1.0.0/17', '10.1.2.0/25'] },
  { cidr: '10.1.1.0/24', excepts: ['10.1.1.0/30', '10.1.1.128/25'] },
  { cidr: '0.0.0.0/0', excepts: ['10.0.0.0/8', '128.0.0.0/1', '10.1.0.0/16'] },
  { cidr: '10.0.0.0/8', excepts: ['10.1.0.0/16', '10.0.0.0/30'] },
  { cidr: '198.51.100.0/24', excepts: [] },
  { cidr: '10.1.2.3/32', excepts: [] },
];

const ipBlock = fc.constantFrom(...CIDRS).chain((c) =>
  fc.subarray([...c.excepts]).map((except) => ({ ipBlock: except.length === 0 ? { cidr: c.cidr } : { cidr: c.cidr, except } })));

const peer = fc.oneof(
  fc.record({ podSelector: selector(POD_LABELS) }),
  fc.record({ namespaceSelector: selector(NS_LABELS) }),
  fc.record({ podSelector: selector(POD_LABELS), namespaceSelector: selector(NS_LABELS) }),
  ipBlock,
);

const port = fc.oneof(
  fc.record({ protocol: fc.constantFrom('TCP', 'UDP', 'SCTP', undefined), port: fc.constantFrom(...PORTS) }),
  fc.record({ protocol: fc.constantFrom('TCP', 'UDP'), port: fc.constantFrom(80, 8080), endPort: fc.constantFrom(8080, 9090) }).filter((p) => p.endPort >= p.port),
  fc.record({ protocol: fc.constantFrom('TCP', 'UDP', undefined), port: fc.constantFrom('http', 'dns', 'metrics') }),
  fc.record({ protocol: fc.constantFrom('TCP', 'UDP', 'SCTP') }),
).map((p) => Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined)));

/** A rule where from/to and ports are each absent, empty or a short list. */
const rule = (peersKey: 'from' | 'to') => fc.record({
  peers: fc.oneof(fc.constant(undefined), fc.constant([]), fc.array(peer, { minLength: 1, maxLength: 3 })),
  ports: fc.oneof(fc.constant(undefined), fc.constant([]), fc.array(port, { minLength: 1, maxLength: 3 })),
}).map(({ peers, ports }) => ({ ...(peers === undefined ? {} : { [peersKey]: peers }), ...(ports === undefined ? {} : { ports }) }));

export const policySpec = fc.record({
  podSelector: selector(POD_LABELS),
  policyTypes: fc.constantFrom(undefined, ['Ingress'], ['Egress'], ['Ingress', 'Egress']),
  ingress: fc.option(fc.array(rule('from'), { maxLength: 3 }), { nil: undefined }),
  egress: fc.option(fc.array(rule('to'), { maxLength: 3 }), { nil: undefined }),
}).map((s) => Object.fromEntries(Object.entries(s).filter(([, v]) => v !== undefined)));

/**
 * ClusterNetworkPolicies: few priorities, so ties between policies of one tier are frequent; every
 * action, both subject kinds, every peer kind, numbers, ranges and named ports, and now and then a
 * peer of a newer CRD (which fails closed).
 */
const podSelection = fc.record({ namespaceSelector: selector(NS_LABELS), podSelector: selector(POD_LABELS) });
const clusterPeer = (direction: 'ingress' | 'egress') => fc.oneof(
  { arbitrary: fc.record({ namespaces: selector(NS_LABELS) }), weight: 4 },
  { arbitrary: fc.record({ pods: podSelection }), weight: 4 },
  ...(direction === 'egress'
    ? [
        { arbitrary: fc.record({ nodes: fc.constantFrom({}, { matchLabels: { zone: 'a' } }, { matchExpressions: [{ key: 'zone', operator: 'NotIn', values: ['a'] }] }) }), weight: 3 },
        { arbitrary: fc.record({ networks: fc.uniqueArray(fc.constantFrom('10.1.1.0/24', '10.0.0.0/31', '198.51.100.7/32', '0.0.0.0/0', '10.1.2.0/25'), { minLength: 1, maxLength: 2 }) }), weight: 3 },
      ]
    : []),
  // A peer of a newer CRD: the rule fails closed.
  { arbitrary: fc.constant({ services: { namespaces: {} } }), weight: 1 },
);
const clusterProtocol = fc.oneof(
  fc.record({ proto: fc.constantFrom('tcp', 'udp', 'sctp'), port: fc.constantFrom(...PORTS) }).map(({ proto, port }) => ({ [proto]: { destinationPort: { number: port } } })),
  fc.record({ proto: fc.constantFrom('tcp', 'udp'), start: fc.constantFrom(80, 443), end: fc.constantFrom(8080, 9090) }).map(({ proto, start, end }) => ({ [proto]: { destinationPort: { range: { start, end } } } })),
  fc.constantFrom('http', 'dns', 'metrics').map((name) => ({ destinationNamedPort: name })),
);
const clusterRule = (direction: 'ingress' | 'egress') => fc.record({
  action: fc.constantFrom('Accept', 'Deny', 'Pass'),
  name: fc.constantFrom(undefined, 'r'),
  peers: fc.array(clusterPeer(direction), { minLength: 1, maxLength: 2 }),
  protocols: fc.option(fc.array(clusterProtocol, { minLength: 1, maxLength: 2 }), { nil: undefined }),
}).map(({ action, name, peers, protocols }) => {
  // Named ports need pod peers (the CRD refuses them with nodes or networks).
  const usable = protocols?.filter((p) => !('destinationNamedPort' in p) || peers.every((peer) => 'namespaces' in peer || 'pods' in peer));
  return {
    action,
    ...(name === undefined ? {} : { name }),
    [direction === 'ingress' ? 'from' : 'to']: peers,
    ...(usable === undefined || usable.length === 0 ? {} : { protocols: usable }),
  };
});
export const clusterPolicySpec = fc.record({
  tier: fc.constantFrom('Admin', 'Baseline'),
  priority: fc.constantFrom(1, 1, 5, 20),
  subject: fc.oneof(fc.record({ namespaces: selector(NS_LABELS) }), fc.record({ pods: podSelection })),
  ingress: fc.option(fc.array(clusterRule('ingress'), { minLength: 1, maxLength: 3 }), { nil: undefined }),
  egress: fc.option(fc.array(clusterRule('egress'), { minLength: 1, maxLength: 3 }), { nil: undefined }),
}).map((s) => Object.fromEntries(Object.entries(s).filter(([, v]) => v !== undefined)));

const NAMED_PORTS = [
  { name: 'http', port: 80 }, { name: 'http', port: 8080 }, { name: 'http', port: 9090 },
  { name: 'dns', port: 53, protocol: 'UDP' as const }, { name: 'dns', port: 53, protocol: 'TCP' as const }, { name: 'metrics', port: 9090 },
];

interface PodSpec { ns: string; labels: Record<string, string>; node: string; ports: typeof NAMED_PORTS; kind: 'normal' | 'finished' | 'no-ip' | 'annotation' }

const podSpec: fc.Arbitrary<PodSpec> = fc.record({
  ns: fc.constantFrom(...NAMESPACES),
  labels: labels(POD_LABELS),
  node: fc.constantFrom('node-a', 'node-a', 'node-b'),
  ports: fc.uniqueArray(fc.constantFrom(...NAMED_PORTS), { maxLength: 2, selector: (p) => `${p.name}/${p.protocol ?? 'TCP'}` }),
  kind: fc.constantFrom('normal', 'normal', 'normal', 'normal', 'finished', 'no-ip', 'annotation'),
});

export interface RandomCluster {
  readonly objects: readonly Obj[];
  /** Every address a packet may come from or go to: pods, nodes, outsiders. */
  readonly addresses: readonly string[];
}

export const randomCluster: fc.Arbitrary<RandomCluster> = fc.record({
  namespaces: fc.tuple(...NAMESPACES.map(() => labels(NS_LABELS))),
  pods: fc.array(podSpec, { minLength: 1, maxLength: 9 }),
  policies: fc.array(fc.record({ ns: fc.constantFrom(...NAMESPACES), spec: policySpec, audit: fc.constantFrom(false, false, false, true) }), { maxLength: 5 }),
  clusterPolicies: fc.array(clusterPolicySpec, { maxLength: 3 }),
}).map(({ namespaces, pods, policies, clusterPolicies }) => {
  const objects: Obj[] = NODES.map((n) => node(n.name, n.address, { labels: { zone: n.zone } }));
  NAMESPACES.forEach((name, i) => objects.push(namespace(name, namespaces[i])));
  const addresses: string[] = [...NODES.map((n) => n.address), ...EXTERNAL_ADDRESSES];
  pods.forEach((p, i) => {
    // Addresses straddle the CIDRs above: some in 10.1.1.0/24, some in 10.1.2.0/24.
    const ip = `10.1.${1 + (i % 2)}.${1 + i}`;
    addresses.push(ip);
    objects.push(pod(p.ns, `p${i}`, {
      labels: p.labels,
      node: p.node,
      ports: p.ports,
      ...(p.kind === 'no-ip' ? {} : p.kind === 'annotation' ? { annotationIp: ip } : { ip }),
      ...(p.kind === 'finished' ? { phase: 'Failed' } : {}),
    }));
  });
  policies.forEach((p, i) => {
    const object = policy(p.ns, `pol${i}`, p.spec);
    // Some are audit policies: they isolate nothing, and log what they would deny.
    if (p.audit) (object['metadata'] as Obj)['annotations'] = { 'palisade.io/audit': 'true' };
    objects.push(object);
  });
  clusterPolicies.forEach((spec, i) => objects.push(clusterPolicy(`cnp${i}`, spec)));
  return { objects, addresses };
});

/** Now and then a pod's packet to itself through a Service (hairpin): subject to ClusterNetworkPolicy. */
export const randomPacket = (addresses: readonly string[]) => fc.record({
  src: fc.constantFrom(...addresses),
  dst: fc.constantFrom(...addresses),
  protocol: fc.constantFrom('TCP' as const, 'UDP' as const, 'SCTP' as const, 'ICMP' as const),
  port: fc.constantFrom(...PORTS),
  hairpin: fc.constantFrom(false, false, false, false, false, false, false, true),
}).map(({ hairpin, ...p }) => (hairpin ? { ...p, dst: p.src, viaService: true } : p))
  .filter((p) => p.src !== p.dst || ('viaService' in p && p.src.startsWith('10.1.')))
  .map((p) => ({ ...p, port: p.protocol === 'ICMP' ? null : p.port }));

/** Shuffles in place with a small seeded generator, so a failing order can be replayed from its seed. */
export function seededShuffle<T>(items: T[], seed: number): T[] {
  let state = seed;
  for (let i = items.length - 1; i > 0; i--) {
    state = (state * 1103515245 + 12345) & 0x7fffffff;
    const j = state % (i + 1);
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}
