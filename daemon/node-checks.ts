import type { NodeNetwork } from '../lib/node-network.js';

/**
 * What the node's own network says about whether palisade's rules see its pods' traffic. Pure, so the
 * status page, the metrics and the tests all read the same verdicts.
 *
 * - kube-proxy in IPVS mode holds every ClusterIP on its kube-ipvs0 link. A pod's packet to a Service
 *   is then addressed to the node itself (INPUT, where palisade lets a pod reach its node) and IPVS
 *   hands it to a local backend from OUTPUT, which palisade does not hook: egress and ingress policy
 *   would both be skipped for Service traffic. Palisade enforces all or nothing, so it refuses.
 * - A host route to one of this node's pods through an interface none of the configured prefixes
 *   matches means that pod's traffic bypasses palisade's dispatch: its veths carry another prefix
 *   (AWS_VPC_K8S_CNI_VETHPREFIX set without --interface-prefix to match), so nothing is enforced on it.
 */

export const IPVS_LINK = 'kube-ipvs0';

export interface Refusal {
  /** A short, stable label value for the metric. */
  readonly reason: 'kube-proxy-ipvs';
  readonly message: string;
}

export interface UnenforcedRoute {
  readonly iface: string;
  readonly address: string;
  readonly table: string;
  /** The local pod the address belongs to. */
  readonly pod: string;
}

export interface NodeFindings {
  readonly refusal: Refusal | null;
  readonly unenforced: readonly UnenforcedRoute[];
}

/** Whether an interface name is one of the configured prefixes' pod interfaces (node links like vlan.eth.1 are not). */
export function matchesPodPrefix(iface: string, prefixes: readonly string[]): boolean {
  return prefixes.some((p) => iface.startsWith(p) && iface[p.length] !== '.' && iface.length > p.length);
}

export function checkNodeNetwork(network: NodeNetwork, prefixes: readonly string[], localPods: ReadonlyMap<string, string>): NodeFindings {
  const refusal: Refusal | null = network.links.includes(IPVS_LINK)
    ? {
      reason: 'kube-proxy-ipvs',
      message: `kube-proxy runs in IPVS mode here (the ${IPVS_LINK} link exists): Service traffic would pass the node's INPUT and OUTPUT chains, where pod policy cannot be enforced, so palisade programs nothing on this node; run kube-proxy in iptables or nftables mode`,
    }
    : null;
  const unenforced: UnenforcedRoute[] = [];
  const seen = new Set<string>();
  for (const route of network.hostRoutes) {
    const pod = localPods.get(route.address);
    if (pod === undefined || matchesPodPrefix(route.iface, prefixes)) continue;
    const key = `${route.iface}|${route.address}`;
    if (seen.has(key)) continue;
    seen.add(key);
    unenforced.push({ iface: route.iface, address: route.address, table: route.table, pod });
  }
  unenforced.sort((a, b) => (a.iface < b.iface ? -1 : a.iface > b.iface ? 1 : a.address < b.address ? -1 : 1));
  return { refusal, unenforced };
}
