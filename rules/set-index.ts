import type { NamespaceRecord, NodeRecord, PodRecord } from './model.js';
import { podCounts, podKey } from './model.js';
import type { IpSet } from './dataplane.js';
import { addToIndex, removeFromIndex } from './index-map.js';
import type { SetDefinition } from './set-definitions.js';
import { namedPortMember, setType } from './set-definitions.js';
import { selectorMatches } from './selector.js';

/**
 * The ipsets policies refer to, reference-counted, with their members kept up to date as pods and
 * namespaces change. A pod change tests only the sets that could hold it (those scoped to its
 * namespace, those with a namespaceSelector, the named-port sets of its port names), so the cost of a
 * change does not grow with the number of pods.
 */

export interface ClusterView {
  podsInNamespace(namespace: string): Iterable<PodRecord>;
  /** How many pods the namespace has (counting or not). */
  namespaceSize(namespace: string): number;
  namespacesWithPods(): Iterable<string>;
  namespace(name: string): NamespaceRecord;
  /** Pods of the namespaces carrying the label key with one of the values (any value when null), and how many. */
  podsLabelled(namespaces: readonly string[], key: string, values: readonly string[] | null): { readonly count: number; readonly pods: Iterable<PodRecord> };
  /** Pods declaring a named container port of that protocol and name. */
  podsDeclaring(protocol: string, portName: string): Iterable<PodRecord>;
  /** Every Node object. */
  nodes(): Iterable<NodeRecord>;
}

/** One member as a plain string: a set of every pod of the cluster holds no array per pod. */
type Member = string | readonly string[];

function sameMember(a: Member, b: Member): boolean {
  if (typeof a === 'string' || typeof b === 'string') return a === b;
  return a.length === b.length && a.every((m, i) => m === b[i]);
}

interface SetState {
  readonly name: string;
  readonly definition: SetDefinition;
  refs: number;
  /** Pod key to the member that pod contributes (an address), or members (named-port entries). */
  readonly members: Map<string, Member>;
}

export class SetIndex {
  private readonly view: ClusterView;
  private readonly sets = new Map<string, SetState>();
  private readonly byNamespace = new Map<string, Set<string>>();
  private readonly byNamespaceSelector = new Set<string>();
  private readonly byPortName = new Map<string, Set<string>>();
  /** Sets of Node addresses: few (one per distinct nodeSelector), so a Node change visits them all. */
  private readonly nodeSets = new Set<string>();
  private readonly dirty = new Set<string>();

  constructor(view: ClusterView) {
    this.view = view;
  }

  acquire(name: string, definition: SetDefinition): void {
    const existing = this.sets.get(name);
    if (existing !== undefined) {
      existing.refs++;
      return;
    }
    const state: SetState = { name, definition, refs: 1, members: new Map() };
    this.sets.set(name, state);
    if (definition.kind === 'pods') {
      if (definition.namespace !== null) addToIndex(this.byNamespace, definition.namespace, name);
      else this.byNamespaceSelector.add(name);
    } else if (definition.kind === 'namedPort') addToIndex(this.byPortName, `${definition.protocol}/${definition.portName}`, name);
    else if (definition.kind === 'nodes') {
      this.nodeSets.add(name);
      for (const node of this.view.nodes()) this.refreshNode(state, node);
    }
    // Candidates come from the namespaces in scope: only the pod's own state and labels are left to test.
    for (const pod of this.candidatePods(definition)) this.refreshMember(state, pod, true);
    this.dirty.add(name);
  }

  /**
   * Only pods that could be members, so filling a set costs what it holds rather than the cluster's
   * size: the pods carrying the most selective label the pod selector requires (In or Exists), or
   * else every pod in scope, with a namespaceSelector tested once per namespace, not once per pod.
   */
  private candidatePods(definition: SetDefinition): Iterable<PodRecord> {
    if (definition.kind === 'ipBlock' || definition.kind === 'nodes') return [];
    if (definition.kind === 'namedPort') return this.view.podsDeclaring(definition.protocol, definition.portName);
    return this.candidates(definition).pods();
  }

  /** How many pods filling a selector set looks at (policy-budget.ts), known without looking at any. */
  candidateCount(definition: SetDefinition & { kind: 'pods' }): number {
    return this.candidates(definition).count;
  }

  private candidates(definition: SetDefinition & { kind: 'pods' }): { count: number; pods: () => Iterable<PodRecord> } {
    const scope = definition.namespace !== null
      ? [definition.namespace]
      : [...this.view.namespacesWithPods()].filter((ns) => selectorMatches(definition.namespaceSelector!, this.view.namespace(ns).labels));
    let inScope = 0;
    for (const ns of scope) inScope += this.view.namespaceSize(ns);
    let best: { count: number; pods: Iterable<PodRecord> } | null = null;
    for (const r of definition.podSelector.requirements) {
      if (r.operator !== 'In' && r.operator !== 'Exists') continue;
      const labelled = this.view.podsLabelled(scope, r.key, r.operator === 'In' ? r.values : null);
      if (best === null || labelled.count < best.count) best = labelled;
    }
    if (best !== null && best.count < inScope) {
      const chosen = best;
      return { count: chosen.count, pods: () => chosen.pods };
    }
    const view = this.view;
    return { count: inScope, pods: function* () { for (const ns of scope) yield* view.podsInNamespace(ns); } };
  }

  /** Members a set holds now (0 for a set not held). */
  size(name: string): number {
    const state = this.sets.get(name);
    if (state === undefined) return 0;
    if (state.definition.kind === 'ipBlock') return state.definition.cidrs.length;
    if (state.definition.kind === 'pods') return state.members.size;
    // Node sets count addresses; one Node may list several.
    let n = 0;
    for (const member of state.members.values()) n += typeof member === 'string' ? 1 : member.length;
    return n;
  }

  release(name: string): void {
    const state = this.sets.get(name);
    if (state === undefined || --state.refs > 0) return;
    this.sets.delete(name);
    const { definition } = state;
    if (definition.kind === 'pods') {
      if (definition.namespace !== null) removeFromIndex(this.byNamespace, definition.namespace, name);
      else this.byNamespaceSelector.delete(name);
    } else if (definition.kind === 'namedPort') removeFromIndex(this.byPortName, `${definition.protocol}/${definition.portName}`, name);
    else if (definition.kind === 'nodes') this.nodeSets.delete(name);
    this.dirty.add(name);
  }

  /** A Node appeared, changed or went (after undefined): its addresses join or leave the node sets. */
  nodeChanged(name: string, after: NodeRecord | undefined): void {
    for (const set of this.nodeSets) {
      const state = this.sets.get(set)!;
      if (after === undefined) {
        if (state.members.delete(`node ${name}`)) this.dirty.add(set);
      } else this.refreshNode(state, after);
    }
  }

  private refreshNode(state: SetState, node: NodeRecord): void {
    if (state.definition.kind !== 'nodes') return;
    const key = `node ${node.name}`;
    const next = node.addresses.length > 0 && selectorMatches(state.definition.nodeSelector, node.labels) ? node.addresses : null;
    const previous = state.members.get(key);
    if (next === null) {
      if (previous !== undefined && state.members.delete(key)) this.dirty.add(state.name);
      return;
    }
    if (previous !== undefined && sameMember(previous, next)) return;
    state.members.set(key, next);
    this.dirty.add(state.name);
  }

  /** Call with the pod as it was and as it is (either may be undefined for add and delete). */
  podChanged(before: PodRecord | undefined, after: PodRecord | undefined): void {
    const pod = after ?? before;
    if (pod === undefined) return;
    const visit = (name: string): void => {
      const state = this.sets.get(name)!;
      if (after === undefined) {
        if (state.members.delete(podKey(pod))) this.dirty.add(name);
      } else this.refreshMember(state, after);
    };
    // Each set is visited once at most: the three kinds of candidates never overlap.
    for (const name of this.byNamespace.get(pod.namespace) ?? []) visit(name);
    for (const name of this.byNamespaceSelector) visit(name);
    if (this.byPortName.size === 0) return;
    const named = new Set<string>();
    for (const ports of [before?.namedPorts, after?.namedPorts]) {
      for (const port of ports ?? []) for (const name of this.byPortName.get(`${port.protocol}/${port.name}`) ?? []) named.add(name);
    }
    for (const name of named) visit(name);
  }

  /** A namespace's labels changed: sets that select namespaces by label may gain or lose its pods. */
  namespaceChanged(namespace: string): void {
    for (const name of this.byNamespaceSelector) {
      const state = this.sets.get(name)!;
      for (const pod of this.view.podsInNamespace(namespace)) this.refreshMember(state, pod);
    }
  }

  private refreshMember(state: SetState, pod: PodRecord, inScope = false): void {
    const key = podKey(pod);
    const next = this.membersOf(state.definition, pod, inScope);
    const previous = state.members.get(key);
    if (next === null) {
      if (previous !== undefined) {
        state.members.delete(key);
        this.dirty.add(state.name);
      }
      return;
    }
    if (previous !== undefined && sameMember(previous, next)) return;
    state.members.set(key, next);
    this.dirty.add(state.name);
  }

  private membersOf(definition: SetDefinition, pod: PodRecord, inScope = false): Member | null {
    if (!podCounts(pod)) return null;
    switch (definition.kind) {
      case 'ipBlock':
      case 'nodes':
        return null;
      case 'namedPort': {
        const found = pod.namedPorts
          .filter((p) => p.name === definition.portName && p.protocol === definition.protocol)
          .map((p) => namedPortMember(pod.ip, p.protocol, p.port));
        return found.length === 0 ? null : found.length === 1 ? found[0]! : found;
      }
      case 'pods': {
        const scoped = inScope || (definition.namespace !== null
          ? pod.namespace === definition.namespace
          : selectorMatches(definition.namespaceSelector!, this.view.namespace(pod.namespace).labels));
        return scoped && selectorMatches(definition.podSelector, pod.labels) ? pod.ip : null;
      }
    }
  }

  /** The sets whose content changed since the last call: new contents, or null for a removed set. */
  takeChanges(): Map<string, IpSet | null> {
    const out = new Map<string, IpSet | null>();
    for (const name of this.dirty) {
      const state = this.sets.get(name);
      out.set(name, state === undefined ? null : this.toIpSet(state));
    }
    this.dirty.clear();
    return out;
  }

  private toIpSet(state: SetState): IpSet {
    const { definition } = state;
    // A pod set's members are one address each: copied in one go, the common case at cluster scale.
    const members = definition.kind === 'pods' ? new Set(state.members.values() as IterableIterator<string>) : new Set<string>(definition.kind === 'ipBlock' ? definition.cidrs : []);
    if (definition.kind !== 'pods') {
      for (const member of state.members.values()) {
        if (typeof member === 'string') members.add(member);
        else for (const m of member) members.add(m);
      }
    }
    return { name: state.name, type: setType(definition), members, description: describe(definition.key) };
  }
}

/** Set descriptions are for people: a set of thousands of CIDRs is summarised, not listed. */
function describe(key: string): string {
  return key.length <= 200 ? key : `${key.slice(0, 180)}... (${key.length} characters)`;
}
