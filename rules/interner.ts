import type { Labels, NamedContainerPort } from './model.js';

/**
 * Shares what many pods have in common. JSON.parse gives every pod its own copy of every string and
 * object; on a node that knows every pod of the cluster, the copies of the same namespace, node name,
 * label set and port list cost more than the pods' own data. A Deployment's pods carry the same
 * labels (pod-template-hash included) and ports, so one record each is shared by all of them.
 *
 * The tables are bounded: when one grows past its limit it starts afresh. What was shared stays
 * shared; only new pods stop finding old entries until they are seen again. So churn (every rollout
 * brings a new pod-template-hash) can never grow them without end.
 */
export class Interner {
  private strings = new Map<string, string>();
  private labelSets = new Map<string, Labels>();
  private portLists = new Map<string, readonly NamedContainerPort[]>();
  private namespaces = new Map<string, string>();

  /** Entries per table; a cluster's distinct label sets (one per ReplicaSet) are far fewer than its pods. */
  constructor(private readonly limit = 10_000) {}

  string(value: string): string {
    const found = this.strings.get(value);
    if (found !== undefined) return found;
    if (this.strings.size >= this.limit) this.strings = new Map();
    this.strings.set(value, value);
    return value;
  }

  /** The shared copy of a label set seen (and found valid) before, or undefined. */
  knownLabels(raw: Record<string, unknown>): Labels | undefined {
    const key = labelKey(raw);
    return key === null ? undefined : this.labelSets.get(key);
  }

  /** The shared copy of a namespace name seen before (it was valid: only valid ones are kept), or undefined. */
  knownNamespace(name: string): string | undefined {
    return this.namespaces.get(name);
  }

  /** Keeps a valid namespace name for knownNamespace. */
  namespace(name: string): string {
    const found = this.namespaces.get(name);
    if (found !== undefined) return found;
    if (this.namespaces.size >= this.limit) this.namespaces = new Map();
    const shared = this.string(name);
    this.namespaces.set(shared, shared);
    return shared;
  }

  labels(labels: Record<string, string>): Labels {
    const key = labelKey(labels);
    if (key === null || key === '') return EMPTY_LABELS;
    const keys = Object.keys(labels).sort();
    const found = this.labelSets.get(key);
    if (found !== undefined) return found;
    const shared: Record<string, string> = {};
    for (const k of keys) shared[this.string(k)] = this.string(labels[k]!);
    Object.freeze(shared);
    if (this.labelSets.size >= this.limit) this.labelSets = new Map();
    this.labelSets.set(key, shared);
    return shared;
  }

  ports(ports: readonly NamedContainerPort[]): readonly NamedContainerPort[] {
    if (ports.length === 0) return NO_PORTS;
    const key = ports.map((p) => `${p.name}\u0000${p.protocol}\u0000${p.port}`).join('\u0001');
    const found = this.portLists.get(key);
    if (found !== undefined) return found;
    const shared = Object.freeze(ports.map((p) => Object.freeze({ name: this.string(p.name), protocol: p.protocol, port: p.port })));
    if (this.portLists.size >= this.limit) this.portLists = new Map();
    this.portLists.set(key, shared);
    return shared;
  }
}

/**
 * A label set's identity (sorted key/value pairs), or null when a value is not a string. Joined, not
 * appended to: a string built by += is a chain of pieces, and the table keeps its keys.
 */
function labelKey(labels: Record<string, unknown>): string | null {
  const keys = Object.keys(labels).sort();
  const parts: string[] = [];
  for (const k of keys) {
    const value = labels[k];
    if (typeof value !== 'string') return null;
    parts.push(k, value);
  }
  return parts.join('\u0000');
}

const EMPTY_LABELS: Labels = Object.freeze({});
const NO_PORTS: readonly NamedContainerPort[] = Object.freeze([]);

/** Shares nothing: for one-off parsing (files, tests). */
export const NO_INTERNING: Interning = {
  string: (value: string) => value,
  namespace: (name: string) => name,
  labels: (labels: Record<string, string>): Labels => labels,
  ports: (ports: readonly NamedContainerPort[]) => ports,
  knownLabels: () => undefined,
  knownNamespace: () => undefined,
};

export type Interning = Pick<Interner, 'string' | 'namespace' | 'labels' | 'ports' | 'knownLabels' | 'knownNamespace'>;
