import type { Direction, NamespaceRecord, PodRecord, PolicyRecord } from './model.js';
import { affects, podCounts, podKey, policyKey } from './model.js';
import type { Chain, Dataplane, EndpointInfo, HookRule, IpSet } from './dataplane.js';
import type { CompilerSettings } from './settings.js';
import { Names, hostInterfaceName } from './names.js';
import { implicitNamespace } from './namespace.js';
import { selectorMatches } from './selector.js';
import { SetIndex } from './set-index.js';
import { addToIndex, removeFromIndex } from './index-map.js';
import type { SetDefinition } from './set-definitions.js';
import { buildPolicyChain } from './policy-chains.js';
import { buildAllowChain, buildEndpointChains } from './endpoint-chains.js';
import { buildDispatch, buildEntryChains } from './dispatch.js';

/**
 * The incremental compiler. Changes come in one object at a time; build() returns the whole desired
 * dataplane, recomputing only what the changes touched:
 *
 *   setPod ──────► SetIndex (set members) ─────────────────────────┐
 *      └─────────► local endpoint selection ─► endpoint chains ────┤
 *   setNamespace ► SetIndex (namespaceSelector sets) ──────────────┼─► build(): Dataplane
 *   setPolicy ───► policy chains + set references ─────────────────┤
 *      └─────────► selection of local endpoints in its namespace ──┘
 *
 * As in Felix, a policy is installed on a node (its chains, and through them its ipsets) only while it
 * selects a local pod, so a node carries the policies of its own pods, not of the whole cluster.
 * Dispatch chains are rebuilt only when the set of local endpoints changes. Unchanged chains and sets
 * keep their object identity from one build to the next, so consumers can compare by reference.
 */

/** A policy's compiled form: built on every change of the policy, installed only while in use. */
interface PolicyBuild {
  readonly chains: readonly Chain[];
  readonly sets: ReadonlyMap<string, SetDefinition>;
}

interface PolicyState {
  readonly record: PolicyRecord;
  readonly build: PolicyBuild;
  /** Local endpoints the policy selects; the policy's chains and sets exist on this node only while there are some. */
  readonly users: Set<string>;
}

interface EndpointState {
  readonly pod: PodRecord & { readonly ip: string };
  readonly ingress: readonly string[];
  readonly egress: readonly string[];
  /** Derived once per change of the endpoint: names cost hashes, and build() runs on every sync. */
  readonly info: EndpointInfo;
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

export class DataplaneCompiler {
  readonly settings: CompilerSettings;
  private readonly names: Names;
  private readonly pods = new Map<string, PodRecord>();
  private readonly podsByNamespace = new Map<string, Set<string>>();
  private readonly namespaces = new Map<string, NamespaceRecord>();
  private readonly policies = new Map<string, PolicyState>();
  private readonly policiesByNamespace = new Map<string, Set<string>>();
  private readonly endpoints = new Map<string, EndpointState>();
  private readonly sets: SetIndex;
  private readonly dirtyEndpoints = new Set<string>();
  private readonly dirtyPolicies = new Set<string>();
  private readonly installed = new Map<string, PolicyBuild>();
  private sortedEndpoints: readonly EndpointInfo[] | null = null;
  private dispatchDirty = true;
  private dispatchChainNames: readonly string[] = [];
  private readonly chains = new Map<string, Chain>();
  private readonly ipsets = new Map<string, IpSet>();
  private readonly hooks: readonly HookRule[];

  constructor(settings: CompilerSettings) {
    this.settings = settings;
    this.names = new Names(settings.chainPrefix);
    this.sets = new SetIndex({
      allPods: () => this.pods.values(),
      podsInNamespace: (ns) => this.podsIn(ns),
      namespacesWithPods: () => this.podsByNamespace.keys(),
      namespace: (name) => this.namespace(name),
    });
    const entry = buildEntryChains(this.names, settings);
    for (const chain of [...entry.chains, buildAllowChain(this.names, settings)]) this.chains.set(chain.name, chain);
    this.hooks = entry.hooks;
  }

  private *podsIn(namespace: string): Iterable<PodRecord> {
    for (const key of this.podsByNamespace.get(namespace) ?? []) yield this.pods.get(key)!;
  }

  private namespace(name: string): NamespaceRecord {
    return this.namespaces.get(name) ?? implicitNamespace(name);
  }

  private isLocal(pod: PodRecord): pod is PodRecord & { readonly ip: string } {
    return pod.nodeName === this.settings.nodeName && podCounts(pod);
  }

  setPod(pod: PodRecord): void {
    const key = podKey(pod);
    const before = this.pods.get(key);
    this.pods.set(key, pod);
    addToIndex(this.podsByNamespace, pod.namespace, key);
    this.sets.podChanged(before, pod);
    this.refreshEndpoint(key);
  }

  deletePod(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    const before = this.pods.get(key);
    if (before === undefined) return;
    this.pods.delete(key);
    removeFromIndex(this.podsByNamespace, namespace, key);
    this.sets.podChanged(before, undefined);
    this.refreshEndpoint(key);
  }

  setNamespace(namespace: NamespaceRecord): void {
    this.namespaces.set(namespace.name, namespace);
    this.sets.namespaceChanged(namespace.name);
  }

  deleteNamespace(name: string): void {
    if (this.namespaces.delete(name)) this.sets.namespaceChanged(name);
  }

  setPolicy(policy: PolicyRecord): void {
    const key = policyKey(policy);
    const chains: Chain[] = [];
    const sets = new Map<string, SetDefinition>();
    for (const direction of ['ingress', 'egress'] as const) {
      if (!affects(policy, direction)) continue;
      const built = buildPolicyChain(policy, direction, this.names);
      chains.push(built.chain);
      for (const [name, definition] of built.sets) sets.set(name, definition);
    }
    const users = this.policies.get(key)?.users ?? new Set<string>();
    this.policies.set(key, { record: policy, build: { chains, sets }, users });
    addToIndex(this.policiesByNamespace, policy.namespace, key);
    this.dirtyPolicies.add(key);
    this.refreshEndpointsIn(policy.namespace);
  }

  deletePolicy(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    if (!this.policies.delete(key)) return;
    removeFromIndex(this.policiesByNamespace, namespace, key);
    this.dirtyPolicies.add(key);
    this.refreshEndpointsIn(namespace);
  }

  /** Brings what is installed for a policy in line with its current build and whether it is in use. */
  private syncPolicy(key: string): void {
    const state = this.policies.get(key);
    const installed = this.installed.get(key);
    const wanted = state !== undefined && state.users.size > 0 ? state.build : undefined;
    if (installed === wanted) return;
    // Acquire before releasing so a set both versions use is never dropped and rebuilt.
    for (const [name, definition] of wanted?.sets ?? []) this.sets.acquire(name, definition);
    for (const chain of installed?.chains ?? []) this.chains.delete(chain.name);
    for (const name of installed?.sets.keys() ?? []) this.sets.release(name);
    for (const chain of wanted?.chains ?? []) this.chains.set(chain.name, chain);
    if (wanted === undefined) this.installed.delete(key);
    else this.installed.set(key, wanted);
  }

  private refreshEndpointsIn(namespace: string): void {
    for (const key of this.podsByNamespace.get(namespace) ?? []) this.refreshEndpoint(key);
  }

  /** Recomputes which policies isolate a local pod; marks its chains (and dispatch) for rebuild when that changed. */
  private refreshEndpoint(key: string): void {
    const pod = this.pods.get(key);
    const before = this.endpoints.get(key);
    if (pod === undefined || !this.isLocal(pod)) {
      if (before !== undefined) {
        this.setUsers(key, before, undefined);
        this.endpoints.delete(key);
        this.dirtyEndpoints.add(key);
        this.sortedEndpoints = null;
        this.dispatchDirty = true;
      }
      return;
    }
    const selecting = [...(this.policiesByNamespace.get(pod.namespace) ?? [])]
      .map((k) => this.policies.get(k)!.record)
      .filter((policy) => selectorMatches(policy.podSelector, pod.labels))
      .sort((a, b) => (policyKey(a) < policyKey(b) ? -1 : 1));
    const ingress = selecting.filter((p) => p.affectsIngress).map(policyKey);
    const egress = selecting.filter((p) => p.affectsEgress).map(policyKey);
    if (before !== undefined && before.pod.ip === pod.ip && sameList(before.ingress, ingress) && sameList(before.egress, egress)) {
      this.endpoints.set(key, { ...before, pod });
      return;
    }
    const next: EndpointState = { pod, ingress, egress, info: this.endpointInfo(pod, ingress, egress) };
    if (before === undefined) this.dispatchDirty = true;
    this.setUsers(key, before, next);
    this.endpoints.set(key, next);
    this.dirtyEndpoints.add(key);
    this.sortedEndpoints = null;
  }

  private setUsers(endpoint: string, before: EndpointState | undefined, after: EndpointState | undefined): void {
    const old = new Set([...(before?.ingress ?? []), ...(before?.egress ?? [])]);
    const now = new Set([...(after?.ingress ?? []), ...(after?.egress ?? [])]);
    for (const policy of old) {
      if (now.has(policy)) continue;
      this.policies.get(policy)?.users.delete(endpoint);
      this.dirtyPolicies.add(policy);
    }
    for (const policy of now) {
      if (old.has(policy)) continue;
      this.policies.get(policy)!.users.add(endpoint);
      this.dirtyPolicies.add(policy);
    }
  }

  build(): Dataplane {
    for (const key of this.dirtyPolicies) this.syncPolicy(key);
    this.dirtyPolicies.clear();
    for (const [name, set] of this.sets.takeChanges()) {
      if (set === null) this.ipsets.delete(name);
      else this.ipsets.set(name, set);
    }
    for (const key of this.dirtyEndpoints) this.rebuildEndpoint(key);
    this.dirtyEndpoints.clear();
    if (this.dispatchDirty) this.rebuildDispatch();
    return {
      ipsets: new Map(this.ipsets),
      chains: new Map(this.chains),
      hooks: this.hooks,
      endpoints: this.endpointList(),
    };
  }

  /** Sorted by namespace/name; re-sorted only when endpoints changed. */
  private endpointList(): readonly EndpointInfo[] {
    if (this.sortedEndpoints === null) {
      this.sortedEndpoints = [...this.endpoints.values()].map((e) => e.info)
        .sort((a, b) => (`${a.namespace}/${a.name}` < `${b.namespace}/${b.name}` ? -1 : 1));
    }
    return this.sortedEndpoints;
  }

  private rebuildEndpoint(key: string): void {
    const [namespace = '', name = ''] = key.split('/');
    this.chains.delete(this.names.endpoint('from', namespace, name));
    this.chains.delete(this.names.endpoint('to', namespace, name));
    const state = this.endpoints.get(key);
    if (state === undefined) return;
    const refs = (direction: Direction, keys: readonly string[]) => keys.map((policy) => {
      const record = this.policies.get(policy)!.record;
      return { policy, chain: this.names.policy(direction, record.namespace, record.name) };
    });
    const chains = buildEndpointChains({
      namespace: state.pod.namespace,
      name: state.pod.name,
      ip: state.pod.ip,
      ingress: { isolated: state.ingress.length > 0, chains: refs('ingress', state.ingress) },
      egress: { isolated: state.egress.length > 0, chains: refs('egress', state.egress) },
    }, this.names, this.settings);
    this.chains.set(chains.from.name, chains.from);
    this.chains.set(chains.to.name, chains.to);
  }

  private rebuildDispatch(): void {
    for (const name of this.dispatchChainNames) this.chains.delete(name);
    const entries = (side: 'from' | 'to') => [...this.endpoints.values()].flatMap(({ pod, info }) =>
      info.interfaces.map((iface) => ({ iface, target: side === 'from' ? info.fromChain : info.toChain, pod: podKey(pod) })));
    const chains = [...buildDispatch('from', entries('from'), this.names, this.settings), ...buildDispatch('to', entries('to'), this.names, this.settings)];
    for (const chain of chains) this.chains.set(chain.name, chain);
    this.dispatchChainNames = chains.map((c) => c.name);
    this.dispatchDirty = false;
  }

  private endpointInfo(pod: PodRecord & { readonly ip: string }, ingress: readonly string[], egress: readonly string[]): EndpointInfo {
    return {
      namespace: pod.namespace,
      name: pod.name,
      ip: pod.ip,
      interfaces: this.settings.interfacePrefixes.map((prefix) => hostInterfaceName(prefix, pod.namespace, pod.name)),
      isolatedIngress: ingress.length > 0,
      isolatedEgress: egress.length > 0,
      ingressPolicies: ingress,
      egressPolicies: egress,
      toChain: this.names.endpoint('to', pod.namespace, pod.name),
      fromChain: this.names.endpoint('from', pod.namespace, pod.name),
    };
  }
}
