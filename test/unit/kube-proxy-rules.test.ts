import assert from 'node:assert/strict';
import {
  FIXED_CHAINS,
  IPTABLES_JUMPS,
  jumpRuleArgs,
  renderIptablesRemoval,
  renderIptablesSync,
  restoreLine,
} from '../../lib/lab/kube-proxy-iptables-rules.js';
import type { ProxyRuleOptions } from '../../lib/lab/kube-proxy-iptables-rules.js';
import { iptablesEndpointChain, iptablesServiceChain, nftEndpointChain, nftServiceChain } from '../../lib/lab/kube-proxy-names.js';
import { NFT_BASE_CHAINS, renderNftSync } from '../../lib/lab/kube-proxy-nft-rules.js';
import { resolveServices, ServiceSpecError } from '../../lib/lab/services.js';
import type { ServicePortEndpoints, ServicePortSpec, ServiceSpec } from '../../lib/lab/services.js';
import { splitRuleLine } from '../../lib/iptables/tokens.js';

/** The lab kube-proxy's rendered rules: names, endpoints, and the shape of what each mode writes. */

const p80: ServicePortSpec = { name: 'p80', protocol: 'TCP', port: 80, targetPort: 80 };

function svc(name: string, clusterIp: string, options: { ports?: ServicePortSpec[]; backends?: string[]; namespace?: string } = {}): ServiceSpec {
  return {
    namespace: options.namespace ?? 'ns1',
    name,
    clusterIp,
    ports: options.ports ?? [p80],
    backends: (options.backends ?? []).map((ip) => ({ ip, ports: [] })),
  };
}

const three = resolveServices([svc('svc1', '10.100.0.41', { backends: ['10.1.1.1', '10.1.1.2', '10.1.2.1'] })]);
const none = resolveServices([svc('empty', '10.100.0.42')]);

interface RestoreTable {
  readonly declared: string[];
  readonly rules: string[][];
}

/** The restore text per table: declared chains and rules as token lists; fails on anything malformed. */
function parseRestore(text: string): Map<string, RestoreTable> {
  const tables = new Map<string, RestoreTable>();
  let current: RestoreTable | null = null;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('*')) {
      assert.equal(current, null, `table ${line} opened before COMMIT`);
      current = { declared: [], rules: [] };
      tables.set(line.slice(1), current);
    } else if (line === 'COMMIT') {
      assert.notEqual(current, null, 'COMMIT outside a table');
      current = null;
    } else if (line.startsWith(':')) {
      current!.declared.push(line.slice(1).split(' ')[0]!);
    } else {
      current!.rules.push(splitRuleLine(line));
    }
  }
  assert.equal(current, null, 'the last table is committed');
  return tables;
}

const TARGETS = new Set(['ACCEPT', 'DROP', 'RETURN', 'REJECT', 'MARK', 'MASQUERADE', 'DNAT']);

/** Every chain is declared once, every rule is in a declared chain, and every jump lands on a declared chain or a target. */
function assertWellFormed(text: string): Map<string, RestoreTable> {
  const tables = parseRestore(text);
  for (const [name, table] of tables) {
    assert.equal(new Set(table.declared).size, table.declared.length, `${name}: a chain declared twice`);
    for (const rule of table.rules) {
      if (rule[0] === '-X') continue;
      assert.equal(rule[0], '-A', `${name}: ${rule.join(' ')}`);
      assert.ok(table.declared.includes(rule[1]!), `${name}: rule in undeclared chain ${rule[1]}`);
      const jump = rule.indexOf('-j');
      assert.ok(jump > 0, `${name}: rule without a target: ${rule.join(' ')}`);
      const target = rule[jump + 1]!;
      assert.ok(TARGETS.has(target) || table.declared.includes(target), `${name}: jump to undeclared ${target}`);
    }
  }
  return tables;
}

function chainRules(table: RestoreTable, chain: string): string[][] {
  return table.rules.filter((r) => r[0] === '-A' && r[1] === chain).map((r) => r.slice(2));
}

function iptables(ports: readonly ServicePortEndpoints[], options: ProxyRuleOptions = {}, existing: string[] = []): Map<string, RestoreTable> {
  return assertWellFormed(renderIptablesSync(ports, options, new Set(existing)));
}

describe('the lab kube-proxy: Services and their endpoints', () => {
  it('resolves a named targetPort on each backend, leaving out backends that do not declare it for that protocol', () => {
    const [port] = resolveServices([{
      namespace: 'ns1', name: 'web', clusterIp: '10.100.0.1',
      ports: [{ name: 'http', protocol: 'TCP', port: 8080, targetPort: 'web' }],
      backends: [
        { ip: '10.1.1.1', ports: [{ name: 'web', port: 80, protocol: 'TCP' }] },
        { ip: '10.1.1.2', ports: [{ name: 'web', port: 81, protocol: 'TCP' }] },
        { ip: '10.1.1.3', ports: [{ name: 'web', port: 82, protocol: 'UDP' }] },
        { ip: '10.1.1.4', ports: [] },
      ],
    }]);
    assert.deepEqual(port!.endpoints, [{ ip: '10.1.1.1', port: 80 }, { ip: '10.1.1.2', port: 81 }]);
  });

  it('reports every invalid field of every Service at once, naming the Service', () => {
    assert.throws(() => resolveServices([
      svc('out', '10.99.0.1'),
      svc('multi', '10.100.0.2', { ports: [{ ...p80, name: '' }, { ...p80, name: '', port: 81 }] }),
      svc('dup', '10.100.0.2', { ports: [p80, { ...p80, targetPort: 'Not_A_Name' }] }),
    ]), (error: unknown) => {
      assert.ok(error instanceof ServiceSpecError);
      assert.deepEqual(error.problems, [
        'ns1/out: clusterIP 10.99.0.1 is outside the service range 10.100.0.0/16',
        'ns1/multi: ports[0].name: required when a Service has several ports',
        'ns1/multi: ports[1].name: required when a Service has several ports',
        'ns1/multi: ports[1].name: "" is used twice',
        'ns1/dup: ports[1].name: "p80" is used twice',
        'ns1/dup: ports[1]: TCP/80 is served twice',
        'ns1/dup: ports[1].targetPort: "Not_A_Name" is neither a port number nor a port name',
        "ns1/dup: clusterIP 10.100.0.2 is already ns1/multi's",
      ]);
      return true;
    });
  });

  it('names chains as kube-proxy does, so the lab reads like a real node', () => {
    const [port] = resolveServices([svc('svc1', '10.100.0.41', { backends: ['10.180.0.1'] })]);
    const endpoint = port!.endpoints[0]!;
    assert.equal(iptablesServiceChain(port!), 'KUBE-SVC-XPGD46QRK7WJZT7O');
    assert.equal(iptablesEndpointChain(port!, endpoint), 'KUBE-SEP-SXIVWICOYRO3J4NJ');
    assert.equal(nftServiceChain(port!), 'service-ULMVA6XW-ns1/svc1/tcp/p80');
    assert.equal(nftEndpointChain(port!, endpoint), 'endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80');
  });
});

describe('the lab kube-proxy: iptables mode', () => {
  it('sends a ClusterIP port to its service chain from KUBE-SERVICES, and nodeports last', () => {
    const nat = iptables(three).get('nat')!;
    const services = chainRules(nat, 'KUBE-SERVICES');
    assert.deepEqual(services[0], ['-m', 'comment', '--comment', 'ns1/svc1:p80 cluster IP', '-m', 'tcp', '-p', 'tcp', '-d', '10.100.0.41', '--dport', '80', '-j', iptablesServiceChain(three[0]!)]);
    assert.deepEqual(services.at(-1)?.slice(-4), ['--dst-type', 'LOCAL', '-j', 'KUBE-NODEPORTS']);
  });

  it('spreads over three endpoints with probabilities 1/3, 1/2 and the rest, each endpoint marking its own hairpin before the DNAT', () => {
    const nat = iptables(three).get('nat')!;
    const port = three[0]!;
    const spread = chainRules(nat, iptablesServiceChain(port)).map((r) => {
      const at = r.indexOf('--probability');
      return [at < 0 ? 'rest' : r[at + 1], r.at(-1)];
    });
    assert.deepEqual(spread, [
      ['0.3333333333', iptablesEndpointChain(port, port.endpoints[0]!)],
      ['0.5000000000', iptablesEndpointChain(port, port.endpoints[1]!)],
      ['rest', iptablesEndpointChain(port, port.endpoints[2]!)],
    ]);
    for (const endpoint of port.endpoints) {
      const rules = chainRules(nat, iptablesEndpointChain(port, endpoint));
      assert.deepEqual(rules.map((r) => r.slice(4)), [
        ['-s', endpoint.ip, '-j', 'KUBE-MARK-MASQ'],
        ['-m', 'tcp', '-p', 'tcp', '-j', 'DNAT', '--to-destination', `${endpoint.ip}:80`],
      ]);
    }
  });

  it('rejects a Service without endpoints in the filter table and gives it no NAT rule', () => {
    const tables = iptables(none);
    assert.deepEqual(chainRules(tables.get('filter')!, 'KUBE-SERVICES'), [
      ['-m', 'comment', '--comment', 'ns1/empty:p80 has no endpoints', '-m', 'tcp', '-p', 'tcp', '-d', '10.100.0.42', '--dport', '80', '-j', 'REJECT'],
    ]);
    assert.doesNotMatch(renderIptablesSync(none, {}, new Set()).split('*nat')[1]!, /10\.100\.0\.42/);
  });

  it('marks traffic from outside --cluster-cidr for masquerade, or all of it with --masquerade-all, ahead of the spread', () => {
    const first = (options: ProxyRuleOptions) => chainRules(iptables(three, options).get('nat')!, iptablesServiceChain(three[0]!))[0]!;
    assert.deepEqual(first({ clusterCidr: '10.1.0.0/16' }).slice(-5), ['!', '-s', '10.1.0.0/16', '-j', 'KUBE-MARK-MASQ']);
    assert.deepEqual(first({ masqueradeAll: true }).slice(-4), ['--dport', '80', '-j', 'KUBE-MARK-MASQ']);
    assert.ok(first({}).includes('--probability'), 'no mark rule without either option');
  });

  it('masquerades what is marked 0x4000 and clears the mark, and accepts marked and established traffic in KUBE-FORWARD after dropping INVALID', () => {
    const tables = iptables(three);
    assert.deepEqual(chainRules(tables.get('nat')!, 'KUBE-MARK-MASQ'), [['-j', 'MARK', '--or-mark', '0x4000']]);
    assert.deepEqual(chainRules(tables.get('nat')!, 'KUBE-POSTROUTING').map((r) => r.slice(r.indexOf('-j'))), [
      ['-j', 'RETURN'],
      ['-j', 'MARK', '--xor-mark', '0x4000'],
      ['-j', 'MASQUERADE', '--random-fully'],
    ]);
    assert.deepEqual(chainRules(tables.get('nat')!, 'KUBE-POSTROUTING')[0], ['-m', 'mark', '!', '--mark', '0x4000/0x4000', '-j', 'RETURN']);
    assert.deepEqual(chainRules(tables.get('filter')!, 'KUBE-FORWARD').map((r) => r.filter((t, i) => i === 0 || r[i - 1] !== '--comment')), [
      ['-m', 'conntrack', '--ctstate', 'INVALID', '-j', 'DROP'],
      ['-m', 'comment', '--comment', '-m', 'mark', '--mark', '0x4000/0x4000', '-j', 'ACCEPT'],
      ['-m', 'comment', '--comment', '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', 'ACCEPT'],
    ]);
  });

  it('deletes service chains no service port uses any more, and no chain it does not own', () => {
    const nat = iptables(three, {}, ['KUBE-SVC-OLD', 'KUBE-SEP-OLD', 'KUBE-SERVICES', 'OTHER-CHAIN', 'PREROUTING']).get('nat')!;
    assert.deepEqual(nat.rules.filter((r) => r[0] === '-X'), [['-X', 'KUBE-SEP-OLD'], ['-X', 'KUBE-SVC-OLD']]);
    assert.ok(!nat.declared.includes('OTHER-CHAIN'));
  });

  it('writes a pinned number of rules: 5 in nat and 4 in filter of its own, plus 1 + 3 per endpoint for each service port', () => {
    const ports = resolveServices([
      svc('one', '10.100.0.1', { backends: ['10.1.1.1'] }),
      svc('two', '10.100.0.2', { backends: ['10.1.1.1', '10.1.1.2'], ports: [p80, { name: 'p81', protocol: 'UDP', port: 81, targetPort: 81 }] }),
    ]);
    const tables = iptables(ports);
    assert.equal(tables.get('nat')!.rules.length, 5 + (1 + 3 * 1) + 2 * (1 + 3 * 2));
    assert.equal(tables.get('filter')!.rules.length, 4);
    assert.deepEqual(tables.get('filter')!.declared, [...FIXED_CHAINS.filter]);
  });

  it('leaves a FORWARD chain that had none of its jumps led by KUBE-PROXY-FIREWALL, KUBE-FORWARD, KUBE-SERVICES and KUBE-EXTERNAL-SERVICES', () => {
    const forward: string[] = ['pal-FORWARD'];
    for (const jump of IPTABLES_JUMPS) if (jump.table === 'filter' && jump.chain === 'FORWARD') forward.unshift(jump.target);
    assert.deepEqual(forward, ['KUBE-PROXY-FIREWALL', 'KUBE-FORWARD', 'KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES', 'pal-FORWARD']);
    assert.deepEqual(jumpRuleArgs(IPTABLES_JUMPS.find((j) => j.target === 'KUBE-FORWARD')!), ['-m', 'comment', '--comment', 'kubernetes forwarding rules', '-j', 'KUBE-FORWARD']);
  });

  it('removes chains by emptying them all before deleting any, table by table', () => {
    assert.equal(renderIptablesRemoval({ filter: ['KUBE-FORWARD'], nat: ['KUBE-SEP-A', 'KUBE-SVC-A'] }), [
      '*filter', ':KUBE-FORWARD - [0:0]', '-X KUBE-FORWARD', 'COMMIT',
      '*nat', ':KUBE-SEP-A - [0:0]', ':KUBE-SVC-A - [0:0]', '-X KUBE-SEP-A', '-X KUBE-SVC-A', 'COMMIT', '',
    ].join('\n'));
    assert.equal(renderIptablesRemoval({ filter: [], nat: [] }), '');
  });

  it('quotes tokens as iptables-restore splits them', () => {
    const tokens = ['-m', 'comment', '--comment', 'a "quoted" \\ word', '-j', 'X'];
    assert.deepEqual(splitRuleLine(restoreLine(tokens)), tokens);
  });
});

describe('the lab kube-proxy: nftables mode', () => {
  const sync = (ports: readonly ServicePortEndpoints[], options = {}, existing: string[] = []) => renderNftSync(ports, options, new Set(existing));
  const lines = (text: string) => text.split('\n').filter((l) => l !== '');

  /** Chains added by the transaction; every jump, goto and verdict-map target must be one of them. */
  function assertTargetsExist(text: string): void {
    const added = new Set(lines(text).flatMap((l) => /^add chain ip kube-proxy (\S+)/.exec(l)?.[1] ?? []));
    for (const line of lines(text)) {
      for (const m of line.matchAll(/\b(?:jump|goto) (\S+)/g)) assert.ok(added.has(m[1]!.replace(/[,}]$/, '')), `${line}: ${m[1]} is not a chain of the table`);
    }
  }

  it('hooks filtering before DNAT and NAT at the dstnat and srcnat priorities, all in table ip kube-proxy', () => {
    const text = sync(three).transaction;
    assert.match(lines(text)[0]!, /^add table ip kube-proxy /);
    for (const chain of NFT_BASE_CHAINS) assert.ok(lines(text).includes(`add chain ip kube-proxy ${chain.name} { type ${chain.type} hook ${chain.hook} priority ${chain.priority} ; }`));
    assert.deepEqual(NFT_BASE_CHAINS.map((c) => `${c.name} ${c.priority}`), [
      'filter-prerouting -110', 'filter-input -110', 'filter-forward -110', 'filter-output -110',
      'filter-output-post-dnat -90', 'nat-prerouting -100', 'nat-output -100', 'nat-postrouting 100',
    ]);
    assert.ok(lines(text).every((l) => / ip kube-proxy /.test(l)));
    assertTargetsExist(text);
  });

  it('dispatches a ClusterIP port through the service-ips map to a numgen spread over its endpoints, each marking its hairpin before the DNAT', () => {
    const port = three[0]!;
    const text = sync(three).transaction;
    const chain = nftServiceChain(port);
    assert.ok(lines(text).includes(`add element ip kube-proxy service-ips { 10.100.0.41 . tcp . 80 : goto ${chain} }`));
    const endpoints = port.endpoints.map((e) => nftEndpointChain(port, e));
    assert.ok(lines(text).includes(`add rule ip kube-proxy ${chain} numgen random mod 3 vmap { 0 : goto ${endpoints[0]} , 1 : goto ${endpoints[1]} , 2 : goto ${endpoints[2]} }`));
    port.endpoints.forEach((e, i) => {
      const rules = lines(text).filter((l) => l.startsWith(`add rule ip kube-proxy ${endpoints[i]} `)).map((l) => l.slice(`add rule ip kube-proxy ${endpoints[i]} `.length));
      assert.deepEqual(rules, [`ip saddr ${e.ip} jump mark-for-masquerade`, `meta l4proto tcp dnat to ${e.ip}:80`]);
    });
    assertTargetsExist(text);
  });

  it('rejects a Service without endpoints through the no-endpoint-services map, with no service chain', () => {
    const text = sync(none).transaction;
    assert.ok(lines(text).includes('add element ip kube-proxy no-endpoint-services { 10.100.0.42 . tcp . 80 comment "ns1/empty:p80" : goto reject-chain }'));
    assert.ok(!lines(text).some((l) => l.includes('service-') && l.includes('ns1/empty')));
  });

  it('masquerades what is marked and clears the mark, and marks off-cluster sources with a cluster CIDR', () => {
    const text = sync(three, { clusterCidr: '10.1.0.0/16' }).transaction;
    const rulesOf = (chain: string) => lines(text).filter((l) => l.startsWith(`add rule ip kube-proxy ${chain} `)).map((l) => l.slice(`add rule ip kube-proxy ${chain} `.length));
    assert.deepEqual(rulesOf('masquerading'), ['mark and 0x4000 == 0 return', 'mark set mark xor 0x4000', 'masquerade fully-random']);
    assert.deepEqual(rulesOf('mark-for-masquerade'), ['mark set mark or 0x4000']);
    assert.deepEqual(rulesOf('nat-postrouting'), ['jump masquerading']);
    assert.equal(rulesOf(nftServiceChain(three[0]!))[0], 'ip daddr 10.100.0.41 tcp dport 80 ip saddr != 10.1.0.0/16 jump mark-for-masquerade');
    assert.deepEqual(rulesOf('filter-forward'), ['ct state new jump service-endpoints-check', 'ct state new jump cluster-ips-check']);
  });

  it('empties the service chains it no longer uses and hands them back for deletion; a restart recreates its base chains first', () => {
    const { transaction, stale } = sync(three, {}, ['service-OLD-ns1/gone/tcp/p80', 'nat-prerouting', 'services']);
    assert.deepEqual(stale, ['service-OLD-ns1/gone/tcp/p80']);
    assert.ok(lines(transaction).includes('flush chain ip kube-proxy service-OLD-ns1/gone/tcp/p80'));
    const restarted = lines(sync(three, { recreateBaseChains: true }).transaction);
    assert.deepEqual(restarted.slice(1, 3), ['add chain ip kube-proxy filter-prerouting', 'delete chain ip kube-proxy filter-prerouting']);
  });
});
