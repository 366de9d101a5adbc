/**
 * kube-proxy's iptables mode as restore text, in the shape pkg/proxy/iptables writes on a full sync:
 *
 *   nat     PREROUTING, OUTPUT -> KUBE-SERVICES -> KUBE-SVC-<hash>   (one per service port; random spread)
 *                                                  -> KUBE-SEP-<hash>  (one per endpoint: hairpin mark, DNAT)
 *           POSTROUTING -> KUBE-POSTROUTING: MASQUERADE what KUBE-MARK-MASQ marked, clearing the mark
 *   filter  FORWARD -> KUBE-PROXY-FIREWALL, KUBE-FORWARD (INVALID drop, mark ACCEPT, established ACCEPT),
 *           KUBE-SERVICES (REJECT for services without endpoints), KUBE-EXTERNAL-SERVICES
 *
 * The chains are rewritten whole through one `iptables-restore --noflush`; the jumps into them from
 * the built-in chains are not part of it (kube-proxy never rewrites a built-in chain) and are listed in
 * IPTABLES_JUMPS for the driver to check and prepend. Pure: no I/O.
 */
import type { ServicePortEndpoints } from './services.js';
import { endpointText, iptablesEndpointChain, iptablesServiceChain, isIptablesServiceChain, servicePortName } from './kube-proxy-names.js';

/** kube-proxy's default --iptables-masquerade-bit 14. */
export const MASQUERADE_MARK = 0x4000;

export interface ProxyRuleOptions {
  /** kube-proxy's --cluster-cidr: traffic to a ClusterIP from outside it is masqueraded. */
  readonly clusterCidr?: string;
  /** kube-proxy's --masquerade-all: all traffic to a ClusterIP is masqueraded. */
  readonly masqueradeAll?: boolean;
}

export type IptablesTable = 'filter' | 'nat';

export interface IptablesJump {
  readonly table: IptablesTable;
  readonly chain: 'INPUT' | 'FORWARD' | 'OUTPUT' | 'PREROUTING' | 'POSTROUTING';
  readonly target: string;
  readonly match: readonly string[];
  /** Empty for the kubelet-owned jumps kube-proxy also ensures, which carry no comment. */
  readonly comment: string;
}

const NEW = ['-m', 'conntrack', '--ctstate', 'NEW'] as const;

/**
 * In the order kube-proxy ensures them, each prepended when missing: so on a node where none existed,
 * FORWARD starts KUBE-PROXY-FIREWALL, KUBE-FORWARD, KUBE-SERVICES, KUBE-EXTERNAL-SERVICES.
 */
export const IPTABLES_JUMPS: readonly IptablesJump[] = [
  { table: 'filter', chain: 'INPUT', target: 'KUBE-EXTERNAL-SERVICES', match: NEW, comment: 'kubernetes externally-visible service portals' },
  { table: 'filter', chain: 'FORWARD', target: 'KUBE-EXTERNAL-SERVICES', match: NEW, comment: 'kubernetes externally-visible service portals' },
  { table: 'filter', chain: 'INPUT', target: 'KUBE-NODEPORTS', match: [], comment: 'kubernetes health check service ports' },
  { table: 'filter', chain: 'FORWARD', target: 'KUBE-SERVICES', match: NEW, comment: 'kubernetes service portals' },
  { table: 'filter', chain: 'OUTPUT', target: 'KUBE-SERVICES', match: NEW, comment: 'kubernetes service portals' },
  { table: 'filter', chain: 'FORWARD', target: 'KUBE-FORWARD', match: [], comment: 'kubernetes forwarding rules' },
  { table: 'filter', chain: 'INPUT', target: 'KUBE-PROXY-FIREWALL', match: NEW, comment: 'kubernetes load balancer firewall' },
  { table: 'filter', chain: 'OUTPUT', target: 'KUBE-PROXY-FIREWALL', match: NEW, comment: 'kubernetes load balancer firewall' },
  { table: 'filter', chain: 'FORWARD', target: 'KUBE-PROXY-FIREWALL', match: NEW, comment: 'kubernetes load balancer firewall' },
  { table: 'nat', chain: 'OUTPUT', target: 'KUBE-SERVICES', match: [], comment: 'kubernetes service portals' },
  { table: 'nat', chain: 'PREROUTING', target: 'KUBE-SERVICES', match: [], comment: 'kubernetes service portals' },
  { table: 'nat', chain: 'POSTROUTING', target: 'KUBE-POSTROUTING', match: [], comment: 'kubernetes postrouting rules' },
  { table: 'filter', chain: 'INPUT', target: 'KUBE-FIREWALL', match: [], comment: '' },
  { table: 'filter', chain: 'OUTPUT', target: 'KUBE-FIREWALL', match: [], comment: '' },
];

/** The rule of a jump as iptables takes it after `-t TABLE -C|-I|-D CHAIN`. */
export function jumpRuleArgs(jump: IptablesJump): string[] {
  return [...jump.match, ...(jump.comment === '' ? [] : ['-m', 'comment', '--comment', jump.comment]), '-j', jump.target];
}

/** kube-proxy's fixed chains, rewritten on every full sync (service chains come on top in nat). */
export const FIXED_CHAINS: Readonly<Record<IptablesTable, readonly string[]>> = {
  filter: ['KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES', 'KUBE-FORWARD', 'KUBE-NODEPORTS', 'KUBE-PROXY-FIREWALL', 'KUBE-FIREWALL'],
  nat: ['KUBE-SERVICES', 'KUBE-NODEPORTS', 'KUBE-POSTROUTING', 'KUBE-MARK-MASQ'],
};

/** Chains of a table that belong to the lab's kube-proxy, out of a table's chain names. */
export function ownedChains(table: IptablesTable, names: Iterable<string>): string[] {
  return [...names].filter((n) => FIXED_CHAINS[table].includes(n) || (table === 'nat' && isIptablesServiceChain(n))).sort();
}

/**
 * One full sync: every kube-proxy chain declared (which empties it) and refilled, and the service
 * chains of `existingNat` that no service port uses any more deleted.
 */
export function renderIptablesSync(ports: readonly ServicePortEndpoints[], options: ProxyRuleOptions, existingNat: ReadonlySet<string>): string {
  const mark = hex(MASQUERADE_MARK);
  const filterRules: string[][] = [[
    '-A', 'KUBE-FIREWALL', '-m', 'comment', '--comment', 'block incoming localnet connections',
    '-d', '127.0.0.0/8', '!', '-s', '127.0.0.0/8', '-m', 'conntrack', '!', '--ctstate', 'RELATED,ESTABLISHED,DNAT', '-j', 'DROP',
  ]];
  const natChains = [...FIXED_CHAINS.nat];
  const natRules: string[][] = [
    ['-A', 'KUBE-POSTROUTING', '-m', 'mark', '!', '--mark', `${mark}/${mark}`, '-j', 'RETURN'],
    // Cleared so a packet that goes round the stack again is not masqueraded twice.
    ['-A', 'KUBE-POSTROUTING', '-j', 'MARK', '--xor-mark', mark],
    ['-A', 'KUBE-POSTROUTING', '-m', 'comment', '--comment', 'kubernetes service traffic requiring SNAT', '-j', 'MASQUERADE', '--random-fully'],
    ['-A', 'KUBE-MARK-MASQ', '-j', 'MARK', '--or-mark', mark],
  ];
  for (const p of ports) {
    const proto = p.protocol.toLowerCase();
    const spn = servicePortName(p);
    const clusterIpMatch = ['-m', 'comment', '--comment', `${spn} cluster IP`, '-m', proto, '-p', proto, '-d', p.clusterIp, '--dport', String(p.port)];
    if (p.endpoints.length === 0) {
      filterRules.push(['-A', 'KUBE-SERVICES', '-m', 'comment', '--comment', `${spn} has no endpoints`, '-m', proto, '-p', proto, '-d', p.clusterIp, '--dport', String(p.port), '-j', 'REJECT']);
      continue;
    }
    const svc = iptablesServiceChain(p);
    natChains.push(svc);
    natRules.push(['-A', 'KUBE-SERVICES', ...clusterIpMatch, '-j', svc]);
    if (options.masqueradeAll === true) natRules.push(['-A', svc, ...clusterIpMatch, '-j', 'KUBE-MARK-MASQ']);
    else if (options.clusterCidr !== undefined) natRules.push(['-A', svc, ...clusterIpMatch, '!', '-s', options.clusterCidr, '-j', 'KUBE-MARK-MASQ']);
    p.endpoints.forEach((e, i) => {
      const remaining = p.endpoints.length - i;
      const spread = remaining > 1 ? ['-m', 'statistic', '--mode', 'random', '--probability', (1 / remaining).toFixed(10)] : [];
      natRules.push(['-A', svc, '-m', 'comment', '--comment', `${spn} -> ${endpointText(e)}`, ...spread, '-j', iptablesEndpointChain(p, e)]);
    });
    for (const e of p.endpoints) {
      const sep = iptablesEndpointChain(p, e);
      natChains.push(sep);
      // A pod reaching itself through its Service must be masqueraded, or its reply would not go back through the node.
      natRules.push(['-A', sep, '-m', 'comment', '--comment', spn, '-s', e.ip, '-j', 'KUBE-MARK-MASQ']);
      natRules.push(['-A', sep, '-m', 'comment', '--comment', spn, '-m', proto, '-p', proto, '-j', 'DNAT', '--to-destination', endpointText(e)]);
    }
  }
  const active = new Set(natChains);
  const stale = [...existingNat].filter((c) => isIptablesServiceChain(c) && !active.has(c)).sort();
  natRules.push(...stale.map((c) => ['-X', c]));
  natRules.push(['-A', 'KUBE-SERVICES', '-m', 'comment', '--comment', 'kubernetes service nodeports; NOTE: this must be the last rule in this chain', '-m', 'addrtype', '--dst-type', 'LOCAL', '-j', 'KUBE-NODEPORTS']);
  filterRules.push(
    ['-A', 'KUBE-FORWARD', '-m', 'conntrack', '--ctstate', 'INVALID', '-j', 'DROP'],
    // Let through what kube-proxy will masquerade even where FORWARD's policy is DROP: this ACCEPT ends
    // the filter FORWARD chain for such packets, so whatever comes after this jump never sees them.
    ['-A', 'KUBE-FORWARD', '-m', 'comment', '--comment', 'kubernetes forwarding rules', '-m', 'mark', '--mark', `${mark}/${mark}`, '-j', 'ACCEPT'],
    ['-A', 'KUBE-FORWARD', '-m', 'comment', '--comment', 'kubernetes forwarding conntrack rule', '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', 'ACCEPT'],
  );
  return [
    '*filter',
    ...FIXED_CHAINS.filter.map(declare),
    ...filterRules.map(restoreLine),
    'COMMIT',
    '*nat',
    ...[...natChains, ...stale].map(declare),
    ...natRules.map(restoreLine),
    'COMMIT',
    '',
  ].join('\n');
}

/** Empties and deletes the given chains of each table; the jumps into them must be gone first. */
export function renderIptablesRemoval(chains: Readonly<Record<IptablesTable, readonly string[]>>): string {
  const out: string[] = [];
  for (const table of ['filter', 'nat'] as const) {
    if (chains[table].length === 0) continue;
    out.push(`*${table}`, ...chains[table].map(declare), ...chains[table].map((c) => `-X ${c}`), 'COMMIT');
  }
  return out.length === 0 ? '' : `${out.join('\n')}\n`;
}

function declare(chain: string): string {
  return `:${chain} - [0:0]`;
}

/** Tokens as iptables-restore splits them: quoted where they hold a space or a quote. */
export function restoreLine(tokens: readonly string[]): string {
  return tokens.map((t) => (t !== '' && /^[^\s"\\]+$/.test(t) ? t : `"${t.replace(/(["\\])/g, '\\$1')}"`)).join(' ');
}

function hex(value: number): string {
  return `0x${value.toString(16)}`;
}
