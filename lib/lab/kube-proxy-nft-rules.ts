/**
 * kube-proxy's nftables mode as one `nft -f` transaction, in the shape pkg/proxy/nftables writes on a
 * full sync. Everything lives in its own table, `ip kube-proxy`:
 *
 *   nat-prerouting, nat-output (dstnat, -100) -> services: ip daddr . proto . port vmap @service-ips
 *       -> service-<hash>-ns/svc/tcp/port: numgen random mod N vmap { i : goto endpoint-... }
 *       -> endpoint-<hash>-...: hairpin source -> mark-for-masquerade; dnat to ip:port
 *   nat-postrouting (srcnat, 100) -> masquerading: masquerade what is marked, clearing the mark
 *   filter-* (dstnat - 10, before DNAT): services without endpoints rejected, unknown ports of
 *       ClusterIPs rejected, unallocated ClusterIPs dropped (filter-forward and the post-DNAT output chain)
 *
 * Unlike iptables mode there are no jumps into chains anyone else owns: every base chain hooks netfilter
 * itself, at its own priority. Pure: no I/O.
 */
import { MASQUERADE_MARK } from './kube-proxy-iptables-rules.js';
import type { ProxyRuleOptions } from './kube-proxy-iptables-rules.js';
import { endpointText, isNftServiceChain, nftEndpointChain, nftServiceChain, servicePortName } from './kube-proxy-names.js';
import type { ServicePortEndpoints } from './services.js';
import { SERVICE_CIDR } from './services.js';

export const NFT_TABLE = 'ip kube-proxy';

interface BaseChain {
  readonly name: string;
  readonly type: 'filter' | 'nat';
  readonly hook: 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting';
  /** Numbers, as knftables writes them: older nft refuse some named priorities on some hooks. */
  readonly priority: number;
}

const DSTNAT = -100;
const SRCNAT = 100;

/** Filtering runs before DNAT (on the ClusterIP as sent); the post-DNAT output chain after it. */
export const NFT_BASE_CHAINS: readonly BaseChain[] = [
  { name: 'filter-prerouting', type: 'filter', hook: 'prerouting', priority: DSTNAT - 10 },
  { name: 'filter-input', type: 'filter', hook: 'input', priority: DSTNAT - 10 },
  { name: 'filter-forward', type: 'filter', hook: 'forward', priority: DSTNAT - 10 },
  { name: 'filter-output', type: 'filter', hook: 'output', priority: DSTNAT - 10 },
  { name: 'filter-output-post-dnat', type: 'filter', hook: 'output', priority: DSTNAT + 10 },
  { name: 'nat-prerouting', type: 'nat', hook: 'prerouting', priority: DSTNAT },
  { name: 'nat-output', type: 'nat', hook: 'output', priority: DSTNAT },
  { name: 'nat-postrouting', type: 'nat', hook: 'postrouting', priority: SRCNAT },
];

const NFT_JUMPS: readonly { readonly to: string; readonly from: string; readonly match: string }[] = [
  { to: 'nodeport-endpoints-check', from: 'filter-input', match: 'ct state new' },
  { to: 'service-endpoints-check', from: 'filter-input', match: 'ct state new' },
  { to: 'service-endpoints-check', from: 'filter-forward', match: 'ct state new' },
  { to: 'service-endpoints-check', from: 'filter-output', match: 'ct state new' },
  { to: 'firewall-check', from: 'filter-prerouting', match: 'ct state new' },
  { to: 'firewall-check', from: 'filter-output', match: 'ct state new' },
  { to: 'services', from: 'nat-output', match: '' },
  { to: 'services', from: 'nat-prerouting', match: '' },
  { to: 'masquerading', from: 'nat-postrouting', match: '' },
  { to: 'cluster-ips-check', from: 'filter-forward', match: 'ct state new' },
  { to: 'cluster-ips-check', from: 'filter-output-post-dnat', match: 'ct state new' },
];

const ADDR_PROTO_PORT = 'ipv4_addr . inet_proto . inet_service : verdict';
const PROTO_PORT = 'inet_proto . inet_service : verdict';

export interface NftSyncOptions extends ProxyRuleOptions {
  /** A kube-proxy that has just started deletes and recreates its base chains once. */
  readonly recreateBaseChains?: boolean;
}

export interface NftSync {
  readonly transaction: string;
  /** Service chains no longer used: emptied by the transaction, to be deleted after it. */
  readonly stale: readonly string[];
}

/** One full sync; `existing` is the chains the table holds now. */
export function renderNftSync(ports: readonly ServicePortEndpoints[], options: NftSyncOptions, existing: ReadonlySet<string>): NftSync {
  const out: string[] = [`add table ${NFT_TABLE} { comment ${quote('rules for kube-proxy')} ; }`];
  const created = new Set<string>();
  const ensureChain = (name: string): void => {
    if (created.has(name)) return;
    created.add(name);
    out.push(`add chain ${NFT_TABLE} ${name}`, `flush chain ${NFT_TABLE} ${name}`);
  };
  const rule = (chain: string, text: string): void => void out.push(`add rule ${NFT_TABLE} ${chain} ${text}`);
  const mark = `0x${MASQUERADE_MARK.toString(16)}`;

  if (options.recreateBaseChains === true) for (const c of NFT_BASE_CHAINS) out.push(`add chain ${NFT_TABLE} ${c.name}`, `delete chain ${NFT_TABLE} ${c.name}`);
  for (const c of NFT_BASE_CHAINS) out.push(`add chain ${NFT_TABLE} ${c.name} { type ${c.type} hook ${c.hook} priority ${c.priority} ; }`, `flush chain ${NFT_TABLE} ${c.name}`);
  for (const j of NFT_JUMPS) {
    ensureChain(j.to);
    rule(j.from, `${j.match === '' ? '' : `${j.match} `}jump ${j.to}`);
  }
  for (const c of ['services', 'cluster-ips-check', 'masquerading', 'mark-for-masquerade']) ensureChain(c);
  rule('mark-for-masquerade', `mark set mark or ${mark}`);
  rule('masquerading', `mark and ${mark} == 0 return`);
  // Cleared so a packet that goes round the stack again is not masqueraded twice.
  rule('masquerading', `mark set mark xor ${mark}`);
  rule('masquerading', 'masquerade fully-random');
  out.push(`add set ${NFT_TABLE} cluster-ips { type ipv4_addr ; comment ${quote('Active ClusterIPs')} ; }`);
  rule('cluster-ips-check', `ip daddr @cluster-ips reject comment ${quote('Reject traffic to invalid ports of ClusterIPs')}`);
  rule('cluster-ips-check', `ip daddr { ${SERVICE_CIDR} } drop comment ${quote('Drop traffic to unallocated ClusterIPs')}`);
  // Every node address takes NodePorts, so the set of those that do is not wanted: added, then deleted.
  out.push(`add set ${NFT_TABLE} nodeport-ips { type ipv4_addr ; comment ${quote('IPs that accept NodePort traffic')} ; }`, `delete set ${NFT_TABLE} nodeport-ips`);
  out.push(`add map ${NFT_TABLE} no-endpoint-services { type ${ADDR_PROTO_PORT} ; comment ${quote('vmap to drop or reject packets to services with no endpoints')} ; }`);
  out.push(`add map ${NFT_TABLE} no-endpoint-nodeports { type ${PROTO_PORT} ; comment ${quote('vmap to drop or reject packets to service nodeports with no endpoints')} ; }`);
  out.push(`add chain ${NFT_TABLE} reject-chain { comment ${quote('helper for @no-endpoint-services / @no-endpoint-nodeports')} ; }`, `flush chain ${NFT_TABLE} reject-chain`);
  rule('reject-chain', 'reject');
  rule('service-endpoints-check', 'ip daddr . meta l4proto . th dport vmap @no-endpoint-services');
  rule('nodeport-endpoints-check', 'ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports');
  out.push(`add map ${NFT_TABLE} firewall-ips { type ${ADDR_PROTO_PORT} ; comment ${quote('destinations that are subject to LoadBalancerSourceRanges')} ; }`);
  rule('firewall-check', 'ip daddr . meta l4proto . th dport vmap @firewall-ips');
  out.push(`add map ${NFT_TABLE} service-ips { type ${ADDR_PROTO_PORT} ; comment ${quote('ClusterIP, ExternalIP and LoadBalancer IP traffic')} ; }`);
  out.push(`add map ${NFT_TABLE} service-nodeports { type ${PROTO_PORT} ; comment ${quote('NodePort traffic')} ; }`);
  rule('services', 'ip daddr . meta l4proto . th dport vmap @service-ips');
  rule('services', 'fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports');
  out.push(`flush set ${NFT_TABLE} cluster-ips`);
  for (const m of ['service-ips', 'firewall-ips', 'no-endpoint-services', 'no-endpoint-nodeports', 'service-nodeports']) out.push(`flush map ${NFT_TABLE} ${m}`);

  const clusterIps = new Set<string>();
  for (const p of ports) {
    const proto = p.protocol.toLowerCase();
    const key = `${p.clusterIp} . ${proto} . ${p.port}`;
    if (!clusterIps.has(p.clusterIp)) out.push(`add element ${NFT_TABLE} cluster-ips { ${p.clusterIp} }`);
    clusterIps.add(p.clusterIp);
    if (p.endpoints.length === 0) {
      out.push(`add element ${NFT_TABLE} no-endpoint-services { ${key} comment ${quote(servicePortName(p))} : goto reject-chain }`);
      continue;
    }
    const svc = nftServiceChain(p);
    const endpoints = p.endpoints.map((e) => ({ e, chain: nftEndpointChain(p, e) }));
    for (const { chain } of endpoints) ensureChain(chain);
    ensureChain(svc);
    out.push(`add element ${NFT_TABLE} service-ips { ${key} : goto ${svc} }`);
    const toService = `ip daddr ${p.clusterIp} ${proto} dport ${p.port}`;
    if (options.masqueradeAll === true) rule(svc, `${toService} jump mark-for-masquerade`);
    else if (options.clusterCidr !== undefined) rule(svc, `${toService} ip saddr != ${options.clusterCidr} jump mark-for-masquerade`);
    rule(svc, `numgen random mod ${endpoints.length} vmap { ${endpoints.map(({ chain }, i) => `${i} : goto ${chain}`).join(' , ')} }`);
    for (const { e, chain } of endpoints) {
      // A pod reaching itself through its Service must be masqueraded, or its reply would not go back through the node.
      rule(chain, `ip saddr ${e.ip} jump mark-for-masquerade`);
      rule(chain, `meta l4proto ${proto} dnat to ${endpointText(e)}`);
    }
  }
  const stale = [...existing].filter((c) => isNftServiceChain(c) && !created.has(c)).sort();
  for (const c of stale) out.push(`flush chain ${NFT_TABLE} ${c}`);
  return { transaction: `${out.join('\n')}\n`, stale };
}

/** Deletes stale service chains once nothing refers to them any more. */
export function renderNftDeleteChains(chains: readonly string[]): string {
  return chains.map((c) => `delete chain ${NFT_TABLE} ${c}\n`).join('');
}

/** Removes the whole table; adding it first makes this succeed where it does not exist. */
export function renderNftRemoval(): string {
  return `add table ${NFT_TABLE}\ndelete table ${NFT_TABLE}\n`;
}

function quote(text: string): string {
  return `"${text.replace(/(["\\])/g, '\\$1')}"`;
}
