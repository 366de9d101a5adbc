/**
 * ClusterNetworkPolicy on the lab cluster: two nodes, real daemons, kube-proxy with a Service per pod,
 * the CRD installed, and the full reachability matrix of upstream's e2e layout (namespaces x, y, z;
 * pods a and b on node-a, c on node-b; TCP and UDP on 80 and 81, declared as named ports). Each case
 * is one thing the API documents: each action in each tier, priorities and ties, Pass into
 * NetworkPolicy and into Baseline, peers by namespace, pod, network (a pod's address and an outside
 * one) and node (by labels: a pod's own node and the other), named ports on ingress and egress,
 * relabels of subjects and peers (pods, namespaces, nodes) both ways, deletion, the hairpin through a
 * Service, and the /drops records of Deny rules in both tiers and directions. The CRD's arrival and
 * removal, and continuous probing while policies change, are cluster-policy-lifecycle.test.ts.
 */
import assert from 'node:assert/strict';
import { policy } from '../support/builders.js';
import { allowAll, cnp, denyIngress, every, ns, podsLabelled, tcp, waitForDrop } from '../support/cluster-policy-e2e.js';
import type { Obj } from '../support/cluster-policy-e2e.js';
import {
  EXTERNAL, EXTERNAL_2, NODE_A, NODE_B, POD_PEERS, Reachability, TCP_80, TCP_81, UDP_80,
  onAllPorts, useE2eCluster,
} from '../support/e2e-cluster.js';
import type { E2eCluster } from '../support/e2e-cluster.js';

describe('ClusterNetworkPolicy on the lab cluster (two nodes, real daemons, kube-proxy)', function () {
  this.timeout(300_000);
  const cluster = useE2eCluster({ prefix: 'paltest-e2e-cnp', kubeProxy: { mode: 'iptables' }, clusterPolicies: true, syncBeforeProbing: true });
  const fresh = async (): Promise<E2eCluster> => {
    await cluster().reset();
    return cluster();
  };

  it('An Admin Deny holds against a namespace\'s allow-all, and its /drops record names the ClusterNetworkPolicy and rule.', async () => {
    const c = await fresh();
    await c.applyPolicies(allowAll('x'), cnp('guard-x', 'Admin', 10, { subject: ns('x'), ingress: [{ name: 'no-y', action: 'Deny', from: [ns('y')] }] }));
    await c.expectMatrices(onAllPorts(new Reachability(true).expect('y/*', 'x/*', false)));
    const record = await waitForDrop(c, NODE_A, 'x/a', (r) => r.source.pod === 'a' && r.source.namespace === 'y' && r.clusterPolicy !== undefined, 'y/a -> x/a', {
      since: Date.now(),
      probe: async () => assert.equal(await c.probe('y/a', 'x/a', TCP_80, 300), 'timeout'),
    });
    assert.deepEqual([record.direction, record.destination, record.policies, record.clusterPolicy], ['ingress', { ip: c.ip('x/a'), namespace: 'x', pod: 'a' }, [], { tier: 'Admin', name: 'guard-x', priority: 10, rule: 0, ruleName: 'no-y' }]);
  });

  it('An Admin Accept opens what a NetworkPolicy closes, and ends the walk for that direction only: egress Accept still meets the destination\'s ingress.', async () => {
    const c = await fresh();
    await c.applyPolicies(
      denyIngress('x'),
      denyIngress('z'),
      cnp('let-z-into-x', 'Admin', 10, { subject: ns('x'), ingress: [{ action: 'Accept', from: [ns('z')] }] }),
      cnp('z-out', 'Admin', 10, { subject: ns('y'), egress: [{ action: 'Accept', to: [ns('z')] }] }),
    );
    await c.expectMatrices(onAllPorts(new Reachability(true).expectAllIngress(['x/*', 'z/*'], false).expect('z/*', 'x/*', true)));
  });

  it('Pass skips the rest of the Admin tier: into NetworkPolicy where one isolates the pod, else into Baseline; a Baseline Pass goes to the default.', async () => {
    const c = await fresh();
    const pass = cnp('pass-y', 'Admin', 5, { subject: ns('x'), ingress: [{ action: 'Pass', from: [ns('y')] }] });
    const deny = cnp('deny-y-z', 'Admin', 10, { subject: ns('x'), ingress: [{ action: 'Deny', from: [ns('y'), ns('z')] }] });
    const baseline = cnp('base-81', 'Baseline', 10, { subject: ns('x'), ingress: [{ name: 'no-81', action: 'Deny', from: [every], protocols: [tcp(81)] }] });
    const onlyY80 = policy('x', 'y-80', { podSelector: {}, policyTypes: ['Ingress'], ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }], ports: [{ protocol: 'TCP', port: 80 }] }] });
    await c.applyPolicies(pass, deny, baseline, onlyY80);
    // x isolated by its NetworkPolicy: y is passed to it (TCP 80 only); z is denied by Admin; x itself by the NetworkPolicy.
    const isolated = new Reachability(true).expectAllIngress('x/*', false);
    await c.expectMatrices([
      { ...TCP_80, expected: isolated.clone().expect('y/*', 'x/*', true) },
      { ...TCP_81, expected: isolated },
      { ...UDP_80, expected: isolated },
    ]);
    await c.deletePolicy('x', 'y-80');
    // No NetworkPolicy: y passes to Baseline, which denies TCP 81 only; z is still denied by Admin; x's own pods meet the Baseline.
    const baselineOnly = new Reachability(true).expect('z/*', 'x/*', false);
    await c.expectMatrices([
      { ...TCP_80, expected: baselineOnly },
      { ...TCP_81, expected: baselineOnly.clone().expectAllIngress('x/*', false) },
      { ...UDP_80, expected: baselineOnly },
    ]);
    // y/a was passed by the Admin tier and dropped by the Baseline: the record names the Baseline rule.
    const record = await waitForDrop(c, NODE_A, 'x/b', (r) => r.source.ip === c.ip('y/a') && r.port === 81 && r.clusterPolicy !== undefined, 'y/a -> x/b tcp/81', {
      since: Date.now(),
      probe: async () => assert.equal(await c.probe('y/a', 'x/b', TCP_81, 300), 'timeout'),
    });
    assert.deepEqual([record.direction, record.source, record.destination, record.clusterPolicy], ['ingress', { ip: c.ip('y/a'), namespace: 'y', pod: 'a' }, { ip: c.ip('x/b'), namespace: 'x', pod: 'b' }, { tier: 'Baseline', name: 'base-81', priority: 10, rule: 0, ruleName: 'no-81' }]);
    await c.applyPolicies(cnp('base-pass', 'Baseline', 1, { subject: ns('x'), ingress: [{ action: 'Pass', from: [ns('x')] }] }));
    // x's own pods are passed on to the default; y meets the Baseline's Deny, z the Admin one.
    await c.expectMatrices([{ ...TCP_81, expected: baselineOnly.clone().expect('y/*', 'x/*', false) }]);
  });

  it('A lower priority number goes first; at one priority Deny beats Accept whatever the names, and a priority edit takes effect.', async () => {
    const c = await fresh();
    const accept = (priority: number): Obj => cnp('a-accept', 'Admin', priority, { subject: ns('x'), ingress: [{ action: 'Accept', from: [ns('y')] }] });
    const deny = cnp('z-deny', 'Admin', 10, { subject: ns('x'), ingress: [{ action: 'Deny', from: [ns('y')] }] });
    await c.applyPolicies(accept(10), deny);
    await c.expectMatrices([{ ...TCP_80, expected: new Reachability(true).expect('y/*', 'x/*', false) }]);
    await c.applyPolicies(accept(9));
    await c.expectMatrices([{ ...TCP_80, expected: new Reachability(true) }]);
    await c.applyPolicies(accept(11));
    await c.expectMatrices([{ ...TCP_80, expected: new Reachability(true).expect('y/*', 'x/*', false) }]);
  });

  it('Baseline: an Accept at a lower priority number than a Deny; a NetworkPolicy replaces the Baseline whole for the pods it isolates.', async () => {
    const c = await fresh();
    await c.applyPolicies(
      cnp('isolate', 'Baseline', 20, { subject: every, ingress: [{ action: 'Deny', from: [every] }] }),
      cnp('from-z', 'Baseline', 10, { subject: every, ingress: [{ action: 'Accept', from: [ns('z')] }] }),
    );
    const baseline = new Reachability(false).expectAllEgress('z/*', true);
    await c.expectMatrices([{ ...TCP_80, expected: baseline }, { ...UDP_80, expected: baseline }]);
    await c.applyPolicies(allowAll('y'));
    await c.expectMatrices([{ ...TCP_80, expected: baseline.clone().expectAllIngress('y/*', true) }]);
  });

  it('Egress peers: networks (an outside address, a pod\'s address), nodes by label (a pod\'s own node and the other, moving as nodes are relabelled), pods by label across namespaces; each Deny\'s /drops record names its rule and the pod.', async () => {
    const c = await fresh();
    await c.setNodeLabels(NODE_B, { 'guard.example/closed': 'true' });
    await c.applyPolicies(cnp('egress', 'Admin', 10, {
      subject: ns('x'),
      egress: [
        { name: 'no-outside', action: 'Deny', to: [{ networks: [`${c.ip(EXTERNAL)}/32`] }] },
        { name: 'no-closed-nodes', action: 'Deny', to: [{ nodes: { matchLabels: { 'guard.example/closed': 'true' } } }] },
        { name: 'no-c', action: 'Deny', to: [{ pods: { namespaceSelector: {}, podSelector: { matchLabels: { pod: 'c' } } } }] },
        // y/b's own address: networks match pod traffic too.
        { name: 'no-y-b', action: 'Deny', to: [{ networks: [`${c.ip('y/b')}/32`] }] },
      ],
    }));
    const peers = [...POD_PEERS, NODE_A, NODE_B, EXTERNAL];
    const expected = new Reachability(true, { sources: POD_PEERS, targets: peers })
      .expect('x/*', [EXTERNAL, NODE_B, '*/c', 'y/b'], false);
    await c.expectMatrices(onAllPorts(expected));
    // The external host's other address is outside the network: allowed.
    assert.equal(await c.probe('x/a', EXTERNAL_2, TCP_80), 'ok');

    // Egress records name the source pod (the packet's own address) and the rule by index and name.
    const egressRecord = async (from: string, to: string, rule: number, ruleName: string): Promise<void> => {
      const record = await waitForDrop(c, c.podState(from).node, from, (r) => r.direction === 'egress' && r.destination.ip === c.ip(to) && r.clusterPolicy !== undefined, `${from} -> ${to}`, {
        since: Date.now(),
        probe: async () => assert.equal(await c.probe(from, to, UDP_80, 300), 'timeout'),
      });
      assert.deepEqual([record.source, record.policies, record.clusterPolicy], [{ ip: c.ip(from), namespace: 'x', pod: from.slice(2) }, [], { tier: 'Admin', name: 'egress', priority: 10, rule, ruleName }], JSON.stringify(record));
    };
    await egressRecord('x/a', EXTERNAL, 0, 'no-outside');
    await egressRecord('x/c', NODE_B, 1, 'no-closed-nodes');
    await egressRecord('x/b', 'y/b', 3, 'no-y-b');

    // Both nodes closed, then node-b opened again: the rule follows the Node objects' labels.
    const toNodes = (closed: readonly string[]): Reachability => new Reachability(true, { sources: ['x/a', 'x/c', 'y/a'], targets: [NODE_A, NODE_B] }).expect(['x/a', 'x/c'], closed, false);
    await c.setNodeLabels(NODE_A, { 'guard.example/closed': 'true' });
    await c.expectMatrices([{ ...TCP_80, expected: toNodes([NODE_A, NODE_B]) }]);
    await c.setNodeLabels(NODE_B, {});
    await c.expectMatrices([{ ...TCP_80, expected: toNodes([NODE_A]) }]);
  });

  it('A named port resolves on the destination pod, for ingress and for egress to pods on either node; renaming a pod\'s ports moves it in or out of the rule.', async () => {
    const c = await fresh();
    await c.applyPolicies(cnp('named', 'Admin', 10, {
      subject: ns('x'),
      ingress: [{ action: 'Accept', from: [ns('y')], protocols: [{ destinationNamedPort: 'serve-80-tcp' }] }, { action: 'Deny', from: [ns('y')] }],
      egress: [{ action: 'Deny', to: [ns('z')], protocols: [{ destinationNamedPort: 'serve-81-tcp' }] }],
    }));
    const deniedIn = new Reachability(true).expect('y/*', 'x/*', false);
    await c.expectMatrices([
      { ...TCP_80, expected: new Reachability(true) },
      { ...TCP_81, expected: deniedIn.clone().expect('x/*', 'z/*', false) },
      { ...UDP_80, expected: deniedIn },
    ]);
    // x/a no longer calls 80 serve-80-tcp; z/c (on node-b) swaps the names of its TCP ports.
    await c.setPodPorts('x/a', [{ name: 'web', port: 80, protocol: 'TCP' }]);
    await c.setPodPorts('z/c', [
      { name: 'serve-81-tcp', port: 80, protocol: 'TCP' },
      { name: 'serve-80-tcp', port: 81, protocol: 'TCP' },
      { name: 'serve-80-udp', port: 80, protocol: 'UDP' },
    ]);
    await c.expectMatrices([
      { ...TCP_80, expected: new Reachability(true).expect('y/*', 'x/a', false).expect('x/*', 'z/c', false) },
      { ...TCP_81, expected: deniedIn.clone().expect('x/*', ['z/a', 'z/b'], false) },
    ]);
  });

  it('Relabels take effect both ways: subject pods join and leave, peer pods join and leave, the peer namespace and the subject namespace leave and come back.', async () => {
    const c = await fresh();
    await c.applyPolicies(cnp('guard-a', 'Admin', 10, {
      subject: { pods: { namespaceSelector: { matchLabels: { ns: 'x' } }, podSelector: { matchLabels: { pod: 'a' } } } },
      ingress: [{ action: 'Deny', from: [ns('y')] }, { action: 'Deny', from: [podsLabelled({ team: 'red' })] }],
    }));
    const check = (from: string | readonly string[], to: string | readonly string[]): Promise<unknown> => c.expectMatrices([{ ...TCP_80, expected: new Reachability(true).expect(from, to, false) }]);
    await check('y/*', 'x/a');
    await c.setPodLabels('x/b', { pod: 'a' });
    await c.setPodLabels('z/c', { pod: 'c', team: 'red' });
    await check(['y/*', 'z/c'], ['x/a', 'x/b']);
    await c.setPodLabels('x/a', { pod: 'not-a' });
    await c.setPodLabels('z/c', { pod: 'c' });
    await check('y/*', 'x/b');
    await c.setNamespaceLabels('y', { ns: 'not-y' });
    await c.expectMatrices([{ ...TCP_80, expected: new Reachability(true) }]);
    await c.setNamespaceLabels('y', { ns: 'y' });
    await check('y/*', 'x/b');
    await c.setNamespaceLabels('x', { ns: 'not-x' });
    await c.expectMatrices([{ ...TCP_80, expected: new Reachability(true) }]);
    await c.setNamespaceLabels('x', { ns: 'x' });
    await check('y/*', 'x/b');
  });

  it('A pod reaching itself through its Service is subject to an Admin Deny; by its own address it is not.', async () => {
    const c = await fresh();
    await c.applyPolicies(cnp('lock-x', 'Admin', 10, { subject: ns('x'), ingress: [{ action: 'Deny', from: [every] }] }));
    await c.expectMatrices([{ ...TCP_80, expected: new Reachability(true).expectAllIngress('x/*', false) }]);
    const hairpin = { ...TCP_80, via: 'service' as const };
    assert.equal(await c.probe('x/a', 'x/a', hairpin), 'timeout', 'x/a through its own Service');
    assert.equal(await c.probe('x/c', 'x/c', hairpin), 'timeout', 'x/c through its own Service, on node-b');
    assert.equal(await c.probe('x/a', 'x/a', TCP_80), 'ok', 'x/a by its own address');
    assert.equal(await c.probe('y/a', 'y/a', hairpin), 'ok', 'a pod no ClusterNetworkPolicy selects, through its own Service');
    await c.deleteClusterPolicy('lock-x');
    await c.expectMatrices([{ ...TCP_80, expected: new Reachability(true) }]);
    assert.equal(await c.probe('x/a', 'x/a', hairpin), 'ok', 'x/a through its own Service once the policy is gone');
  });

  it('Deleting the ClusterNetworkPolicies leaves NetworkPolicy alone deciding.', async () => {
    const c = await fresh();
    await c.applyPolicies(denyIngress('x'), cnp('open-x', 'Admin', 10, { subject: ns('x'), ingress: [{ action: 'Accept', from: [every] }] }));
    await c.expectMatrices([{ ...TCP_80, expected: new Reachability(true) }]);
    await c.deleteClusterPolicy('open-x');
    await c.expectMatrices([{ ...TCP_80, expected: new Reachability(true).expectAllIngress('x/*', false) }]);
  });
});
