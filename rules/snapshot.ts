import type { ClusterPolicyRecord, NamespaceRecord, NodeRecord, PodRecord, PolicyRecord } from './model.js';
import { objectKey, podCounts, podKey } from './model.js';
import type { Problem } from './problems.js';
import { ProblemSink } from './problems.js';
import type { Dataplane } from './dataplane.js';
import type { CompilerSettings } from './settings.js';
import { DataplaneCompiler } from './compiler.js';
import type { CompilerOptions } from './compiler.js';
import { AddressClaims } from './address-claims.js';
import { claimProblems } from './claim-problems.js';
import { DEFAULT_POLICY_BUDGET } from './policy-budget.js';
import type { TextBudget } from './policy-budget.js';
import { parseNamespace, parseNode } from './namespace.js';
import type { Parsed } from './namespace.js';
import { parsePod } from './pod.js';
import { parsePolicy } from './policy.js';
import { CLUSTER_POLICY_API_VERSION, parseClusterPolicy } from './cluster-policy.js';
import { isRecord, recordAt, stringAt } from './object-fields.js';

/** A whole cluster as the compiler and evaluator see it. */
export interface Snapshot {
  readonly pods: readonly PodRecord[];
  readonly namespaces: readonly NamespaceRecord[];
  readonly policies: readonly PolicyRecord[];
  readonly nodes: readonly NodeRecord[];
  /** ClusterNetworkPolicies, by name. */
  readonly clusterPolicies: readonly ClusterPolicyRecord[];
}

export interface ParsedSnapshot {
  readonly snapshot: Snapshot;
  readonly problems: readonly Problem[];
}

/** The API group each kind must come from: a NetworkPolicy of another group means something else. */
const KINDS: Readonly<Record<string, { readonly apiVersions: readonly string[]; readonly parse: (o: Record<string, unknown>, budget: TextBudget) => Parsed<unknown> }>> = {
  Pod: { apiVersions: ['v1'], parse: (o) => parsePod(o) },
  Namespace: { apiVersions: ['v1'], parse: parseNamespace },
  Node: { apiVersions: ['v1'], parse: parseNode },
  NetworkPolicy: { apiVersions: ['networking.k8s.io/v1'], parse: parsePolicy },
  ClusterNetworkPolicy: { apiVersions: [CLUSTER_POLICY_API_VERSION], parse: (o) => parseClusterPolicy(o) },
};

/**
 * Parses raw Kubernetes objects. Every problem is returned; objects that are invalid as a whole are
 * left out (an invalid policy stays in, marked failed, so it keeps isolating). Kinds palisade does not
 * use are skipped with a warning, so a directory of application manifests can be fed as it is.
 */
export interface SourcedObject {
  readonly object: Readonly<Record<string, unknown>>;
  /** "path:line", carried into the object's problems. */
  readonly origin?: string;
}

export function parseObjects(objects: Iterable<SourcedObject>, budget: TextBudget = DEFAULT_POLICY_BUDGET): ParsedSnapshot {
  const pods = new Map<string, PodRecord>();
  const namespaces = new Map<string, NamespaceRecord>();
  const policies = new Map<string, PolicyRecord>();
  const nodes = new Map<string, NodeRecord>();
  const clusterPolicies = new Map<string, ClusterPolicyRecord>();
  const problems: Problem[] = [];
  for (const { object, origin } of objects) {
    const found: Problem[] = [];
    const kind = stringAt(object, 'kind') ?? '';
    const apiVersion = stringAt(object, 'apiVersion') ?? '';
    const handler = KINDS[kind];
    const name = stringAt(recordAt(object, 'metadata'), 'name') ?? '<unnamed>';
    const ref = { kind: kind === '' ? '<no kind>' : kind, namespace: stringAt(recordAt(object, 'metadata'), 'namespace'), name };
    const sink = new ProblemSink(ref);
    if (handler === undefined) {
      sink.warn('kind', `kind ${kind} ${apiVersion} is not used by palisade; skipped`);
    } else if (!handler.apiVersions.includes(apiVersion)) {
      sink.error('apiVersion', `${kind} must have apiVersion ${handler.apiVersions.join(' or ')}, not "${apiVersion}"`);
    } else {
      const parsed = handler.parse(object as Record<string, unknown>, budget);
      found.push(...parsed.problems);
      const record = parsed.record;
      if (record !== null && isRecord(record)) {
        const target = kind === 'Pod' ? pods : kind === 'Namespace' ? namespaces : kind === 'Node' ? nodes : kind === 'ClusterNetworkPolicy' ? clusterPolicies : policies;
        const key = kind === 'Pod' || kind === 'NetworkPolicy'
          ? objectKey(String(record['namespace']), String(record['name']))
          : String(record['name']);
        if (target.has(key)) sink.warn('metadata.name', 'defined more than once; the last definition is used');
        (target as Map<string, unknown>).set(key, record);
      }
    }
    found.push(...sink.problems);
    problems.push(...(origin === undefined ? found : found.map((p) => ({ ...p, origin }))));
  }
  const sortedValues = <T>(map: Map<string, T>): T[] => [...map.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([, v]) => v);
  const snapshot = { pods: sortedValues(pods), namespaces: sortedValues(namespaces), policies: sortedValues(policies), nodes: sortedValues(nodes), clusterPolicies: sortedValues(clusterPolicies) };
  return { snapshot, problems: [...problems, ...addressProblems(snapshot)] };
}

/** Pods whose address palisade does not use, because another pod or a node holds it. */
function addressProblems(snapshot: Snapshot): Problem[] {
  const claims = new AddressClaims();
  for (const node of snapshot.nodes) claims.setNode(node.name, node.addresses);
  for (const pod of snapshot.pods) if (podCounts(pod)) claims.setPod(podKey(pod), pod.ip, pod.ipSource);
  return claimProblems(claims.lostClaims(), [], []);
}

/**
 * An incremental compiler fed a whole snapshot, ready to build or to take changes. Namespaces and pods
 * go before NetworkPolicies, so each policy's sets are filled once rather than grown pod by pod.
 */
export function loadedCompiler(snapshot: Snapshot, settings: CompilerSettings, options: CompilerOptions = {}): DataplaneCompiler {
  const compiler = new DataplaneCompiler(settings, options);
  for (const node of snapshot.nodes) compiler.setNode(node);
  for (const namespace of snapshot.namespaces) compiler.setNamespace(namespace);
  // Before the pods: a ClusterNetworkPolicy looks at every local pod again, and there are none yet.
  for (const policy of snapshot.clusterPolicies) compiler.setClusterPolicy(policy);
  for (const pod of snapshot.pods) compiler.setPod(pod);
  for (const policy of snapshot.policies) compiler.setPolicy(policy);
  return compiler;
}

/** Compiles a whole snapshot at once. */
export function compile(snapshot: Snapshot, settings: CompilerSettings, options: CompilerOptions = {}): Dataplane {
  return loadedCompiler(snapshot, settings, options).build();
}
