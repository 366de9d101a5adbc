/** A map from a key to a set of values, the shape of every secondary index in the compiler. */
export function addToIndex(index: Map<string, Set<string>>, key: string, value: string): void {
  const set = index.get(key);
  if (set === undefined) index.set(key, new Set([value]));
  else set.add(value);
}

/** Removes a value, and the key with it once its set is empty, so indexes do not grow with churn. */
export function removeFromIndex(index: Map<string, Set<string>>, key: string, value: string): void {
  const set = index.get(key);
  set?.delete(value);
  if (set?.size === 0) index.delete(key);
}
