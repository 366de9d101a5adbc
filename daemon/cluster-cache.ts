import type { ClusterPolicyRecord, NamespaceRecord, NodeRecord, PodRecord, PolicyRecord } from '../rules/model.js';
import { objectKey } from '../rules/model.js';
import type { Problem } from '../rules/problems.js';
import { formatProblem } from '../rules/problems.js';
import type { Logger } from '../lib/logger.js';
import type { Parsed } from '../rules/namespace.js';
import { parseNamespace, parseNode } from '../rules/namespace.js';
import { parsePod } from '../rules/pod.js';
import { parsePolicy } from '../rules/policy.js';
import { parseClusterPolicy } from '../rules/cluster-policy.js';
import { DataplaneCompiler } from '../rules/compiler.js';
import type { CompilerOptions } from '../rules/compiler.js';
import { MATCH_ALL } from '../rules/selector.js';
import { Interner } from '../rules/interner.js';
import type { CompilerSettings } from '../rules/settings.js';
import type { Snapshot } from '../rules/snapshot.js';
import type { KubeObject, ReflectorHandler, WatchEventType } from '../lib/kube/reflector.js';
import type { PolicyVersion } from './policy-events.js';
import { policyVersionOf } from './policy-events.js';

/**
 * The daemon's view of the cluster: objects from the watches are parsed into records at once (the raw
 * objects are dropped), fed to the incremental compiler, and kept for the status page and explain.
 * Problems with an object are kept per object and replaced when it changes; an object that cannot be
 * used is skipped for what it cannot express while everything else keeps being enforced.
 */

export type ResourceKind = 'Pod' | 'Namespace' | 'NetworkPolicy' | 'Node' | 'ClusterNetworkPolicy';

/**
 * What the ClusterNetworkPolicy status writer needs of each object, kept beside its record: the raw
 * objects are dropped, and the status is not in the record.
 */
export interface ClusterPolicyObject {
  readonly name: string;
  readonly uid: string;
  readonly resourceVersion: string;
  /** null when the object carries none (only manifests, never the API server). */
  readonly generation: number | null;
  /** The object's status as the API server has it; null when it has none. */
  readonly status: Readonly<Record<string, unknown>> | null;
}

/** Kinds named by their name alone. */
function clusterScoped(kind: ResourceKind): boolean {
  return kind === 'Namespace' || kind === 'Node' || kind === 'ClusterNetworkPolicy';
}

function clusterPolicyObject(object: KubeObject): ClusterPolicyObject | null {
  const metadata = object['metadata'];
  if (typeof metadata !== 'object' || metadata === null) return null;
  const { name, uid, resourceVersion, generation } = metadata as Record<string, unknown>;
  if (typeof name !== 'string' || typeof uid !== 'string' || typeof resourceVersion !== 'string') return null;
  const status = object['status'];
  return {
    name,
    uid,
    resourceVersion,
    generation: typeof generation === 'number' && Number.isInteger(generation) && generation > 0 ? generation : null,
    status: typeof status === 'object' && status !== null && !Array.isArray(status) ? (status as Record<string, unknown>) : null,
  };
}

interface ParseContext {
  readonly settings: CompilerSettings;
  readonly intern: Interner;
}

interface KindOps<T> {
  readonly parse: (object: KubeObject, context: ParseContext) => Parsed<T>;
  readonly key: (record: T) => string;
  /** Whether two records of the same object say the same to the compiler. */
  readonly same: (a: T, b: T) => boolean;
  readonly set: (compiler: DataplaneCompiler, record: T) => void;
  readonly remove: (compiler: DataplaneCompiler, key: string) => void;
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Pods change all the time in ways policy does not see (kubelet's status updates): compared field by
 * field, labels and ports by identity first (the interner shares them), not by serialising both.
 */
function samePod(a: PodRecord, b: PodRecord): boolean {
  return a.ip === b.ip && a.ipSource === b.ipSource && a.nodeName === b.nodeName && a.hostNetwork === b.hostNetwork && a.finished === b.finished && a.multiNic === b.multiNic
    && (a.labels === b.labels || sameJson(a.labels, b.labels)) && (a.namedPorts === b.namedPorts || sameJson(a.namedPorts, b.namedPorts));
}

function splitKey(key: string): [string, string] {
  const slash = key.indexOf('/');
  return [key.slice(0, slash), key.slice(slash + 1)];
}

const OPS: { readonly [K in ResourceKind]: KindOps<unknown> } = {
  Pod: {
    parse: (object, context) => parsePod(object, context.intern),
    key: (r) => (r as PodRecord).key,
    same: (a, b) => samePod(a as PodRecord, b as PodRecord),
    set: (c, r) => c.setPod(r as PodRecord),
    remove: (c, k) => c.deletePod(...splitKey(k)),
  },
  Namespace: {
    parse: parseNamespace,
    same: sameJson,
    key: (r) => (r as NamespaceRecord).name,
    set: (c, r) => c.setNamespace(r as NamespaceRecord),
    remove: (c, k) => c.deleteNamespace(k),
  },
  NetworkPolicy: {
    parse: (object, context) => parsePolicy(object, context.settings.policyBudget),
    same: sameJson,
    key: (r) => objectKey((r as PolicyRecord).namespace, (r as PolicyRecord).name),
    set: (c, r) => c.setPolicy(r as PolicyRecord),
    remove: (c, k) => c.deletePolicy(...splitKey(k)),
  },
  Node: {
    parse: parseNode,
    same: sameJson,
    key: (r) => (r as NodeRecord).name,
    set: (c, r) => c.setNode(r as NodeRecord),
    remove: (c, k) => c.deleteNode(k),
  },
  ClusterNetworkPolicy: {
    parse: (object) => parseClusterPolicy(object),
    same: sameJson,
    key: (r) => (r as ClusterPolicyRecord).name,
    set: (c, r) => c.setClusterPolicy(r as ClusterPolicyRecord),
    remove: (c, k) => c.deleteClusterPolicy(k),
  },
};

/** Where the records of a kind are kept: what of a Map the cache uses. */
interface RecordStore {
  get(key: string): unknown;
  has(key: string): boolean;
  keys(): Iterable<string>;
  values(): Iterable<unknown>;
  readonly size: number;
  /** Keeps a record; for pods the compiler does, when it is handed the record. */
  set(key: string, record: unknown): unknown;
  /** Forgets a record, returning whether there was one; for pods the compiler does. */
  delete(key: string): boolean;
}

/**
 * Pods are kept once, by the compiler, which needs them all anyway: on a node that knows every pod of
 * the cluster a second table of them would cost a map entry per pod for nothing.
 */
function compilerPods(compiler: DataplaneCompiler): RecordStore {
  return {
    get: (key) => compiler.pod(key),
    has: (key) => compiler.pod(key) !== undefined,
    *keys() {
      for (const pod of compiler.allPods()) yield pod.key;
    },
    values: () => compiler.allPods(),
    get size() {
      return compiler.podCount;
    },
    set: () => undefined,
    delete: (key) => compiler.pod(key) !== undefined,
  };
}

/** Isolates every pod of the namespace in both directions and grants nothing: the closed side of not knowing. */
function closedPolicy(namespace: string, name: string): PolicyRecord {
  return { namespace, name, podSelector: MATCH_ALL, affectsIngress: true, affectsEgress: true, ingress: [], egress: [], failed: true, cost: null, overBudget: false, audit: false };
}

/**
 * Denies every packet of every pod in both directions, ahead of every NetworkPolicy: the closed side of
 * not knowing what a ClusterNetworkPolicy palisade could not handle says (as an unreadable one is read).
 */
function closedClusterPolicy(name: string): ClusterPolicyRecord {
  const denyAll = { name: '', action: 'Deny' as const, peers: [], protocols: null, failClosed: 'palisade could not handle the policy' };
  return { name, tier: 'Admin', priority: 0, subject: { kind: 'namespaces', namespaceSelector: MATCH_ALL }, ingress: [denyAll], egress: [denyAll], failed: true };
}

/** The identity of a raw object, read defensively: needed to delete even an object that no longer parses. */
function rawKey(kind: ResourceKind, object: KubeObject): string | null {
  const metadata = object['metadata'];
  if (typeof metadata !== 'object' || metadata === null) return null;
  const { name, namespace } = metadata as Record<string, unknown>;
  if (typeof name !== 'string') return null;
  return clusterScoped(kind) ? name : objectKey(typeof namespace === 'string' ? namespace : 'default', name);
}

export class ClusterCache {
  readonly compiler: DataplaneCompiler;
  private readonly records: { [K in ResourceKind]: RecordStore };
  private readonly problems = new Map<string, readonly Problem[]>();
  /** Each NetworkPolicy's uid and generation, by namespace/name: what its problems are reported against. */
  private readonly versions = new Map<string, PolicyVersion>();
  /** Each ClusterNetworkPolicy's identity, generation and status, by name: what its status condition is written against. */
  private readonly clusterObjects = new Map<string, ClusterPolicyObject>();
  private readonly onChange: (kind: ResourceKind) => void;

  private readonly logger: Logger;
  private readonly context: ParseContext;
  /** Objects whose handling threw: reported, and counted for the metric. */
  private failures = 0;
  private loggedCompilerProblems = '';

  constructor(settings: CompilerSettings, onChange: (kind: ResourceKind) => void, logger: Logger, options: CompilerOptions = {}) {
    this.compiler = new DataplaneCompiler(settings, options);
    this.records = { Pod: compilerPods(this.compiler), Namespace: new Map(), NetworkPolicy: new Map(), Node: new Map(), ClusterNetworkPolicy: new Map() };
    this.context = { settings, intern: new Interner() };
    this.onChange = onChange;
    this.logger = logger;
  }

  /** Objects palisade failed to handle since start (each also a problem in the status). */
  get handlingFailures(): number {
    return this.failures;
  }

  handler(kind: ResourceKind): ReflectorHandler {
    let seen = new Set<string>();
    let changed = false;
    return {
      beginList: () => {
        seen = new Set();
        changed = false;
      },
      listPage: (objects) => {
        for (const object of objects) {
          const key = rawKey(kind, object);
          if (key !== null) seen.add(key);
          changed = this.guarded(kind, object, () => this.upsert(kind, object)) || changed;
        }
      },
      endList: () => {
        for (const key of [...this.records[kind].keys()]) {
          if (!seen.has(key)) changed = this.remove(kind, key) || changed;
        }
        for (const key of [...this.problems.keys()]) {
          if (key.startsWith(`${kind} `) && !seen.has(key.slice(kind.length + 1))) this.problems.delete(key);
        }
        // Only needed until the list ends: a set of every pod's key is not kept for the watch.
        seen = new Set();
        if (changed) this.onChange(kind);
      },
      event: (type, object) => this.event(kind, type, object),
    };
  }

  private event(kind: ResourceKind, type: WatchEventType, object: KubeObject): void {
    const changed = this.guarded(kind, object, () => (type === 'DELETED' ? this.removeRaw(kind, object) : this.upsert(kind, object)));
    if (changed) this.onChange(kind);
  }

  /**
   * Runs the handling of one object so that nothing in it can stop the others: an object that makes
   * palisade throw is a problem in the status and a log line, and the rest of the list or watch goes on.
   * What the object held before stays (an earlier policy keeps isolating); a policy never seen before
   * isolates its whole namespace, since what it selects cannot be known.
   */
  private guarded(kind: ResourceKind, object: KubeObject, handle: () => boolean): boolean {
    try {
      return handle();
    } catch (error) {
      this.failures++;
      const key = rawKey(kind, object);
      const message = `palisade could not handle this object: ${error instanceof Error ? error.message : String(error)}`;
      this.logger.error({ object: `${kind} ${key ?? '<unnamed>'}`, err: error instanceof Error ? error.stack : String(error) }, 'object could not be handled; the rest are enforced as before');
      if (key === null) return false;
      const [namespace, name] = clusterScoped(kind) ? [null, key] : splitKey(key);
      this.problems.set(`${kind} ${key}`, [{ severity: 'error', object: { kind, namespace, name }, field: '', message }]);
      if (kind === 'NetworkPolicy' && namespace !== null && !this.records.NetworkPolicy.has(key)) {
        return this.guardedFallback(() => this.store('NetworkPolicy', key, closedPolicy(namespace, name)));
      }
      if (kind === 'ClusterNetworkPolicy' && !this.records.ClusterNetworkPolicy.has(key)) {
        return this.guardedFallback(() => this.store('ClusterNetworkPolicy', key, closedClusterPolicy(name)));
      }
      return false;
    }
  }

  private guardedFallback(store: () => void): boolean {
    try {
      store();
      return true;
    } catch (error) {
      this.logger.error({ err: error instanceof Error ? error.message : String(error) }, 'could not even fail closed for an object palisade could not handle');
      return false;
    }
  }

  private store(kind: ResourceKind, key: string, record: unknown): void {
    this.records[kind].set(key, record);
    OPS[kind].set(this.compiler, record);
  }

  /** Returns whether the compiler's input changed: status-only updates of a pod usually do not. */
  private upsert(kind: ResourceKind, object: KubeObject): boolean {
    const ops = OPS[kind];
    const key = rawKey(kind, object);
    if (kind === 'NetworkPolicy' && key !== null) {
      const version = policyVersionOf(object['metadata'] as Record<string, unknown> | undefined);
      if (version === null) this.versions.delete(key);
      else this.versions.set(key, version);
    }
    if (kind === 'ClusterNetworkPolicy' && key !== null) {
      const known = clusterPolicyObject(object);
      if (known === null) this.clusterObjects.delete(key);
      else this.clusterObjects.set(key, known);
    }
    const parsed = ops.parse(object, this.context);
    if (key !== null) this.recordProblems(`${kind} ${key}`, parsed.problems);
    if (parsed.record === null) {
      // Unusable as a whole (no name, say): forget any earlier version rather than enforce a stale one.
      return key !== null && this.remove(kind, key);
    }
    const recordKey = ops.key(parsed.record);
    const before = this.records[kind].get(recordKey);
    if (before !== undefined && ops.same(before, parsed.record)) return false;
    this.store(kind, recordKey, parsed.record);
    return true;
  }

  /** Keeps an object's problems, logging them when they change (not on every resync of the same object). */
  private recordProblems(key: string, problems: readonly Problem[]): void {
    const before = this.problems.get(key);
    if (problems.length === 0) {
      if (before !== undefined) this.logger.info({ object: key }, 'object is usable again');
      this.problems.delete(key);
      return;
    }
    const text = problems.map(formatProblem);
    if (before === undefined || JSON.stringify(before.map(formatProblem)) !== JSON.stringify(text)) {
      const errors = problems.some((p) => p.severity === 'error');
      this.logger.warn({ object: key, problems: text }, errors ? 'object is invalid: it grants nothing, what it selects stays isolated' : 'parts of an object are ignored');
    }
    this.problems.set(key, problems);
  }

  private removeRaw(kind: ResourceKind, object: KubeObject): boolean {
    const key = rawKey(kind, object);
    if (key === null) return false;
    this.problems.delete(`${kind} ${key}`);
    return this.remove(kind, key);
  }

  private remove(kind: ResourceKind, key: string): boolean {
    if (kind === 'NetworkPolicy') this.versions.delete(key);
    if (kind === 'ClusterNetworkPolicy') this.clusterObjects.delete(key);
    if (!this.records[kind].delete(key)) return false;
    OPS[kind].remove(this.compiler, key);
    return true;
  }

  /** Every current problem, sorted by object: those of parsing, and claims to addresses and interfaces palisade does not honour. */
  allProblems(): Problem[] {
    const parsed = [...this.problems.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).flatMap(([, p]) => p);
    return [...parsed, ...this.compiler.problems()];
  }

  /**
   * Logs what the compiler does not honour (pods' claims to addresses and interfaces, policies over
   * the budget on the pods they name) when it changes, as parsing problems are logged.
   */
  logCompilerProblems(): void {
    const problems = this.compiler.problems();
    const text = JSON.stringify(problems.map(formatProblem));
    if (text === this.loggedCompilerProblems) return;
    const before = new Set(this.loggedCompilerProblems === '' ? [] : (JSON.parse(this.loggedCompilerProblems) as string[]));
    this.loggedCompilerProblems = text;
    for (const problem of problems) {
      const line = formatProblem(problem);
      if (before.has(line)) continue;
      const what = problem.object.kind === 'Pod' ? 'a pod\'s claim is not honoured' : 'a policy is over the per-policy budget: it grants nothing, what it selects stays isolated';
      this.logger.warn({ object: `${problem.object.kind} ${problem.object.namespace ?? ''}/${problem.object.name}`, problem: line }, what);
    }
  }

  /**
   * Forgets every object of a kind, its problems included, as when the API server stops serving it
   * (a CRD removed): returns whether the compiler's input changed, and reports the change.
   */
  forgetAll(kind: ResourceKind): boolean {
    let changed = false;
    for (const key of [...this.records[kind].keys()]) changed = this.remove(kind, key) || changed;
    for (const key of [...this.problems.keys()]) if (key.startsWith(`${kind} `)) this.problems.delete(key);
    if (kind === 'ClusterNetworkPolicy') this.clusterObjects.clear();
    if (changed) this.onChange(kind);
    return changed;
  }

  /** What the status writer needs of every ClusterNetworkPolicy known, by name. */
  clusterPolicyObjects(): ReadonlyMap<string, ClusterPolicyObject> {
    return this.clusterObjects;
  }

  clusterPolicies(): ClusterPolicyRecord[] {
    return [...this.records.ClusterNetworkPolicy.values()] as ClusterPolicyRecord[];
  }

  /** The uid and generation (or resourceVersion) of every NetworkPolicy known, by namespace/name. */
  policyVersions(): ReadonlyMap<string, PolicyVersion> {
    return this.versions;
  }

  count(kind: ResourceKind): number {
    return this.records[kind].size;
  }

  policies(): PolicyRecord[] {
    return [...this.records.NetworkPolicy.values()] as PolicyRecord[];
  }


  /** The records as a snapshot, for the evaluator behind /explain. */
  snapshot(): Snapshot {
    return {
      pods: [...this.records.Pod.values()] as PodRecord[],
      namespaces: [...this.records.Namespace.values()] as NamespaceRecord[],
      policies: [...this.records.NetworkPolicy.values()] as PolicyRecord[],
      nodes: [...this.records.Node.values()] as NodeRecord[],
      clusterPolicies: this.clusterPolicies(),
    };
  }
}
