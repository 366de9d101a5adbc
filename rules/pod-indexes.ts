import type { PodRecord } from './model.js';
import { podKey } from './model.js';
import { addToIndex, removeFromIndex } from './index-map.js';

/**
 * Pods by label and by named port, so a set can be filled from the pods that could be in it instead of
 * from every pod of the cluster: a selector peer `app: web` looks at the pods labelled app=web, a named
 * port `http` at the pods declaring it. Kept by pod key; the compiler resolves keys to records.
 */
export class PodIndexes {
  private readonly byLabel = new Map<string, Map<string, Set<string>>>();
  private readonly labelCount = new Map<string, number>();
  private readonly byPort = new Map<string, Set<string>>();

  /** Moves a pod from its old labels and ports (before) to its new ones (after); either may be undefined. */
  update(before: PodRecord | undefined, after: PodRecord | undefined): void {
    const key = podKey((after ?? before)!);
    if (before !== undefined) {
      for (const [label, value] of Object.entries(before.labels)) {
        const values = this.byLabel.get(label);
        if (values === undefined) continue;
        removeFromIndex(values, value, key);
        if (values.size === 0) this.byLabel.delete(label);
        const left = (this.labelCount.get(label) ?? 1) - 1;
        if (left === 0) this.labelCount.delete(label);
        else this.labelCount.set(label, left);
      }
      for (const port of before.namedPorts) removeFromIndex(this.byPort, `${port.protocol}/${port.name}`, key);
    }
    if (after !== undefined) {
      for (const [label, value] of Object.entries(after.labels)) {
        let values = this.byLabel.get(label);
        if (values === undefined) {
          values = new Map();
          this.byLabel.set(label, values);
        }
        addToIndex(values, value, key);
        this.labelCount.set(label, (this.labelCount.get(label) ?? 0) + 1);
      }
      for (const port of after.namedPorts) addToIndex(this.byPort, `${port.protocol}/${port.name}`, key);
    }
  }

  /** Keys of pods carrying the label with one of the values (any value when null), and how many. */
  labelled(label: string, values: readonly string[] | null): { count: number; keys: Iterable<string> } {
    const byValue = this.byLabel.get(label);
    if (byValue === undefined) return { count: 0, keys: [] };
    if (values === null) return { count: this.labelCount.get(label) ?? 0, keys: concat([...byValue.values()]) };
    const sets = values.flatMap((v) => {
      const set = byValue.get(v);
      return set === undefined ? [] : [set];
    });
    return { count: sets.reduce((n, s) => n + s.size, 0), keys: concat(sets) };
  }

  declaring(protocol: string, name: string): Iterable<string> {
    return this.byPort.get(`${protocol}/${name}`) ?? [];
  }
}

function* concat(sets: readonly Set<string>[]): Iterable<string> {
  for (const set of sets) yield* set;
}
