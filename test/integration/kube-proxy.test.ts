/**
 * The lab's kube-proxy really proxies: a two-node lab with no palisade daemon, pods wired as the VPC
 * CNI wires them, and ClusterIP Services in front of them. A pod reaches a Service whose backend is on
 * its own node, one whose backend is on the other node, and its own Service (the hairpin path), in
 * iptables mode on both iptables families and in nftables mode. Switching modes leaves nothing of
 * the old one; a restart moves no jump that is there and prepends the ones that are not.
 */
import assert from 'node:assert/strict';
import { Lab } from '../../lib/lab/cluster.js';
import { LabKubeProxy } from '../../lib/lab/kube-proxy.js';
import type { KubeProxyMode } from '../../lib/lab/kube-proxy.js';
import type { ServiceSpec } from '../../lib/lab/services.js';
import { commandAvailable, removeStaleNamespaces } from '../../lib/netns.js';
import type { NetworkNamespace } from '../../lib/netns.js';
import type { Backend } from '../../lib/iptables/iptables.js';
import type { PodHandle } from '../../lib/pod-network.js';
import type { ProbeOutcome, ProbeProtocol } from '../../lib/probe/echo.js';
import { probeFrom, ProbeServer } from '../../lib/probe/in-namespace.js';
import { podClusterUnavailableReason } from '../support/pod-cluster.js';

const PREFIX = 'paltest-svc-int';
const NODES = [
  { name: 'node-a', address: '172.31.0.1', podCidr: '10.1.1.0/24' },
  { name: 'node-b', address: '172.31.0.2', podCidr: '10.1.2.0/24' },
] as const;
/** The client and `near` on node-a, `far` on node-b; `far` also serves 8181, which it calls "web". */
const PODS = {
  client: { node: 'node-a', ip: '10.1.1.10' },
  near: { node: 'node-a', ip: '10.1.1.20' },
  far: { node: 'node-b', ip: '10.1.2.10' },
} as const;
type PodName = keyof typeof PODS;
const WEB_PORT = 8181;

const http = (targetPort: number | string = 80) => ({ name: 'http', protocol: 'TCP' as const, port: 80, targetPort });
const dns = { name: 'dns', protocol: 'UDP' as const, port: 53, targetPort: 80 };
const backend = (pod: PodName, ports: ServiceSpec['backends'][number]['ports'] = []) => ({ ip: PODS[pod].ip, ports });

const SERVICES: readonly ServiceSpec[] = [
  { namespace: 'lab', name: 'client', clusterIp: '10.100.0.10', ports: [http(), dns], backends: [backend('client')] },
  { namespace: 'lab', name: 'near', clusterIp: '10.100.0.20', ports: [http(), dns], backends: [backend('near')] },
  { namespace: 'lab', name: 'far', clusterIp: '10.100.0.30', ports: [http(), dns], backends: [backend('far')] },
  // Resolved per backend: only `far` declares "web", so only `far` is an endpoint, on its own port.
  {
    namespace: 'lab', name: 'named', clusterIp: '10.100.0.40',
    ports: [{ name: 'web', protocol: 'TCP', port: 8080, targetPort: 'web' }],
    backends: [backend('near'), backend('far', [{ name: 'web', port: WEB_PORT, protocol: 'TCP' }])],
  },
  { namespace: 'lab', name: 'empty', clusterIp: '10.100.0.50', ports: [http()], backends: [] },
];

const ALLOWED_TIMEOUT_MS = 2000;
const DENIED_TIMEOUT_MS = 500;

describe('The lab kube-proxy (two nodes, no palisade daemon)', function () {
  this.timeout(120_000);
  let lab: Lab | undefined;
  const pods = new Map<PodName, PodHandle>();
  const servers: ProbeServer[] = [];

  before(async function () {
    const reason = (await podClusterUnavailableReason()) ?? ((await commandAvailable('nft')) ? null : 'missing on PATH: nft (apt-get install nftables)');
    if (reason !== null) {
      if (process.env['PALISADE_REQUIRE_NETNS'] === '1') throw new Error(`network namespace tests required but unavailable: ${reason}`);
      console.warn(`      skipped (${PREFIX}): ${reason}`);
      this.skip();
    }
    const stale = await removeStaleNamespaces(PREFIX);
    if (stale.length > 0) console.warn(`      removed network namespaces left by an earlier run: ${stale.join(', ')}`);
    lab = await Lab.create({ prefix: PREFIX, nodes: NODES, kubeProxy: { mode: 'iptables', iptablesBackend: 'nft' } });
    for (const [name, where] of Object.entries(PODS) as [PodName, (typeof PODS)[PodName]][]) {
      const handle = await lab.addPod(where.node, { namespace: 'lab', name, ip: where.ip });
      pods.set(name, handle);
      servers.push(await ProbeServer.start(handle.netns, { tcp: name === 'far' ? [80, WEB_PORT] : [80], udp: [80] }));
    }
    await lab.kubeProxy.setServices(SERVICES);
  });

  after(async function () {
    this.timeout(30_000);
    await Promise.allSettled(servers.map((s) => s.stop()));
    await lab?.destroy();
  });

  const current = (): Lab => {
    if (lab === undefined) throw new Error('no lab (is the suite skipped?)');
    return lab;
  };
  const from = (name: PodName): NetworkNamespace => pods.get(name)!.netns;
  const outcome = async (proto: ProbeProtocol, to: string, port: number, timeoutMs: number): Promise<ProbeOutcome> =>
    (await probeFrom(from('client'), { proto, to, port, timeoutMs })).outcome;

  /** Every probe of the client through the Services, all at once, with what each should give. */
  async function expectServicesWork(what: string): Promise<void> {
    const probes: Record<string, Promise<ProbeOutcome>> = {
      'near tcp': outcome('tcp', '10.100.0.20', 80, ALLOWED_TIMEOUT_MS),
      'near udp': outcome('udp', '10.100.0.20', 53, ALLOWED_TIMEOUT_MS),
      'far tcp': outcome('tcp', '10.100.0.30', 80, ALLOWED_TIMEOUT_MS),
      'far udp': outcome('udp', '10.100.0.30', 53, ALLOWED_TIMEOUT_MS),
      'itself tcp (hairpin)': outcome('tcp', '10.100.0.10', 80, ALLOWED_TIMEOUT_MS),
      'itself udp (hairpin)': outcome('udp', '10.100.0.10', 53, ALLOWED_TIMEOUT_MS),
      'named target port': outcome('tcp', '10.100.0.40', 8080, ALLOWED_TIMEOUT_MS),
      // Rejected by kube-proxy (an ICMP port unreachable), not merely unroutable. The wait covers one
      // SYN retransmission: an ICMP error that lands while connect() still holds the socket is only
      // noted, and the next SYN's error is the one that fails the connection.
      'no endpoints': outcome('tcp', '10.100.0.50', 80, ALLOWED_TIMEOUT_MS),
    };
    const observed = Object.fromEntries(await Promise.all(Object.entries(probes).map(async ([k, p]) => [k, await p] as const)));
    const expected = Object.fromEntries(Object.keys(probes).map((k) => [k, k === 'no endpoints' ? 'refused' : 'ok']));
    assert.deepEqual(observed, expected, `${what}: what the client gets from each Service`);
    assert.notEqual(await outcome('tcp', '10.100.0.20', 81, DENIED_TIMEOUT_MS), 'ok', `${what}: a port the Service does not have is not reached`);
  }

  async function forwardTargets(node: string, backend: Backend): Promise<string[]> {
    const saved = await current().node(node).netns.run([`iptables-${backend}-save`, '-t', 'filter']);
    return saved.split('\n').filter((l) => l.startsWith('-A FORWARD ')).map((l) => /-j (\S+)/.exec(l)?.[1] ?? '?');
  }

  const MODES: readonly { mode: KubeProxyMode; backend: Backend }[] = [
    { mode: 'iptables', backend: 'nft' },
    { mode: 'iptables', backend: 'legacy' },
    { mode: 'nftables', backend: 'nft' },
  ];
  for (const { mode, backend } of MODES) {
    it(`In ${mode} mode${mode === 'iptables' ? ` (iptables-${backend})` : ''}, a pod reaches a Service backed on its node, one backed on the other node, itself, and a named target port; not a Service without endpoints.`, async () => {
      const lab = current();
      await lab.kubeProxy.remove();
      const proxy = new LabKubeProxy(lab.nodes.map((n) => ({ name: n.spec.name, runner: n.netns })), { mode, iptablesBackend: backend });
      try {
        await proxy.setServices(SERVICES);
        await expectServicesWork(`${mode} ${backend}`);
      } finally {
        await proxy.remove();
        await lab.kubeProxy.sync();
      }
    });
  }

  it('Switching modes removes every rule of the old mode, and the Services keep working in the new one.', async () => {
    const proxy = current().kubeProxy;
    await proxy.switchMode('nftables');
    for (const n of NODES) {
      const chains = await proxy.chainsOn(n.name);
      assert.deepEqual({ filter: chains.filter, nat: chains.nat }, { filter: [], nat: [] }, `no iptables chain of kube-proxy left on ${n.name}`);
      assert.ok(chains.nft.includes('nat-prerouting') && chains.nft.some((c) => c.startsWith('service-')), `nftables rules on ${n.name}: ${chains.nft.join(', ')}`);
      assert.deepEqual(await forwardTargets(n.name, 'nft'), [], `no jump left in FORWARD on ${n.name}`);
    }
    await expectServicesWork('after switching to nftables');
    await proxy.switchMode('iptables');
    for (const n of NODES) {
      const chains = await proxy.chainsOn(n.name);
      assert.deepEqual(chains.nft, [], `no nftables rule of kube-proxy left on ${n.name}`);
      assert.ok(chains.nat.includes('KUBE-SERVICES') && chains.nat.some((c) => c.startsWith('KUBE-SEP-')), `iptables rules on ${n.name}: ${chains.nat.join(', ')}`);
    }
    await expectServicesWork('after switching back to iptables');
  });

  it('A restart leaves a jump that is there where it is, and prepends the ones that are missing, once each.', async () => {
    const lab = current();
    const node = lab.node('node-a').netns;
    await lab.kubeProxy.switchMode('iptables');
    await node.run(['iptables-nft', '-w', '5', '-N', 'PALTEST-FIRST']);
    await node.run(['iptables-nft', '-w', '5', '-I', 'FORWARD', '1', '-j', 'PALTEST-FIRST']);
    try {
      await lab.kubeProxy.restart();
      assert.deepEqual(await forwardTargets('node-a', 'nft'), ['PALTEST-FIRST', 'KUBE-PROXY-FIREWALL', 'KUBE-FORWARD', 'KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES'], 'present jumps are not moved');
      // The jumps lost, as after the node's FORWARD chain was restored from a copy saved without them.
      for (const target of ['KUBE-PROXY-FIREWALL', 'KUBE-FORWARD', 'KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES']) {
        const at = (await forwardTargets('node-a', 'nft')).indexOf(target);
        assert.ok(at >= 0, `FORWARD jumps to ${target}`);
        await node.run(['iptables-nft', '-w', '5', '-D', 'FORWARD', String(at + 1)]);
      }
      await lab.kubeProxy.restart();
      assert.deepEqual(await forwardTargets('node-a', 'nft'), ['KUBE-PROXY-FIREWALL', 'KUBE-FORWARD', 'KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES', 'PALTEST-FIRST'], 'missing jumps are prepended');
      await expectServicesWork('after the restart');
    } finally {
      await node.exec(['iptables-nft', '-w', '5', '-D', 'FORWARD', '-j', 'PALTEST-FIRST']);
      await node.exec(['iptables-nft', '-w', '5', '-X', 'PALTEST-FIRST']);
    }
  });

  it('Removing kube-proxy leaves no chain, jump or table of it on any node, in either family.', async () => {
    const lab = current();
    await lab.kubeProxy.remove();
    for (const n of NODES) {
      assert.deepEqual(await lab.kubeProxy.chainsOn(n.name), { filter: [], nat: [], nft: [] }, n.name);
      for (const backend of ['nft', 'legacy'] as const) {
        const saved = await lab.node(n.name).netns.run([`iptables-${backend}-save`]);
        assert.doesNotMatch(saved, /KUBE-/, `iptables-${backend} on ${n.name}`);
      }
    }
    assert.notEqual(await outcome('tcp', '10.100.0.20', 80, DENIED_TIMEOUT_MS), 'ok', 'with no kube-proxy, a ClusterIP leads nowhere');
  });
});
