import type { PodRecord } from './model.js';

/**
 * Pods by namespace and label, and by named port, so a set can be filled from the pods that could be
 * in it instead of from every pod of the cluster: a selector peer `app: web` looks at the pods of its
 * namespaces labelled app=web, a named port `http` at the pods declaring it. Labels are indexed per
 * namespace so that what a selector costs depends only on the namespaces it names: pods in other
 * namespaces, another tenant's, never change it. Kept by pod key; the compiler resolves keys to records.
 * Nested maps rather than composite string keys: every pod update would otherwise build and hash a
 * new string per label.
 */

interface LabelEntry {
  /** Pods carrying the label, whatever the value. */
  count: number;
  readonly byValue: Map<string, Set<string>>;
}

export class PodIndexes {
  /** namespace -> label key -> values -> pod keys */
  private readonly byLabel = new Map<string, Map<string, LabelEntry>>();
  /** protocol -> port name -> pod keys */
  private readonly byPort = new Map<string, Map<string, Set<string>>>();

  /** Moves a pod from its old labels and ports (before) to its new ones (after); either may be undefined. */
  update(before: PodRecord | undefined, after: PodRecord | undefined): void {
    if (before !== undefined && after !== undefined && before.labels === after.labels && before.namedPorts === after.namedPorts && before.namespace === after.namespace) return;
    if (before !== undefined) this.remove(before);
    if (after !== undefined) this.add(after);
  }

  private add(pod: PodRecord): void {
    let namespace = this.byLabel.get(pod.namespace);
    if (namespace === undefined) {
      namespace = new Map();
      this.byLabel.set(pod.namespace, namespace);
    }
    for (const label in pod.labels) {
      let entry = namespace.get(label);
      if (entry === undefined) {
        entry = { count: 0, byValue: new Map() };
        namespace.set(label, entry);
      }
      const value = pod.labels[label]!;
      let pods = entry.byValue.get(value);
      if (pods === undefined) {
        pods = new Set();
        entry.byValue.set(value, pods);
      }
      if (!pods.has(pod.key)) {
        pods.add(pod.key);
        entry.count++;
      }
    }
    for (const port of pod.namedPorts) {
      let names = this.byPort.get(port.protocol);
      if (names === undefined) {
        names = new Map();
        this.byPort.set(port.protocol, names);
      }
      let pods = names.get(port.name);
      if (pods === undefined) {
        pods = new Set();
        names.set(port.name, pods);
      }
      pods.add(pod.key);
    }
  }

  private remove(pod: PodRecord): void {
    const namespace = this.byLabel.get(pod.namespace);
    if (namespace !== undefined) {
      for (const label in pod.labels) {
        const entry = namespace.get(label);
        const pods = entry?.byValue.get(pod.labels[label]!);
        if (entry === undefined || pods === undefined || !pods.delete(pod.key)) continue;
        entry.count--;
        if (pods.size === 0) entry.byValue.delete(pod.labels[label]!);
        if (entry.byValue.size === 0) namespace.delete(label);
      }
      if (namespace.size === 0) this.byLabel.delete(pod.namespace);
    }
    for (const port of pod.namedPorts) {
      const names = this.byPort.get(port.protocol);
      const pods = names?.get(port.name);
      pods?.delete(pod.key);
      if (pods?.size === 0) names!.delete(port.name);
    }
  }

  /** Keys of pods in the namespaces carrying the label with one of the values (any value when null), and how many. */
  labelled(namespaces: readonly string[], label: string, values: readonly string[] | null): { count: number; keys: Iterable<string> } {
    const sets: Set<string>[] = [];
    let count = 0;
    for (const ns of namespaces) {
      const entry = this.byLabel.get(ns)?.get(label);
      if (entry === undefined) continue;
      if (values === null) {
        count += entry.count;
        sets.push(...entry.byValue.values());
        continue;
      }
      for (const v of values) {
        const set = entry.byValue.get(v);
        if (set === undefined) continue;
        sets.push(set);
        count += set.size;
      }
    }
    return { count, keys: concat(sets) };
  }

  declaring(protocol: string, name: string): Iterable<string> {
    return this.byPort.get(protocol)?.get(name) ?? [];
  }
}

function* concat(sets: readonly Set<string>[]): Iterable<string> {
  for (const set of sets) yield* set;
}
