import type { PodRecord } from './model.js';
import { podKey } from './model.js';
import { addToIndex, removeFromIndex } from './index-map.js';

/**
 * Pods by namespace and label, and by named port, so a set can be filled from the pods that could be
 * in it instead of from every pod of the cluster: a selector peer `app: web` looks at the pods of its
 * namespaces labelled app=web, a named port `http` at the pods declaring it. Labels are indexed per
 * namespace so that what a selector costs depends only on the namespaces it names: pods in other
 * namespaces, another tenant's, never change it. Kept by pod key; the compiler resolves keys to records.
 */
export class PodIndexes {
  /** namespace -> label key -> value -> pod keys */
  private readonly byLabel = new Map<string, Map<string, Map<string, Set<string>>>>();
  /** "namespace\0key" -> pods carrying the key */
  private readonly keyCount = new Map<string, number>();
  private readonly byPort = new Map<string, Set<string>>();

  /** Moves a pod from its old labels and ports (before) to its new ones (after); either may be undefined. */
  update(before: PodRecord | undefined, after: PodRecord | undefined): void {
    const key = podKey((after ?? before)!);
    if (before !== undefined) {
      const namespace = this.byLabel.get(before.namespace);
      for (const [label, value] of Object.entries(before.labels)) {
        const values = namespace?.get(label);
        if (values === undefined) continue;
        removeFromIndex(values, value, key);
        if (values.size === 0) namespace!.delete(label);
        const counted = `${before.namespace}\u0000${label}`;
        const left = (this.keyCount.get(counted) ?? 1) - 1;
        if (left === 0) this.keyCount.delete(counted);
        else this.keyCount.set(counted, left);
      }
      if (namespace?.size === 0) this.byLabel.delete(before.namespace);
      for (const port of before.namedPorts) removeFromIndex(this.byPort, `${port.protocol}/${port.name}`, key);
    }
    if (after !== undefined) {
      let namespace = this.byLabel.get(after.namespace);
      if (namespace === undefined) {
        namespace = new Map();
        this.byLabel.set(after.namespace, namespace);
      }
      for (const [label, value] of Object.entries(after.labels)) {
        let values = namespace.get(label);
        if (values === undefined) {
          values = new Map();
          namespace.set(label, values);
        }
        addToIndex(values, value, key);
        const counted = `${after.namespace}\u0000${label}`;
        this.keyCount.set(counted, (this.keyCount.get(counted) ?? 0) + 1);
      }
      for (const port of after.namedPorts) addToIndex(this.byPort, `${port.protocol}/${port.name}`, key);
    }
  }

  /** Keys of pods in the namespaces carrying the label with one of the values (any value when null), and how many. */
  labelled(namespaces: readonly string[], label: string, values: readonly string[] | null): { count: number; keys: Iterable<string> } {
    const sets: Set<string>[] = [];
    let count = 0;
    for (const ns of namespaces) {
      const byValue = this.byLabel.get(ns)?.get(label);
      if (byValue === undefined) continue;
      if (values === null) {
        count += this.keyCount.get(`${ns}\u0000${label}`) ?? 0;
        sets.push(...byValue.values());
        continue;
      }
      for (const v of values) {
        const set = byValue.get(v);
        if (set === undefined) continue;
        sets.push(set);
        count += set.size;
      }
    }
    return { count, keys: concat(sets) };
  }

  declaring(protocol: string, name: string): Iterable<string> {
    return this.byPort.get(`${protocol}/${name}`) ?? [];
  }
}

function* concat(sets: readonly Set<string>[]): Iterable<string> {
  for (const set of sets) yield* set;
}
