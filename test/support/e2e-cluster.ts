/**
 * The end-to-end test cluster, built once per suite on the lab (lib/lab/cluster.ts), in the shape of
 * the upstream Kubernetes network-policy e2e tests:
 *
 *   namespaces x, y, z (labels ns=<name>, kubernetes.io/metadata.name=<name>)
 *   pods a, b, c in each (labels pod=<name>); a and b on node-a, c on node-b
 *   every pod serves TCP and UDP on 80 and 81, declared as the named container ports
 *   serve-80-tcp, serve-81-tcp, serve-80-udp, serve-81-udp
 *   an external host beyond node-a holding 203.0.113.10 and 203.0.113.11, serving the same
 *   Node objects with the link addresses, one real `palisade daemon` per node, both ready
 *
 * With `kubeProxy`, the nodes also run the lab's kube-proxy and every pod has a ClusterIP Service in
 * front of it, as upstream's tests have: `s-<namespace>-<pod>`, ports 80 and 81 on TCP and UDP onto the
 * same ports of the pod. A matrix case with `via: 'service'` probes each target through its Service's
 * ClusterIP instead of the pod's address; a pod reaching its own Service (the hairpin path) is probed
 * only where the case asks for it with `hairpin: true`.
 *
 * Every pod, the external host and both node namespaces run a ProbeAgent, so a whole reachability
 * matrix (rows: from, columns: to) is probed concurrently in about one probe timeout. expectMatrix
 * probes round after round until the observed matrix equals the expected one or a deadline passes (the
 * dataplane converges asynchronously; there are no fixed sleeps), and on failure prints both side by side.
 *
 *   describe('...', function () {
 *     const cluster = useE2eCluster({ prefix: 'paltest-e2e-conf' });
 *     it('...', async () => {
 *       await cluster().reset();
 *       await cluster().applyPolicies(policy('x', 'deny', { podSelector: {}, policyTypes: ['Ingress'] }));
 *       await cluster().expectMatrix(new Reachability(true).expectAllIngress('x/*', false), { proto: 'tcp', port: 80 });
 *     });
 *   });
 *
 * Skipped like the other kernel-level suites when namespaces or tools are unavailable
 * (PALISADE_REQUIRE_NETNS=1 makes that a failure). The after hook stops every agent and destroys the
 * lab (daemons, API server, every namespace) even when building it failed half way.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import type { Backend } from '../../lib/iptables/iptables.js';
import { Lab } from '../../lib/lab/cluster.js';
import type { KubeProxyMode } from '../../lib/lab/kube-proxy.js';
import type { ServicePortSpec, ServiceSpec } from '../../lib/lab/services.js';
import type { NetworkNamespace } from '../../lib/netns.js';
import { ProbeAgent } from '../../lib/probe/agent-in-namespace.js';
import { AGENT_UDP_SOURCE_PORTS } from '../../lib/probe/agent-protocol.js';
import type { ProbeOutcome, ProbeProtocol } from '../../lib/probe/echo.js';
import type { PodWiring } from '../../lib/pod-network.js';
import { namespace, node, pod } from './builders.js';
import { podClusterUnavailableReason } from './pod-cluster.js';
import { prepareNamespaces } from './netns-fixture.js';

type Obj = Record<string, unknown>;

export const NODE_A = 'node-a';
export const NODE_B = 'node-b';
export const NODES = [
  { name: NODE_A, address: '172.31.0.1', podCidr: '10.1.1.0/24' },
  { name: NODE_B, address: '172.31.0.2', podCidr: '10.1.2.0/24' },
] as const;
export const EXTERNAL_IP = '203.0.113.10';
/** A second address of the external host, for ipBlock `except` cases. */
export const EXTERNAL_IP_2 = '203.0.113.11';
export const NAMESPACES = ['x', 'y', 'z'] as const;
export const POD_NAMES = ['a', 'b', 'c'] as const;
export const PORTS = { tcp: [80, 81], udp: [80, 81] } as const;
/** Named container ports every pod declares, as upstream's test pods do. */
export const CONTAINER_PORTS: readonly ContainerPort[] = [
  { name: 'serve-80-tcp', port: 80, protocol: 'TCP' },
  { name: 'serve-81-tcp', port: 81, protocol: 'TCP' },
  { name: 'serve-80-udp', port: 80, protocol: 'UDP' },
  { name: 'serve-81-udp', port: 81, protocol: 'UDP' },
];

/** Every pod as "ns/name", in matrix order. */
export const POD_PEERS: readonly string[] = NAMESPACES.flatMap((ns) => POD_NAMES.map((p) => `${ns}/${p}`));
/** Sources other than pods: the external host (from either address) and the node namespaces. */
export const EXTERNAL = 'ext';
export const EXTERNAL_2 = 'ext2';

/** How a probe addresses its target: the pod's own address, or the ClusterIP of the pod's Service. */
export type Via = 'pod' | 'service';

export interface ProbeTarget {
  readonly proto: ProbeProtocol;
  /** With `via: 'service'`, the Service's port (its targetPort is what reaches the pod). */
  readonly port: number;
  /** Default 'pod'. */
  readonly via?: Via;
}
export const TCP_80: ProbeTarget = { proto: 'tcp', port: 80 };
export const TCP_81: ProbeTarget = { proto: 'tcp', port: 81 };
export const UDP_80: ProbeTarget = { proto: 'udp', port: 80 };
export const UDP_81: ProbeTarget = { proto: 'udp', port: 81 };
export const ALL_TARGETS: readonly ProbeTarget[] = [TCP_80, TCP_81, UDP_80, UDP_81];

/** How long one probe waits for its echo: a denied probe costs this much, an allowed one its round trip. */
export const PROBE_TIMEOUT_MS = 1000;
/** UDP source ports of an agent on an address another pod held before (see E2eCluster.plumb). */
export const RECYCLED_ADDRESS_UDP_SOURCE_PORTS: readonly [number, number] = [40_000, 62_000];
/** PALISADE_E2E_VERBOSE=1 logs every probing round's differences. */
const VERBOSE = process.env['PALISADE_E2E_VERBOSE'] === '1';
/** How long expectMatrix keeps probing for the expected matrix. */
export const CONVERGE_DEADLINE_MS = 10_000;

// ---------------------------------------------------------------------------------------------
// Expected reachability
// ---------------------------------------------------------------------------------------------

/**
 * A peer pattern: a pod "x/a", a namespace's pods "x/*", a pod name in every namespace "* /a", every
 * pod "* /*", every source or target "*", or another peer by name ("ext", "node-a").
 */
export type PeerPattern = string;

function matches(pattern: PeerPattern, peer: string): boolean {
  if (pattern === '*') return true;
  const [pns, pname, ...prest] = pattern.split('/');
  const [ns, name, ...rest] = peer.split('/');
  if (pname === undefined || name === undefined || prest.length > 0 || rest.length > 0) return pattern === peer;
  return (pns === '*' || pns === ns) && (pname === '*' || pname === name);
}

function isPod(peer: string): boolean {
  return peer.includes('/');
}

/**
 * The expected truth table, as upstream's Reachability: rows are sources, columns targets. A pod to
 * itself never leaves its namespace, so those cells are always "reaches" and the setters skip them.
 */
export class Reachability {
  readonly sources: readonly string[];
  readonly targets: readonly string[];
  private readonly cells = new Map<string, boolean>();

  constructor(allowed: boolean, options: { sources?: readonly string[]; targets?: readonly string[] } = {}) {
    this.sources = [...(options.sources ?? POD_PEERS)];
    this.targets = [...(options.targets ?? POD_PEERS)];
    for (const from of this.sources) for (const to of this.targets) this.cells.set(cellKey(from, to), from === to && isPod(from) ? true : allowed);
  }

  /** Sets every (from, to) cell the patterns match, self cells excepted. */
  expect(from: PeerPattern | readonly PeerPattern[], to: PeerPattern | readonly PeerPattern[], allowed: boolean): this {
    const froms = typeof from === 'string' ? [from] : from;
    const tos = typeof to === 'string' ? [to] : to;
    for (const source of this.sources) {
      if (!froms.some((p) => matches(p, source))) continue;
      for (const target of this.targets) {
        if (source === target || !tos.some((p) => matches(p, target))) continue;
        this.cells.set(cellKey(source, target), allowed);
      }
    }
    return this;
  }

  /** Everything into `to`. */
  expectAllIngress(to: PeerPattern | readonly PeerPattern[], allowed: boolean): this {
    return this.expect('*', to, allowed);
  }

  /** Everything out of `from`. */
  expectAllEgress(from: PeerPattern | readonly PeerPattern[], allowed: boolean): this {
    return this.expect(from, '*', allowed);
  }

  get(from: string, to: string): boolean {
    const value = this.cells.get(cellKey(from, to));
    if (value === undefined) throw new Error(`Reachability: no cell ${from} -> ${to}`);
    return value;
  }

  clone(): Reachability {
    const copy = new Reachability(true, { sources: this.sources, targets: this.targets });
    for (const [key, value] of this.cells) copy.cells.set(key, value);
    return copy;
  }
}

function cellKey(from: string, to: string): string {
  return `${from}\u0000${to}`;
}

/** One matrix to check: what is expected on which protocol and port. */
export interface MatrixCase extends ProbeTarget {
  readonly expected: Reachability;
  /**
   * Through Services, also probe each pod reaching its own Service (the hairpin path) and hold it to
   * its self cell, which is always "reaches". Through pod addresses a pod reaching itself never leaves
   * its namespace, and is always probed.
   */
  readonly hairpin?: boolean;
}

/** The same expectation on every protocol and port served. */
export function onAllPorts(expected: Reachability, options: { via?: Via; hairpin?: boolean } = {}): MatrixCase[] {
  return ALL_TARGETS.map((t) => ({ ...t, ...options, expected }));
}

/** Whether a cell of the case is probed: all but a pod's own Service, unless the case asks for the hairpin. */
function probed(c: MatrixCase, from: string, to: string): boolean {
  return from !== to || c.via !== 'service' || c.hairpin === true;
}

type Observed = Map<string, ProbeOutcome>;

const MARK: Record<ProbeOutcome, string> = { ok: '.', timeout: 'X', refused: 'R', unreachable: 'U' };

/** Expected and observed side by side; differing observed cells carry a "*". */
export function formatMatrices(c: MatrixCase, observed: Observed): string {
  const { expected } = c;
  const width = Math.max(4, ...expected.targets.map((t) => t.length + 2));
  const rowHead = Math.max(...expected.sources.map((s) => s.length)) + 2;
  const header = ' '.repeat(rowHead) + expected.targets.map((t) => t.padEnd(width)).join('');
  const block = (title: string, cell: (from: string, to: string) => string): string[] => [
    title.padEnd(header.length),
    header,
    ...expected.sources.map((from) => from.padEnd(rowHead) + expected.targets.map((to) => cell(from, to).padEnd(width)).join('')),
  ];
  const title = `${c.proto}/${c.port}${c.via === 'service' ? ' through Services' : ''}`;
  const left = block(`expected ${title}`, (from, to) => (!probed(c, from, to) ? '-' : expected.get(from, to) ? '.' : 'X'));
  const right = block(`observed ${title}`, (from, to) => {
    if (!probed(c, from, to)) return '-';
    const outcome = observed.get(cellKey(from, to));
    if (outcome === undefined) return '?';
    const differs = outcome !== (expected.get(from, to) ? 'ok' : 'timeout');
    return MARK[outcome] + (differs ? '*' : '');
  });
  return left.map((line, i) => `${line.padEnd(header.length)}    ${right[i] ?? ''}`.trimEnd()).join('\n');
}

function differences(c: MatrixCase, observed: Observed): string[] {
  const out: string[] = [];
  for (const from of c.expected.sources) for (const to of c.expected.targets) {
    if (!probed(c, from, to)) continue;
    const want: ProbeOutcome = c.expected.get(from, to) ? 'ok' : 'timeout';
    const got = observed.get(cellKey(from, to));
    if (got !== want) out.push(`${from} -> ${c.via === 'service' ? `service of ${to}` : to} ${c.proto}/${c.port}: wanted ${want}, got ${got ?? 'nothing'}`);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------------------------

export interface PodState {
  readonly namespace: string;
  readonly name: string;
  readonly node: string;
  ip: string;
  labels: Record<string, string>;
  /** The container ports the Pod object declares (what named ports resolve against). */
  ports: readonly ContainerPort[];
  /** How the node is wired to the pod (lib/pod-network.ts); a veth under the node's prefix unless said. */
  readonly wiring?: PodWiring;
  readonly annotations?: Record<string, string>;
}

/** Another name to probe by: a pod's further address, or an address of a node's own. */
export interface PeerAlias {
  readonly ip: string;
  /** The peer whose agent answers and probes for it. */
  readonly agent: string;
  /** Probes from the alias leave from this address. */
  readonly from?: string;
}

export interface ContainerPort {
  readonly name: string;
  readonly port: number;
  readonly protocol: 'TCP' | 'UDP' | 'SCTP';
}

export interface E2eClusterOptions {
  /** Namespace name prefix; must start with "paltest-". */
  readonly prefix: string;
  /** kube-proxy on both nodes and a Service per pod, programmed before the daemons start. */
  readonly kubeProxy?: E2eKubeProxyOptions;
  /** The ClusterNetworkPolicy CRD installed before the daemons start. */
  readonly clusterPolicies?: boolean;
  /** Further flags for both daemons. */
  readonly daemonArgs?: readonly string[];
  /**
   * expectMatrices first waits (up to 3 s) until both daemons have synced since the last change made
   * through the fixture. Its first round then probes the new state instead of racing the sync, which
   * saves a whole round (one probe timeout) per denied matrix; the matrices are checked as before.
   */
  readonly syncBeforeProbing?: boolean;
}

export interface E2eKubeProxyOptions {
  readonly mode: KubeProxyMode;
  /** The iptables family kube-proxy writes to in iptables mode; default nft (Amazon Linux 2023). */
  readonly iptablesBackend?: Backend;
  /** kube-proxy's --cluster-cidr: traffic to a ClusterIP from outside it is masqueraded. */
  readonly clusterCidr?: string;
  /** Ports every pod's Service has besides 80 and 81 on TCP and UDP. */
  readonly extraPorts?: readonly ServicePortSpec[];
}

/** The ports of upstream's per-pod Services, named as upstream names them. */
export const SERVICE_PORTS: readonly ServicePortSpec[] = ALL_TARGETS.map((t) => ({
  name: `service-port-${t.proto}-${t.port}`,
  protocol: t.proto === 'tcp' ? 'TCP' : 'UDP',
  port: t.port,
  targetPort: t.port,
}));

/** A pair watched continuously, and whether it should reach. */
export interface WatchedPair extends ProbeTarget {
  readonly from: string;
  readonly to: string;
  readonly allowed: boolean;
}

export interface PairRecord {
  readonly pair: WatchedPair;
  readonly outcomes: Record<ProbeOutcome, number>;
  /** When (ms since the watch started) a probe came out otherwise than the pair should. */
  readonly unexpected: { readonly atMs: number; readonly outcome: ProbeOutcome }[];
}

export interface PairWatch {
  /** ms since the watch started: to put the unexpected outcomes next to what the test did. */
  elapsed(): number;
  /** Stops starting probes, waits for those in flight, returns what every pair saw. */
  stop(): Promise<PairRecord[]>;
}

export function describePair(p: WatchedPair): string {
  return `${p.from} -> ${p.via === 'service' ? `service of ${p.to}` : p.to} ${p.proto}/${p.port} (${p.allowed ? 'allowed' : 'denied'})`;
}

export function summary(records: readonly PairRecord[]): string {
  return records.map((r) => `${describePair(r.pair)}: ${JSON.stringify(r.outcomes)}${r.unexpected.length === 0 ? '' : ` unexpected at ${r.unexpected.slice(0, 8).map((u) => `${u.atMs}ms ${u.outcome}`).join(', ')}${r.unexpected.length > 8 ? ', ...' : ''}`}`).join('\n');
}

/** Fails naming every watched pair that saw a probe come out otherwise, with when, next to the given timeline. */
export function assertNoUnexpected(records: readonly PairRecord[], timeline: string): void {
  const wrong = records.filter((r) => r.unexpected.length > 0);
  assert.equal(wrong.length, 0, `probes came out otherwise than expected (${timeline}):\n${summary(records)}`);
  for (const r of records) assert.ok(r.outcomes.ok + r.outcomes.timeout >= 10, `too few probes for ${describePair(r.pair)}: ${JSON.stringify(r.outcomes)}`);
}

export interface MatrixReport {
  readonly rounds: number;
  readonly elapsedMs: number;
}

export class E2eCluster {
  readonly lab: Lab;
  private readonly agents = new Map<string, ProbeAgent>();
  private readonly pods = new Map<string, PodState>();
  private readonly namespaceLabels = new Map<string, Record<string, string>>();
  /** Node labels a case set (nodes have none at the baseline). */
  private readonly nodeLabels = new Map<string, Record<string, string>>();
  /** Pods (labels, declared ports), namespaces or nodes (labels) a case changed: reset() puts them back. */
  private readonly relabelled = new Set<string>();
  /** Policies applied through the fixture and not deleted since, as last applied. */
  private readonly policies = new Map<string, Obj>();
  /** Every pod address this cluster has handed out: freeAddress never recycles one. */
  private readonly everUsed = new Set<string>();
  private readonly aliases = new Map<string, PeerAlias>();
  private readonly kubeProxyOptions: E2eKubeProxyOptions | undefined;
  /** Each pod's Service ClusterIP, handed out in the order pods were added. */
  private readonly serviceIps = new Map<string, string>();
  private crdInstalled = false;
  private readonly syncBeforeProbing: boolean;
  /** When the last change through the fixture began (ms since the epoch). */
  private changedAt = 0;

  private constructor(lab: Lab, kubeProxy: E2eKubeProxyOptions | undefined, syncBeforeProbing: boolean) {
    this.lab = lab;
    this.kubeProxyOptions = kubeProxy;
    this.syncBeforeProbing = syncBeforeProbing;
  }

  /** Builds the lab, the pods and their agents, applies every object and starts both daemons. */
  static async create(options: E2eClusterOptions): Promise<E2eCluster> {
    const kp = options.kubeProxy;
    const lab = await Lab.create({
      prefix: options.prefix,
      nodes: NODES,
      externalAddress: EXTERNAL_IP,
      ...(options.daemonArgs === undefined ? {} : { daemonArgs: options.daemonArgs }),
      ...(kp === undefined ? {} : {
        kubeProxy: { mode: kp.mode, iptablesBackend: kp.iptablesBackend ?? 'nft', ...(kp.clusterCidr === undefined ? {} : { clusterCidr: kp.clusterCidr }) },
      }),
    });
    const cluster = new E2eCluster(lab, kp, options.syncBeforeProbing === true);
    try {
      if (options.clusterPolicies === true) await cluster.setClusterPolicyCrd(true);
      await cluster.build();
    } catch (error) {
      await cluster.destroy().catch(() => undefined);
      throw error;
    }
    return cluster;
  }

  private async build(): Promise<void> {
    const external = this.lab.external!;
    // The second external address: on the external host, and routed by node-b through node-a
    // (node-a has it on its ext0 /24 already).
    await external.run(['ip', 'address', 'add', `${EXTERNAL_IP_2}/32`, 'dev', 'eth0']);
    await this.lab.node(NODE_B).netns.run(['ip', 'route', 'add', `${EXTERNAL_IP_2}/32`, 'via', NODES[0].address]);

    for (const ns of NAMESPACES) this.namespaceLabels.set(ns, { ns, 'kubernetes.io/metadata.name': ns });
    let index = 0;
    for (const ns of NAMESPACES) {
      for (const name of POD_NAMES) {
        index++;
        const onB = name === 'c';
        const ip = onB ? `10.1.2.${10 * index}` : `10.1.1.${10 * index}`;
        this.pods.set(`${ns}/${name}`, { namespace: ns, name, node: onB ? NODE_B : NODE_A, ip, labels: { pod: name }, ports: CONTAINER_PORTS });
      }
    }
    const started: Promise<void>[] = [];
    for (const state of this.pods.values()) started.push(this.plumb(state));
    started.push(this.startAgent(EXTERNAL, external, PORTS));
    started.push(this.startAgent(NODE_A, this.lab.node(NODE_A).netns, PORTS));
    started.push(this.startAgent(NODE_B, this.lab.node(NODE_B).netns, PORTS));
    const results = await Promise.allSettled(started);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed !== undefined) throw failed.reason;

    await this.lab.api.apply(this.baseObjects());
    // kube-proxy is on the node before palisade, so palisade's hooks are installed ahead of its jumps.
    await this.syncServices();
    await Promise.all([this.lab.startDaemon(NODE_A), this.lab.startDaemon(NODE_B)]);
    await Promise.all([this.lab.waitReady(NODE_A), this.lab.waitReady(NODE_B)]);
  }

  /**
   * Plumbs the pod and starts its agent. An agent on an address some pod held before takes its UDP
   * source ports from another range than the default, so it never happens to repeat its predecessor's
   * flows (a case that wants to repeat them does so on purpose, with udpFromSourcePorts).
   */
  private async plumb(state: PodState): Promise<void> {
    const recycled = this.everUsed.has(state.ip);
    this.everUsed.add(state.ip);
    const handle = await this.lab.addPod(state.node, { namespace: state.namespace, name: state.name, ip: state.ip, ...(state.wiring === undefined ? {} : { wiring: state.wiring }) });
    await this.startAgent(`${state.namespace}/${state.name}`, handle.netns, PORTS, recycled ? RECYCLED_ADDRESS_UDP_SOURCE_PORTS : AGENT_UDP_SOURCE_PORTS);
  }

  private async startAgent(peer: string, netns: NetworkNamespace, ports: { tcp: readonly number[]; udp: readonly number[] }, udpSourcePorts = AGENT_UDP_SOURCE_PORTS): Promise<void> {
    this.agents.set(peer, await ProbeAgent.start(netns, ports, { udpSourcePorts }));
  }

  /** Nodes, namespaces and pods as they should be now (policies aside). */
  baseObjects(): Obj[] {
    return [
      ...NODES.map((n) => node(n.name, n.address, { labels: this.nodeLabels.get(n.name) ?? {} })),
      ...[...this.namespaceLabels].map(([name, labels]) => namespace(name, labels)),
      ...[...this.pods.values()].map((p) => this.podObject(p)),
    ];
  }

  private podObject(state: PodState): Obj {
    return pod(state.namespace, state.name, { ip: state.ip, labels: state.labels, node: state.node, ports: state.ports, ...(state.annotations === undefined ? {} : { annotations: state.annotations }) });
  }

  podState(peer: string): PodState {
    const state = this.pods.get(peer);
    if (state === undefined) throw new Error(`E2eCluster: no pod ${peer}`);
    return state;
  }

  /** Names `alias` as a peer matrices can probe from and to. */
  alias(name: string, alias: PeerAlias): void {
    this.aliases.set(name, alias);
  }

  /** The address probes to `peer` go to. */
  ip(peer: string): string {
    const alias = this.aliases.get(peer);
    if (alias !== undefined) return alias.ip;
    if (peer === EXTERNAL) return EXTERNAL_IP;
    if (peer === EXTERNAL_2) return EXTERNAL_IP_2;
    const n = NODES.find((x) => x.name === peer);
    if (n !== undefined) return n.address;
    return this.podState(peer).ip;
  }

  /** The ClusterIP of the pod's Service; only in a cluster made with `kubeProxy`. */
  serviceIp(peer: string): string {
    const ip = this.serviceIps.get(peer);
    if (ip === undefined) throw new Error(`E2eCluster: no Service for ${peer}${this.kubeProxyOptions === undefined ? ' (the cluster was made without kubeProxy)' : ''}`);
    return ip;
  }

  /** One Service per pod, `s-<namespace>-<pod>`, onto the pod's current address and declared ports. */
  podServices(): ServiceSpec[] {
    const extra = this.kubeProxyOptions?.extraPorts ?? [];
    return [...this.pods.values()].map((p) => ({
      namespace: p.namespace,
      name: `s-${p.namespace}-${p.name}`,
      clusterIp: this.serviceIpFor(`${p.namespace}/${p.name}`),
      ports: [...SERVICE_PORTS, ...extra],
      backends: [{ ip: p.ip, ports: p.ports }],
    }));
  }

  /** Hands kube-proxy every pod's Service as the pods are now (a no-op without kubeProxy). */
  async syncServices(): Promise<void> {
    if (this.kubeProxyOptions === undefined) return;
    await this.lab.kubeProxy.setServices(this.podServices());
  }

  private serviceIpFor(peer: string): string {
    let ip = this.serviceIps.get(peer);
    if (ip === undefined) {
      const n = this.serviceIps.size + 10;
      ip = `10.100.${Math.floor(n / 250)}.${(n % 250) + 1}`;
      this.serviceIps.set(peer, ip);
    }
    return ip;
  }

  /** The agent that probes from `peer` ("ext2" is the external host's agent, sending from its second address). */
  agent(peer: string): ProbeAgent {
    const agent = this.agents.get(this.aliases.get(peer)?.agent ?? (peer === EXTERNAL_2 ? EXTERNAL : peer));
    if (agent === undefined) throw new Error(`E2eCluster: no probe agent for ${peer}`);
    return agent;
  }

  /** One round trip from `from` to `to`, or to the Service of `to` with `via: 'service'`. */
  probe(from: string, to: string, target: ProbeTarget, timeoutMs = PROBE_TIMEOUT_MS): Promise<ProbeOutcome> {
    return this.agent(from).probe({
      proto: target.proto,
      to: target.via === 'service' ? this.serviceIp(to) : this.ip(to),
      port: target.port,
      timeoutMs,
      ...(from === EXTERNAL_2 ? { from: EXTERNAL_IP_2 } : from === EXTERNAL ? { from: EXTERNAL_IP } : {}),
      ...(this.aliases.get(from)?.from === undefined ? {} : { from: this.aliases.get(from)!.from! }),
    });
  }

  // --- driving the API server ---

  /** NetworkPolicies and ClusterNetworkPolicies alike; reset() deletes them. */
  async applyPolicies(...policies: Obj[]): Promise<void> {
    this.changedAt = Date.now();
    for (const p of policies) this.policies.set(policyKey(p), p);
    await this.lab.api.apply(policies);
  }

  async deletePolicy(ns: string, name: string): Promise<void> {
    this.changedAt = Date.now();
    await this.lab.api.delete('NetworkPolicy', ns, name);
    this.policies.delete(`${ns}/${name}`);
  }

  /** Installs or removes the ClusterNetworkPolicy CRD; removing it deletes every ClusterNetworkPolicy, as the API server does. */
  async setClusterPolicyCrd(installed: boolean): Promise<void> {
    this.changedAt = Date.now();
    await this.lab.api.setCrdInstalled('ClusterNetworkPolicy', installed);
    this.crdInstalled = installed;
    if (!installed) for (const key of [...this.policies.keys()]) if (key.startsWith(`${CLUSTER_SCOPED}/`)) this.policies.delete(key);
  }

  /** Whether the ClusterNetworkPolicy CRD is installed now (through this fixture). */
  get clusterPolicyCrdInstalled(): boolean {
    return this.crdInstalled;
  }

  async deleteClusterPolicy(name: string): Promise<void> {
    this.changedAt = Date.now();
    await this.lab.api.delete('ClusterNetworkPolicy', null, name);
    this.policies.delete(`${CLUSTER_SCOPED}/${name}`);
  }

  async setPodLabels(peer: string, labels: Record<string, string>): Promise<void> {
    this.changedAt = Date.now();
    const state = this.podState(peer);
    state.labels = { ...labels };
    this.relabelled.add(peer);
    await this.lab.api.apply(this.podObject(state));
  }

  /** Changes the container ports the Pod object declares (what it serves stays the same). */
  async setPodPorts(peer: string, ports: readonly ContainerPort[]): Promise<void> {
    this.changedAt = Date.now();
    const state = this.podState(peer);
    state.ports = [...ports];
    this.relabelled.add(peer);
    await this.lab.api.apply(this.podObject(state));
    await this.syncServices();
  }

  /** Labels the Node object (what a ClusterNetworkPolicy's `nodes` peer selects); its addresses stay. */
  async setNodeLabels(nodeName: string, labels: Record<string, string>): Promise<void> {
    this.changedAt = Date.now();
    const spec = NODES.find((n) => n.name === nodeName);
    if (spec === undefined) throw new Error(`E2eCluster: no node ${nodeName}`);
    this.nodeLabels.set(nodeName, { ...labels });
    this.relabelled.add(nodeName);
    await this.lab.api.apply(node(nodeName, spec.address, { labels }));
  }

  async setNamespaceLabels(ns: string, labels: Record<string, string>): Promise<void> {
    this.changedAt = Date.now();
    this.namespaceLabels.set(ns, { ...labels, 'kubernetes.io/metadata.name': ns });
    this.relabelled.add(ns);
    await this.lab.api.apply(namespace(ns, this.namespaceLabels.get(ns)));
  }

  /**
   * Adds a pod beyond the baseline (plumbing and agent first, then the object); reset() keeps it, and
   * the baseline matrices leave it out.
   */
  async addPod(state: PodState): Promise<void> {
    const key = `${state.namespace}/${state.name}`;
    if (this.pods.has(key)) throw new Error(`E2eCluster: ${key} exists already`);
    this.pods.set(key, state);
    await this.plumb(state);
    // The change the daemons see is the object, written after the plumbing.
    this.changedAt = Date.now();
    await this.lab.api.apply(this.podObject(state));
    await this.syncServices();
  }

  /** Deletes a pod added beyond the baseline: its object, then its agent and plumbing. */
  async removePod(peer: string): Promise<void> {
    this.changedAt = Date.now();
    const state = this.podState(peer);
    await this.lab.api.delete('Pod', state.namespace, state.name);
    await this.agents.get(peer)?.stop();
    this.agents.delete(peer);
    await this.lab.node(state.node).pods.removePod({ namespace: state.namespace, name: state.name });
    this.pods.delete(peer);
    for (const [name, alias] of this.aliases) if (alias.agent === peer) this.aliases.delete(name);
    await this.syncServices();
  }

  /** An address on the node's pod CIDR that no pod of this cluster ever held (from .150 up). */
  freeAddress(nodeName: string): string {
    const spec = NODES.find((n) => n.name === nodeName);
    if (spec === undefined) throw new Error(`E2eCluster: no node ${nodeName}`);
    const base = spec.podCidr.replace(/\.0\/24$/, '');
    for (let last = 150; last < 255; last++) if (!this.everUsed.has(`${base}.${last}`)) return `${base}.${last}`;
    throw new Error(`E2eCluster: no free address left on ${nodeName}`);
  }

  /**
   * Deletes the pod (object, then its plumbing and agent) and creates it again on the same node with
   * `ip` (default: a free address), as a rescheduled pod comes back with a new address: plumbing and
   * agent first, then the object.
   */
  async recreatePod(peer: string, ip?: string): Promise<string> {
    this.changedAt = Date.now();
    const state = this.podState(peer);
    const next = ip ?? this.freeAddress(state.node);
    const holder = [...this.pods.entries()].find(([key, p]) => p.ip === next && key !== peer);
    if (holder !== undefined) throw new Error(`E2eCluster: ${next} is held by ${holder[0]}`);
    const previous = state.ip;
    await this.lab.api.delete('Pod', state.namespace, state.name);
    await this.agents.get(peer)?.stop();
    this.agents.delete(peer);
    await this.lab.node(state.node).pods.removePod({ namespace: state.namespace, name: state.name });
    state.ip = next;
    try {
      await this.plumb(state);
    } catch (error) {
      // Put the pod back as it was, so one failed case does not take the pod from the ones after it.
      state.ip = previous;
      await this.lab.node(state.node).pods.removePod({ namespace: state.namespace, name: state.name }).catch(() => undefined);
      await this.plumb(state).catch(() => undefined);
      await this.lab.api.apply(this.podObject(state)).catch(() => undefined);
      throw error;
    }
    this.changedAt = Date.now();
    await this.lab.api.apply(this.podObject(state));
    await this.syncServices();
    return next;
  }

  /**
   * Back to the baseline between cases: every policy deleted, relabelled pods and namespaces put back,
   * then probes until every pod reaches every pod again on every port.
   */
  async reset(): Promise<void> {
    for (const key of [...this.policies.keys()]) {
      const [ns, name] = key.split('/') as [string, string];
      if (ns === CLUSTER_SCOPED) await this.deleteClusterPolicy(name);
      else await this.deletePolicy(ns, name);
    }
    if (this.relabelled.size > 0) {
      this.changedAt = Date.now();
      for (const key of this.relabelled) {
        const podState = this.pods.get(key);
        if (podState !== undefined) {
          podState.labels = { pod: podState.name };
          podState.ports = CONTAINER_PORTS;
        } else if (NODES.some((n) => n.name === key)) this.nodeLabels.delete(key);
        else this.namespaceLabels.set(key, { ns: key, 'kubernetes.io/metadata.name': key });
      }
      this.relabelled.clear();
      await this.lab.api.apply(this.baseObjects());
      await this.syncServices();
    }
    await this.expectMatrices(onAllPorts(new Reachability(true)));
  }

  // --- probing ---

  /** Probes every cell of every matrix once, all concurrently. */
  async observe(cases: readonly MatrixCase[], timeoutMs = PROBE_TIMEOUT_MS): Promise<Observed[]> {
    return Promise.all(cases.map(async (c) => {
      const observed: Observed = new Map();
      await Promise.all(c.expected.sources.flatMap((from) => c.expected.targets.filter((to) => probed(c, from, to)).map(async (to) => {
        observed.set(cellKey(from, to), await this.probe(from, to, c, timeoutMs));
      })));
      return observed;
    }));
  }

  /**
   * Probes round after round until every matrix observed equals its expected one, or fails after the
   * deadline showing each matrix that still differs, expected and observed side by side.
   */
  async expectMatrices(cases: readonly MatrixCase[], options: { deadlineMs?: number } = {}): Promise<MatrixReport> {
    const started = Date.now();
    if (this.syncBeforeProbing && !(await this.daemonsSynced(this.changedAt, 3000)) && VERBOSE) console.log(`        the daemons did not report a sync after the last change within 3 s`);
    const deadline = started + (options.deadlineMs ?? CONVERGE_DEADLINE_MS);
    for (let round = 1; ; round++) {
      const observed = await this.observe(cases);
      const diffs = cases.map((c, i) => differences(c, observed[i]!));
      if (VERBOSE) console.log(`        round ${round} at ${Date.now() - started} ms: ${diffs.flat().length} differ${diffs.flat().length === 0 ? '' : `: ${diffs.flat().slice(0, 12).join('; ')}`}`);
      if (diffs.every((d) => d.length === 0)) return { rounds: round, elapsedMs: Date.now() - started };
      if (Date.now() >= deadline) {
        const shown = cases.flatMap((c, i) => (diffs[i]!.length === 0 ? [] : [formatMatrices(c, observed[i]!)]));
        const total = diffs.reduce((n, d) => n + d.length, 0);
        const cells = cases.reduce((n, c) => n + c.expected.sources.length * c.expected.targets.length, 0);
        assert.fail([
          `reachability did not converge: after ${round} rounds over ${Date.now() - started} ms, ${total} of ${cells} probes still differ`,
          'rows are from, columns to; . reached, X dropped (timed out), R refused, U unreachable; * marks a cell that differs',
          '',
          shown.join('\n\n'),
          '',
          ...diffs.flat().slice(0, 40),
          '',
          await this.daemonDiagnostics(),
        ].join('\n'));
      }
    }
  }

  expectMatrix(expected: Reachability, target: ProbeTarget, options: { deadlineMs?: number } = {}): Promise<MatrixReport> {
    return this.expectMatrices([{ ...target, expected }], options);
  }

  /**
   * UDP round trips from `from` to `to`, one from each of the given source ports, a batch at a time:
   * to repeat, on purpose, the flows another pod had. Returns the ports whose probe was answered.
   */
  async udpFromSourcePorts(from: string, to: string, port: number, sourcePorts: readonly number[], timeoutMs = 300): Promise<number[]> {
    const answered: number[] = [];
    const batch = 200;
    for (let i = 0; i < sourcePorts.length; i += batch) {
      await Promise.all(sourcePorts.slice(i, i + batch).map(async (sourcePort) => {
        const outcome = await this.agent(from).probe({ proto: 'udp', to: this.ip(to), port, timeoutMs, sourcePort });
        if (outcome === 'ok') answered.push(sourcePort);
      }));
    }
    return answered.sort((a, b) => a - b);
  }

  /**
   * Probes every pair every `intervalMs` with a short timeout, without waiting for earlier probes,
   * until stop(). For watching what a fault does to traffic while it happens.
   */
  watchPairs(pairs: readonly WatchedPair[], options: { intervalMs?: number; timeoutMs?: number } = {}): PairWatch {
    const intervalMs = options.intervalMs ?? 50;
    const timeoutMs = options.timeoutMs ?? 250;
    const started = Date.now();
    const records: PairRecord[] = pairs.map((pair) => ({ pair, outcomes: { ok: 0, timeout: 0, refused: 0, unreachable: 0 }, unexpected: [] }));
    const inFlight = new Set<Promise<void>>();
    const errors: unknown[] = [];
    const tick = (): void => {
      for (const record of records) {
        const sentAt = Date.now() - started;
        const probe = this.probe(record.pair.from, record.pair.to, record.pair, timeoutMs).then(
          (outcome) => {
            record.outcomes[outcome]++;
            if (outcome !== (record.pair.allowed ? 'ok' : 'timeout')) record.unexpected.push({ atMs: sentAt, outcome });
          },
          (error: unknown) => void errors.push(error),
        );
        inFlight.add(probe);
        void probe.finally(() => inFlight.delete(probe));
      }
    };
    tick();
    const timer = setInterval(tick, intervalMs);
    return {
      elapsed: () => Date.now() - started,
      stop: async () => {
        clearInterval(timer);
        await Promise.all([...inFlight]);
        if (errors.length > 0) throw new AggregateError(errors, `${errors.length} watched probes could not run`);
        return records;
      },
    };
  }

  // --- the API server ---

  /** The lab API server's own counters (open watches and so on), over its admin socket. */
  apiStats(): Promise<{ openWatches: number; watches: Record<string, number>; lists: Record<string, number> }> {
    return new Promise((resolve, reject) => {
      const req = request({ socketPath: this.lab.api.socketPath, path: '/fake/stats', method: 'GET' }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          if (res.statusCode !== 200) reject(new Error(`GET /fake/stats: HTTP ${res.statusCode}: ${text.slice(0, 200)}`));
          else resolve(JSON.parse(text) as { openWatches: number; watches: Record<string, number>; lists: Record<string, number> });
        });
      });
      req.on('error', reject);
      req.end();
    });
  }

  // --- the daemons ---

  async status(nodeName: string): Promise<Record<string, unknown>> {
    const { status, body } = await this.lab.status(nodeName, '/status');
    if (status !== 200) throw new Error(`GET /status on ${nodeName}: HTTP ${status}: ${body.slice(0, 300)}`);
    return JSON.parse(body) as Record<string, unknown>;
  }

  /**
   * Waits until each daemon has finished a successful sync that began after `since`, with no change
   * pending; false if that has not happened within the deadline (or a daemon does not answer).
   */
  async daemonsSynced(since: number, deadlineMs: number): Promise<boolean> {
    const deadline = Date.now() + deadlineMs;
    for (;;) {
      try {
        const syncs = await Promise.all(NODES.map(async (n) => (await this.status(n.name))['sync'] as { lastAttempt: string | null; lastSuccess: string | null; pendingChanges: boolean }));
        // lastAttempt is when a sync began, lastSuccess when the last successful one ended.
        if (syncs.every((s) => s.lastAttempt !== null && s.lastSuccess !== null && Date.parse(s.lastAttempt) > since && Date.parse(s.lastSuccess) >= Date.parse(s.lastAttempt) && !s.pendingChanges)) return true;
      } catch {
        // A daemon restarting: the deadline decides.
      }
      if (Date.now() >= deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }

  /** The last lines the node's daemon printed. */
  daemonLogs(nodeName: string, lines = 30): string[] {
    return this.lab.node(nodeName).daemon?.lines.slice(-lines) ?? [];
  }

  /** Each daemon's sync state, failed policies, problems and last warnings, for failure messages. */
  async daemonDiagnostics(): Promise<string> {
    const out: string[] = [];
    for (const n of NODES) {
      const daemon = this.lab.node(n.name).daemon;
      out.push(`daemon on ${n.name}: ${daemon === null ? 'not running' : daemon.running ? 'running' : `exited ${daemon.child.exitCode ?? daemon.child.signalCode}`}`);
      try {
        const s = await this.status(n.name);
        out.push(`  sync ${JSON.stringify(s['sync'])}`);
        out.push(`  failedPolicies ${JSON.stringify(s['failedPolicies'])} problems ${JSON.stringify(s['problems'])}`);
      } catch (error) {
        out.push(`  status: ${error instanceof Error ? error.message : String(error)}`);
      }
      const warnings = (daemon?.lines ?? []).filter((l) => /"level":(40|50|60)/.test(l)).slice(-5);
      for (const line of warnings) out.push(`  ${line.slice(0, 400)}`);
    }
    return out.join('\n');
  }

  /** Round trips completed by every agent, and the slowest (ms): the headroom below PROBE_TIMEOUT_MS. */
  probeStats(): { ok: number; maxOkMs: number } {
    let ok = 0;
    let maxOkMs = 0;
    for (const agent of this.agents.values()) {
      ok += agent.stats.ok;
      maxOkMs = Math.max(maxOkMs, agent.stats.maxOkMs);
    }
    return { ok, maxOkMs };
  }

  /** Stops every agent and destroys the lab; tries everything, throws what failed. */
  async destroy(): Promise<void> {
    const stops = await Promise.allSettled([...this.agents.values()].map((a) => a.stop()));
    this.agents.clear();
    const failures = stops.flatMap((s) => (s.status === 'rejected' ? [s.reason as unknown] : []));
    try {
      await this.lab.destroy();
    } catch (error) {
      failures.push(error);
    }
    if (failures.length > 0) throw new AggregateError(failures, 'E2eCluster teardown failed');
  }
}

/** Where cluster-scoped policies are kept among the namespaced ones: no namespace can be called this. */
const CLUSTER_SCOPED = '<cluster>';

function policyKey(p: Obj): string {
  const metadata = p['metadata'] as { namespace?: string; name?: string } | undefined;
  if (p['kind'] === 'ClusterNetworkPolicy' && metadata?.name !== undefined) return `${CLUSTER_SCOPED}/${metadata.name}`;
  if (metadata?.namespace === undefined || metadata.name === undefined) throw new Error('E2eCluster: a policy needs metadata.namespace and metadata.name');
  return `${metadata.namespace}/${metadata.name}`;
}

/** Mocha fixture: one E2eCluster for the enclosing describe, built in before, destroyed in after. */
export function useE2eCluster(options: E2eClusterOptions): () => E2eCluster {
  if (!options.prefix.startsWith('paltest-')) throw new Error(`useE2eCluster: prefix "${options.prefix}" must start with "paltest-"`);
  let current: E2eCluster | undefined;
  // Kept so the after hook can wait for a build that the before hook's timeout abandoned, and tear it down.
  let building: Promise<E2eCluster> | undefined;
  before(async function () {
    this.timeout(120_000);
    await prepareNamespaces(this, options.prefix, podClusterUnavailableReason);
    const started = Date.now();
    building = E2eCluster.create(options);
    current = await building;
    console.log(`      (cluster ${options.prefix} built, both daemons ready, in ${Date.now() - started} ms)`);
  });
  after(async function () {
    this.timeout(60_000);
    const cluster = current ?? (await building?.catch(() => undefined));
    if (cluster !== undefined) {
      const stats = cluster.probeStats();
      console.log(`      (${options.prefix}: ${stats.ok} round trips completed, slowest ${stats.maxOkMs} ms, probe timeout ${PROBE_TIMEOUT_MS} ms)`);
    }
    current = undefined;
    building = undefined;
    await cluster?.destroy();
  });
  return () => {
    if (current === undefined) throw new Error(`useE2eCluster(${options.prefix}): no cluster outside a test (is the suite skipped?)`);
    return current;
  };
}
