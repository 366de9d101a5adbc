import type { Resource } from './api-server.js';

/**
 * The lab API server's discovery documents (the legacy, unaggregated ones: APIVersions, APIGroupList,
 * APIGroup, APIResourceList), built from the resources it serves now: a kind whose CRD is not
 * installed is in none of them, as with a real API server. Pure; the server sends what this returns.
 */

interface GroupVersion {
  readonly groupVersion: string;
  readonly version: string;
}

/** "networking.k8s.io/v1" → group "networking.k8s.io"; "v1" → the core group "". */
function groupOf(apiVersion: string): { group: string; version: string } {
  const slash = apiVersion.indexOf('/');
  return slash < 0 ? { group: '', version: apiVersion } : { group: apiVersion.slice(0, slash), version: apiVersion.slice(slash + 1) };
}

function verbsOf(resource: Resource): string[] {
  if (resource.writable === true) return ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'];
  // Only a Node is patched (its taints) among the read kinds.
  return resource.kind === 'Node' ? ['get', 'list', 'patch', 'watch'] : ['get', 'list', 'watch'];
}

function apiResources(resources: readonly Resource[]): Record<string, unknown>[] {
  return resources.flatMap((r) => {
    const main = {
      name: r.plural,
      singularName: r.kind.toLowerCase(),
      namespaced: r.namespaced,
      kind: r.kind,
      verbs: verbsOf(r),
      ...(r.shortNames === undefined ? {} : { shortNames: [...r.shortNames] }),
    };
    return r.statusSubresource === true ? [main, { name: `${r.plural}/status`, singularName: '', namespaced: r.namespaced, kind: r.kind, verbs: ['get', 'patch', 'update'] }] : [main];
  });
}

function groupDocument(name: string, versions: readonly GroupVersion[]): Record<string, unknown> {
  return { name, versions, preferredVersion: versions[0] };
}

/** The discovery document at `pathname`, or null when the path is not a discovery path (or names nothing served). */
export function discoveryDocument(pathname: string, served: readonly Resource[]): Record<string, unknown> | null {
  const path = pathname.replace(/\/+$/, '');
  if (path === '/api') return { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [] };
  const groups = new Map<string, GroupVersion[]>();
  for (const r of served) {
    const { group, version } = groupOf(r.apiVersion);
    if (group === '') continue;
    const list = groups.get(group) ?? [];
    if (!list.some((v) => v.version === version)) list.push({ groupVersion: r.apiVersion, version });
    groups.set(group, list);
  }
  if (path === '/apis') {
    return { kind: 'APIGroupList', apiVersion: 'v1', groups: [...groups].sort(([a], [b]) => (a < b ? -1 : 1)).map(([name, versions]) => groupDocument(name, versions)) };
  }
  if (path === '/api/v1') return { kind: 'APIResourceList', groupVersion: 'v1', resources: apiResources(served.filter((r) => r.apiVersion === 'v1')) };
  const match = /^\/apis\/([^/]+)(?:\/([^/]+))?$/.exec(path);
  if (match === null) return null;
  const [, group, version] = match;
  const versions = groups.get(group!);
  if (versions === undefined) return null;
  if (version === undefined) return { kind: 'APIGroup', apiVersion: 'v1', ...groupDocument(group!, versions) };
  const groupVersion = `${group!}/${version}`;
  const resources = served.filter((r) => r.apiVersion === groupVersion);
  if (resources.length === 0) return null;
  return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion, resources: apiResources(resources) };
}
