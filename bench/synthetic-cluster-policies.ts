import { createHash } from 'node:crypto';
import type { NamespaceInfo, Obj, Rng, SyntheticCluster } from './synthetic-cluster.js';
import { stream } from './synthetic-cluster.js';

/**
 * ClusterNetworkPolicies (policy.networking.k8s.io/v1alpha2) for the synthetic cluster, as raw objects
 * the API server would serve, shaped like what a platform team applies:
 *  - guardrails: the instance metadata service closed (with one team's exception at a lower priority
 *    number), kube-system reachable only for DNS, kubelet and NodePorts closed to pods, monitoring's
 *    scrapes accepted everywhere, dev kept out of prod, databases and caches open to backends only;
 *  - per team, an Admin tenant guard (Pass within the team, Deny from other teams, ties at one priority)
 *    and a Baseline isolation the team's own NetworkPolicies refine;
 *  - the rest drawn from templates: subjects by namespace or pod labels, peers of every kind
 *    (namespaces, pods, nodes, networks), port numbers, ranges and named ports, all three actions, and
 *    priorities from a short list so that some tie.
 *
 * Drawn from their own stream, so the pods, namespaces and NetworkPolicies are those of the cluster
 * without them. Each object carries what a served one carries (uid, resourceVersion, the client-side
 * apply annotation, managedFields, a status condition), since parsing pays for it.
 */

export const CLUSTER_POLICY_COUNT = 100;

const API_VERSION = 'policy.networking.k8s.io/v1alpha2';
const IMDS = '169.254.169.254/32';
const PRIVATE_RANGES = ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16'];

const everyNamespace: Obj = { namespaces: {} };
const namespaceNamed = (name: string): Obj => ({ namespaces: { matchLabels: { 'kubernetes.io/metadata.name': name } } });
const teamNamespaces = (team: string): Obj => ({ namespaces: { matchLabels: { team } } });
const prometheus: Obj = { pods: { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } }, podSelector: { matchLabels: { app: 'prometheus' } } } };
const dnsPods: Obj = { pods: { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'kube-system' } }, podSelector: { matchLabels: { 'k8s-app': 'kube-dns' } } } };
const tcp = (port: number): Obj => ({ tcp: { destinationPort: { number: port } } });
const udp = (port: number): Obj => ({ udp: { destinationPort: { number: port } } });
const tcpRange = (start: number, end: number): Obj => ({ tcp: { destinationPort: { range: { start, end } } } });
const udpRange = (start: number, end: number): Obj => ({ udp: { destinationPort: { range: { start, end } } } });
const named = (name: string): Obj => ({ destinationNamedPort: name });
const DNS: readonly Obj[] = [udp(53), tcp(53)];

interface Spec {
  readonly name: string;
  readonly tier: 'Admin' | 'Baseline';
  readonly priority: number;
  readonly subject: Obj;
  readonly ingress?: readonly Obj[];
  readonly egress?: readonly Obj[];
}

function guardrails(): Spec[] {
  return [
    {
      name: 'allow-instance-metadata-infra', tier: 'Admin', priority: 5, subject: teamNamespaces('infra'),
      egress: [{ name: 'imds-for-node-tools', action: 'Pass', to: [{ networks: [IMDS] }], protocols: [tcp(80)] }],
    },
    {
      name: 'block-instance-metadata', tier: 'Admin', priority: 10, subject: everyNamespace,
      egress: [{ name: 'deny-imds', action: 'Deny', to: [{ networks: [IMDS] }] }],
    },
    {
      name: 'kube-system-dns-only', tier: 'Admin', priority: 20, subject: namespaceNamed('kube-system'),
      ingress: [
        { name: 'own-namespace', action: 'Pass', from: [namespaceNamed('kube-system')] },
        { name: 'dns', action: 'Accept', from: [everyNamespace], protocols: DNS },
        { name: 'everything-else', action: 'Deny', from: [everyNamespace] },
      ],
    },
    {
      name: 'no-kubelet-or-nodeports-from-pods', tier: 'Admin', priority: 30, subject: everyNamespace,
      egress: [{ name: 'kubelet-and-nodeports', action: 'Deny', to: [{ nodes: {} }], protocols: [tcp(10250), tcpRange(30000, 32767), udpRange(30000, 32767)] }],
    },
    {
      name: 'allow-monitoring-scrapes', tier: 'Admin', priority: 40, subject: everyNamespace,
      ingress: [{ name: 'prometheus', action: 'Accept', from: [prometheus], protocols: [named('metrics'), tcp(9100), tcp(9153)] }],
    },
    {
      // The same priority as the scrapes: a tie, broken by action where both match.
      name: 'keep-dev-out-of-prod', tier: 'Admin', priority: 40, subject: { namespaces: { matchLabels: { env: 'prod' } } },
      ingress: [{ name: 'from-dev', action: 'Deny', from: [{ namespaces: { matchLabels: { env: 'dev' } } }] }],
    },
    {
      name: 'databases-from-backends-only', tier: 'Admin', priority: 50, subject: { pods: { namespaceSelector: {}, podSelector: { matchLabels: { tier: 'db' } } } },
      ingress: [
        { name: 'backends', action: 'Pass', from: [{ pods: { namespaceSelector: {}, podSelector: { matchLabels: { tier: 'backend' } } } }], protocols: [named('postgres'), tcp(5432)] },
        { name: 'everyone-else', action: 'Deny', from: [everyNamespace] },
      ],
    },
    {
      name: 'caches-from-backends-only', tier: 'Admin', priority: 50, subject: { pods: { namespaceSelector: {}, podSelector: { matchLabels: { tier: 'cache' } } } },
      ingress: [
        { name: 'backends', action: 'Pass', from: [{ pods: { namespaceSelector: {}, podSelector: { matchLabels: { tier: 'backend' } } } }], protocols: [named('redis'), named('amqp'), tcp(6379), tcp(5672)] },
        { name: 'everyone-else', action: 'Deny', from: [everyNamespace] },
      ],
    },
    {
      name: 'dev-egress-stays-in-cluster', tier: 'Admin', priority: 60, subject: { namespaces: { matchLabels: { env: 'dev' } } },
      egress: [
        { name: 'pods', action: 'Pass', to: [everyNamespace] },
        { name: 'private-ranges', action: 'Deny', to: [{ networks: PRIVATE_RANGES }] },
      ],
    },
    {
      name: 'mesh-sidecars-delegated', tier: 'Admin', priority: 70, subject: { namespaces: { matchExpressions: [{ key: 'istio-injection', operator: 'Exists' }] } },
      ingress: [{ name: 'envoy', action: 'Pass', from: [{ namespaces: { matchExpressions: [{ key: 'istio-injection', operator: 'Exists' }] } }], protocols: [tcpRange(15000, 15021), tcp(15090)] }],
    },
    {
      name: 'no-smtp-out', tier: 'Baseline', priority: 900, subject: everyNamespace,
      egress: [{ name: 'smtp', action: 'Deny', to: [{ networks: ['0.0.0.0/0'] }], protocols: [tcp(25), tcp(465), tcp(587)] }],
    },
    {
      name: 'no-sctp-between-namespaces', tier: 'Baseline', priority: 900, subject: everyNamespace,
      ingress: [{ name: 'sctp', action: 'Deny', from: [everyNamespace], protocols: [{ sctp: { destinationPort: { range: { start: 1, end: 65535 } } } }] }],
    },
  ];
}

function tenantPolicies(team: string): Spec[] {
  const others = { namespaces: { matchExpressions: [{ key: 'team', operator: 'NotIn', values: [team, 'platform', 'observability'] }] } };
  return [
    {
      name: `tenant-${team}-guard`, tier: 'Admin', priority: 100, subject: teamNamespaces(team),
      ingress: [
        { name: 'same-tenant', action: 'Pass', from: [teamNamespaces(team)] },
        { name: 'other-tenants', action: 'Deny', from: [others] },
      ],
    },
    {
      name: `tenant-${team}-baseline`, tier: 'Baseline', priority: 500, subject: teamNamespaces(team),
      ingress: [
        { name: 'same-tenant', action: 'Accept', from: [teamNamespaces(team)] },
        { name: 'platform', action: 'Accept', from: [{ namespaces: { matchExpressions: [{ key: 'team', operator: 'In', values: ['platform', 'observability'] }] } }] },
        { name: 'everyone-else', action: 'Deny', from: [everyNamespace] },
      ],
      egress: [
        { name: 'dns', action: 'Accept', to: [dnsPods], protocols: DNS },
        { name: 'other-tenants', action: 'Deny', to: [others] },
      ],
    },
  ];
}

const PRIORITIES = [200, 200, 250, 300, 300, 400, 600, 700];

type Template = (rng: Rng, cluster: SyntheticCluster, index: number) => Spec;

function teamNamespaceOf(rng: Rng, cluster: SyntheticCluster): NamespaceInfo {
  const candidates = [...cluster.namespaceInfo.values()].filter((n) => n.team !== 'platform' && n.team !== 'observability');
  return rng.pick(candidates);
}

const TEMPLATES: readonly Template[] = [
  // One app locked to its callers, by pod labels in its namespace.
  (rng, cluster, i) => {
    const ns = teamNamespaceOf(rng, cluster);
    const app = rng.pick(ns.apps);
    const port = app.ports[0];
    return {
      name: `lock-${ns.name}-${app.name}-${i}`, tier: 'Admin', priority: rng.pick(PRIORITIES),
      subject: { pods: { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': ns.name } }, podSelector: { matchLabels: { app: app.name } } } },
      ingress: [
        { name: 'frontends', action: 'Accept', from: [{ pods: { namespaceSelector: { matchLabels: { team: ns.team } }, podSelector: { matchLabels: { tier: 'frontend' } } } }], protocols: port === undefined ? [tcp(8080)] : [named(port.name), tcp(port.port)] },
        { name: 'rest', action: rng.pick(['Deny', 'Pass']), from: [everyNamespace] },
      ],
    };
  },
  // A team's egress to the internet on web ports only, with a partner network carved out.
  (rng, _cluster, i) => {
    const team = rng.pick(['payments', 'checkout', 'billing', 'ledger', 'risk', 'pricing']);
    return {
      name: `egress-allowlist-${team}-${i}`, tier: 'Admin', priority: rng.pick(PRIORITIES), subject: teamNamespaces(team),
      egress: [
        { name: 'partner-api', action: 'Accept', to: [{ networks: [`203.0.${113 + rng.int(3)}.0/24`] }], protocols: [tcp(443), tcpRange(8443, 8445)] },
        { name: 'pods-and-dns', action: 'Pass', to: [everyNamespace] },
        { name: 'web', action: 'Pass', to: [{ networks: ['0.0.0.0/0'] }], protocols: [tcp(80), tcp(443)] },
        { name: 'rest', action: 'Deny', to: [{ networks: ['0.0.0.0/0'] }] },
      ],
    };
  },
  // Nodes of one zone closed to an environment on a few ports.
  (rng, _cluster, i) => {
    const env = rng.pick(['dev', 'staging']);
    return {
      name: `nodes-zone-${env}-${i}`, tier: 'Admin', priority: rng.pick(PRIORITIES), subject: { namespaces: { matchLabels: { env } } },
      egress: [{ name: 'zone-nodes', action: 'Deny', to: [{ nodes: { matchLabels: { 'topology.kubernetes.io/zone': `zone-${rng.int(3)}` } } }], protocols: [tcp(22), tcpRange(2379, 2380), udp(8472)] }],
    };
  },
  // A Baseline opening for one team's frontends from the load balancer subnets.
  (rng, _cluster, i) => {
    const team = rng.pick(['search', 'catalog', 'media', 'mobile', 'edge', 'growth']);
    return {
      name: `baseline-lb-${team}-${i}`, tier: 'Baseline', priority: rng.pick([100, 100, 150]),
      subject: { pods: { namespaceSelector: { matchLabels: { team } }, podSelector: { matchExpressions: [{ key: 'tier', operator: 'In', values: ['frontend'] }] } } },
      ingress: [{ name: 'frontends-from-apps', action: 'Accept', from: [{ pods: { namespaceSelector: {}, podSelector: { matchLabels: { tier: 'frontend' } } } }], protocols: [named('http'), named('https'), tcp(8080)] }],
    };
  },
  // Batch ports between backends of two teams, on UDP and TCP ranges.
  (rng, _cluster, i) => {
    const [a, b] = rng.sample(['data', 'ml', 'search', 'ads', 'risk', 'messaging'], 2) as [string, string];
    return {
      name: `batch-${a}-from-${b}-${i}`, tier: rng.chance(0.5) ? 'Admin' : 'Baseline', priority: rng.pick(PRIORITIES),
      subject: { pods: { namespaceSelector: { matchLabels: { team: a } }, podSelector: { matchLabels: { tier: 'backend' } } } },
      ingress: [
        { name: 'workers', action: 'Accept', from: [{ pods: { namespaceSelector: { matchLabels: { team: b } }, podSelector: { matchExpressions: [{ key: 'app', operator: 'In', values: ['worker', 'api'] }] } } }], protocols: [tcpRange(7000, 7100), udpRange(6000, 6100), named('grpc')] },
        { name: 'others', action: 'Deny', from: [teamNamespaces(b)] },
      ],
    };
  },
];

function specs(cluster: SyntheticCluster, count: number): Spec[] {
  const teams = [...new Set([...cluster.namespaceInfo.values()].map((n) => n.team))].filter((t) => t !== 'platform' && t !== 'observability').sort();
  const out: Spec[] = [...guardrails()];
  for (const team of teams) {
    if (out.length + 2 > count) break;
    out.push(...tenantPolicies(team));
  }
  const rng = stream(cluster.options.seed, 'cluster-policies');
  for (let i = 0; out.length < count; i++) out.push(rng.pick(TEMPLATES)(rng, cluster, i));
  return out.slice(0, count);
}

function uid(seed: string): string {
  const h = createHash('sha256').update(seed).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** An object as served after `kubectl apply` and one status write: the annotation alone repeats the spec. */
function served(spec: Spec, index: number): Obj {
  const body = { tier: spec.tier, priority: spec.priority, subject: spec.subject, ...(spec.ingress === undefined ? {} : { ingress: spec.ingress }), ...(spec.egress === undefined ? {} : { egress: spec.egress }) };
  const applied = { apiVersion: API_VERSION, kind: 'ClusterNetworkPolicy', metadata: { annotations: {}, name: spec.name }, spec: body };
  const created = new Date(Date.UTC(2026, 9, 1) + index * 61_000).toISOString().replace(/\.\d{3}Z$/, 'Z');
  const specFields = Object.fromEntries(Object.keys(body).map((key) => [`f:${key}`, {}]));
  return {
    apiVersion: API_VERSION,
    kind: 'ClusterNetworkPolicy',
    metadata: {
      name: spec.name,
      uid: uid(spec.name),
      resourceVersion: String(4_000_000 + index * 17),
      generation: 1 + (index % 3),
      creationTimestamp: created,
      annotations: { 'kubectl.kubernetes.io/last-applied-configuration': `${JSON.stringify(applied)}\n` },
      managedFields: [
        { manager: 'kubectl-client-side-apply', operation: 'Update', apiVersion: API_VERSION, time: created, fieldsType: 'FieldsV1', fieldsV1: { 'f:metadata': { 'f:annotations': { '.': {}, 'f:kubectl.kubernetes.io/last-applied-configuration': {} } }, 'f:spec': { '.': {}, ...specFields } } },
        { manager: 'palisade', operation: 'Update', apiVersion: API_VERSION, time: created, fieldsType: 'FieldsV1', fieldsV1: { 'f:status': { '.': {}, 'f:conditions': { '.': {}, 'k:{"type":"Accepted"}': { '.': {}, 'f:lastTransitionTime': {}, 'f:message': {}, 'f:observedGeneration': {}, 'f:reason': {}, 'f:status': {}, 'f:type': {} } } } }, subresource: 'status' },
      ],
    },
    spec: body,
    status: { conditions: [{ type: 'Accepted', status: 'True', reason: 'Accepted', message: 'enforced as written', observedGeneration: 1 + (index % 3), lastTransitionTime: created }] },
  };
}

/** `count` ClusterNetworkPolicies for the cluster, guardrails first. */
export function syntheticClusterPolicies(cluster: SyntheticCluster, count = CLUSTER_POLICY_COUNT): Obj[] {
  return specs(cluster, count).map(served);
}

/** A copy of a ClusterNetworkPolicy object with one more TCP port in its first rule (or its first rule given protocols). */
export function clusterPolicyWithExtraPort(object: Obj, port: number): Obj {
  const copy = structuredClone(object);
  const rule = firstRule(copy);
  const protocols = Array.isArray(rule['protocols']) ? rule['protocols'] as Obj[] : [];
  if (protocols.length >= 25) protocols.pop();
  protocols.push(tcp(port));
  rule['protocols'] = protocols;
  return copy;
}

/** A copy with one more pod peer (a label no other policy uses) in its first rule. */
export function clusterPolicyWithNewPeer(object: Obj, variant: number): Obj {
  const copy = structuredClone(object);
  const rule = firstRule(copy);
  const key = Array.isArray(rule['from']) ? 'from' : 'to';
  const peers = rule[key] as Obj[];
  if (peers.length >= 25) peers.pop();
  peers.push({ pods: { namespaceSelector: { matchLabels: { env: 'prod' } }, podSelector: { matchLabels: { canary: `c${variant}` } } } });
  return copy;
}

/** A copy moved to another priority, which reorders its tier. */
export function clusterPolicyWithPriority(object: Obj, priority: number): Obj {
  const copy = structuredClone(object);
  (copy['spec'] as Obj)['priority'] = priority;
  return copy;
}

function firstRule(object: Obj): Obj {
  const spec = object['spec'] as Obj;
  const rules = (spec['ingress'] ?? spec['egress']) as Obj[] | undefined;
  const rule = rules?.[0];
  if (rule === undefined) throw new Error('a ClusterNetworkPolicy without rules');
  return rule;
}
