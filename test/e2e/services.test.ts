/**
 * Network policy through ClusterIP Services: the conformance cluster (namespaces x, y, z; pods a and b
 * on node-a, c on node-b; real daemons) with the lab's kube-proxy on both nodes and, as upstream's
 * tests have, a Service `s-<namespace>-<pod>` in front of every pod. Probes go to the ClusterIPs; the
 * node DNATs them to the backend pod before palisade's FORWARD hook sees them, so policies are judged
 * on the backend pod and its target port, wherever client and backend run. First in kube-proxy's
 * iptables mode, then in its nftables mode on the same cluster; last, what kube-proxy's jumps landing
 * ahead of palisade's hook (a restart back in iptables mode, a restart after FORWARD was flushed) let
 * through until palisade's refresh puts its hook first again.
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

/** The targets of node's FORWARD chain in order, as kube-proxy's and palisade's shared iptables family holds them. */
async function forwardChain(c: E2eCluster, node: string): Promise<string[]> {
  const saved = await c.lab.node(node).netns.run([`iptables-${c.lab.kubeProxy.iptablesBackend}-save`, '-t', 'filter']);
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
    it('palisade writes to the iptables family kube-proxy uses, and its hook comes before kube-proxy\'s jumps in FORWARD on both nodes.', async () => {
      const c = await fresh('iptables');
      for (const n of NODES) {
        const status = await c.status(n.name);
        assert.equal((status['backend'] as { name?: string } | null)?.name, c.lab.kubeProxy.iptablesBackend, `${n.name}: ${JSON.stringify(status['backend'])}`);
        const forward = await forwardChain(c, n.name);
        assert.equal(forward[0], PALISADE_HOOK, `${n.name} FORWARD: ${forward.join(', ')}`);
        assert.ok(forward.includes('KUBE-FORWARD'), `${n.name} FORWARD: ${forward.join(', ')}`);
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
    it('Switching kube-proxy to nftables mode removes all its iptables rules and leaves palisade\'s hook first; every pod still reaches every pod\'s Service.', async () => {
      const c = await fresh('iptables');
      await c.lab.kubeProxy.switchMode('nftables');
      for (const n of NODES) {
        const chains = await c.lab.kubeProxy.chainsOn(n.name);
        assert.deepEqual({ filter: chains.filter, nat: chains.nat }, { filter: [], nat: [] }, `${n.name}: no iptables chain of kube-proxy`);
        assert.ok(chains.nft.includes('nat-prerouting'), `${n.name}: kube-proxy's nftables table`);
        assert.deepEqual(await forwardChain(c, n.name), [PALISADE_HOOK], `${n.name}: FORWARD holds palisade's hook only`);
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

  describe('kube-proxy jumps ahead of palisade\'s hook', () => {
    const withExternal = new Reachability(true, { sources: [...POD_PEERS, EXTERNAL] }).expectAllIngress('x/*', false);
    const denied: MatrixCase[] = [{ ...svc(TCP_80), expected: withExternal }, { ...svc(UDP_80), expected: withExternal }];

    it('kube-proxy restarting in iptables mode (from nftables) prepends its FORWARD jumps ahead of palisade\'s hook; once palisade\'s refresh puts its hook first again, denied Service traffic is denied, and unmarked traffic is denied throughout.', async () => {
      const c = await fresh('nftables');
      await c.applyPolicies(denyAllIngress('x'));
      await c.expectMatrices(denied);
      await expectHookRepairedAfter(c, 'kube-proxy restarted in iptables mode', () => c.lab.kubeProxy.switchMode('iptables'), denied);
    });

    it('With FORWARD flushed and palisade\'s hook back, a kube-proxy restart prepends its jumps ahead of it: masquerade-marked Service traffic that policy denies gets through only until palisade\'s refresh puts its hook first again; unmarked traffic never does.', async () => {
      const c = await fresh('iptables');
      await c.applyPolicies(denyAllIngress('x'));
      await c.expectMatrices(denied);
      // A host firewall reload, or a hand, empties FORWARD: palisade puts its hook back on its next
      // refresh; kube-proxy, which only checks its jumps on a full sync, puts them back when it restarts.
      await c.lab.node(NODE_A).netns.run([`iptables-${c.lab.kubeProxy.iptablesBackend}`, '-w', '5', '-F', 'FORWARD']);
      await waitFor(async () => (await forwardChain(c, NODE_A)).join(',') === PALISADE_HOOK, 'palisade\'s hook back, alone, in the flushed FORWARD of node-a');
      await c.expectMatrices(denied);
      await expectHookRepairedAfter(c, 'kube-proxy restarted after a FORWARD flush', () => c.lab.kubeProxy.restart(), denied);
    });
  });
});

/**
 * Runs `act` (something that puts kube-proxy's jumps ahead of palisade's hook on node-a) while probing
 * denied pairs through Services and reading node-a's FORWARD order; then waits for palisade's hook to
 * be first again and the matrices to settle. Prints the window and what got through; fails if
 * anything denied got through after the repair, or if anything but marked traffic to node-a's own pods
 * got through at all.
 */
async function expectHookRepairedAfter(c: E2eCluster, what: string, act: () => Promise<void>, settled: readonly MatrixCase[]): Promise<void> {
  const repairsBefore = hookRepairs(await c.lab.metrics(NODE_A));
  const pairs: WatchedPair[] = [
    // From outside --cluster-cidr: marked 0x4000 on node-a, so KUBE-FORWARD's mark rule accepts it there.
    { ...svc(TCP_80), from: EXTERNAL, to: 'x/a', allowed: false },
    { ...svc(UDP_80), from: EXTERNAL, to: 'x/b', allowed: false },
    // Marked on node-a too, but node-b (where x/c is) gets it masqueraded and unmarked.
    { ...svc(TCP_80), from: EXTERNAL, to: 'x/c', allowed: false },
    // From pods: never marked, so palisade judges them wherever its hook is.
    { ...svc(TCP_80), from: 'y/b', to: 'x/a', allowed: false },
    { ...svc(UDP_80), from: 'z/c', to: 'x/b', allowed: false },
  ];
  const watch = c.watchPairs(pairs);
  const order = watchHookOrder(c, NODE_A, watch.elapsed);
  let records: PairRecord[];
  let acted: { from: number; to: number };
  let hook: HookHistory;
  try {
    const from = watch.elapsed();
    await act();
    acted = { from, to: watch.elapsed() };
    hook = await order.untilFirstAfter(acted.to);
    // Probing goes on while the matrices settle, so every pair is also probed well after the repair.
    await c.expectMatrices(settled);
  } finally {
    await order.stop();
    records = await watch.stop();
  }
  const repairs = hookRepairs(await c.lab.metrics(NODE_A)) - repairsBefore;
  const leaks = records.flatMap((r) => r.unexpected.map((u) => ({ pair: describePair(r.pair), ...u })));
  const firstBehind = hook.behind[0]?.[0];
  console.log([
    `      (${what}: from ${acted.from} to ${acted.to} ms;`,
    `palisade's hook on node-a behind kube-proxy's jumps over ${spans(hook.behind)}, behind KUBE-FORWARD itself over ${spans(hook.kubeForwardAhead)},`,
    `first again for good at ${hook.repairedAt} ms${firstBehind === undefined ? '' : `, ${hook.repairedAt - firstBehind} ms after it was first seen behind`};`,
    `hook-moved repairs on node-a: ${repairs};`,
    `probes that got through: ${leaks.length === 0 ? 'none' : summariseLeaks(leaks)})`,
  ].join(' '));

  assert.ok(hook.behind.length > 0, 'kube-proxy\'s jumps were seen ahead of palisade\'s hook on node-a');
  assert.ok(repairs >= 1, 'palisade counted the repair of its hook position');
  assert.deepEqual(leaks.filter((l) => l.atMs >= hook.repairedAt), [], 'nothing denied got through once palisade\'s hook was first again');
  const markedOnItsNode = [`${EXTERNAL} -> service of x/a`, `${EXTERNAL} -> service of x/b`];
  assert.deepEqual(leaks.filter((l) => !markedOnItsNode.some((p) => l.pair.startsWith(p))), [],
    'only traffic marked for masquerade, to a pod on the node that marked it, can pass kube-proxy\'s ACCEPT ahead of palisade');
  for (const n of [NODE_A, NODE_B]) assert.equal((await forwardChain(c, n))[0], PALISADE_HOOK, `${n}: palisade's hook is first`);
}

/** Per pair: how many probes got through, sent between when and when. */
function summariseLeaks(leaks: readonly { pair: string; atMs: number }[]): string {
  const byPair = new Map<string, number[]>();
  for (const l of leaks) byPair.set(l.pair, [...(byPair.get(l.pair) ?? []), l.atMs]);
  return [...byPair].map(([pair, at]) => `${pair}: ${at.length}, sent from ${Math.min(...at)} to ${Math.max(...at)} ms`).join('; ');
}

/** Polls `check` until it holds; fails, naming `what`, after a generous deadline. */
async function waitFor(check: () => Promise<boolean>, what: string, deadlineMs = 20_000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`waited ${deadlineMs} ms for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** palisade_drift_repairs_total{kind="hook-moved"} from a scrape. */
function hookRepairs(metrics: string): number {
  const line = metrics.split('\n').find((l) => l.startsWith('palisade_drift_repairs_total{') && l.includes('kind="hook-moved"'));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}

interface HookHistory {
  /** Intervals (ms on the watch's clock, between readings) in which FORWARD did not start with palisade's hook. */
  readonly behind: readonly (readonly [number, number])[];
  /** Those in which KUBE-FORWARD, with its ACCEPT of marked packets, came before palisade's hook. */
  readonly kubeForwardAhead: readonly (readonly [number, number])[];
  /** The first reading after which palisade's hook stayed first. */
  readonly repairedAt: number;
}

interface HookReading {
  readonly at: number;
  readonly first: boolean;
  readonly kubeForwardAhead: boolean;
}

/**
 * Reads node's FORWARD chain over and over (one iptables-save at a time) and notes where palisade's
 * hook stands. untilFirstAfter(t) resolves once a reading after t shows it first.
 */
function watchHookOrder(c: E2eCluster, node: string, now: () => number): { untilFirstAfter(t: number): Promise<HookHistory>; stop(): Promise<void> } {
  const readings: HookReading[] = [];
  let stopped = false;
  let failure: unknown = null;
  const loop = (async () => {
    try {
      while (!stopped) {
        const chain = await forwardChain(c, node);
        const hook = chain.indexOf(PALISADE_HOOK);
        const kubeForward = chain.indexOf('KUBE-FORWARD');
        // Stamped once read: the state it shows held at some moment up to then, so a repair is never dated early.
        readings.push({ at: now(), first: hook === 0, kubeForwardAhead: kubeForward >= 0 && (hook < 0 || kubeForward < hook) });
      }
    } catch (error) {
      failure = error;
    }
  })();
  const history = (): HookHistory => {
    const lastBehind = readings.findLast((r) => !r.first);
    const repaired = readings.find((r) => r.first && (lastBehind === undefined || r.at > lastBehind.at));
    return {
      behind: intervals(readings, (r) => !r.first),
      kubeForwardAhead: intervals(readings, (r) => r.kubeForwardAhead),
      repairedAt: repaired?.at ?? Number.NaN,
    };
  };
  return {
    async untilFirstAfter(t: number): Promise<HookHistory> {
      while (!readings.some((r) => r.at > t && r.first)) {
        if (failure !== null) throw failure;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      return history();
    },
    async stop(): Promise<void> {
      stopped = true;
      await loop;
    },
  };
}

/** Runs of consecutive readings for which `holds` is true, as [first, last] reading times. */
function intervals(readings: readonly HookReading[], holds: (r: HookReading) => boolean): [number, number][] {
  const out: [number, number][] = [];
  let previous = false;
  for (const r of readings) {
    const now = holds(r);
    if (now && previous) out.at(-1)![1] = r.at;
    else if (now) out.push([r.at, r.at]);
    previous = now;
  }
  return out;
}

function spans(list: readonly (readonly [number, number])[]): string {
  return list.map(([a, b]) => `${a}-${b} ms`).join(', ') || 'no reading';
}
