/**
 * The scenarios of the upstream Kubernetes network-policy e2e tests (test/e2e/network/netpol), run
 * against real `palisade daemon` processes on a two-node lab cluster: namespaces x, y, z with pods a, b
 * (node-a) and c (node-b), each serving TCP and UDP on 80 and 81. Every case probes the FULL matrix of
 * pods (plus the external host or the nodes where the case is about them) on every protocol and port,
 * and waits, probing, until the observed matrix is the expected one. Each case starts from the
 * baseline: no policies and every pod reaching every pod.
 */
import assert from 'node:assert/strict';
import { policy } from '../support/builders.js';
import {
  EXTERNAL,
  EXTERNAL_2,
  NODE_A,
  NODE_B,
  onAllPorts,
  POD_PEERS,
  Reachability,
  TCP_80,
  TCP_81,
  UDP_80,
  UDP_81,
  useE2eCluster,
} from '../support/e2e-cluster.js';
import { describePair } from '../support/e2e-cluster.js';
import type { E2eCluster, MatrixCase, PairRecord, WatchedPair } from '../support/e2e-cluster.js';

type Obj = Record<string, unknown>;

const denyAllIngress = (ns: string): Obj => policy(ns, 'deny-all-ingress', { podSelector: {}, policyTypes: ['Ingress'] });
const denyAllEgress = (ns: string): Obj => policy(ns, 'deny-all-egress', { podSelector: {}, policyTypes: ['Egress'] });
const onlyIngressTo = (name: string, ingress: Obj[]): Obj => ({ podSelector: { matchLabels: { pod: name } }, policyTypes: ['Ingress'], ingress });
/** Expected: everything allowed, except that only `from` reaches x/a. */
const onlyInto = (to: string, from: string | readonly string[]): Reachability => new Reachability(true).expectAllIngress(to, false).expect(from, to, true);

describe('Network policy conformance (upstream e2e scenarios, two nodes, real daemons)', function () {
  this.timeout(300_000);
  const cluster = useE2eCluster({ prefix: 'paltest-e2e-conf' });
  /** Every case starts from the baseline, so a failed case does not leak into the next. */
  const fresh = async (): Promise<E2eCluster> => {
    await cluster().reset();
    return cluster();
  };

  it('With no policy, every pod reaches every pod on TCP and UDP ports 80 and 81, across nodes.', async () => {
    const c = await fresh();
    await c.expectMatrices(onAllPorts(new Reachability(true)));
  });

  it('A default-deny ingress policy in x drops everything into x pods, from x itself included, and nothing else.', async () => {
    const c = await fresh();
    await c.applyPolicies(denyAllIngress('x'));
    await c.expectMatrices(onAllPorts(new Reachability(true).expectAllIngress('x/*', false)));
  });

  it('A default-deny egress policy in x drops everything x pods send, to x itself included, and nothing else.', async () => {
    const c = await fresh();
    await c.applyPolicies(denyAllEgress('x'));
    await c.expectMatrices(onAllPorts(new Reachability(true).expectAllEgress('x/*', false)));
  });

  it('An ingress rule with a podSelector lets only x/b into x/a.', async () => {
    const c = await fresh();
    await c.applyPolicies(policy('x', 'allow-b', onlyIngressTo('a', [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }] }])));
    await c.expectMatrices(onAllPorts(onlyInto('x/a', 'x/b')));
  });

  it('An ingress rule with a namespaceSelector lets only the pods of namespace y into x/a.', async () => {
    const c = await fresh();
    await c.applyPolicies(policy('x', 'allow-ns-y', onlyIngressTo('a', [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }] }])));
    await c.expectMatrices(onAllPorts(onlyInto('x/a', 'y/*')));
  });

  it('A peer with both a namespaceSelector and a podSelector (AND) lets only y/b into x/a.', async () => {
    const c = await fresh();
    await c.applyPolicies(policy('x', 'allow-y-and-b', onlyIngressTo('a', [{
      from: [{ namespaceSelector: { matchLabels: { ns: 'y' } }, podSelector: { matchLabels: { pod: 'b' } } }],
    }])));
    await c.expectMatrices(onAllPorts(onlyInto('x/a', 'y/b')));
  });

  it('Two peers, a namespaceSelector or a podSelector (OR), let all of y and x/b into x/a.', async () => {
    const c = await fresh();
    await c.applyPolicies(policy('x', 'allow-y-or-b', onlyIngressTo('a', [{
      from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }, { podSelector: { matchLabels: { pod: 'b' } } }],
    }])));
    await c.expectMatrices(onAllPorts(onlyInto('x/a', ['y/*', 'x/b'])));
  });

  it('A podSelector with matchExpressions (pod In [b, c]) selects the pods of x it names, wherever they run.', async () => {
    const c = await fresh();
    await c.applyPolicies(policy('x', 'allow-expr-pods', {
      podSelector: { matchExpressions: [{ key: 'pod', operator: 'In', values: ['a'] }] },
      policyTypes: ['Ingress'],
      ingress: [{ from: [{ podSelector: { matchExpressions: [{ key: 'pod', operator: 'In', values: ['b', 'c'] }] } }] }],
    }));
    await c.expectMatrices(onAllPorts(onlyInto('x/a', ['x/b', 'x/c'])));
  });

  it('A namespaceSelector with matchExpressions (ns NotIn [x]) lets every other namespace into x/a, but not x.', async () => {
    const c = await fresh();
    await c.applyPolicies(policy('x', 'allow-expr-ns', onlyIngressTo('a', [{
      from: [{ namespaceSelector: { matchExpressions: [{ key: 'ns', operator: 'NotIn', values: ['x'] }] } }],
    }])));
    await c.expectMatrices(onAllPorts(onlyInto('x/a', ['y/*', 'z/*'])));
  });

  it('Ingress to the named ports serve-80-tcp and serve-81-udp allows TCP 80 and UDP 81 into x/a, not TCP 81 or UDP 80.', async () => {
    const c = await fresh();
    await c.applyPolicies(policy('x', 'allow-named', onlyIngressTo('a', [{
      ports: [{ port: 'serve-80-tcp' }, { protocol: 'UDP', port: 'serve-81-udp' }],
    }])));
    const open = new Reachability(true);
    const closed = new Reachability(true).expectAllIngress('x/a', false);
    await c.expectMatrices([
      { ...TCP_80, expected: open },
      { ...TCP_81, expected: closed },
      { ...UDP_80, expected: closed },
      { ...UDP_81, expected: open },
    ]);
  });

  it('Egress to the named port serve-81-udp lets x/a send UDP 81 to every pod, resolved on each destination, and nothing else.', async () => {
    const c = await fresh();
    await c.applyPolicies(policy('x', 'egress-named', {
      podSelector: { matchLabels: { pod: 'a' } },
      policyTypes: ['Egress'],
      egress: [{ ports: [{ protocol: 'UDP', port: 'serve-81-udp' }] }],
    }));
    const closed = new Reachability(true).expectAllEgress('x/a', false);
    await c.expectMatrices([
      { ...TCP_80, expected: closed },
      { ...TCP_81, expected: closed },
      { ...UDP_80, expected: closed },
      { ...UDP_81, expected: new Reachability(true) },
    ]);
  });

  it('Port ranges with endPort are inclusive: TCP 81-90 and UDP 70-80 let y into x/a on TCP 81 and UDP 80 only.', async () => {
    const c = await fresh();
    await c.applyPolicies(policy('x', 'allow-ranges', onlyIngressTo('a', [{
      from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }],
      ports: [{ protocol: 'TCP', port: 81, endPort: 90 }, { protocol: 'UDP', port: 70, endPort: 80 }],
    }])));
    const fromY = onlyInto('x/a', 'y/*');
    const none = new Reachability(true).expectAllIngress('x/a', false);
    await c.expectMatrices([
      { ...TCP_80, expected: none },
      { ...TCP_81, expected: fromY },
      { ...UDP_80, expected: fromY },
      { ...UDP_81, expected: none },
    ]);
  });

  it('A UDP-only rule lets x/b into x/c on UDP 80 and keeps TCP out on the same port.', async () => {
    const c = await fresh();
    await c.applyPolicies(policy('x', 'allow-udp', onlyIngressTo('c', [{
      from: [{ podSelector: { matchLabels: { pod: 'b' } } }],
      ports: [{ protocol: 'UDP', port: 80 }],
    }])));
    const none = new Reachability(true).expectAllIngress('x/c', false);
    await c.expectMatrices([
      { ...TCP_80, expected: none },
      { ...TCP_81, expected: none },
      { ...UDP_80, expected: onlyInto('x/c', 'x/b') },
      { ...UDP_81, expected: none },
    ]);
  });

  it('Egress to an ipBlock with an except lets x/a and x/c reach 203.0.113.10 but not the excepted 203.0.113.11, nor any pod.', async () => {
    const c = await fresh();
    await c.applyPolicies(policy('x', 'egress-external', {
      podSelector: { matchExpressions: [{ key: 'pod', operator: 'In', values: ['a', 'c'] }] },
      policyTypes: ['Egress'],
      egress: [{ to: [{ ipBlock: { cidr: '203.0.113.0/24', except: ['203.0.113.11/32'] } }] }],
    }));
    const expected = new Reachability(true, { targets: [...POD_PEERS, EXTERNAL, EXTERNAL_2] })
      .expectAllEgress(['x/a', 'x/c'], false)
      .expect(['x/a', 'x/c'], EXTERNAL, true);
    await c.expectMatrices(onAllPorts(expected));
  });

  it('Egress to a pod CIDR ipBlock with an except lets x/a reach every pod but the excepted y/b.', async () => {
    const c = await fresh();
    const yb = c.ip('y/b');
    await c.applyPolicies(policy('x', 'egress-cidr-except', {
      podSelector: { matchLabels: { pod: 'a' } },
      policyTypes: ['Egress'],
      egress: [{ to: [{ ipBlock: { cidr: '10.1.0.0/16', except: [`${yb}/32`] } }] }],
    }));
    await c.expectMatrices(onAllPorts(new Reachability(true).expect('x/a', 'y/b', false)));
  });

  it('Ingress from an ipBlock with an except lets the external host in from 203.0.113.10 only, and no pod, into every x pod on both nodes.', async () => {
    const c = await fresh();
    await c.applyPolicies(policy('x', 'ingress-external', {
      podSelector: {},
      policyTypes: ['Ingress'],
      ingress: [{ from: [{ ipBlock: { cidr: '203.0.113.0/24', except: ['203.0.113.11/32'] } }] }],
    }));
    const expected = new Reachability(true, { sources: [...POD_PEERS, EXTERNAL, EXTERNAL_2] })
      .expectAllIngress('x/*', false)
      .expect(EXTERNAL, 'x/*', true);
    await c.expectMatrices(onAllPorts(expected));
  });

  it('Egress to a namespaceSelector lets x pods reach the pods of y only, not x or z.', async () => {
    const c = await fresh();
    await c.applyPolicies(policy('x', 'egress-to-y', {
      podSelector: {},
      policyTypes: ['Egress'],
      egress: [{ to: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }] }],
    }));
    await c.expectMatrices(onAllPorts(new Reachability(true).expectAllEgress('x/*', false).expect('x/*', 'y/*', true)));
  });

  it('An empty namespaceSelector admits the pods of every namespace into x/a, but not the external host.', async () => {
    const c = await fresh();
    await c.applyPolicies(policy('x', 'allow-all-namespaces', onlyIngressTo('a', [{ from: [{ namespaceSelector: {} }] }])));
    const expected = new Reachability(true, { sources: [...POD_PEERS, EXTERNAL] }).expect(EXTERNAL, 'x/a', false);
    await c.expectMatrices(onAllPorts(expected));
  });

  it('An empty podSelector peer admits only the pods of the policy\'s own namespace into x/a.', async () => {
    const c = await fresh();
    await c.applyPolicies(policy('x', 'allow-own-namespace', onlyIngressTo('a', [{ from: [{ podSelector: {} }] }])));
    await c.expectMatrices(onAllPorts(onlyInto('x/a', 'x/*')));
  });

  it('The automatic label kubernetes.io/metadata.name selects a namespace: only z gets into x/a.', async () => {
    const c = await fresh();
    await c.applyPolicies(policy('x', 'allow-z-by-name', onlyIngressTo('a', [{
      from: [{ namespaceSelector: { matchExpressions: [{ key: 'kubernetes.io/metadata.name', operator: 'In', values: ['z'] }] } }],
    }])));
    await c.expectMatrices(onAllPorts(onlyInto('x/a', 'z/*')));
  });

  it('Allow-all rules (ingress [{}] and egress [{}]) in one policy override the default-deny of another on the same pods.', async () => {
    const c = await fresh();
    await c.applyPolicies(
      policy('x', 'deny-all', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] }),
      policy('x', 'allow-all-for-a', { podSelector: { matchLabels: { pod: 'a' } }, policyTypes: ['Ingress', 'Egress'], ingress: [{}], egress: [{}] }),
    );
    await c.expectMatrices(onAllPorts(new Reachability(true)
      .expectAllIngress(['x/b', 'x/c'], false)
      .expectAllEgress(['x/b', 'x/c'], false)));
  });

  it('A policy with an egress section and no policyTypes isolates both directions: x/a only reaches y and admits nobody.', async () => {
    const c = await fresh();
    await c.applyPolicies(policy('x', 'implicit-types', {
      podSelector: { matchLabels: { pod: 'a' } },
      egress: [{ to: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }] }],
    }));
    await c.expectMatrices(onAllPorts(new Reachability(true)
      .expectAllIngress('x/a', false)
      .expectAllEgress('x/a', false)
      .expect('x/a', 'y/*', true)));
  });

  it('An address excepted from one policy\'s ipBlock is still reached when another policy\'s ipBlock names it (policies are a union).', async () => {
    const c = await fresh();
    const ya = c.ip('y/a');
    await c.applyPolicies(
      policy('x', 'egress-pods-not-node-a', {
        podSelector: { matchLabels: { pod: 'a' } },
        policyTypes: ['Egress'],
        egress: [{ to: [{ ipBlock: { cidr: '10.1.0.0/16', except: ['10.1.1.0/24'] } }] }],
      }),
      policy('x', 'egress-y-a', {
        podSelector: { matchLabels: { pod: 'a' } },
        policyTypes: ['Egress'],
        egress: [{ to: [{ ipBlock: { cidr: `${ya}/32` } }] }],
      }),
    );
    // node-a holds the a and b pods (10.1.1.0/24), node-b the c pods.
    await c.expectMatrices(onAllPorts(new Reachability(true)
      .expectAllEgress('x/a', false)
      .expect('x/a', ['*/c', 'y/a'], true)));
  });

  it('A rule for SCTP port 80 is not taken for TCP or UDP: x/a stays closed on every port.', async () => {
    const c = await fresh();
    await c.applyPolicies(policy('x', 'allow-sctp', onlyIngressTo('a', [{ ports: [{ protocol: 'SCTP', port: 80 }] }])));
    await c.expectMatrices(onAllPorts(new Reachability(true).expectAllIngress('x/a', false)));
  });

  it('Named ports resolve against each destination pod: with y/c declaring serve-80-tcp as 81, egress from x/a to serve-80-tcp reaches y/c on 81 only.', async () => {
    const c = await fresh();
    await c.setPodPorts('y/c', [
      { name: 'serve-80-tcp', port: 81, protocol: 'TCP' },
      { name: 'serve-81-tcp', port: 80, protocol: 'TCP' },
      { name: 'serve-80-udp', port: 80, protocol: 'UDP' },
      { name: 'serve-81-udp', port: 81, protocol: 'UDP' },
    ]);
    await c.applyPolicies(policy('x', 'egress-named-tcp', {
      podSelector: { matchLabels: { pod: 'a' } },
      policyTypes: ['Egress'],
      egress: [{ ports: [{ protocol: 'TCP', port: 'serve-80-tcp' }] }],
    }));
    const closed = new Reachability(true).expectAllEgress('x/a', false);
    await c.expectMatrices([
      { ...TCP_80, expected: new Reachability(true).expect('x/a', 'y/c', false) },
      { ...TCP_81, expected: closed.clone().expect('x/a', 'y/c', true) },
      { ...UDP_80, expected: closed },
      { ...UDP_81, expected: closed },
    ]);
  });

  it('A policy updated in place while traffic flows takes effect: x/a first admits x/b, then x/c only, and pairs the change does not concern never flip.', async () => {
    const c = await fresh();
    const allowFrom = (name: string): Obj => policy('x', 'allow-one', onlyIngressTo('a', [{ from: [{ podSelector: { matchLabels: { pod: name } } }] }]));
    await c.applyPolicies(allowFrom('b'));
    await c.expectMatrices(onAllPorts(onlyInto('x/a', 'x/b')));
    const steady: WatchedPair[] = [
      ...[TCP_80, UDP_80].map((t) => ({ ...t, from: 'y/a', to: 'x/a', allowed: false })),
      ...[TCP_80, UDP_80].map((t) => ({ ...t, from: 'z/c', to: 'x/a', allowed: false })),
      ...[TCP_80, UDP_80].map((t) => ({ ...t, from: 'x/a', to: 'y/c', allowed: true })),
      ...[TCP_80, UDP_80].map((t) => ({ ...t, from: 'z/b', to: 'y/b', allowed: true })),
    ];
    const watch = c.watchPairs(steady);
    let records: PairRecord[];
    try {
      await c.applyPolicies(allowFrom('c'));
      await c.expectMatrices(onAllPorts(onlyInto('x/a', 'x/c')));
    } finally {
      records = await watch.stop();
    }
    const wrong = records.filter((r) => r.unexpected.length > 0).map((r) => `${describePair(r.pair)}: ${JSON.stringify(r.outcomes)}`);
    assert.deepEqual(wrong, [], 'pairs the update does not concern kept their verdict throughout');
  });

  it('Deleting a policy restores the traffic it denied.', async () => {
    const c = await fresh();
    await c.applyPolicies(denyAllIngress('y'));
    await c.expectMatrices(onAllPorts(new Reachability(true).expectAllIngress('y/*', false)));
    await c.deletePolicy('y', 'deny-all-ingress');
    await c.expectMatrices(onAllPorts(new Reachability(true)));
  });

  it('A pod relabelled after the policy exists gains access as a source: x/b labelled role=client reaches x/a.', async () => {
    const c = await fresh();
    await c.applyPolicies(policy('x', 'allow-clients', onlyIngressTo('a', [{ from: [{ podSelector: { matchLabels: { role: 'client' } } }] }])));
    await c.expectMatrices(onAllPorts(new Reachability(true).expectAllIngress('x/a', false)));
    await c.setPodLabels('x/b', { pod: 'b', role: 'client' });
    await c.expectMatrices(onAllPorts(onlyInto('x/a', 'x/b')));
  });

  it('A pod relabelled after the policy exists becomes isolated as a target: y/c labelled isolated=true is cut off.', async () => {
    const c = await fresh();
    await c.applyPolicies(policy('y', 'isolate-labelled', { podSelector: { matchLabels: { isolated: 'true' } }, policyTypes: ['Ingress'] }));
    await c.expectMatrices(onAllPorts(new Reachability(true)));
    await c.setPodLabels('y/c', { pod: 'c', isolated: 'true' });
    await c.expectMatrices(onAllPorts(new Reachability(true).expectAllIngress('y/c', false)));
    await c.setPodLabels('y/c', { pod: 'c' });
    await c.expectMatrices(onAllPorts(new Reachability(true)));
  });

  it('A namespace relabelled after the policy exists gains access: z labelled team=trusted reaches x/a.', async () => {
    const c = await fresh();
    await c.applyPolicies(policy('x', 'allow-trusted', onlyIngressTo('a', [{ from: [{ namespaceSelector: { matchLabels: { team: 'trusted' } } }] }])));
    await c.expectMatrices(onAllPorts(new Reachability(true).expectAllIngress('x/a', false)));
    await c.setNamespaceLabels('z', { ns: 'z', team: 'trusted' });
    await c.expectMatrices(onAllPorts(onlyInto('x/a', 'z/*')));
    await c.setNamespaceLabels('z', { ns: 'z' });
    await c.expectMatrices(onAllPorts(new Reachability(true).expectAllIngress('x/a', false)));
  });

  it('Pods recreated with new addresses are still matched: x/a (target), x/b and x/c (peers, on both nodes) keep the same matrix.', async () => {
    const c = await fresh();
    await c.applyPolicies(policy('x', 'allow-b-c', onlyIngressTo('a', [{ from: [{ podSelector: { matchExpressions: [{ key: 'pod', operator: 'In', values: ['b', 'c'] }] } }] }])));
    const expected = onAllPorts(onlyInto('x/a', ['x/b', 'x/c']));
    await c.expectMatrices(expected);
    const before = { a: c.ip('x/a'), b: c.ip('x/b'), c: c.ip('x/c') };
    await c.recreatePod('x/a');
    await c.recreatePod('x/b');
    await c.recreatePod('x/c');
    assert.notEqual(c.ip('x/a'), before.a);
    assert.notEqual(c.ip('x/b'), before.b);
    assert.notEqual(c.ip('x/c'), before.c);
    await c.expectMatrices(expected);
  });

  it('A pod given a recycled address cannot ride on the flows of the pod that held it: z/b, on x/b\'s old address, reaches x/a from none of the UDP source ports x/b used.', async () => {
    const c = await fresh();
    await c.applyPolicies(policy('x', 'allow-b', onlyIngressTo('a', [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }] }])));
    // x/b talks to x/a (allowed), as clients do: the node's conntrack now holds x/b's flows.
    await c.expectMatrices(onAllPorts(onlyInto('x/a', 'x/b')));
    const handedOver = c.ip('x/b');
    const previous = c.agent('x/b');
    const usedPorts = Array.from({ length: previous.stats.udpAutoPorts }, (_, i) => previous.udpSourcePorts[0] + i);
    await c.recreatePod('x/b');
    await c.recreatePod('z/b', handedOver);
    assert.equal(c.ip('z/b'), handedOver);
    // The new holder of the address sends what the old one sent, from the same ports: x/a admits only
    // pod=b of x, so every one of these must be dropped, whatever the node remembers of x/b.
    const leaked = {
      80: await c.udpFromSourcePorts('z/b', 'x/a', 80, usedPorts),
      81: await c.udpFromSourcePorts('z/b', 'x/a', 81, usedPorts),
    };
    assert.deepEqual(leaked, { 80: [], 81: [] }, `z/b (${handedOver}, once x/b's) reached x/a on UDP from ${leaked[80].length + leaked[81].length} of ${2 * usedPorts.length} source ports x/b had used: the node still lets x/b's flows through for whoever holds the address now`);
    await c.expectMatrices(onAllPorts(onlyInto('x/a', 'x/b')));
  });

  it('Several policies selecting one pod combine as a union of what each allows.', async () => {
    const c = await fresh();
    await c.applyPolicies(
      denyAllIngress('x'),
      policy('x', 'a-from-b-tcp-80', onlyIngressTo('a', [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }], ports: [{ protocol: 'TCP', port: 80 }] }])),
      policy('x', 'a-from-y-udp', onlyIngressTo('a', [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }], ports: [{ protocol: 'UDP' }] }])),
    );
    const base = new Reachability(true).expectAllIngress('x/*', false);
    await c.expectMatrices([
      { ...TCP_80, expected: base.clone().expect('x/b', 'x/a', true) },
      { ...TCP_81, expected: base },
      { ...UDP_80, expected: base.clone().expect('y/*', 'x/a', true) },
      { ...UDP_81, expected: base.clone().expect('y/*', 'x/a', true) },
    ]);
  });

  it('A connection needs both the egress of its source and the ingress of its destination to allow it.', async () => {
    const c = await fresh();
    await c.applyPolicies(
      // x/b may only send to x/a; x/a only admits x/c: so x/b reaches nothing, x/c reaches x/a.
      policy('x', 'b-egress-to-a', { podSelector: { matchLabels: { pod: 'b' } }, policyTypes: ['Egress'], egress: [{ to: [{ podSelector: { matchLabels: { pod: 'a' } } }] }] }),
      policy('x', 'a-from-c', onlyIngressTo('a', [{ from: [{ podSelector: { matchLabels: { pod: 'c' } } }] }])),
    );
    await c.expectMatrices(onAllPorts(onlyInto('x/a', 'x/c').expectAllEgress('x/b', false)));
  });

  it('Traffic between a pod and its own node always passes; the other node is held to the policies.', async () => {
    const c = await fresh();
    await c.applyPolicies(policy('x', 'deny-all', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] }));
    const peers = [...POD_PEERS, NODE_A, NODE_B];
    const expected = new Reachability(true, { sources: peers, targets: peers })
      .expectAllIngress('x/*', false)
      .expectAllEgress('x/*', false)
      .expect(NODE_A, ['x/a', 'x/b'], true)
      .expect(['x/a', 'x/b'], NODE_A, true)
      .expect(NODE_B, 'x/c', true)
      .expect('x/c', NODE_B, true);
    const cases: MatrixCase[] = onAllPorts(expected);
    await c.expectMatrices(cases);
  });
});
