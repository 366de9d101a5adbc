/**
 * ClusterNetworkPolicy on the lab cluster: two nodes, real daemons, kube-proxy with a Service per pod,
 * the CRD installed, and the full reachability matrix of upstream's e2e layout (namespaces x, y, z;
 * pods a and b on node-a, c on node-b; TCP and UDP on 80 and 81, declared as named ports). Each case
 * is one thing the API documents: each action in each tier, priorities and ties, Pass into
 * NetworkPolicy and into Baseline, peers by namespace, pod, network and node, named ports, relabels of
 * subjects and peers, deletion, the hairpin through a Service; and nothing leaks while policies change.
 */
import assert from 'node:assert/strict';
import { clusterPolicy, policy } from '../support/builders.js';
import {
  EXTERNAL, EXTERNAL_2, NODE_A, NODE_B, POD_PEERS, Reachability, TCP_80, TCP_81, UDP_80,
  assertNoUnexpected, onAllPorts, useE2eCluster,
} from '../support/e2e-cluster.js';
import type { E2eCluster, WatchedPair } from '../support/e2e-cluster.js';

type Obj = Record<string, unknown>;

const ns = (name: string): Obj => ({ namespaces: { matchLabels: { ns: name } } });
const every: Obj = { namespaces: {} };
const cnp = (name: string, tier: 'Admin' | 'Baseline', priority: number, spec: Obj): Obj => clusterPolicy(name, { tier, priority, ...spec });
const tcp = (port: number): Obj => ({ tcp: { destinationPort: { number: port } } });
const allowAll = (namespace: string): Obj => policy(namespace, 'allow-all', { podSelector: {}, policyTypes: ['Ingress', 'Egress'], ingress: [{}], egress: [{}] });
const denyIngress = (namespace: string): Obj => policy(namespace, 'deny-ingress', { podSelector: {}, policyTypes: ['Ingress'] });

interface DropRecord {
  readonly direction: string;
  readonly source: { readonly namespace?: string; readonly pod?: string };
  readonly destination: { readonly namespace?: string; readonly pod?: string };
  readonly policies: readonly string[];
  readonly clusterPolicy?: { readonly tier: string; readonly name: string; readonly rule: number; readonly ruleName: string };
}

async function waitForDrop(c: E2eCluster, node: string, pod: string, find: (r: DropRecord) => boolean, what: string): Promise<DropRecord> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const { status, body } = await c.lab.status(node, `/drops?pod=${pod}`);
    assert.equal(status, 200, body);
    const found = (JSON.parse(body) as { drops: DropRecord[] }).drops.find(find);
    if (found !== undefined) return found;
    if (Date.now() > deadline) assert.fail(`${what}: no record at /drops?pod=${pod} on ${node}: ${body.slice(0, 600)}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

describe('ClusterNetworkPolicy on the lab cluster (two nodes, real daemons, kube-proxy)', function () {
  this.timeout(300_000);
  const cluster = useE2eCluster({ prefix: 'paltest-e2e-cnp', kubeProxy: { mode: 'iptables' }, clusterPolicies: true, daemonArgs: ['--cluster-policy-discovery-interval', '1s'] });
  const fresh = async (): Promise<E2eCluster> => {
    await cluster().reset();
    return cluster();
  };

  it('An Admin Deny holds against a namespace\'s allow-all, and its /drops record names the ClusterNetworkPolicy and rule.', async () => {
    const c = await fresh();
    await c.applyPolicies(allowAll('x'), cnp('guard-x', 'Admin', 10, { subject: ns('x'), ingress: [{ name: 'no-y', action: 'Deny', from: [ns('y')] }] }));
    await c.expectMatrices(onAllPorts(new Reachability(true).expect('y/*', 'x/*', false)));
    await c.probe('y/a', 'x/a', TCP_80);
    const record = await waitForDrop(c, NODE_A, 'x/a', (r) => r.source.pod === 'a' && r.source.namespace === 'y' && r.clusterPolicy !== undefined, 'y/a -> x/a');
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
    const baseline = cnp('base-81', 'Baseline', 10, { subject: ns('x'), ingress: [{ action: 'Deny', from: [every], protocols: [tcp(81)] }] });
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

  it('Egress peers: a network (the external host), nodes (both, a pod\'s own included), and pods by label across namespaces.', async () => {
    const c = await fresh();
    await c.applyPolicies(cnp('egress', 'Admin', 10, {
      subject: ns('x'),
      egress: [
        { action: 'Deny', to: [{ networks: ['203.0.113.10/32'] }] },
        { action: 'Deny', to: [{ nodes: {} }] },
        { action: 'Deny', to: [{ pods: { namespaceSelector: {}, podSelector: { matchLabels: { pod: 'c' } } } }] },
      ],
    }));
    const peers = [...POD_PEERS, NODE_A, NODE_B, EXTERNAL];
    const expected = new Reachability(true, { sources: POD_PEERS, targets: peers })
      .expect('x/*', [EXTERNAL, NODE_A, NODE_B, '*/c'], false);
    await c.expectMatrices(onAllPorts(expected));
    // The external host's other address is outside the network: allowed.
    assert.equal(await c.probe('x/a', EXTERNAL_2, TCP_80), 'ok');
  });

  it('A named port resolves on the destination pod; renaming the pod\'s port takes it out of the rule.', async () => {
    const c = await fresh();
    await c.applyPolicies(cnp('named', 'Admin', 10, {
      subject: ns('x'),
      ingress: [{ action: 'Accept', from: [ns('y')], protocols: [{ destinationNamedPort: 'serve-80-tcp' }] }, { action: 'Deny', from: [ns('y')] }],
    }));
    const denied = new Reachability(true).expect('y/*', 'x/*', false);
    await c.expectMatrices([{ ...TCP_80, expected: new Reachability(true) }, { ...TCP_81, expected: denied }, { ...UDP_80, expected: denied }]);
    await c.setPodPorts('x/a', [{ name: 'web', port: 80, protocol: 'TCP' }]);
    await c.expectMatrices([{ ...TCP_80, expected: new Reachability(true).expect('y/*', 'x/a', false) }]);
  });

  it('Relabels of a subject pod, of a peer namespace and of the subject namespace take effect both ways.', async () => {
    const c = await fresh();
    await c.applyPolicies(cnp('guard-a', 'Admin', 10, { subject: { pods: { namespaceSelector: { matchLabels: { ns: 'x' } }, podSelector: { matchLabels: { pod: 'a' } } } }, ingress: [{ action: 'Deny', from: [ns('y')] }] }));
    await c.expectMatrices([{ ...TCP_80, expected: new Reachability(true).expect('y/*', 'x/a', false) }]);
    await c.setPodLabels('x/b', { pod: 'a' });
    await c.expectMatrices([{ ...TCP_80, expected: new Reachability(true).expect('y/*', ['x/a', 'x/b'], false) }]);
    await c.setNamespaceLabels('y', { ns: 'not-y' });
    await c.expectMatrices([{ ...TCP_80, expected: new Reachability(true) }]);
    await c.setNamespaceLabels('y', { ns: 'y' });
    await c.setNamespaceLabels('x', { ns: 'not-x' });
    await c.expectMatrices([{ ...TCP_80, expected: new Reachability(true) }]);
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

  it('Removing the CRD (its objects with it) leaves NetworkPolicy alone; installed again, new ClusterNetworkPolicies are enforced.', async () => {
    const c = await fresh();
    const guard = cnp('guard', 'Admin', 10, { subject: ns('x'), ingress: [{ action: 'Deny', from: [ns('y')] }] });
    await c.applyPolicies(guard, denyIngress('z'));
    const withNetworkPolicy = new Reachability(true).expectAllIngress('z/*', false);
    await c.expectMatrices([{ ...TCP_80, expected: withNetworkPolicy.clone().expect('y/*', 'x/*', false) }]);
    await c.setClusterPolicyCrd(false);
    // Discovery must say "not served" twice, 5 s apart, before palisade lets the guardrails go.
    await c.expectMatrices([{ ...TCP_80, expected: withNetworkPolicy }], { deadlineMs: 20_000 });
    await c.setClusterPolicyCrd(true);
    await c.applyPolicies(guard);
    await c.expectMatrices([{ ...TCP_80, expected: withNetworkPolicy.clone().expect('y/*', 'x/*', false) }], { deadlineMs: 20_000 });
  });

  it('While ClusterNetworkPolicies and NetworkPolicies change (create, priority and action edits, relabels, deletions), a pair kept denied is never let through and one kept allowed never dropped.', async () => {
    const c = await fresh();
    const guard = (priority: number, extra: readonly Obj[] = []): Obj => cnp('guard', 'Admin', priority, { subject: ns('x'), ingress: [{ action: 'Deny', from: [ns('y')] }, ...extra] });
    await c.applyPolicies(guard(10));
    await c.expectMatrices([{ ...TCP_80, expected: new Reachability(true).expect('y/*', 'x/*', false) }]);
    const pairs: WatchedPair[] = [
      { from: 'y/a', to: 'x/a', ...TCP_80, allowed: false },
      { from: 'y/c', to: 'x/b', ...UDP_80, allowed: false },
      { from: 'y/b', to: 'x/c', ...TCP_81, allowed: false },
      { from: 'z/a', to: 'x/b', ...TCP_80, allowed: true },
      { from: 'x/c', to: 'z/b', ...UDP_80, allowed: true },
    ];
    const watch = c.watchPairs(pairs);
    const timeline: string[] = [];
    const step = async (what: string, change: () => Promise<void>): Promise<void> => {
      timeline.push(`${watch.elapsed()}ms ${what}`);
      await change();
      await new Promise((resolve) => setTimeout(resolve, 700));
    };
    await step('allow-all in x', () => c.applyPolicies(allowAll('x')));
    await step('guard to priority 500', () => c.applyPolicies(guard(500)));
    await step('an Accept from z at priority 400', () => c.applyPolicies(cnp('accept-z', 'Admin', 400, { subject: ns('x'), ingress: [{ action: 'Accept', from: [ns('z')] }] })));
    await step('a Baseline deny-all for x', () => c.applyPolicies(cnp('base', 'Baseline', 10, { subject: ns('x'), ingress: [{ action: 'Deny', from: [every] }] })));
    await step('guard gains a Pass for z before its Deny', () => c.applyPolicies(guard(500, [{ action: 'Pass', from: [ns('z')] }])));
    await step('z relabelled ns=z, team=blue', () => c.setNamespaceLabels('z', { ns: 'z', team: 'blue' }));
    await step('x/a relabelled', () => c.setPodLabels('x/a', { pod: 'a', tier: 'web' }));
    await step('allow-all in x deleted', () => c.deletePolicy('x', 'allow-all'));
    await step('the Baseline deleted', () => c.deleteClusterPolicy('base'));
    await step('guard back to priority 1', () => c.applyPolicies(guard(1)));
    const records = await watch.stop();
    assertNoUnexpected(records, timeline.join('; '));
  });
});
