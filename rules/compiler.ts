import type { Direction, NamespaceRecord, NodeRecord, PodRecord, PolicyRecord } from './model.js';
import { affects, podCounts, podKey, policyKey } from './model.js';
import type { Chain, Dataplane, EndpointInfo, HookRule, IpSet } from './dataplane.js';
import type { CompilerSettings } from './settings.js';
import type { VethSuffix } from './names.js';
import { Names, vethSuffix } from './names.js';
import { implicitNamespace } from './namespace.js';
import { selectorMatches } from './selector.js';
import { SetIndex } from './set-index.js';
import { addToIndex, removeFromIndex } from './index-map.js';
import type { SetDefinition } from './set-definitions.js';
import { buildPolicyChains, selectorSetDefinitions } from './policy-chains.js';
import { buildAllowChain, buildEndpointChains } from './endpoint-chains.js';
import { buildDispatch, buildEntryChains } from './dispatch.js';
import type { DispatchEntry } from './dispatch.js';
import { AddressClaims } from './address-claims.js';
import { InterfaceOwners } from './interface-owners.js';
import type { Problem } from './problems.js';
import { claimProblems } from './claim-problems.js';
import { PodIndexes } from './pod-indexes.js';

/**
 * The incremental compiler. Changes come in one object at a time; build() returns the whole desired
 * dataplane, recomputing only what the changes touched:
 *
 *   setPod/setNode ► AddressClaims (who owns each address) ─► effective pods
 *   effective pods ► SetIndex (set members) ──────────────────────────────────────┐
 *         └───────► InterfaceOwners (local pods) ─► endpoints ─► endpoint chains ─┤
 *   setNamespace ──► SetIndex (namespaceSelector sets) ────────────────────────────┼─► build(): Dataplane
 *   setPolicy ─────► selection of local endpoints in its namespace ────────────────┤
 *                    └► policy chains + sets, built only while the policy is in use ┘
 *
 * A pod takes part only with an address it owns (address-claims.ts), and gets endpoint chains only
 * with an interface name it owns (interface-owners.ts): what a tenant writes never moves another pod's
 * address or enforcement. As in Felix, a policy is built and installed on a node (its chains, and
 * through them its ipsets) only while it selects a local pod, so a node pays for the policies of its
 * own pods, not for every policy in the cluster. Unchanged chains and sets keep their object identity
 * from one build to the next, so consumers can compare by reference.
 */

export interface CompilerOptions {
  /** How host-side interface names derive from a pod; the VPC CNI's way unless a test injects collisions. */
  readonly vethSuffix?: VethSuffix;
}

/** A policy's compiled form, installed only while in use. */
interface PolicyBuild {
  readonly chains: readonly Chain[];
  readonly sets: ReadonlyMap<string, SetDefinition>;
}

interface PolicyState {
  readonly record: PolicyRecord;
  /** Built on first use after each change; dropped while no local pod uses the policy. */
  build: PolicyBuild | null;
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

/** The closed side of a policy: it keeps isolating what it selects and grants nothing. */
function closedPolicy(record: PolicyRecord): PolicyRecord {
  return { ...record, ingress: [], egress: [], failed: true };
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** A pod's claim counts only while it can take part at all: a finished pod's address may be another's already. */
function claimOf(pod: PodRecord): { ip: string | null; source: PodRecord['ipSource'] } {
  return podCounts(pod) ? { ip: pod.ip, source: pod.ipSource } : { ip: null, source: null };
}

export class DataplaneCompiler {
  readonly settings: CompilerSettings;
  private readonly names: Names;
  private readonly vethSuffix: VethSuffix;
  /** Pods as parsed; `pods` holds them as used, without an address they do not own. */
  private readonly rawPods = new Map<string, PodRecord>();
  private readonly pods = new Map<string, PodRecord>();
  private readonly withoutAddress = new WeakMap<PodRecord, PodRecord>();
  private readonly podsByNamespace = new Map<string, Set<string>>();
  private readonly indexes = new PodIndexes();
  private readonly namespaces = new Map<string, NamespaceRecord>();
  private readonly policies = new Map<string, PolicyState>();
  private readonly policiesByNamespace = new Map<string, Set<string>>();
  private readonly claims = new AddressClaims();
  private readonly interfaces = new InterfaceOwners();
  private readonly endpoints = new Map<string, EndpointState>();
  private readonly sets: SetIndex;
  private readonly dirtyEndpoints = new Set<string>();
  private readonly dirtyPolicies = new Set<string>();
  private readonly installed = new Map<string, PolicyBuild>();
  private readonly overPods = new Map<string, number>();
  private sortedEndpoints: readonly EndpointInfo[] | null = null;
  private dispatchDirty = true;
  private dispatchChainNames: readonly string[] = [];
  private contestedInterfaces = '';
  private readonly chains = new Map<string, Chain>();
  private readonly ipsets = new Map<string, IpSet>();
  private readonly hooks: readonly HookRule[];

  constructor(settings: CompilerSettings, options: CompilerOptions = {}) {
    this.settings = settings;
    this.names = new Names(settings.chainPrefix);
    this.vethSuffix = options.vethSuffix ?? vethSuffix;
    this.sets = new SetIndex({
      podsInNamespace: (ns) => this.podsIn(ns),
      namespaceSize: (ns) => this.podsByNamespace.get(ns)?.size ?? 0,
      namespacesWithPods: () => this.podsByNamespace.keys(),
      namespace: (name) => this.namespace(name),
      podsLabelled: (namespaces, key, values) => {
        const found = this.indexes.labelled(namespaces, key, values);
        return { count: found.count, pods: this.recordsOf(found.keys) };
      },
      podsDeclaring: (protocol, name) => this.recordsOf(this.indexes.declaring(protocol, name)),
    });
    const entry = buildEntryChains(this.names, settings);
    for (const chain of [...entry.chains, buildAllowChain(this.names, settings)]) this.chains.set(chain.name, chain);
    this.hooks = entry.hooks;
  }

  private *podsIn(namespace: string): Iterable<PodRecord> {
    yield* this.recordsOf(this.podsByNamespace.get(namespace) ?? []);
  }

  private *recordsOf(keys: Iterable<string>): Iterable<PodRecord> {
    for (const key of keys) {
      const pod = this.pods.get(key);
      if (pod !== undefined) yield pod;
    }
  }

  private namespace(name: string): NamespaceRecord {
    return this.namespaces.get(name) ?? implicitNamespace(name);
  }

  private isLocal(pod: PodRecord): pod is PodRecord & { readonly ip: string } {
    return pod.nodeName === this.settings.nodeName && podCounts(pod);
  }

  setPod(pod: PodRecord): void {
    const key = podKey(pod);
    this.indexes.update(this.rawPods.get(key), pod);
    this.rawPods.set(key, pod);
    addToIndex(this.podsByNamespace, pod.namespace, key);
    const claim = claimOf(pod);
    for (const affected of this.claims.setPod(key, claim.ip, claim.source)) this.refreshPod(affected);
  }

  deletePod(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    const before = this.rawPods.get(key);
    if (before === undefined) return;
    this.indexes.update(before, undefined);
    this.rawPods.delete(key);
    removeFromIndex(this.podsByNamespace, namespace, key);
    for (const affected of this.claims.setPod(key, null, null)) this.refreshPod(affected);
  }

  /** Node addresses are never a pod's: a pod claiming one is ignored. */
  setNode(node: NodeRecord): void {
    for (const affected of this.claims.setNode(node.name, node.addresses)) this.refreshPod(affected);
  }

  deleteNode(name: string): void {
    for (const affected of this.claims.setNode(name, [])) this.refreshPod(affected);
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
    const users = this.policies.get(key)?.users ?? new Set<string>();
    this.policies.set(key, { record: policy, build: null, users });
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

  /** The pod as used: its record, without the address when its claim lost. */
  private effective(raw: PodRecord, key: string): PodRecord {
    if (raw.ip === null || this.claims.ownedBy(key) === raw.ip) return raw;
    let stripped = this.withoutAddress.get(raw);
    if (stripped === undefined) {
      stripped = { ...raw, ip: null, ipSource: null };
      this.withoutAddress.set(raw, stripped);
    }
    return stripped;
  }

  /** Brings a pod's set memberships, interface ownership and endpoint in line with its record and claims. */
  private refreshPod(key: string): void {
    const raw = this.rawPods.get(key);
    const before = this.pods.get(key);
    const after = raw === undefined ? undefined : this.effective(raw, key);
    if (after === undefined) this.pods.delete(key);
    else this.pods.set(key, after);
    if (before !== after) this.sets.podChanged(before, after);
    const local = after !== undefined && this.isLocal(after);
    const suffix = local ? this.vethSuffix(after.namespace, after.name) : null;
    for (const affected of this.interfaces.set(key, suffix, local ? after.ipSource : null)) this.refreshEndpoint(affected);
  }

  private refreshEndpointsIn(namespace: string): void {
    for (const key of this.podsByNamespace.get(namespace) ?? []) this.refreshEndpoint(key);
  }

  /** Recomputes which policies isolate a local pod; marks its chains (and dispatch) for rebuild when that changed. */
  private refreshEndpoint(key: string): void {
    const pod = this.pods.get(key);
    const before = this.endpoints.get(key);
    if (pod === undefined || !this.isLocal(pod) || !this.interfaces.owns(key)) {
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

  private buildPolicy(policy: PolicyRecord): PolicyBuild {
    const chains: Chain[] = [];
    const sets = new Map<string, SetDefinition>();
    for (const direction of ['ingress', 'egress'] as const) {
      if (!affects(policy, direction)) continue;
      const built = buildPolicyChains(policy, direction, this.names, this.settings.allowMark);
      chains.push(...built.chains);
      for (const [name, definition] of built.sets) sets.set(name, definition);
    }
    return { chains, sets };
  }

  /** Brings what is installed for a policy in line with its current record and whether it is in use. */
  private syncPolicy(key: string): void {
    const state = this.policies.get(key);
    const installed = this.installed.get(key);
    let wanted: PolicyBuild | undefined;
    if (state !== undefined && state.users.size > 0) wanted = state.build ??= this.budgetedBuild(key, state.record);
    else {
      if (state !== undefined) state.build = null;
      this.overPods.delete(key);
    }
    if (installed === wanted) return;
    // Acquire before releasing so a set both versions use is never dropped and rebuilt.
    for (const [name, definition] of wanted?.sets ?? []) this.sets.acquire(name, definition);
    for (const chain of installed?.chains ?? []) this.chains.delete(chain.name);
    for (const name of installed?.sets.keys() ?? []) this.sets.release(name);
    for (const chain of wanted?.chains ?? []) this.chains.set(chain.name, chain);
    if (wanted === undefined) this.installed.delete(key);
    else this.installed.set(key, wanted);
  }

  /**
   * The policy's build, or its closed stand-in when its selector peers would make palisade look at
   * more pods than the budget allows: decided from index counts, before any set is filled, so a policy
   * naming far too many pods costs nothing to refuse.
   */
  private budgetedBuild(key: string, record: PolicyRecord): PolicyBuild {
    const cost = this.selectorCost(record);
    if (cost > this.settings.policyBudget.selectorPods) {
      this.overPods.set(key, cost);
      return this.buildPolicy(closedPolicy(record));
    }
    this.overPods.delete(key);
    return this.buildPolicy(record);
  }

  private selectorCost(record: PolicyRecord): number {
    let cost = 0;
    for (const definition of selectorSetDefinitions(record)) cost += this.sets.candidateCount(definition);
    return cost;
  }

  /**
   * Policies in use whose selector cost crossed the budget either way since they were installed
   * (pods came or went) are rebuilt. The daemon calls this on every refresh; the next build applies
   * it. Returns whether anything changed.
   */
  recheckBudgets(): boolean {
    let changed = false;
    for (const [key, state] of this.policies) {
      if (state.users.size === 0) continue;
      const cost = this.selectorCost(state.record);
      const over = cost > this.settings.policyBudget.selectorPods;
      if (over === this.overPods.has(key)) {
        if (over) this.overPods.set(key, cost);
        continue;
      }
      state.build = null;
      this.dirtyPolicies.add(key);
      changed = true;
    }
    return changed;
  }

  /** Policies installed closed because their selector peers would make palisade look at too many pods, with how many. */
  selectorPodsOverBudget(): ReadonlyMap<string, number> {
    return this.overPods;
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
    const contested = this.interfaces.contested().join(',');
    if (contested !== this.contestedInterfaces) {
      this.contestedInterfaces = contested;
      this.dispatchDirty = true;
    }
    if (this.dispatchDirty) this.rebuildDispatch();
    return {
      ipsets: new Map(this.ipsets),
      chains: new Map(this.chains),
      hooks: this.hooks,
      endpoints: this.endpointList(),
    };
  }

  /** Pods whose address or interface claim palisade does not use, and policies over budget, and why. */
  problems(): Problem[] {
    const policies: Problem[] = [...this.overPods].sort(([a], [b]) => (a < b ? -1 : 1)).map(([key, pods]) => {
      const record = this.policies.get(key)!.record;
      return {
        severity: 'error',
        object: { kind: 'NetworkPolicy', namespace: record.namespace, name: record.name },
        field: 'spec',
        message: `over palisade's per-policy budget (its selector peers would have palisade look at ${pods} pods, the limit is ${this.settings.policyBudget.selectorPods}): the policy isolates what it selects and grants nothing; checked again on every refresh`,
      };
    });
    return [...claimProblems(this.claims.lostClaims(), this.interfaces.conflicts(), this.settings.interfacePrefixes), ...policies];
  }

  /**
   * Addresses owned on kubelet's word (status.podIPs), with the pod owning each. Only changes of
   * these can say that a flow tracked for an address belongs to another pod now: annotation claims
   * are any tenant's to write, and must not be able to trigger anything on other pods' flows.
   */
  statusAddressOwners(): Map<string, string> {
    const owners = new Map<string, string>();
    for (const [key, pod] of this.pods) if (pod.ipSource === 'status' && podCounts(pod)) owners.set(pod.ip, key);
    return owners;
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
    const slash = key.indexOf('/');
    const [namespace, name] = [key.slice(0, slash), key.slice(slash + 1)];
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
    const contested = this.interfaces.contested();
    const entries = (side: 'from' | 'to'): DispatchEntry[] => [
      ...[...this.endpoints.values()].flatMap(({ pod, info }) =>
        info.interfaces.map((iface) => ({ iface, target: side === 'from' ? info.fromChain : info.toChain, pod: podKey(pod) }))),
      ...contested.flatMap((suffix) => this.settings.interfacePrefixes.map((prefix) => ({ iface: prefix + suffix, target: null, pod: 'claimed by several pods' }))),
    ];
    const chains = [...buildDispatch('from', entries('from'), this.names, this.settings), ...buildDispatch('to', entries('to'), this.names, this.settings)];
    for (const chain of chains) this.chains.set(chain.name, chain);
    this.dispatchChainNames = chains.map((c) => c.name);
    this.dispatchDirty = false;
  }

  private endpointInfo(pod: PodRecord & { readonly ip: string }, ingress: readonly string[], egress: readonly string[]): EndpointInfo {
    const suffix = this.vethSuffix(pod.namespace, pod.name);
    return {
      namespace: pod.namespace,
      name: pod.name,
      ip: pod.ip,
      interfaces: this.settings.interfacePrefixes.map((prefix) => prefix + suffix),
      isolatedIngress: ingress.length > 0,
      isolatedEgress: egress.length > 0,
      ingressPolicies: ingress,
      egressPolicies: egress,
      toChain: this.names.endpoint('to', pod.namespace, pod.name),
      fromChain: this.names.endpoint('from', pod.namespace, pod.name),
    };
  }
}
