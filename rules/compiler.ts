import type { ClusterPolicyRecord, ClusterPodSelection, Direction, NamespaceRecord, NodeRecord, PodRecord, PolicyRecord } from './model.js';
import { podCounts, podKey, policyKey } from './model.js';
import type { Chain, Dataplane, EndpointInfo, HookRule, IpSet } from './dataplane.js';
import type { CompilerSettings } from './settings.js';
import type { VethSuffix } from './names.js';
import { interfaceIdentity, Names, vethSuffix } from './names.js';
import { implicitNamespace } from './namespace.js';
import { selectorMatches } from './selector.js';
import { SetIndex } from './set-index.js';
import { addToIndex, removeFromIndex } from './index-map.js';
import { PolicyInstaller } from './policy-installer.js';
import { buildAllowChain, buildEndpointChains } from './endpoint-chains.js';
import { buildDispatch, buildEntryChains } from './dispatch.js';
import type { DispatchEntry } from './dispatch.js';
import { AddressClaims } from './address-claims.js';
import { claimKey, claimPod, InterfaceOwners } from './interface-owners.js';
import type { DirectionPolicies, ExtraInterface } from './endpoint-chains.js';
import { dropLogSource } from './drop-log.js';
import type { DropLogSource } from './drop-log.js';
import type { Problem } from './problems.js';
import { claimProblems } from './claim-problems.js';
import { PodIndexes } from './pod-indexes.js';
import { ClusterPolicyInstaller } from './cluster-policy-installer.js';
import type { DirectionTiers } from './endpoint-chains.js';
import type { TierWalk } from './cluster-tier-chains.js';
import { buildTierChain } from './cluster-tier-chains.js';
import { tierMarks } from './settings.js';

/**
 * The incremental compiler. Changes come in one object at a time; build() returns the whole desired
 * dataplane, recomputing only what the changes touched:
 *
 *   setPod/setNode ► AddressClaims (who owns each address) ─► effective pods
 *   effective pods ► SetIndex (set members) ──────────────────────────────────────┐
 *         └───────► InterfaceOwners (local pods) ─► endpoints ─► endpoint chains ─┤
 *   setNamespace ──► SetIndex (namespaceSelector sets) ────────────────────────────┼─► build(): Dataplane
 *   setPolicy ─────► selection of local endpoints in its namespace ────────────────┤
 *                    └► PolicyInstaller: chains + sets, built only while in use ───┘
 *
 * A pod takes part only with an address it owns (address-claims.ts), and gets endpoint chains only
 * with an interface name it owns (interface-owners.ts): what a tenant writes never moves another pod's
 * address or enforcement. A policy is built and installed (policy-installer.ts) only while it selects
 * a local pod. Unchanged chains and sets keep their object identity
 * from one build to the next, so consumers can compare by reference.
 *
 * A multi-NIC pod's further interfaces are named by the VPC CNI after "<pod>.<index>", and their
 * addresses are in no Pod field: setNodeRoutes() hands in the node's routes, and each further
 * interface a route leads to becomes a claim like any interface name (so it can never take another
 * pod's). Until its route is seen, such an interface is unknown and dropped.
 */

/** More network cards than any EC2 instance has: where the search for a pod's further interfaces stops at the latest. */
const MAX_POD_INTERFACES = 64;

/** A further interface of a local pod, found in the node's routes. */
interface ExtraClaim extends ExtraInterface {
  readonly index: number;
  readonly suffix: string;
}

export interface CompilerOptions {
  /** How host-side interface names derive from a pod; the VPC CNI's way unless a test injects collisions. */
  readonly vethSuffix?: VethSuffix;
}

interface EndpointState {
  readonly pod: PodRecord & { readonly ip: string };
  /** Enforced policies selecting the pod, per direction. */
  readonly ingress: readonly string[];
  readonly egress: readonly string[];
  /** Audit policies selecting it, per direction. */
  readonly ingressAudit: readonly string[];
  readonly egressAudit: readonly string[];
  /** ClusterNetworkPolicies selecting the pod, per direction and tier, in the order they are walked. */
  readonly cluster: ClusterSelection;
  /** Further interfaces the pod owns (multi-NIC). */
  readonly extra: readonly ExtraInterface[];
  /** Derived once per change of the endpoint: names cost hashes, and build() runs on every sync. */
  readonly info: EndpointInfo;
}

/** Names of the ClusterNetworkPolicies selecting a pod, by direction and tier, each list in walk order. */
export interface ClusterSelection {
  readonly ingressAdmin: readonly string[];
  readonly ingressBaseline: readonly string[];
  readonly egressAdmin: readonly string[];
  readonly egressBaseline: readonly string[];
  /** The lists, compared at once. */
  readonly signature: string;
}

const NO_CLUSTER_SELECTION: ClusterSelection = { ingressAdmin: [], ingressBaseline: [], egressAdmin: [], egressBaseline: [], signature: '' };

function sameSelection(a: ClusterSelection, b: ClusterSelection): boolean {
  return a.signature === b.signature;
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

function sameExtras(a: readonly ExtraInterface[], b: readonly ExtraInterface[]): boolean {
  return a.length === b.length && a.every((v, i) => v.iface === b[i]!.iface && v.address === b[i]!.address);
}

/** A pod's claim counts only while it can take part at all: a finished pod's address may be another's already. */
function claimOf(pod: PodRecord): { ip: string | null; source: PodRecord['ipSource'] } {
  return podCounts(pod) ? { ip: pod.ip, source: pod.ipSource } : { ip: null, source: null };
}

export class DataplaneCompiler {
  readonly settings: CompilerSettings;
  private readonly names: Names;
  private readonly vethSuffix: VethSuffix;
  /** Pods as parsed. */
  private readonly rawPods = new Map<string, PodRecord>();
  /** Pods as used where that differs from as parsed: without an address they do not own (few). */
  private readonly stripped = new Map<string, PodRecord>();
  private readonly withoutAddress = new WeakMap<PodRecord, PodRecord>();
  /** Addresses that lost their kubelet-published owner since the last takeOwnerChanges(), with that owner. */
  private readonly previousOwners = new Map<string, string>();
  private readonly podsByNamespace = new Map<string, Set<string>>();
  private readonly indexes = new PodIndexes();
  private readonly namespaces = new Map<string, NamespaceRecord>();
  private readonly policies: PolicyInstaller;
  private readonly policiesByNamespace = new Map<string, Set<string>>();
  /** ClusterNetworkPolicies, and which are installed; their walk order (tier, priority, name) once sorted. */
  private readonly clusterPolicies: ClusterPolicyInstaller;
  private clusterOrder: readonly ClusterPolicyRecord[] | null = null;
  /** The tier walks each local pod uses (chain names), released when its chains are rebuilt. */
  private readonly tierChainNames = new Map<string, readonly string[]>();
  /** Tier walks in use, shared by the pods whose walk they are, with how many use each. */
  private readonly tierGroups = new Map<string, { readonly walk: TierWalk; refs: number }>();
  /** Walks whose chain must be written again: new ones, and those of a policy whose priority may have changed. */
  private readonly dirtyTierGroups = new Set<string>();
  private readonly nodes = new Map<string, NodeRecord>();
  /** Local pods a ClusterNetworkPolicy change may have selected or let go, looked at once in build() however many changed. */
  private readonly clusterRefresh = new Set<string>();
  private readonly claims = new AddressClaims();
  private readonly interfaces = new InterfaceOwners();
  private readonly endpoints = new Map<string, EndpointState>();
  /** Host routes on this node: each interface and the addresses routed to it alone. */
  private routes: ReadonlyMap<string, readonly string[]> = new Map();
  /** Local multi-NIC pods' further interfaces that a route leads to, by pod. */
  private readonly extras = new Map<string, readonly ExtraClaim[]>();
  /** Local multi-NIC pods, whose further interfaces are looked for again when the routes change. */
  private readonly multiNicPods = new Set<string>();
  private readonly extraChainNames = new Map<string, readonly string[]>();
  private readonly sets: SetIndex;
  private readonly dirtyEndpoints = new Set<string>();
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
      nodes: () => this.nodes.values(),
    });
    this.policies = new PolicyInstaller(settings, this.names, this.sets, this.chains);
    this.clusterPolicies = new ClusterPolicyInstaller(settings, this.names, this.sets, this.chains);
    const entry = buildEntryChains(this.names, settings);
    for (const chain of [...entry.chains, buildAllowChain(this.names, settings)]) this.chains.set(chain.name, chain);
    this.hooks = entry.hooks;
  }

  private *podsIn(namespace: string): Iterable<PodRecord> {
    yield* this.recordsOf(this.podsByNamespace.get(namespace) ?? []);
  }

  private *recordsOf(keys: Iterable<string>): Iterable<PodRecord> {
    for (const key of keys) {
      const pod = this.usedPod(key);
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
    const previous = this.rawPods.get(key);
    const before = previous === undefined ? undefined : this.usedPod(key);
    this.indexes.update(previous, pod);
    this.rawPods.set(key, pod);
    addToIndex(this.podsByNamespace, pod.namespace, key);
    const claim = claimOf(pod);
    for (const affected of this.claims.setPod(key, claim.ip, claim.source)) this.refreshPod(affected, affected === key ? { before } : null);
  }

  deletePod(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    const previous = this.rawPods.get(key);
    if (previous === undefined) return;
    const before = this.usedPod(key);
    this.indexes.update(previous, undefined);
    this.rawPods.delete(key);
    removeFromIndex(this.podsByNamespace, namespace, key);
    for (const affected of this.claims.setPod(key, null, null)) this.refreshPod(affected, affected === key ? { before } : null);
  }

  /** The pod as used now (its record, or that record without the address it does not own). */
  private usedPod(key: string): PodRecord | undefined {
    return this.stripped.get(key) ?? this.rawPods.get(key);
  }

  /** Node addresses are never a pod's: a pod claiming one is ignored. */
  setNode(node: NodeRecord): void {
    this.nodes.set(node.name, node);
    this.sets.nodeChanged(node.name, node);
    for (const affected of this.claims.setNode(node.name, node.addresses)) this.refreshPod(affected, null);
  }

  deleteNode(name: string): void {
    this.nodes.delete(name);
    this.sets.nodeChanged(name, undefined);
    for (const affected of this.claims.setNode(name, [])) this.refreshPod(affected, null);
  }

  setNamespace(namespace: NamespaceRecord): void {
    this.namespaces.set(namespace.name, namespace);
    this.sets.namespaceChanged(namespace.name);
    // A ClusterNetworkPolicy's subject may select by namespace labels.
    if (this.clusterPolicies.size > 0) this.refreshEndpointsIn(namespace.name);
  }

  deleteNamespace(name: string): void {
    if (!this.namespaces.delete(name)) return;
    this.sets.namespaceChanged(name);
    if (this.clusterPolicies.size > 0) this.refreshEndpointsIn(name);
  }

  /** A ClusterNetworkPolicy may select pods of any namespace: the local pods it selected or selects are looked at again. */
  setClusterPolicy(policy: ClusterPolicyRecord): void {
    const before = this.clusterPolicies.record(policy.name);
    this.clusterPolicies.set(policy);
    this.clusterOrder = null;
    // Its priority may have changed, which the walks that hold it say (a tie made or broken), not the pods' chains.
    for (const [name, group] of this.tierGroups) if (group.walk.policies.some((p) => p.name === policy.name)) this.dirtyTierGroups.add(name);
    // Only the subject, tier, priority and which directions have rules decide whom it selects and in what walk order;
    // a change of its rules alone is its own chains' (the installer rebuilds them).
    if (before !== undefined && before.tier === policy.tier && before.priority === policy.priority
      && (before.ingress.length > 0) === (policy.ingress.length > 0) && (before.egress.length > 0) === (policy.egress.length > 0)
      && JSON.stringify(before.subject) === JSON.stringify(policy.subject)) return;
    this.refreshEndpointsSelectedBy(before, policy);
  }

  deleteClusterPolicy(name: string): void {
    const before = this.clusterPolicies.record(name);
    if (!this.clusterPolicies.delete(name)) return;
    this.clusterOrder = null;
    this.refreshEndpointsSelectedBy(before, undefined);
  }

  /** A ClusterNetworkPolicy's record as parsed. */
  clusterPolicy(name: string): ClusterPolicyRecord | undefined {
    return this.clusterPolicies.record(name);
  }

  /** Local pods without an endpoint yet are not affected: they get one, with their selection, when they can take part. */
  private refreshEndpointsSelectedBy(...versions: readonly (ClusterPolicyRecord | undefined)[]): void {
    for (const [key, state] of this.endpoints) {
      if (versions.some((v) => v !== undefined && this.subjectSelects(v.subject, state.pod))) this.clusterRefresh.add(key);
    }
  }

  private orderedClusterPolicies(): readonly ClusterPolicyRecord[] {
    this.clusterOrder ??= [...this.clusterPolicies.records()]
      .sort((a, b) => (a.tier === b.tier ? 0 : a.tier === 'Admin' ? -1 : 1) || a.priority - b.priority || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return this.clusterOrder;
  }

  private subjectSelects(subject: ClusterPodSelection, pod: PodRecord): boolean {
    if (!selectorMatches(subject.namespaceSelector, this.namespace(pod.namespace).labels)) return false;
    return subject.kind === 'namespaces' || selectorMatches(subject.podSelector, pod.labels);
  }

  private clusterSelection(pod: PodRecord): ClusterSelection {
    if (this.clusterPolicies.size === 0) return NO_CLUSTER_SELECTION;
    const selection = { ingressAdmin: [] as string[], ingressBaseline: [] as string[], egressAdmin: [] as string[], egressBaseline: [] as string[] };
    const signature: string[] = [];
    for (const policy of this.orderedClusterPolicies()) {
      if (pod.hostNetwork || !this.subjectSelects(policy.subject, pod)) continue;
      if (policy.ingress.length > 0) (policy.tier === 'Admin' ? selection.ingressAdmin : selection.ingressBaseline).push(policy.name);
      if (policy.egress.length > 0) (policy.tier === 'Admin' ? selection.egressAdmin : selection.egressBaseline).push(policy.name);
      signature.push(`${policy.tier}:${policy.ingress.length > 0 ? 'i' : ''}${policy.egress.length > 0 ? 'e' : ''}:${policy.name}`);
    }
    // Which policies, not in which order: the order is the shared walks' to keep (syncTierGroups).
    return { ...selection, signature: signature.sort().join('\u0000') };
  }

  setPolicy(policy: PolicyRecord): void {
    const key = policyKey(policy);
    this.policies.set(key, policy);
    addToIndex(this.policiesByNamespace, policy.namespace, key);
    this.refreshEndpointsIn(policy.namespace);
  }

  deletePolicy(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    if (!this.policies.delete(key)) return;
    removeFromIndex(this.policiesByNamespace, namespace, key);
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

  /**
   * Brings a pod's set memberships, interface ownership and endpoint in line with its record and
   * claims. `changed` carries how the pod was used before its record changed; null when only its
   * claim's outcome may have changed (its record is the same).
   */
  private refreshPod(key: string, changed: { before: PodRecord | undefined } | null): void {
    const raw = this.rawPods.get(key);
    const before = changed === null ? this.usedPod(key) : changed.before;
    const after = raw === undefined ? undefined : this.effective(raw, key);
    if (after !== undefined && after !== raw) this.stripped.set(key, after);
    else this.stripped.delete(key);
    // An address this pod owned on kubelet's word and no longer does: remember who had it.
    const owned = (pod: PodRecord | undefined): string | null => (pod !== undefined && pod.ipSource === 'status' && podCounts(pod) ? pod.ip : null);
    const left = owned(before);
    if (left !== null && left !== owned(after) && !this.previousOwners.has(left)) this.previousOwners.set(left, key);
    if (before !== after) this.sets.podChanged(before, after);
    const local = after !== undefined && this.isLocal(after);
    const suffix = local ? this.vethSuffix(after.namespace, after.name) : null;
    const affected = new Set(this.interfaces.set(key, suffix, local ? after.ipSource : null));
    if (local && after.multiNic) this.multiNicPods.add(key);
    else this.multiNicPods.delete(key);
    for (const claim of this.setExtras(key, local && after.multiNic ? after : undefined)) affected.add(claim);
    for (const pod of new Set([...affected].map(claimPod))) this.refreshEndpoint(pod);
  }

  /**
   * The node's host routes: every interface with the addresses routed to it (scope link, one
   * address each). Only multi-NIC pods' further interfaces are read from them.
   */
  setNodeRoutes(routes: ReadonlyMap<string, readonly string[]>): void {
    this.routes = routes;
    const affected = new Set<string>();
    for (const key of this.multiNicPods) {
      const pod = this.usedPod(key);
      if (pod !== undefined && this.isLocal(pod)) for (const claim of this.setExtras(key, pod)) affected.add(claimPod(claim));
    }
    for (const pod of affected) this.refreshEndpoint(pod);
  }

  /** Re-derives a pod's further-interface claims; returns the claims whose ownership may have changed. */
  private setExtras(key: string, pod: (PodRecord & { readonly ip: string }) | undefined): string[] {
    const before = this.extras.get(key) ?? [];
    const next = pod === undefined ? [] : this.findExtras(pod);
    if (before.length === next.length && before.every((b, i) => b.iface === next[i]!.iface && b.address === next[i]!.address && b.suffix === next[i]!.suffix)) return [];
    const affected: string[] = [key];
    for (const old of before) if (!next.some((n) => n.index === old.index)) affected.push(...this.interfaces.set(claimKey(key, old.index), null, null));
    for (const claim of next) affected.push(...this.interfaces.set(claimKey(key, claim.index), claim.suffix, pod!.ipSource));
    if (next.length === 0) this.extras.delete(key);
    else this.extras.set(key, next);
    return affected;
  }

  /** Interface 1, 2, ... for as long as a route leads to one under any of the prefixes. */
  private findExtras(pod: PodRecord & { readonly ip: string }): ExtraClaim[] {
    const found: ExtraClaim[] = [];
    for (let index = 1; index < MAX_POD_INTERFACES && this.routes.size > 0; index++) {
      const suffix = this.vethSuffix(pod.namespace, interfaceIdentity(pod.name, index));
      const iface = this.settings.interfacePrefixes.map((prefix) => prefix + suffix).find((name) => this.routes.has(name));
      if (iface === undefined) break;
      // The VPC CNI routes one address to each interface; any other would fail the interface's anti-spoofing.
      const address = [...this.routes.get(iface)!].sort()[0]!;
      found.push({ index, suffix, iface, address });
    }
    return found;
  }

  private refreshEndpointsIn(namespace: string): void {
    for (const key of this.podsByNamespace.get(namespace) ?? []) this.refreshEndpoint(key);
  }

  /** Recomputes which policies isolate a local pod; marks its chains (and dispatch) for rebuild when that changed. */
  private refreshEndpoint(key: string): void {
    const pod = this.usedPod(key);
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
      .map((k) => this.policies.record(k)!)
      .filter((policy) => selectorMatches(policy.podSelector, pod.labels))
      .sort((a, b) => (policyKey(a) < policyKey(b) ? -1 : 1));
    const enforced = selecting.filter((p) => !p.audit);
    const staged = selecting.filter((p) => p.audit);
    const ingress = enforced.filter((p) => p.affectsIngress).map(policyKey);
    const egress = enforced.filter((p) => p.affectsEgress).map(policyKey);
    const ingressAudit = staged.filter((p) => p.affectsIngress).map(policyKey);
    const egressAudit = staged.filter((p) => p.affectsEgress).map(policyKey);
    const extra = (this.extras.get(key) ?? []).filter((claim) => this.interfaces.owner(claim.suffix) === claimKey(key, claim.index))
      .map(({ iface, address }): ExtraInterface => ({ iface, address }));
    const cluster = this.clusterSelection(pod);
    const sameExtra = before !== undefined && sameExtras(before.extra, extra);
    if (before !== undefined && before.pod.ip === pod.ip && sameList(before.ingress, ingress) && sameList(before.egress, egress)
      && sameList(before.ingressAudit, ingressAudit) && sameList(before.egressAudit, egressAudit) && sameExtra && sameSelection(before.cluster, cluster)) {
      const reordered = !sameList(before.info.ingressClusterPolicies, [...cluster.ingressAdmin, ...cluster.ingressBaseline])
        || !sameList(before.info.egressClusterPolicies, [...cluster.egressAdmin, ...cluster.egressBaseline]);
      // New priorities that reorder the walk change no chain of the pod's, only what its status lists.
      const info = reordered ? { ...before.info, ingressClusterPolicies: [...cluster.ingressAdmin, ...cluster.ingressBaseline], egressClusterPolicies: [...cluster.egressAdmin, ...cluster.egressBaseline] } : before.info;
      this.endpoints.set(key, { ...before, pod, cluster, info });
      if (reordered) this.sortedEndpoints = null;
      return;
    }
    const selection = { ingress, egress, ingressAudit, egressAudit };
    const next: EndpointState = { pod, ...selection, cluster, extra, info: this.endpointInfo(pod, selection, cluster, extra) };
    if (before === undefined || !sameExtra) this.dispatchDirty = true;
    this.setUsers(key, before, next);
    this.endpoints.set(key, next);
    this.dirtyEndpoints.add(key);
    this.sortedEndpoints = null;
  }

  /**
   * The policies whose chains a pod's direction runs: the enforced ones; else, with the drop log on,
   * the audit ones (which can only add would-deny records where nothing enforced isolates the pod:
   * where something does, its verdict stands, and an audit policy could only ever allow more).
   */
  private chainPolicies(state: Pick<EndpointState, 'ingress' | 'egress' | 'ingressAudit' | 'egressAudit'>, direction: Direction): { policies: readonly string[]; audit: boolean } {
    const enforced = state[direction];
    if (enforced.length > 0 || this.settings.dropLog === null) return { policies: enforced, audit: false };
    const audit = direction === 'ingress' ? state.ingressAudit : state.egressAudit;
    return { policies: audit, audit: audit.length > 0 };
  }

  private setUsers(endpoint: string, before: EndpointState | undefined, after: EndpointState | undefined): void {
    for (const direction of ['ingress', 'egress'] as const) {
      const old = new Set(before === undefined ? [] : this.chainPolicies(before, direction).policies);
      const now = new Set(after === undefined ? [] : this.chainPolicies(after, direction).policies);
      for (const policy of old) if (!now.has(policy)) this.policies.removeUser(policy, endpoint, direction);
      for (const policy of now) if (!old.has(policy)) this.policies.addUser(policy, endpoint, direction);
      const oldCluster = new Set(before === undefined ? [] : this.clusterWalked(before.cluster, before[direction].length > 0, direction));
      const nowCluster = new Set(after === undefined ? [] : this.clusterWalked(after.cluster, after[direction].length > 0, direction));
      for (const policy of oldCluster) if (!nowCluster.has(policy)) this.clusterPolicies.removeUser(policy, endpoint, direction);
      for (const policy of nowCluster) if (!oldCluster.has(policy)) this.clusterPolicies.addUser(policy, endpoint, direction);
    }
  }

  /** The ClusterNetworkPolicies a pod's direction walks: Baseline ones only where no NetworkPolicy isolates it. */
  private clusterWalked(selection: ClusterSelection, isolated: boolean, direction: Direction): readonly string[] {
    const admin = direction === 'ingress' ? selection.ingressAdmin : selection.egressAdmin;
    const baseline = direction === 'ingress' ? selection.ingressBaseline : selection.egressBaseline;
    return isolated ? admin : [...admin, ...baseline];
  }

  /** A pod's record as parsed. */
  pod(key: string): PodRecord | undefined {
    return this.rawPods.get(key);
  }

  /** The pod that owns an address now (claims settled), as "namespace/name", or null. */
  podAt(address: string): string | null {
    return this.claims.owner(address);
  }

  /** Every pod's record as parsed (the compiler keeps the cluster's pods; nothing else need). */
  allPods(): IterableIterator<PodRecord> {
    return this.rawPods.values();
  }

  get podCount(): number {
    return this.rawPods.size;
  }

  /** Policies in use whose selector cost crossed the budget since installed are rebuilt; the daemon calls this on every refresh. */
  recheckBudgets(): boolean {
    return this.policies.recheckBudgets();
  }

  /** Policies installed closed because their selector peers would have palisade look at too many pods, with how many. */
  selectorPodsOverBudget(): ReadonlyMap<string, number> {
    return this.policies.selectorPodsOverBudget();
  }

  build(): Dataplane {
    for (const key of this.clusterRefresh) this.refreshEndpoint(key);
    this.clusterRefresh.clear();
    this.policies.sync();
    this.clusterPolicies.sync();
    for (const [name, set] of this.sets.takeChanges()) {
      if (set === null) this.ipsets.delete(name);
      else this.ipsets.set(name, set);
    }
    for (const key of this.dirtyEndpoints) this.rebuildEndpoint(key);
    this.dirtyEndpoints.clear();
    this.syncTierGroups();
    this.syncActionChains();
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
      clusterDenyLogs: this.clusterPolicies.denyLogs(),
    };
  }

  private syncTierGroups(): void {
    const marks = tierMarks(this.settings);
    for (const name of this.dirtyTierGroups) {
      const group = this.tierGroups.get(name);
      if (group === undefined) continue;
      const policies = group.walk.policies.map((p) => ({ ...p, priority: this.clusterPolicies.record(p.name)!.priority }))
        .sort((a, b) => a.priority - b.priority || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      this.chains.set(name, buildTierChain({ ...group.walk, policies }, marks));
    }
    this.dirtyTierGroups.clear();
  }

  private acquireTierGroup(walk: TierWalk): void {
    const group = this.tierGroups.get(walk.chain);
    if (group !== undefined) {
      group.refs++;
      return;
    }
    this.tierGroups.set(walk.chain, { walk, refs: 1 });
    this.dirtyTierGroups.add(walk.chain);
  }

  private releaseTierGroup(name: string): void {
    const group = this.tierGroups.get(name);
    if (group === undefined || --group.refs > 0) return;
    this.tierGroups.delete(name);
    this.chains.delete(name);
  }

  /** The Pass and Deny chains exist while some ClusterNetworkPolicy is installed (Accept shares the allow chain). */
  private syncActionChains(): void {
    const pass = this.names.pass();
    const deny = this.names.deny();
    if (this.tierChainNames.size === 0) {
      this.chains.delete(pass);
      this.chains.delete(deny);
      return;
    }
    if (this.chains.has(pass)) return;
    const marks = tierMarks(this.settings);
    const set = (bit: number) => ['-j', 'MARK', '--set-xmark', `0x${bit.toString(16)}/0x${bit.toString(16)}`];
    this.chains.set(pass, { name: pass, rules: [{ match: [], target: set(marks.pass), comment: 'passed on by ClusterNetworkPolicy' }] });
    this.chains.set(deny, { name: deny, rules: [{ match: [], target: set(marks.deny), comment: 'denied by ClusterNetworkPolicy' }] });
  }

  /** Pods whose address or interface claim palisade does not use, and policies over budget, and why. */
  problems(): Problem[] {
    return [...claimProblems(this.claims.lostClaims(), this.interfaces.conflicts(), this.settings.interfacePrefixes), ...this.policies.problems()];
  }

  /**
   * Addresses whose owner on kubelet's word (status.podIPs) changed since the last call, with the pod
   * that owned each and the one that owns it now (null: none). Only these can say that a flow tracked
   * for an address belongs to another pod now: annotation claims are any tenant's to write, and must
   * not be able to trigger anything on other pods' flows. Kept as changes happen, so a sync never
   * walks every pod to find them.
   */
  takeOwnerChanges(): Map<string, { previous: string; next: string | null }> {
    const changes = new Map<string, { previous: string; next: string | null }>();
    for (const [address, previous] of this.previousOwners) {
      const owner = this.claims.owner(address);
      const next = owner !== null && this.usedPod(owner)?.ipSource === 'status' ? owner : null;
      if (next !== previous) changes.set(address, { previous, next });
    }
    this.previousOwners.clear();
    return changes;
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
    for (const chain of this.extraChainNames.get(key) ?? []) this.chains.delete(chain);
    this.extraChainNames.delete(key);
    for (const chain of this.tierChainNames.get(key) ?? []) this.releaseTierGroup(chain);
    this.tierChainNames.delete(key);
    const state = this.endpoints.get(key);
    if (state === undefined) return;
    const refs = (direction: Direction, keys: readonly string[]) => keys.map((policy) => {
      const record = this.policies.record(policy)!;
      return { policy, chain: this.names.policy(direction, record.namespace, record.name) };
    });
    const direction = (d: Direction): DirectionPolicies => {
      const { policies, audit } = this.chainPolicies(state, d);
      return { isolated: state[d].length > 0, audit, chains: refs(d, policies), log: d === 'ingress' ? state.info.ingressLog : state.info.egressLog };
    };
    const tiers = { ingress: this.tiers(state, 'ingress'), egress: this.tiers(state, 'egress') };
    const chains = buildEndpointChains({
      namespace: state.pod.namespace,
      name: state.pod.name,
      ip: state.pod.ip,
      interfaces: state.info.interfaces.slice(0, this.settings.interfacePrefixes.length),
      extraInterfaces: state.extra,
      ingress: direction('ingress'),
      egress: direction('egress'),
    }, this.names, this.settings, tiers);
    this.chains.set(chains.from.name, chains.from);
    this.chains.set(chains.to.name, chains.to);
    const walks = [tiers.ingress.admin, tiers.ingress.baseline, tiers.egress.admin, tiers.egress.baseline].filter((w): w is TierWalk => w !== null);
    for (const walk of walks) this.acquireTierGroup(walk);
    if (walks.length > 0) this.tierChainNames.set(key, walks.map((w) => w.chain));

    for (const { chain } of chains.extra) this.chains.set(chain.name, chain);
    if (chains.extra.length > 0) this.extraChainNames.set(key, chains.extra.map((e) => e.chain.name));
  }

  private tiers(state: EndpointState, direction: Direction): DirectionTiers {
    const side = direction === 'ingress' ? 'to' : 'from';
    const walk = (tier: 'Admin' | 'Baseline', policies: readonly string[]): TierWalk | null => (policies.length === 0 ? null : {
      tier,
      chain: this.names.tier(tier, side, [...policies].sort()),
      policies: policies.map((policy) => ({ name: policy, priority: this.clusterPolicies.record(policy)!.priority, chain: this.names.clusterPolicy(direction, policy) })),
    });
    const c = state.cluster;
    return {
      admin: walk('Admin', direction === 'ingress' ? c.ingressAdmin : c.egressAdmin),
      // Where a NetworkPolicy isolates the pod its word is final: the Baseline tier is never reached.
      baseline: state[direction].length > 0 ? null : walk('Baseline', direction === 'ingress' ? c.ingressBaseline : c.egressBaseline),
    };
  }

  private rebuildDispatch(): void {
    for (const name of this.dispatchChainNames) this.chains.delete(name);
    const contested = this.interfaces.contested();
    const entries = (side: 'from' | 'to'): DispatchEntry[] => [
      ...[...this.endpoints.values()].flatMap(({ pod, info, extra }) => [
        ...info.interfaces.slice(0, this.settings.interfacePrefixes.length).map((iface) => ({ iface, target: side === 'from' ? info.fromChain : info.toChain, pod: podKey(pod) })),
        ...extra.map(({ iface }) => ({ iface, target: side === 'from' ? this.names.extraInterface(pod.namespace, pod.name, iface) : info.toChain, pod: podKey(pod) })),
      ]),
      ...contested.flatMap((suffix) => this.settings.interfacePrefixes.map((prefix) => ({ iface: prefix + suffix, target: null, pod: 'claimed by several pods' }))),
    ];
    const chains = [...buildDispatch('from', entries('from'), this.names, this.settings), ...buildDispatch('to', entries('to'), this.names, this.settings)];
    for (const chain of chains) this.chains.set(chain.name, chain);
    this.dispatchChainNames = chains.map((c) => c.name);
    this.dispatchDirty = false;
  }

  private endpointInfo(pod: PodRecord & { readonly ip: string }, selection: Pick<EndpointState, 'ingress' | 'egress' | 'ingressAudit' | 'egressAudit'>, cluster: ClusterSelection, extra: readonly ExtraInterface[]): EndpointInfo {
    const suffix = this.vethSuffix(pod.namespace, pod.name);
    const { ingress, egress } = selection;
    const log = (direction: Direction): DropLogSource | null => {
      const { policies, audit } = this.chainPolicies(selection, direction);
      if (this.settings.dropLog === null || policies.length === 0) return null;
      return dropLogSource(this.names, audit ? 'would-deny' : 'denied', direction, pod.namespace, pod.name, policies);
    };
    return {
      namespace: pod.namespace,
      name: pod.name,
      ip: pod.ip,
      interfaces: [...this.settings.interfacePrefixes.map((prefix) => prefix + suffix), ...extra.map((e) => e.iface)],
      extraInterfaces: extra,
      isolatedIngress: ingress.length > 0,
      isolatedEgress: egress.length > 0,
      ingressPolicies: ingress,
      egressPolicies: egress,
      ingressAudit: selection.ingressAudit,
      egressAudit: selection.egressAudit,
      ingressClusterPolicies: [...cluster.ingressAdmin, ...cluster.ingressBaseline],
      egressClusterPolicies: [...cluster.egressAdmin, ...cluster.egressBaseline],
      ingressLog: log('ingress'),
      egressLog: log('egress'),
      toChain: this.names.endpoint('to', pod.namespace, pod.name),
      fromChain: this.names.endpoint('from', pod.namespace, pod.name),
    };
  }
}
