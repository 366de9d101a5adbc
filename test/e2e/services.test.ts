/**
 * Network policy through ClusterIP Services: the conformance cluster (namespaces x, y, z; pods a and b
 * on node-a, c on node-b; real daemons) with the lab's kube-proxy on both nodes and, as upstream's
 * tests have, a Service `s-<namespace>-<pod>` in front of every pod. Probes go to the ClusterIPs; the
 * node DNATs them to the backend pod before palisade's FORWARD hook sees them, so policies are judged
 * on the backend pod and its target port, wherever client and backend run. First in kube-proxy's
 * iptables mode, then in its nftables mode on the same cluster; last, that kube-proxy rewriting its
 * rules (a restart back in iptables mode, a restart after filter FORWARD was flushed) lets nothing
 * denied through at any moment.
 *
 * kube-proxy runs with --cluster-cidr 10.1.0.0/16, so what reaches a ClusterIP from outside the pods
 * (the external host here) is marked for masquerade, as is a pod reaching itself through its Service.
 */
import assert from 'node:assert/strict';
import { policy } from '../support/builders.js';
import {
  describePair,
  EXTERNAL,
  NODE_A,
  NODE_B,
  NODES,
  onAllPorts,
  POD_PEERS,
  Reachability,
  TCP_80,
  TCP_81,
  UDP_80,
  useE2eCluster,
} from '../support/e2e-cluster.js';
import type { E2eCluster, MatrixCase, PairRecord, ProbeTarget, WatchedPair } from '../support/e2e-cluster.js';
import type { KubeProxyMode } from '../../lib/lab/kube-proxy.js';

type Obj = Record<string, unknown>;

const CLUSTER_CIDR = '10.1.0.0/16';
/** Service ports whose targetPort is not their own number: 8080 onto the port named serve-81-tcp, 8081 onto 80. */
const REMAPPED = [
  { name: 'remap-tcp-8080', protocol: 'TCP' as const, port: 8080, targetPort: 'serve-81-tcp' },
  { name: 'remap-tcp-8081', protocol: 'TCP' as const, port: 8081, targetPort: 80 },
];
const svc = (t: ProbeTarget): ProbeTarget => ({ ...t, via: 'service' });
const SVC_TCP_8080: ProbeTarget = { proto: 'tcp', port: 8080, via: 'service' };
const SVC_TCP_8081: ProbeTarget = { proto: 'tcp', port: 8081, via: 'service' };
const PALISADE_HOOK = 'pal-FORWARD';

const denyAllIngress = (ns: string): Obj => policy(ns, 'deny-all-ingress', { podSelector: {}, policyTypes: ['Ingress'] });
const onlyIngressTo = (name: string, ingress: Obj[]): Obj => ({ podSelector: { matchLabels: { pod: name } }, policyTypes: ['Ingress'], ingress });
const onlyInto = (to: string, from: string | readonly string[]): Reachability => new Reachability(true).expectAllIngress(to, false).expect(from, to, true);
const throughServices = (expected: Reachability, options: { hairpin?: boolean } = {}): MatrixCase[] => onAllPorts(expected, { via: 'service', ...options });

/** The targets of node's FORWARD chain in table, in order, as kube-proxy's and palisade's shared iptables family holds them. */
async function forwardChain(c: E2eCluster, node: string, table: 'mangle' | 'filter'): Promise<string[]> {
  const saved = await c.lab.node(node).netns.run([`iptables-${c.lab.kubeProxy.iptablesBackend}-save`, '-t', table]);
  return saved.split('\n').filter((l) => l.startsWith('-A FORWARD ')).map((l) => /-j (\S+)/.exec(l)?.[1] ?? '?');
}

describe('Network policy through ClusterIP Services (kube-proxy iptables and nftables modes, two nodes, real daemons)', function () {
  this.timeout(300_000);
  const cluster = useE2eCluster({ prefix: 'paltest-svc-e2e', kubeProxy: { mode: 'iptables', clusterCidr: CLUSTER_CIDR, extraPorts: REMAPPED } });
  /** Every case starts from the baseline, with kube-proxy in the mode it is about (so each runs alone too). */
  const fresh = async (mode: KubeProxyMode): Promise<E2eCluster> => {
    const c = cluster();
    if (c.lab.kubeProxy.mode !== mode) await c.lab.kubeProxy.switchMode(mode);
    await c.reset();
    return c;
  };

  describe('kube-proxy in iptables mode', () => {
    it('palisade writes to the iptables family kube-proxy uses, its hook first in mangle FORWARD (run before any filter rule), kube-proxy\'s jumps in filter FORWARD, on both nodes.', async () => {
      const c = await fresh('iptables');
      for (const n of NODES) {
        const status = await c.status(n.name);
        assert.equal((status['backend'] as { name?: string } | null)?.name, c.lab.kubeProxy.iptablesBackend, `${n.name}: ${JSON.stringify(status['backend'])}`);
        const mangle = await forwardChain(c, n.name, 'mangle');
        const filter = await forwardChain(c, n.name, 'filter');
        assert.deepEqual(mangle, [PALISADE_HOOK], `${n.name} mangle FORWARD: ${mangle.join(', ')}`);
        assert.ok(filter.includes('KUBE-FORWARD') && !filter.includes(PALISADE_HOOK), `${n.name} filter FORWARD: ${filter.join(', ')}`);
      }
    });

    it('With no policy, every pod reaches every pod\'s Service on TCP and UDP 80 and 81, backends on the same node and on the other node alike.', async () => {
      const c = await fresh('iptables');
      await c.expectMatrices(throughServices(new Reachability(true)));
    });

    it('A default-deny ingress policy in x drops everything sent to the Services of x pods, from x itself included.', async () => {
      const c = await fresh('iptables');
      await c.applyPolicies(denyAllIngress('x'));
      await c.expectMatrices(throughServices(new Reachability(true).expectAllIngress('x/*', false)));
    });

    it('An ingress rule with a namespaceSelector lets only the pods of y through x/a\'s Service.', async () => {
      const c = await fresh('iptables');
      await c.applyPolicies(policy('x', 'allow-ns-y', onlyIngressTo('a', [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }] }])));
      await c.expectMatrices(throughServices(onlyInto('x/a', 'y/*')));
    });

    it('An ingress rule with a podSelector lets x/b (same node as x/a) and x/c (the other node) through x/a\'s Service, and no one else.', async () => {
      const c = await fresh('iptables');
      await c.applyPolicies(policy('x', 'allow-b-c', onlyIngressTo('a', [{ from: [{ podSelector: { matchExpressions: [{ key: 'pod', operator: 'In', values: ['b', 'c'] }] } }] }])));
      await c.expectMatrices(throughServices(onlyInto('x/a', ['x/b', 'x/c'])));
    });

    it('Egress deny-all in x with an egress rule to y/b lets x pods reach y/b\'s Service only: egress is judged on the backend pod, not the ClusterIP.', async () => {
      const c = await fresh('iptables');
      await c.applyPolicies(
        policy('x', 'deny-all-egress', { podSelector: {}, policyTypes: ['Egress'] }),
        policy('x', 'egress-to-y-b', {
          podSelector: {},
          policyTypes: ['Egress'],
          egress: [{ to: [{ namespaceSelector: { matchLabels: { ns: 'y' } }, podSelector: { matchLabels: { pod: 'b' } } }] }],
        }),
      );
      await c.expectMatrices(throughServices(new Reachability(true).expectAllEgress('x/*', false).expect('x/*', 'y/b', true)));
    });

    it('An egress ipBlock covering the whole service range opens no Service to x/a: the ClusterIP is gone before policy looks.', async () => {
      const c = await fresh('iptables');
      await c.applyPolicies(policy('x', 'egress-to-service-range', {
        podSelector: { matchLabels: { pod: 'a' } },
        policyTypes: ['Egress'],
        egress: [{ to: [{ ipBlock: { cidr: '10.100.0.0/16' } }] }],
      }));
      await c.expectMatrices(throughServices(new Reachability(true).expectAllEgress('x/a', false)));
    });

    /** Into x/a through its Service, with a policy that opens its container port 81 only. */
    const port81Only = (): MatrixCase[] => {
      const open = new Reachability(true);
      const closed = new Reachability(true).expectAllIngress('x/a', false);
      return [
        { ...svc(TCP_80), expected: closed },
        { ...svc(TCP_81), expected: open },
        { ...SVC_TCP_8080, expected: open },
        { ...SVC_TCP_8081, expected: closed },
      ];
    };

    it('A Service port whose targetPort differs is judged on the target port: TCP 81 by number opens x/a\'s Service ports 81 and 8080 (onto 81), not 80 or 8081 (onto 80).', async () => {
      const c = await fresh('iptables');
      await c.applyPolicies(policy('x', 'allow-81', onlyIngressTo('a', [{ ports: [{ protocol: 'TCP', port: 81 }] }])));
      await c.expectMatrices(port81Only());
    });

    it('The same by container port name: serve-81-tcp opens x/a\'s Service ports 81 and 8080, not 80 or 8081.', async () => {
      const c = await fresh('iptables');
      await c.applyPolicies(policy('x', 'allow-serve-81', onlyIngressTo('a', [{ ports: [{ port: 'serve-81-tcp' }] }])));
      await c.expectMatrices(port81Only());
    });

    it('A policy naming the Service port (8080) instead of the target port opens nothing, not even 8080.', async () => {
      const c = await fresh('iptables');
      await c.applyPolicies(policy('x', 'allow-8080', onlyIngressTo('a', [{ ports: [{ protocol: 'TCP', port: 8080 }] }])));
      const closed = new Reachability(true).expectAllIngress('x/a', false);
      await c.expectMatrices([svc(TCP_80), svc(TCP_81), SVC_TCP_8080, SVC_TCP_8081].map((t) => ({ ...t, expected: closed })));
    });

    it('Hairpin: under default-deny ingress in x, each x pod still reaches itself through its own Service (a pod cannot block access to itself), while x/b -> service of x/a stays denied.', async () => {
      const c = await fresh('iptables');
      await c.applyPolicies(denyAllIngress('x'));
      // The self cells stay "reaches"; every other cell into x is denied.
      await c.expectMatrices(throughServices(new Reachability(true).expectAllIngress('x/*', false), { hairpin: true }));
    });
  });

  describe('kube-proxy in nftables mode', () => {
    it('Switching kube-proxy to nftables mode removes all its iptables rules and leaves palisade\'s hook alone; every pod still reaches every pod\'s Service.', async () => {
      const c = await fresh('iptables');
      await c.lab.kubeProxy.switchMode('nftables');
      for (const n of NODES) {
        const chains = await c.lab.kubeProxy.chainsOn(n.name);
        assert.deepEqual({ filter: chains.filter, nat: chains.nat }, { filter: [], nat: [] }, `${n.name}: no iptables chain of kube-proxy`);
        assert.ok(chains.nft.includes('nat-prerouting'), `${n.name}: kube-proxy's nftables table`);
        assert.deepEqual(await forwardChain(c, n.name, 'mangle'), [PALISADE_HOOK], `${n.name}: mangle FORWARD holds palisade's hook only`);
        assert.deepEqual(await forwardChain(c, n.name, 'filter'), [], `${n.name}: filter FORWARD is empty`);
      }
      await c.expectMatrices(throughServices(new Reachability(true)));
    });

    it('A default-deny ingress policy in x drops everything sent to the Services of x pods.', async () => {
      const c = await fresh('nftables');
      await c.applyPolicies(denyAllIngress('x'));
      await c.expectMatrices(throughServices(new Reachability(true).expectAllIngress('x/*', false)));
    });

    it('Egress deny-all in x with an egress rule to y/b lets x pods reach y/b\'s Service only.', async () => {
      const c = await fresh('nftables');
      await c.applyPolicies(
        policy('x', 'deny-all-egress', { podSelector: {}, policyTypes: ['Egress'] }),
        policy('x', 'egress-to-y-b', {
          podSelector: {},
          policyTypes: ['Egress'],
          egress: [{ to: [{ namespaceSelector: { matchLabels: { ns: 'y' } }, podSelector: { matchLabels: { pod: 'b' } } }] }],
        }),
      );
      await c.expectMatrices(throughServices(new Reachability(true).expectAllEgress('x/*', false).expect('x/*', 'y/b', true)));
    });

    it('A policy naming the container port serve-81-tcp opens x/a\'s Service ports 81 and 8080 (onto 81), not 80 or 8081.', async () => {
      const c = await fresh('nftables');
      await c.applyPolicies(policy('x', 'allow-serve-81', onlyIngressTo('a', [{ ports: [{ port: 'serve-81-tcp' }] }])));
      const open = new Reachability(true);
      const closed = new Reachability(true).expectAllIngress('x/a', false);
      await c.expectMatrices([
        { ...svc(TCP_80), expected: closed },
        { ...svc(TCP_81), expected: open },
        { ...SVC_TCP_8080, expected: open },
        { ...SVC_TCP_8081, expected: closed },
      ]);
    });

    it('Hairpin: under default-deny ingress in x, each x pod still reaches itself through its own Service, while x/b -> service of x/a stays denied.', async () => {
      const c = await fresh('nftables');
      await c.applyPolicies(denyAllIngress('x'));
      await c.expectMatrices(throughServices(new Reachability(true).expectAllIngress('x/*', false), { hairpin: true }));
    });
  });

  describe('kube-proxy rewriting its rules cannot get ahead of palisade', () => {
    const withExternal = new Reachability(true, { sources: [...POD_PEERS, EXTERNAL] }).expectAllIngress('x/*', false);
    const denied: MatrixCase[] = [{ ...svc(TCP_80), expected: withExternal }, { ...svc(UDP_80), expected: withExternal }];

    it('kube-proxy restarting in iptables mode (from nftables) prepends its jumps to the filter table\'s FORWARD; palisade\'s hook in mangle stays first and nothing denied gets through at any moment, masquerade-marked traffic included.', async () => {
      const c = await fresh('nftables');
      await c.applyPolicies(denyAllIngress('x'));
      await c.expectMatrices(denied);
      await expectNothingThroughWhile(c, 'kube-proxy restarted in iptables mode', () => c.lab.kubeProxy.switchMode('iptables'), denied);
    });

    it('With the filter table\'s FORWARD flushed (a host firewall reload) and kube-proxy restarted, palisade\'s hook stays first in mangle and nothing denied gets through at any moment.', async () => {
      const c = await fresh('iptables');
      await c.applyPolicies(denyAllIngress('x'));
      await c.expectMatrices(denied);
      await expectNothingThroughWhile(c, 'filter FORWARD flushed, then kube-proxy restarted', async () => {
        await c.lab.node(NODE_A).netns.run([`iptables-${c.lab.kubeProxy.iptablesBackend}`, '-w', '5', '-t', 'filter', '-F', 'FORWARD']);
        await c.lab.kubeProxy.restart();
      }, denied);
    });
  });
});

/**
 * Runs `act` (something that rewrites kube-proxy's rules on node-a) while probing denied pairs through
 * Services and reading node-a's FORWARD chains in both tables; then lets the matrices settle. kube-proxy
 * only ever writes to the filter and nat tables, and its KUBE-FORWARD ACCEPTs masquerade-marked
 * packets, ending filter FORWARD for them: palisade's hook sits in mangle FORWARD, which the kernel
 * runs before any filter rule, so no order kube-proxy leaves its jumps in can let such a packet past.
 * Fails if any denied probe got through, if palisade's hook was ever seen anywhere but first in mangle
 * FORWARD, or if palisade had to repair its hook's position.
 */
async function expectNothingThroughWhile(c: E2eCluster, what: string, act: () => Promise<void>, settled: readonly MatrixCase[]): Promise<void> {
  const repairsBefore = hookRepairs(await c.lab.metrics(NODE_A));
  const pairs: WatchedPair[] = [
    // From outside --cluster-cidr: marked 0x4000 on node-a, so KUBE-FORWARD's mark rule accepts it there.
    { ...svc(TCP_80), from: EXTERNAL, to: 'x/a', allowed: false },
    { ...svc(UDP_80), from: EXTERNAL, to: 'x/b', allowed: false },
    // Marked on node-a too, but node-b (where x/c is) gets it masqueraded and unmarked.
    { ...svc(TCP_80), from: EXTERNAL, to: 'x/c', allowed: false },
    // From pods: never marked.
    { ...svc(TCP_80), from: 'y/b', to: 'x/a', allowed: false },
    { ...svc(UDP_80), from: 'z/c', to: 'x/b', allowed: false },
  ];
  const watch = c.watchPairs(pairs);
  const order = watchForwardChains(c, NODE_A);
  let records: PairRecord[];
  let readings: ForwardReading[];
  let acted: { from: number; to: number };
  try {
    const from = watch.elapsed();
    await act();
    acted = { from, to: watch.elapsed() };
    // Probing goes on while the matrices settle, so every pair is also probed well after kube-proxy is back.
    await c.expectMatrices(settled);
  } finally {
    readings = await order.stop();
    records = await watch.stop();
  }
  const repairs = hookRepairs(await c.lab.metrics(NODE_A)) - repairsBefore;
  const leaks = records.flatMap((r) => r.unexpected.map((u) => ({ pair: describePair(r.pair), ...u })));
  const probes = records.reduce((n, r) => n + Object.values(r.outcomes).reduce((a, b) => a + b, 0), 0);
  const kubeProxyBack = readings.filter((r) => r.filter.includes('KUBE-FORWARD')).length;
  console.log([
    `      (${what}: from ${acted.from} to ${acted.to} ms; ${readings.length} readings of node-a's FORWARD chains,`,
    `${kubeProxyBack} with KUBE-FORWARD in filter; ${probes} probes of denied pairs, ${leaks.length} got through;`,
    `hook-moved repairs on node-a: ${repairs})`,
  ].join(' '));

  assert.deepEqual(leaks, [], 'no denied probe got through while kube-proxy rewrote its rules');
  assert.ok(kubeProxyBack > 0, 'kube-proxy\'s KUBE-FORWARD was seen in filter FORWARD on node-a');
  const misplaced = readings.filter((r) => r.mangle[0] !== PALISADE_HOOK || r.filter.includes(PALISADE_HOOK));
  assert.deepEqual(misplaced, [], 'palisade\'s hook was first in mangle FORWARD, and absent from filter, in every reading');
  assert.equal(repairs, 0, 'palisade never had to repair its hook\'s position');
}

/** palisade_drift_repairs_total{kind="hook-moved"} from a scrape. */
function hookRepairs(metrics: string): number {
  const line = metrics.split('\n').find((l) => l.startsWith('palisade_drift_repairs_total{') && l.includes('kind="hook-moved"'));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}

interface ForwardReading {
  readonly mangle: readonly string[];
  readonly filter: readonly string[];
}

/** Reads node's FORWARD chains in mangle and filter over and over (one iptables-save each at a time) until stopped. */
function watchForwardChains(c: E2eCluster, node: string): { stop(): Promise<ForwardReading[]> } {
  const readings: ForwardReading[] = [];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) readings.push({ mangle: await forwardChain(c, node, 'mangle'), filter: await forwardChain(c, node, 'filter') });
  })();
  return {
    async stop(): Promise<ForwardReading[]> {
      stopped = true;
      await loop;
      return readings;
    },
  };
}
