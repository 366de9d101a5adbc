import type { Dataplane, EndpointInfo } from '../rules/dataplane.js';
import { POLICY_TABLE } from '../rules/dataplane.js';
import { Evaluator } from '../rules/evaluator.js';
import { renderIpsets, renderIptables } from '../rules/render.js';
import type { Snapshot } from '../rules/snapshot.js';
import { IpsetModel, IptablesModel } from '../test/support/tracer.js';
import type { Packet } from '../test/support/tracer.js';
import { realPodObject } from './real-pod.js';

/**
 * A deterministic, realistic cluster as raw Kubernetes objects (as the API server would send them), so
 * that benchmarks and scale tests go through parsing like production does.
 *
 * Everything comes from a seeded PRNG, in independent streams: namespaces, local pods, remote pods and
 * policies each draw from their own stream. Two consequences the scale tests rely on:
 *  - the remote pods are generated one after the other from their own stream, so a cluster with more
 *    remote pods is the same cluster plus extra pods (see `withDoubledRemotePods`);
 *  - policies depend only on the namespaces (their teams and apps), never on the pods.
 *
 * Shape: namespace 0 is kube-system (CoreDNS), namespace 1 is monitoring (Prometheus); the rest belong to
 * teams and run a few apps each (frontends with http=8080, backends with http=9090, databases, caches,
 * nearly all with metrics=9100). Pods on node-0 (the local node) number exactly `localPods`; the others
 * are spread over node-1..node-(nodes-1). Each node has its own /16 of 10.0.0.0/8 for pod addresses
 * (10.<node+1>.x.y), and node addresses are 10.0.0.<10+n>, so every address is unique.
 */

export type Obj = Record<string, unknown>;

export interface SyntheticOptions {
  /** Total pods, local ones included. */
  readonly pods: number;
  readonly namespaces: number;
  readonly policies: number;
  /** Pods on the local node (node-0); all of them running with an address. */
  readonly localPods: number;
  readonly nodes: number;
  readonly seed: number;
}

export const BENCH_SCALE: SyntheticOptions = { pods: 10_000, namespaces: 1_000, policies: 2_000, localPods: 250, nodes: 40, seed: 1 };

export interface NamedPortSpec {
  readonly name: string;
  readonly port: number;
  readonly protocol: 'TCP' | 'UDP';
}

export interface AppSpec {
  readonly name: string;
  readonly tier: 'frontend' | 'backend' | 'db' | 'cache' | 'system';
  /** The app's identifying labels (app/tier, or k8s-app for CoreDNS). */
  readonly labels: Readonly<Record<string, string>>;
  readonly ports: readonly NamedPortSpec[];
}

export interface NamespaceInfo {
  readonly name: string;
  readonly team: string;
  readonly env: string;
  readonly apps: readonly AppSpec[];
}

export interface PodInfo {
  readonly namespace: string;
  readonly name: string;
  readonly node: string;
  readonly ip: string;
  readonly local: boolean;
  /** Running with an address and its own network namespace: a peer or endpoint for policy. */
  readonly counts: boolean;
  readonly app: AppSpec;
  readonly labels: Readonly<Record<string, string>>;
}

export interface SyntheticCluster {
  readonly options: SyntheticOptions;
  /** Every object: nodes, namespaces, pods, policies. */
  readonly objects: Obj[];
  readonly localNode: string;
  readonly localNodeAddress: string;
  readonly nodes: readonly Obj[];
  readonly namespaces: readonly Obj[];
  readonly pods: readonly Obj[];
  readonly policies: readonly Obj[];
  /** Aligned with `pods`. */
  readonly podInfo: readonly PodInfo[];
  readonly namespaceInfo: ReadonlyMap<string, NamespaceInfo>;
}

// ---------------------------------------------------------------------------------------------------------
// PRNG
// ---------------------------------------------------------------------------------------------------------

/** mulberry32: small, fast and good enough for test data. */
export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from an empty list');
    return items[this.int(items.length)]!;
  }

  /** `n` distinct items, in a random order. */
  sample<T>(items: readonly T[], n: number): T[] {
    const copy = [...items];
    for (let i = 0; i < Math.min(n, copy.length); i++) {
      const j = i + this.int(copy.length - i);
      [copy[i], copy[j]] = [copy[j]!, copy[i]!];
    }
    return copy.slice(0, n);
  }

  /** Lower-case alphanumerics, like the random suffixes of ReplicaSets and pods. */
  suffix(length: number): string {
    const alphabet = 'bcdfghjklmnpqrstvwxz2456789';
    let out = '';
    for (let i = 0; i < length; i++) out += alphabet[this.int(alphabet.length)];
    return out;
  }
}

/** An independent stream per purpose, so adding draws to one never shifts another. */
export function stream(seed: number, purpose: string): Rng {
  let h = 0x811c9dc5 ^ (seed >>> 0);
  for (let i = 0; i < purpose.length; i++) h = Math.imul(h ^ purpose.charCodeAt(i), 0x01000193) >>> 0;
  return new Rng(Math.imul(h ^ (h >>> 16), 0x45d9f3b) >>> 0);
}

/** Draws from cumulative weights in O(log n). */
class WeightedPicker<T> {
  private readonly cumulative: number[] = [];
  private readonly total: number;

  constructor(private readonly items: readonly T[], weights: readonly number[]) {
    let sum = 0;
    for (const w of weights) this.cumulative.push((sum += w));
    this.total = sum;
  }

  pick(rng: Rng): T {
    const x = rng.next() * this.total;
    let lo = 0;
    let hi = this.cumulative.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.cumulative[mid]! > x) hi = mid;
      else lo = mid + 1;
    }
    return this.items[lo]!;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Vocabulary
// ---------------------------------------------------------------------------------------------------------

const TEAMS = ['payments', 'checkout', 'search', 'identity', 'catalog', 'shipping', 'billing', 'growth', 'ads', 'media', 'mobile', 'data', 'ml', 'risk', 'support', 'infra', 'edge', 'messaging', 'ledger', 'pricing'];
const ENVS = ['prod', 'prod', 'staging', 'dev'];
const VERSIONS = ['v1', 'v2', 'v2', 'v3'];

const HTTP_FRONTEND: NamedPortSpec = { name: 'http', port: 8080, protocol: 'TCP' };
const HTTP_BACKEND: NamedPortSpec = { name: 'http', port: 9090, protocol: 'TCP' };
const METRICS: NamedPortSpec = { name: 'metrics', port: 9100, protocol: 'TCP' };

const APP_KINDS: readonly { readonly name: string; readonly tier: AppSpec['tier']; readonly ports: readonly NamedPortSpec[] }[] = [
  { name: 'web', tier: 'frontend', ports: [HTTP_FRONTEND] },
  { name: 'frontend', tier: 'frontend', ports: [HTTP_FRONTEND] },
  { name: 'gateway', tier: 'frontend', ports: [HTTP_FRONTEND, { name: 'https', port: 8443, protocol: 'TCP' }] },
  { name: 'api', tier: 'backend', ports: [HTTP_BACKEND, { name: 'grpc', port: 9000, protocol: 'TCP' }] },
  { name: 'auth', tier: 'backend', ports: [HTTP_BACKEND] },
  { name: 'search', tier: 'backend', ports: [HTTP_BACKEND] },
  { name: 'worker', tier: 'backend', ports: [HTTP_BACKEND] },
  { name: 'db', tier: 'db', ports: [{ name: 'postgres', port: 5432, protocol: 'TCP' }] },
  { name: 'cache', tier: 'cache', ports: [{ name: 'redis', port: 6379, protocol: 'TCP' }] },
  { name: 'queue', tier: 'cache', ports: [{ name: 'amqp', port: 5672, protocol: 'TCP' }] },
];

const KUBE_DNS: AppSpec = {
  name: 'coredns',
  tier: 'system',
  labels: { 'k8s-app': 'kube-dns' },
  ports: [{ name: 'dns', port: 53, protocol: 'UDP' }, { name: 'dns-tcp', port: 53, protocol: 'TCP' }, { name: 'metrics', port: 9153, protocol: 'TCP' }],
};
const PROMETHEUS: AppSpec = {
  name: 'prometheus',
  tier: 'system',
  labels: { app: 'prometheus', tier: 'backend' },
  ports: [{ name: 'web', port: 9090, protocol: 'TCP' }],
};

function appOf(kind: (typeof APP_KINDS)[number], withMetrics: boolean): AppSpec {
  return { name: kind.name, tier: kind.tier, labels: { app: kind.name, tier: kind.tier }, ports: withMetrics ? [...kind.ports, METRICS] : kind.ports };
}

function ipOf(node: number, index: number): string {
  const k = index + 2;
  if (node + 1 > 254 || k > 65_000) throw new Error('synthetic cluster too large for its address plan');
  return `10.${node + 1}.${k >> 8}.${k & 255}`;
}

function nodeAddress(node: number): string {
  return `10.0.0.${10 + node}`;
}

// ---------------------------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------------------------

export function syntheticCluster(options: SyntheticOptions): SyntheticCluster {
  const { pods: podCount, namespaces: nsCount, policies: policyCount, localPods, nodes: nodeCount, seed } = options;
  if (nsCount < 3) throw new Error('need at least 3 namespaces (kube-system, monitoring and one team namespace)');
  if (nodeCount < 2) throw new Error('need at least 2 nodes');
  if (localPods > podCount - 4) throw new Error('local pods must leave room for the 4 system pods');
  if (policyCount < 2) throw new Error('need at least 2 policies');

  // Nodes.
  const nodes: Obj[] = [];
  for (let n = 0; n < nodeCount; n++) {
    nodes.push({
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: `node-${n}`, labels: { 'kubernetes.io/hostname': `node-${n}`, 'topology.kubernetes.io/zone': `zone-${n % 3}` } },
      status: { addresses: [{ type: 'InternalIP', address: nodeAddress(n) }, { type: 'Hostname', address: `node-${n}` }] },
    });
  }

  // Namespaces, each with a team, an environment and a few apps.
  const nsRng = stream(seed, 'namespaces');
  const infos: NamespaceInfo[] = [
    { name: 'kube-system', team: 'platform', env: 'prod', apps: [KUBE_DNS] },
    { name: 'monitoring', team: 'observability', env: 'prod', apps: [PROMETHEUS] },
  ];
  for (let i = 2; i < nsCount; i++) {
    const team = nsRng.pick(TEAMS);
    const env = nsRng.pick(ENVS);
    const kinds = nsRng.sample(APP_KINDS, 1 + nsRng.int(4));
    infos.push({ name: `${team}-${env}-${String(i).padStart(4, '0')}`, team, env, apps: kinds.map((k) => appOf(k, nsRng.chance(0.9))) });
  }
  const namespaceInfo = new Map(infos.map((info) => [info.name, info]));
  const namespaces: Obj[] = infos.map((info, i) => ({
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: {
      name: info.name,
      labels: {
        team: info.team,
        env: info.env,
        ...(i >= 2 && i % 3 === 0 ? { 'istio-injection': 'enabled' } : {}),
      },
    },
  }));
  // Namespace sizes are skewed, as they are in real clusters: a few big ones, a long tail of small ones.
  const sizeWeights = infos.map((_, i) => (i < 2 ? 0 : Math.exp(nsRng.next() * 3)));
  const namespacePicker = new WeightedPicker(infos, sizeWeights);

  // Pods.
  const pods: Obj[] = [];
  const podInfo: PodInfo[] = [];
  const perNode = new Array<number>(nodeCount).fill(0);
  const usedNames = new Set<string>();
  const addPod = (rng: Rng, ns: NamespaceInfo, app: AppSpec, node: number, phase: 'Running' | 'Pending' | 'Succeeded', hostNetwork = false): void => {
    // Replicas of one Deployment version share their ReplicaSet's pod-template-hash, as on a real cluster.
    const version = rng.pick(VERSIONS);
    const hash = stream(0, `${ns.name}/${app.name}/${version}`).suffix(9);
    let name = `${app.name}-${hash}-${rng.suffix(5)}`;
    while (usedNames.has(`${ns.name}/${name}`)) name = `${app.name}-${hash}-${rng.suffix(5)}`;
    usedNames.add(`${ns.name}/${name}`);
    const ip = hostNetwork ? nodeAddress(node) : ipOf(node, perNode[node]!++);
    const labels = { ...app.labels, version, 'pod-template-hash': hash };
    const hasIp = phase !== 'Pending';
    pods.push(podObject(ns.name, name, labels, node, app.ports, hasIp ? ip : null, phase, hostNetwork, pods.length * 7));
    podInfo.push({ namespace: ns.name, name, node: `node-${node}`, ip, local: node === 0, counts: hasIp && phase === 'Running' && !hostNetwork, app, labels });
  };
  // Local pods: all running, in namespaces drawn like the others.
  const localRng = stream(seed, 'local-pods');
  for (let i = 0; i < localPods; i++) {
    const ns = namespacePicker.pick(localRng);
    addPod(localRng, ns, localRng.pick(ns.apps), 0, 'Running');
  }
  // Remote pods: CoreDNS and Prometheus first, then the cluster; a few finished jobs, pending pods and
  // host-network daemons, which take no part in policy but are parsed like the rest.
  const remoteRng = stream(seed, 'remote-pods');
  const system = [infos[0]!, infos[0]!, infos[1]!, infos[1]!];
  const remoteNode = (i: number): number => 1 + (i % (nodeCount - 1));
  for (let i = 0; i < podCount - localPods; i++) {
    const sys = system[i];
    if (sys !== undefined) {
      addPod(remoteRng, sys, sys.apps[0]!, remoteNode(i), 'Running');
      continue;
    }
    const ns = namespacePicker.pick(remoteRng);
    const roll = remoteRng.next();
    const phase = roll < 0.01 ? 'Succeeded' : roll < 0.015 ? 'Pending' : 'Running';
    addPod(remoteRng, ns, remoteRng.pick(ns.apps), remoteNode(i), phase, phase === 'Running' && roll > 0.998);
  }

  // Policies: about policies/namespaces per namespace, more in the bigger namespaces.
  const policyRng = stream(seed, 'policies');
  const counts = new Array<number>(nsCount).fill(0);
  counts[0] = 2; // kube-system: deny, then allow DNS from everywhere
  counts[1] = Math.min(1, policyCount - 2); // monitoring: allow the UI from the platform team
  const policyPicker = new WeightedPicker(infos.map((_, i) => i), sizeWeights.map((w, i) => (i < 2 ? 0 : w + 2)));
  for (let placed = counts[0] + counts[1]; placed < policyCount; placed++) counts[policyPicker.pick(policyRng)]!++;
  const policies: Obj[] = [];
  infos.forEach((info, i) => {
    const specs = i === 0 ? kubeSystemPolicies() : i === 1 ? monitoringPolicies() : teamPolicies(policyRng, info, counts[i]!);
    for (const [name, spec] of specs.slice(0, counts[i]!)) policies.push(policyObject(info.name, name, spec));
  });

  return {
    options,
    objects: [...nodes, ...namespaces, ...pods, ...policies],
    localNode: 'node-0',
    localNodeAddress: nodeAddress(0),
    nodes,
    namespaces,
    pods,
    policies,
    podInfo,
    namespaceInfo,
  };
}

/** The same cluster with twice the remote pods: same namespaces, local pods and policies. */
export function withDoubledRemotePods(options: SyntheticOptions): SyntheticOptions {
  return { ...options, pods: options.localPods + 2 * (options.pods - options.localPods) };
}

function podObject(namespace: string, name: string, labels: Record<string, string>, node: number, ports: readonly NamedPortSpec[], ip: string | null, phase: 'Running' | 'Pending' | 'Succeeded', hostNetwork: boolean, createdAt: number): Obj {
  return realPodObject({ namespace, name, labels, nodeName: `node-${node}`, nodeAddress: nodeAddress(node), ports, ip, phase, hostNetwork, createdAt });
}

function policyObject(namespace: string, name: string, spec: Obj): Obj {
  return { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace }, spec };
}

type NamedSpec = [name: string, spec: Obj];

const DNS_PEER = { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'kube-system' } }, podSelector: { matchLabels: { 'k8s-app': 'kube-dns' } } };
const DNS_PORTS = [{ protocol: 'UDP', port: 53 }, { protocol: 'TCP', port: 53 }];

function kubeSystemPolicies(): NamedSpec[] {
  return [
    ['default-deny-ingress', { podSelector: {}, policyTypes: ['Ingress'] }],
    ['allow-dns', { podSelector: { matchLabels: { 'k8s-app': 'kube-dns' } }, ingress: [{ from: [{ namespaceSelector: {} }], ports: [{ protocol: 'UDP', port: 'dns' }, { protocol: 'TCP', port: 'dns-tcp' }] }] }],
  ];
}

function monitoringPolicies(): NamedSpec[] {
  return [['allow-ui', { podSelector: { matchLabels: { app: 'prometheus' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'platform' } } }], ports: [{ port: 'web' }] }] }]];
}

/**
 * A team namespace's policies: usually a default deny first (sometimes of egress too, then with its DNS
 * allowance), then allowances drawn from the templates below.
 */
function teamPolicies(rng: Rng, info: NamespaceInfo, count: number): NamedSpec[] {
  const out: NamedSpec[] = [];
  if (count === 0) return out;
  const denyEgress = rng.chance(0.3);
  if (rng.chance(0.85)) {
    out.push(denyEgress ? ['default-deny-all', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] }] : ['default-deny-ingress', { podSelector: {}, policyTypes: ['Ingress'] }]);
    if (denyEgress) out.push(['allow-dns', { podSelector: {}, policyTypes: ['Egress'], egress: [{ to: [DNS_PEER], ports: DNS_PORTS }] }]);
  }
  const used = new Set(out.map(([name]) => name));
  for (let attempt = 0; out.length < count && attempt < 100; attempt++) {
    const [base, spec] = rng.pick(TEMPLATES)(rng, info);
    let name = base;
    for (let n = 2; used.has(name); n++) name = `${base}-${n}`;
    used.add(name);
    out.push([name, spec]);
  }
  return out;
}

type Template = (rng: Rng, info: NamespaceInfo) => NamedSpec;

const appSelector = (app: AppSpec): Obj => ({ matchLabels: { ...app.labels } });
const httpPort = (app: AppSpec): Obj => {
  const http = app.ports.find((p) => p.name === 'http');
  return http !== undefined ? { port: 'http' } : { protocol: app.ports[0]?.protocol ?? 'TCP', port: app.ports[0]?.port ?? 8080 };
};

const TEMPLATES: readonly Template[] = [
  // Same app talks to itself, on its named http port.
  (rng, info) => {
    const app = rng.pick(info.apps);
    return [`allow-${app.name}-peers`, { podSelector: appSelector(app), ingress: [{ from: [{ podSelector: appSelector(app) }], ports: [httpPort(app)] }] }];
  },
  // Another team's namespaces, sometimes only their frontends (namespaceSelector AND podSelector).
  (rng, info) => {
    const app = rng.pick(info.apps);
    const team = rng.pick(TEAMS);
    const peer = rng.chance(0.5) ? { namespaceSelector: { matchLabels: { team } }, podSelector: { matchLabels: { tier: 'frontend' } } } : { namespaceSelector: { matchLabels: { team } } };
    return [`allow-${team}-to-${app.name}`, { podSelector: appSelector(app), ingress: [{ from: [peer], ports: [{ protocol: 'TCP', port: rng.pick([8080, 9090]) }] }] }];
  },
  // Frontends to backends, by tier.
  () => ['allow-frontend-to-backend', {
    podSelector: { matchLabels: { tier: 'backend' } },
    ingress: [{ from: [{ podSelector: { matchLabels: { tier: 'frontend' } } }], ports: [{ port: 'http' }, { protocol: 'TCP', port: 9000 }] }],
  }],
  // Backends to databases and caches here and in the team's other namespaces.
  (_rng, info) => ['allow-egress-datastores', {
    podSelector: { matchLabels: { tier: 'backend' } },
    policyTypes: ['Egress'],
    egress: [
      { to: [{ podSelector: { matchExpressions: [{ key: 'tier', operator: 'In', values: ['db', 'cache'] }] } }, { namespaceSelector: { matchLabels: { team: info.team } }, podSelector: { matchLabels: { tier: 'db' } } }], ports: [{ port: 'postgres' }, { protocol: 'TCP', port: 5432 }, { protocol: 'TCP', port: 6379 }] },
      { to: [DNS_PEER], ports: DNS_PORTS },
    ],
  }],
  // Frontends to the internet, but not to private ranges.
  () => ['allow-egress-internet', {
    podSelector: { matchLabels: { tier: 'frontend' } },
    policyTypes: ['Egress'],
    egress: [{ to: [{ ipBlock: { cidr: '0.0.0.0/0', except: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16'] } }], ports: [{ protocol: 'TCP', port: 443 }, { protocol: 'TCP', port: 80 }] }],
  }],
  // Load balancer subnets, minus one /16.
  (rng, info) => {
    const app = rng.pick(info.apps);
    return [`allow-lb-to-${app.name}`, {
      podSelector: appSelector(app),
      ingress: [{ from: [{ ipBlock: { cidr: '172.16.0.0/12', except: [`172.${16 + rng.int(16)}.0.0/16`] } }, { ipBlock: { cidr: '192.168.0.0/16' } }], ports: [httpPort(app)] }],
    }];
  },
  // Prometheus scrapes every pod's metrics port.
  () => ['allow-metrics-scrape', {
    podSelector: {},
    ingress: [{ from: [{ namespaceSelector: { matchExpressions: [{ key: 'team', operator: 'In', values: ['observability', 'platform'] }] }, podSelector: { matchLabels: { app: 'prometheus' } } }], ports: [{ port: 'metrics' }] }],
  }],
  // Port ranges.
  (rng, info) => {
    const app = rng.pick(info.apps);
    return [`allow-ranges-${app.name}`, {
      podSelector: appSelector(app),
      ingress: [{ from: [{ podSelector: { matchExpressions: [{ key: 'tier', operator: 'In', values: ['frontend', 'backend'] }] } }], ports: [{ protocol: 'TCP', port: 30000, endPort: 32767 }, { protocol: 'TCP', port: 5000, endPort: 5010 }, { protocol: 'UDP', port: 6000, endPort: 6100 }] }],
    }];
  },
  // Production and staging clients of every non-v1 app, on several numeric ports.
  () => ['allow-prod-clients', {
    podSelector: { matchExpressions: [{ key: 'version', operator: 'NotIn', values: ['v1'] }, { key: 'app', operator: 'Exists' }] },
    ingress: [{ from: [{ namespaceSelector: { matchExpressions: [{ key: 'env', operator: 'In', values: ['prod', 'staging'] }] } }], ports: [{ protocol: 'TCP', port: 80 }, { protocol: 'TCP', port: 443 }, { protocol: 'TCP', port: 8080 }, { protocol: 'TCP', port: 8443 }] }],
  }],
  // Mesh-enabled namespaces talk to each other.
  (rng, info) => {
    const app = rng.pick(info.apps);
    return [`allow-mesh-${app.name}`, {
      podSelector: appSelector(app),
      policyTypes: ['Ingress', 'Egress'],
      ingress: [{ from: [{ namespaceSelector: { matchExpressions: [{ key: 'istio-injection', operator: 'Exists' }] }, podSelector: { matchExpressions: [{ key: 'app', operator: 'Exists' }] } }], ports: [httpPort(app), { protocol: 'TCP', port: 15090 }] }],
      egress: [{ to: [{ namespaceSelector: { matchExpressions: [{ key: 'istio-injection', operator: 'Exists' }] } }], ports: [{ protocol: 'TCP', port: 8080 }, { protocol: 'TCP', port: 9090 }] }, { to: [DNS_PEER], ports: DNS_PORTS }],
    }];
  },
  // Everything within the namespace.
  () => ['allow-same-namespace', { podSelector: {}, ingress: [{ from: [{ podSelector: {} }] }] }],
];

// ---------------------------------------------------------------------------------------------------------
// Changes, as raw objects
// ---------------------------------------------------------------------------------------------------------

function clone<T>(value: T): T {
  return structuredClone(value);
}

function labelsOf(object: Obj): Record<string, string> {
  return ((object['metadata'] as Obj)['labels'] ?? {}) as Record<string, string>;
}

/** A copy of a pod object with labels changed (a null value removes the label). */
export function podWithLabels(pod: Obj, changes: Readonly<Record<string, string | null>>): Obj {
  const copy = clone(pod);
  const labels = { ...labelsOf(copy) };
  for (const [key, value] of Object.entries(changes)) {
    if (value === null) delete labels[key];
    else labels[key] = value;
  }
  (copy['metadata'] as Obj)['labels'] = labels;
  return copy;
}

/**
 * The `variant`-th plausible relabelling of pod `index`: it becomes another app of its namespace (as a
 * Deployment's pods would after a selector change), or moves to another version. Either way it leaves
 * some selector sets and enters others.
 */
export function podLabelChange(cluster: SyntheticCluster, index: number, variant: number): Obj {
  const pod = cluster.pods[index];
  const info = cluster.podInfo[index];
  if (pod === undefined || info === undefined) throw new Error(`no pod ${index}`);
  const apps = cluster.namespaceInfo.get(info.namespace)?.apps ?? [];
  const others = apps.filter((a) => a.name !== info.app.name);
  if (others.length > 0 && variant % 3 !== 2) {
    const next = others[variant % others.length]!;
    const removed = Object.fromEntries(Object.keys(info.app.labels).map((k) => [k, null]));
    return podWithLabels(pod, { ...removed, ...next.labels });
  }
  const version = info.labels['version'] === 'v1' ? 'v3' : 'v1';
  return podWithLabels(pod, { version });
}

/** A copy of a policy object with one more TCP port in its first rule that lists ports (or one more rule). */
export function policyWithExtraPort(policy: Obj, port: number): Obj {
  const copy = clone(policy);
  const spec = copy['spec'] as Obj;
  const types = (spec['policyTypes'] as string[] | undefined) ?? [];
  const direction = spec['ingress'] !== undefined || !types.includes('Egress') ? 'ingress' : 'egress';
  const rules = (spec[direction] as Obj[] | undefined) ?? [];
  const withPorts = rules.find((r) => Array.isArray(r['ports']));
  if (withPorts !== undefined) (withPorts['ports'] as Obj[]).push({ protocol: 'TCP', port });
  else rules.push({ ports: [{ protocol: 'TCP', port }] });
  spec[direction] = rules;
  return copy;
}

/** A copy of a policy object with one more peer (a selector no other policy uses), so a new ipset is needed. */
export function policyWithNewPeer(policy: Obj, variant: number): Obj {
  const copy = clone(policy);
  const spec = copy['spec'] as Obj;
  const types = (spec['policyTypes'] as string[] | undefined) ?? [];
  const direction = spec['ingress'] !== undefined || !types.includes('Egress') ? 'ingress' : 'egress';
  const key = direction === 'ingress' ? 'from' : 'to';
  const rules = (spec[direction] as Obj[] | undefined) ?? [];
  rules.push({ [key]: [{ namespaceSelector: { matchLabels: { team: TEAMS[variant % TEAMS.length]! } }, podSelector: { matchLabels: { canary: `c${variant}` } } }] });
  spec[direction] = rules;
  return copy;
}

// ---------------------------------------------------------------------------------------------------------
// Probe packets for the walk budget
// ---------------------------------------------------------------------------------------------------------

export type ProbeKind = 'local-to-local' | 'busiest-local-to-local' | 'remote-to-local' | 'remote-udp-to-local' | 'local-to-remote' | 'local-to-metadata' | 'local-to-node';

/** Kinds whose destination is judged on another node, or nowhere: only the source's egress decides here. */
const EGRESS_ONLY: ReadonlySet<ProbeKind> = new Set(['local-to-remote', 'local-to-metadata', 'local-to-node']);

export interface Probe {
  readonly kind: ProbeKind;
  /** "namespace/name" of the pods (or the address) at either end. */
  readonly from: string;
  readonly to: string;
  readonly packet: Packet;
}

/** A port no generated policy allows, so isolated chains are walked to their end. */
export const UNALLOWED_PORT = 1;

/**
 * First packets of new connections whose walk through the FORWARD chain of the local node is long:
 * for every local endpoint as destination, from the next local endpoint, from the local endpoint with
 * the most egress policies and from a remote pod (TCP and UDP); for every local endpoint as source, to a
 * remote pod. All to a port no policy allows, so no allow rule cuts the walk short.
 */
export function walkProbes(cluster: SyntheticCluster, dataplane: Dataplane): Probe[] {
  const endpoints = dataplane.endpoints;
  const remote = cluster.podInfo.filter((p) => !p.local && p.counts);
  if (endpoints.length < 2 || remote.length === 0) throw new Error('walk probes need two local endpoints and a remote pod');
  const busiest = endpoints.reduce((a, b) => (b.egressPolicies.length > a.egressPolicies.length ? b : a));
  const local = cluster.localNodeAddress;
  const base = (protocol: Packet['protocol']) => ({ protocol, sport: 40000, dport: UNALLOWED_PORT, localAddresses: [local] });
  const probes: Probe[] = [];
  endpoints.forEach((dst, i) => {
    const to = `${dst.namespace}/${dst.name}`;
    const outIface = dst.interfaces[0]!;
    const next = endpoints[(i + 1) % endpoints.length]!;
    const sources: [ProbeKind, EndpointInfo][] = [['local-to-local', next]];
    if (busiest !== dst) sources.push(['busiest-local-to-local', busiest]);
    for (const [kind, src] of sources) {
      probes.push({ kind, from: `${src.namespace}/${src.name}`, to, packet: { ...base('tcp'), src: src.ip, dst: dst.ip, inIface: src.interfaces[0]!, outIface } });
    }
    const peer = remote[(i * 7919) % remote.length]!;
    const from = `${peer.namespace}/${peer.name}`;
    probes.push({ kind: 'remote-to-local', from, to, packet: { ...base('tcp'), src: peer.ip, dst: dst.ip, inIface: 'eth0', outIface } });
    probes.push({ kind: 'remote-udp-to-local', from, to, packet: { ...base('udp'), src: peer.ip, dst: dst.ip, inIface: 'eth0', outIface } });
    const target = remote[(i * 104729 + 13) % remote.length]!;
    probes.push({ kind: 'local-to-remote', from: to, to: `${target.namespace}/${target.name}`, packet: { ...base('tcp'), src: dst.ip, dst: target.ip, inIface: outIface, outIface: 'eth0' } });
  });
  return probes;
}

/** The instance metadata service: not a pod, not a node, reached through the node from every pod. */
export const METADATA_ADDRESS = '169.254.169.254';

/**
 * First packets that ClusterNetworkPolicy guardrails are about, from every local endpoint: to the
 * instance metadata service on 80, and to another node's kubelet on 10250.
 */
export function guardrailProbes(cluster: SyntheticCluster, dataplane: Dataplane): Probe[] {
  const node = cluster.nodes[1];
  const nodeAddress = ((node?.['status'] as Obj | undefined)?.['addresses'] as { type: string; address: string }[] | undefined)?.find((a) => a.type === 'InternalIP')?.address;
  if (nodeAddress === undefined) throw new Error('guardrail probes need a second node with an InternalIP');
  const nodeName = String((node!['metadata'] as Obj)['name']);
  return dataplane.endpoints.flatMap((src): Probe[] => {
    const from = `${src.namespace}/${src.name}`;
    const base = { protocol: 'tcp' as const, sport: 40000, src: src.ip, inIface: src.interfaces[0]!, outIface: 'eth0', localAddresses: [cluster.localNodeAddress] };
    return [
      { kind: 'local-to-metadata', from, to: METADATA_ADDRESS, packet: { ...base, dst: METADATA_ADDRESS, dport: 80 } },
      { kind: 'local-to-node', from, to: nodeName, packet: { ...base, dst: nodeAddress, dport: 10250 } },
    ];
  });
}

export interface WalkResult {
  readonly probe: Probe;
  readonly verdict: 'ACCEPT' | 'DROP';
  readonly rulesWalked: number;
  /** What the evaluator says this node should do with the packet (when a snapshot was given). */
  readonly expected?: 'ACCEPT' | 'DROP';
  readonly describe: () => string;
}

/**
 * Renders the dataplane, loads it into the test-suite tracer and walks every probe through FORWARD.
 * With the snapshot, each verdict is also compared with the evaluator's: a connection between two local
 * pods must pass both ends' policies, one from a remote pod only the destination's ingress, one to a
 * remote pod, a node or the metadata service only the source's egress (the remote node checks the rest).
 * `probes` defaults to walkProbes.
 */
export function traceWalks(cluster: SyntheticCluster, dataplane: Dataplane, snapshot?: Snapshot, probes: readonly Probe[] = walkProbes(cluster, dataplane)): WalkResult[] {
  const iptables = IptablesModel.parse(renderIptables(dataplane));
  const ipsets = IpsetModel.parse(renderIpsets(dataplane.ipsets.values()));
  const evaluator = snapshot === undefined ? undefined : new Evaluator(snapshot);
  return probes.map((probe) => {
    const trace = iptables.trace('FORWARD', probe.packet, ipsets, POLICY_TABLE);
    let expected: 'ACCEPT' | 'DROP' | undefined;
    if (evaluator !== undefined) {
      const { packet } = probe;
      const verdict = evaluator.evaluate({ src: packet.src, dst: packet.dst, protocol: packet.protocol === 'udp' ? 'UDP' : 'TCP', port: packet.dport ?? null });
      const allowed = EGRESS_ONLY.has(probe.kind) ? verdict.egress.allowed : probe.kind.endsWith('to-local') && probe.kind.startsWith('remote') ? verdict.ingress.allowed : verdict.allowed;
      expected = allowed ? 'ACCEPT' : 'DROP';
    }
    return {
      probe,
      verdict: trace.verdict,
      rulesWalked: trace.rulesWalked,
      ...(expected === undefined ? {} : { expected }),
      describe: () => `${probe.kind} ${probe.from} -> ${probe.to} ${probe.packet.protocol}/${probe.packet.dport ?? '-'}: ${trace.describe()}`,
    };
  });
}
