/** The Kubernetes objects the demo applies to the lab API server: its pods, its namespace, the example policies. */

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PalisadeError } from '../../lib/errors.js';
import { loadManifests } from '../../lib/manifests.js';
import { DEMO_NAMESPACE, DEMO_NODE, DEMO_STEPS } from './script.js';

export type Obj = Record<string, unknown>;

/** From dist/daemon/demo/objects.js, the repository root is three levels up. */
const REPO_ROOT = path.resolve(fileURLToPath(import.meta.url), '../../../..');
const EXAMPLES_DIR = path.join(REPO_ROOT, 'manifests', 'examples');

/** The NetworkPolicy or ClusterNetworkPolicy of each example file the steps create, by file name. */
export async function loadExamplePolicies(): Promise<Map<string, Obj>> {
  const files = new Set<string>();
  for (const step of DEMO_STEPS) for (const c of step.commands) if (c.action.kind === 'create') files.add(c.action.file);
  const policies = new Map<string, Obj>();
  for (const file of files) {
    const full = path.join(EXAMPLES_DIR, file);
    const loaded = await loadManifests([full]);
    const first = loaded[0]?.object;
    if (loaded.length !== 1 || first === undefined || (first['kind'] !== 'NetworkPolicy' && first['kind'] !== 'ClusterNetworkPolicy')) {
      throw new PalisadeError('DEMO', `${full}: expected exactly one NetworkPolicy or ClusterNetworkPolicy`);
    }
    policies.set(file, first);
  }
  return policies;
}

export function podObject(name: string, ip: string, labels: Readonly<Record<string, string>>): Obj {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: DEMO_NAMESPACE, labels: { ...labels } },
    spec: { nodeName: DEMO_NODE.name, containers: [{ name: name, image: 'busybox', command: ['sleep', '3600'] }] },
    status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] },
  };
}

export function namespaceObject(name: string, labels: Readonly<Record<string, string>>): Obj {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { 'kubernetes.io/metadata.name': name, ...labels } } };
}

export function metadataName(object: Obj): string {
  const metadata = object['metadata'] as Obj | undefined;
  return String(metadata?.['name'] ?? '');
}
