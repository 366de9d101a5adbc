/**
 * A one-node cluster of real pods for connectivity tests: a PodNode (lib/pod-network.ts) with pods
 * that each run a probe echo server, the real DataplaneApplier writing into the node namespace with
 * one iptables backend, and a table of probes to check in one go.
 *
 *   describe('...', function () {
 *     const cluster = usePodCluster({ prefix: 'paltest-conn', backend: 'nft', pods: [...], ports });
 *     it('...', async () => {
 *       await cluster().apply([policy(...)]);
 *       await cluster().expect([{ from: 'b', to: 'a', proto: 'tcp', port: 80, reach: false }]);
 *     });
 *   });
 *
 * Skipped like useNetns when namespaces or the tools are unavailable (PALISADE_REQUIRE_NETNS=1 makes
 * that a failure). Teardown stops every server and deletes every namespace, even after a failure.
 */
import assert from 'node:assert/strict';
import type { ApplyReport, DropCounters } from '../../lib/dataplane/applier.js';
import { DataplaneApplier } from '../../lib/dataplane/applier.js';
import { cleanup } from '../../lib/dataplane/cleanup.js';
import { commandAvailable } from '../../lib/netns.js';
import { Ipset } from '../../lib/ipset.js';
import { Iptables } from '../../lib/iptables/iptables.js';
import type { Backend } from '../../lib/iptables/iptables.js';
import { PodNode } from '../../lib/pod-network.js';
import type { PodHandle, PodSpec } from '../../lib/pod-network.js';
import type { ProbeOutcome, ProbeProtocol } from '../../lib/probe/echo.js';
import { probeFrom, ProbeServer } from '../../lib/probe/in-namespace.js';
import { Names } from '../../rules/names.js';
import { makeSettings } from '../../rules/settings.js';
import { compile } from '../../rules/snapshot.js';
import { namespace, pod, snapshotOf } from './builders.js';
import { netnsUnavailableReason, prepareNamespaces } from './netns-fixture.js';

type Obj = Record<string, unknown>;

export const NODE_NAME = 'node-a';
export const CHAIN_PREFIX = 'pal';
/** How long a probe that should pass may take: generous, since it returns as soon as it passes. */
export const ALLOWED_TIMEOUT_MS = 2000;
/** How long a probe that should be dropped waits: every denied probe costs this much. */
export const DENIED_TIMEOUT_MS = 500;

export interface ClusterPod extends PodSpec {
  readonly labels?: Record<string, string>;
  /** Named container ports the Pod object declares. */
  readonly namedPorts?: readonly { name: string; port: number; protocol?: 'TCP' | 'UDP' }[];
}

export interface ServedPorts {
  readonly tcp: readonly number[];
  readonly udp: readonly number[];
}

export interface PodClusterOptions {
  /** Namespace name prefix; must start with "paltest-". */
  readonly prefix: string;
  readonly backend: Backend;
  readonly pods: readonly ClusterPod[];
  /** What every pod serves. */
  readonly ports: ServedPorts;
}

/** One probe and what it should come to: reach=true wants "ok", reach=false wants "timeout" (a DROP). */
export interface Expectation {
  /** A pod's name, in any namespace (names are unique within a test cluster). */
  readonly from: string;
  /** A pod's name or an IPv4 address. */
  readonly to: string;
  readonly proto: ProbeProtocol;
  readonly port: number;
  readonly reach: boolean;
  /** Bind the client to this source address (which the pod must hold). */
  readonly sourceIp?: string;
}

export class PodCluster {
  readonly node: PodNode;
  readonly backend: Backend;
  readonly ports: ServedPorts;
  private readonly definitions = new Map<string, ClusterPod>();
  private readonly servers = new Map<string, ProbeServer>();
  /** Pods plumbed on the node but left out of every snapshot, as if the API server had not told us yet. */
  private readonly unlisted = new Set<string>();
  private applier: DataplaneApplier;

  private constructor(node: PodNode, options: PodClusterOptions) {
    this.node = node;
    this.backend = options.backend;
    this.ports = options.ports;
    this.applier = this.newApplier();
  }

  /** Creates the node and every pod with its server; on failure removes whatever was created. */
  static async create(options: PodClusterOptions): Promise<PodCluster> {
    if (!options.prefix.startsWith('paltest-')) throw new Error(`PodCluster: prefix "${options.prefix}" must start with "paltest-"`);
    const cluster = new PodCluster(await PodNode.create(options.prefix), options);
    try {
      for (const spec of options.pods) await cluster.addPod(spec);
    } catch (error) {
      await cluster.destroy();
      throw error;
    }
    return cluster;
  }

  /** Plumbs a pod and starts its echo server. `listed: false` keeps it out of every snapshot applied. */
  async addPod(spec: ClusterPod, options: { listed?: boolean } = {}): Promise<PodHandle> {
    if (this.definitions.has(spec.name)) throw new Error(`PodCluster: a pod named ${spec.name} already exists`);
    const handle = await this.node.addPod({ namespace: spec.namespace, name: spec.name, ip: spec.ip });
    this.definitions.set(spec.name, spec);
    if (options.listed === false) this.unlisted.add(spec.name);
    this.servers.set(spec.name, await ProbeServer.start(handle.netns, this.ports));
    return handle;
  }

  async removePod(name: string): Promise<void> {
    await this.servers.get(name)?.stop();
    this.servers.delete(name);
    const spec = this.definitions.get(name);
    if (spec !== undefined) await this.node.removePod(spec);
    this.definitions.delete(name);
    this.unlisted.delete(name);
  }

  /** Puts a pod into the snapshots applied from now on, or leaves it out (its interface stays plumbed). */
  setListed(name: string, listed: boolean): void {
    if (!this.definitions.has(name)) throw new Error(`PodCluster: no pod named ${name}`);
    if (listed) this.unlisted.delete(name);
    else this.unlisted.add(name);
  }

  pod(name: string): PodHandle {
    const spec = this.definitions.get(name);
    const handle = spec === undefined ? undefined : this.node.pod(spec.namespace, spec.name);
    if (handle === undefined) throw new Error(`PodCluster: no pod named ${name}`);
    return handle;
  }

  ip(name: string): string {
    return this.pod(name).spec.ip;
  }

  /** The Namespace and Pod objects of every listed pod, as the API server would list them. */
  clusterObjects(): Obj[] {
    const listed = [...this.definitions.values()].filter((d) => !this.unlisted.has(d.name));
    const namespaces = [...new Set(listed.map((d) => d.namespace))].sort();
    return [
      ...namespaces.map((name) => namespace(name, { 'kubernetes.io/metadata.name': name })),
      ...listed.map((d) => pod(d.namespace, d.name, { ip: d.ip, labels: d.labels ?? {}, node: NODE_NAME, ...(d.namedPorts === undefined ? {} : { ports: d.namedPorts }) })),
    ];
  }

  /** Compiles the cluster's objects plus `policies` and applies the result in the node namespace. */
  async apply(policies: readonly Obj[] = []): Promise<ApplyReport> {
    const settings = makeSettings({ nodeName: NODE_NAME, chainPrefix: CHAIN_PREFIX });
    if (!settings.ok) throw new Error(`settings: ${settings.errors.join('; ')}`);
    return this.applier.apply(compile(snapshotOf([...this.clusterObjects(), ...policies]), settings.settings));
  }

  /** Packet counters of each pod's drop rules, as the applier reads them. */
  dropCounters(): Promise<DropCounters[]> {
    return this.applier.readDropCounters();
  }

  /** Reads everything back from the kernel and compares it with what was written; the kinds of drift it had to repair. */
  async drift(): Promise<readonly string[]> {
    return (await this.applier.refresh({ full: true })).repaired.map((f) => f.kind);
  }

  /** Removes every rule and set of palisade's from the node; the next apply starts from a fresh read. */
  async uninstall(): Promise<void> {
    await cleanup({ runner: this.node.netns, prefixes: [CHAIN_PREFIX], backends: [this.backend] });
    this.applier = this.newApplier();
  }

  async outcome(expectation: Expectation): Promise<ProbeOutcome> {
    const to = this.definitions.has(expectation.to) ? this.ip(expectation.to) : expectation.to;
    const result = await probeFrom(this.pod(expectation.from).netns, {
      proto: expectation.proto,
      to,
      port: expectation.port,
      timeoutMs: expectation.reach ? ALLOWED_TIMEOUT_MS : DENIED_TIMEOUT_MS,
      ...(expectation.sourceIp === undefined ? {} : { from: expectation.sourceIp }),
    });
    return result.outcome;
  }

  /** Runs every probe at once and fails listing every one that came out otherwise than expected. */
  async expect(expectations: readonly Expectation[]): Promise<void> {
    const outcomes = await Promise.all(expectations.map((e) => this.outcome(e)));
    const wrong = expectations.flatMap((e, i) => {
      const got = outcomes[i];
      const want: ProbeOutcome = e.reach ? 'ok' : 'timeout';
      return got === want ? [] : [`${describeExpectation(e)}: wanted ${want}, got ${got}`];
    });
    assert.deepEqual(wrong, [], `${wrong.length} of ${expectations.length} probes on ${this.backend} went otherwise than expected`);
  }

  /** Stops every server, then deletes every pod and the node; tries everything, throws what failed. */
  async destroy(): Promise<void> {
    const stops = await Promise.allSettled([...this.servers.values()].map((s) => s.stop()));
    this.servers.clear();
    const failures = stops.flatMap((s) => (s.status === 'rejected' ? [s.reason as unknown] : []));
    try {
      await this.node.destroy();
    } catch (error) {
      failures.push(error);
    }
    if (failures.length > 0) throw new AggregateError(failures, 'PodCluster teardown failed');
  }

  private newApplier(): DataplaneApplier {
    const runner = this.node.netns;
    return new DataplaneApplier({ iptables: new Iptables({ runner, backend: this.backend }), ipset: new Ipset({ runner }), names: new Names(CHAIN_PREFIX) });
  }
}

function describeExpectation(e: Expectation): string {
  return `${e.from}${e.sourceIp === undefined ? '' : ` (as ${e.sourceIp})`} -> ${e.to} ${e.proto}/${e.port}`;
}

/** Every ordered pair of distinct pods, on every protocol and port given. */
export function fullMesh(names: readonly string[], ports: ServedPorts, reach: boolean): Expectation[] {
  const out: Expectation[] = [];
  for (const from of names) for (const to of names) {
    if (from === to) continue;
    for (const port of ports.tcp) out.push({ from, to, proto: 'tcp', port, reach });
    for (const port of ports.udp) out.push({ from, to, proto: 'udp', port, reach });
  }
  return out;
}

/** Null when pod clusters can be built here, else why not. */
export async function podClusterUnavailableReason(): Promise<string | null> {
  const reason = await netnsUnavailableReason();
  if (reason !== null) return reason;
  return (await commandAvailable('sysctl')) ? null : 'missing on PATH: sysctl (apt-get install procps)';
}

/** Mocha fixture: one PodCluster for the enclosing describe, created in before and destroyed in after. */
export function usePodCluster(options: PodClusterOptions): () => PodCluster {
  let current: PodCluster | undefined;
  before(async function () {
    await prepareNamespaces(this, options.prefix, podClusterUnavailableReason);
    current = await PodCluster.create(options);
  });
  after(async () => {
    const cluster = current;
    current = undefined;
    await cluster?.destroy();
  });
  return () => {
    if (current === undefined) throw new Error(`usePodCluster(${options.prefix}): no cluster outside a test (is the suite skipped?)`);
    return current;
  };
}
