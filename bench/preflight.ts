import { commandAvailable } from '../lib/exec.js';
import { netnsSupported, removeStaleNamespaces } from '../lib/netns.js';

/**
 * Whether a benchmark that needs throwaway network namespaces and these programs can run here: null
 * when it can (and a crashed earlier run's namespaces under `prefix` are gone), else why not.
 */
export async function namespaceBenchBlocked(prefix: string, programs: readonly string[]): Promise<string | null> {
  const support = await netnsSupported();
  if (!support.ok) return support.reason;
  for (const program of programs) if (!(await commandAvailable(program))) return `${program} is not installed`;
  await removeStaleNamespaces(prefix);
  return null;
}
