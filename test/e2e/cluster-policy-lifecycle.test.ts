/**
 * ClusterNetworkPolicy over time, on a lab cluster that starts WITHOUT the CRD (two nodes, real
 * daemons, discovery every second): the CRD installed at runtime and policies created with it, then a
 * run of changes that hand each denied pair from one mechanism to another (an egress Deny, an ingress
 * Deny by namespace, one by pod labels, a Pass into NetworkPolicy, a Baseline behind a Pass), then the
 * CRD removed and installed again. A probe stream runs through all of it: a pair that must stay
 * denied is never let through at any moment, a pair that must stay allowed is never dropped. Each
 * change is held until both daemons have synced it, so no two fold into one sync and hide a window.
 */
import assert from 'node:assert/strict';
import {
  allowAll, clusterPolicyStatus, cnp, denyIngress, every, msUntil, ns, podsLabelled, sameNamespaceOnly, settled, waitForStatus,
} from '../support/cluster-policy-e2e.js';
import type { Obj } from '../support/cluster-policy-e2e.js';
import { assertNoUnexpected, NODES, Reachability, TCP_80, TCP_81, UDP_80, UDP_81, useE2eCluster } from '../support/e2e-cluster.js';
import type { E2eCluster, WatchedPair } from '../support/e2e-cluster.js';

const DISCOVERY_MS = 1000;
/**
 * What enforcement may take beyond the discovery interval: the list, one sync (--sync-delay 20ms in
 * the lab) and an iptables-restore, plus the probe loop's own resolution, on a loaded CI runner.
 */
const SLACK_MS = 2000;

/** A timeline of what the test did and when, in the probe stream's clock, for failure messages. */
class Steps {
  readonly lines: string[] = [];
  constructor(private readonly c: E2eCluster, private readonly elapsed: () => number) {}

  /** Makes the change, then waits until both daemons have synced it and holds a moment. */
  async run(what: string, change: () => Promise<void>): Promise<void> {
    this.lines.push(`${this.elapsed()}ms ${what}`);
    const since = Date.now();
    await change();
    await settled(this.c, since);
  }

  toString(): string {
    return this.lines.join('; ');
  }
}

describe('ClusterNetworkPolicy lifecycle on the lab cluster (the CRD installed at runtime, policies handing over, the CRD removed; probed throughout)', function () {
  this.timeout(300_000);
  const cluster = useE2eCluster({ prefix: 'paltest-e2e-cnplc', syncBeforeProbing: true, daemonArgs: ['--cluster-policy-discovery-interval', `${DISCOVERY_MS / 1000}s`] });

  it('Installed at runtime, the CRD\'s policies are enforced within the discovery interval; then, as denials pass from one policy, tier, action or label to another, no denied probe ever gets through and no allowed one is dropped.', async () => {
    const c = cluster();
    await c.reset();
    // A cluster without the CRD: both daemons say so, and run on NetworkPolicy alone.
    assert.deepEqual((await clusterPolicyStatus(c)).map((s) => [s.served, s.count, s.discovery.intervalSeconds]), NODES.map(() => [false, 0, 1]));
    await c.applyPolicies(denyIngress('z'), sameNamespaceOnly('z'));
    await c.expectMatrices([{ ...TCP_80, expected: new Reachability(true).expectAllIngress('z/*', false).expect('z/*', 'z/*', true) }]);

    // Every kind of node pair: a and b are on node-a, c on node-b.
    const pairs: WatchedPair[] = [
      { from: 'y/a', to: 'z/a', ...TCP_80, allowed: false },
      { from: 'x/c', to: 'z/b', ...UDP_80, allowed: false },
      { from: 'y/c', to: 'z/c', ...TCP_81, allowed: false },
      { from: 'x/a', to: 'z/c', ...UDP_81, allowed: false },
      { from: 'z/b', to: 'z/c', ...TCP_80, allowed: true },
      { from: 'z/a', to: 'y/b', ...UDP_80, allowed: true },
      { from: 'y/b', to: 'x/c', ...TCP_80, allowed: true },
    ];
    const watch = c.watchPairs(pairs);
    const steps = new Steps(c, () => watch.elapsed());
    const accept = (name: string, priority: number, from: Obj): Obj => cnp(name, 'Admin', priority, { subject: ns('z'), ingress: [{ action: 'Accept', from: [from] }] });
    const red = (action: string, priority: number): Obj => cnp('red', 'Admin', priority, { subject: podsLabelled({ role: 'guarded' }), ingress: [{ action, from: [podsLabelled({ team: 'red' })] }] });
    const passY = (priority: number): Obj => cnp('pass-y', 'Admin', priority, { subject: ns('z'), ingress: [{ action: 'Pass', from: [ns('y')] }] });
    let pickedUpMs = -1;
    let servedMs = -1;
    try {
      // As `kubectl apply` of the CRD and the policies together: nothing waits for discovery in between.
      await steps.run('the CRD installed, and its policies created at once', async () => {
        const installed = Date.now();
        await c.setClusterPolicyCrd(true);
        await c.applyPolicies(
          cnp('guard-x', 'Admin', 50, { subject: ns('x'), ingress: [{ action: 'Deny', from: [ns('z')] }] }),
          passY(20),
          accept('z-internal', 30, ns('z')),
          cnp('x-to-z', 'Admin', 40, { subject: ns('z'), ingress: [{ action: 'Deny', from: [ns('x')] }] }),
          cnp('open-z', 'Baseline', 10, { subject: ns('z'), ingress: [{ action: 'Accept', from: [every] }] }),
        );
        pickedUpMs = await msUntil(c, installed, 'z/c', 'x/b', TCP_81, 'timeout');
        await waitForStatus(c, (s) => s.served === true && s.count === 5, 'both daemons serve the five policies');
        servedMs = Date.now() - installed;
      });
      // y loses z by its own egress; then z's NetworkPolicies go: y is passed on to the Baseline, which accepts.
      await steps.run('an egress Deny from y to z', () => c.applyPolicies(cnp('y-out', 'Admin', 10, { subject: ns('y'), egress: [{ action: 'Deny', to: [ns('z')] }] })));
      await steps.run('z\'s NetworkPolicies deleted (y passed into the Baseline\'s Accept)', async () => {
        await c.deletePolicy('z', 'deny-ingress');
        await c.deletePolicy('z', 'same-namespace');
      });
      // A Deny by pod labels takes over, as its subjects and peers are labelled, and the others go.
      await steps.run('a Deny from team=red into role=guarded', () => c.applyPolicies(red('Deny', 15)));
      await steps.run('z\'s pods labelled role=guarded (subjects join)', async () => {
        for (const p of ['z/a', 'z/b', 'z/c']) await c.setPodLabels(p, { pod: p.slice(2), role: 'guarded' });
      });
      await steps.run('y/a, y/c, x/a, x/c labelled team=red (peers join)', async () => {
        for (const p of ['y/a', 'y/c', 'x/a', 'x/c']) await c.setPodLabels(p, { pod: p.slice(2), team: 'red' });
      });
      await steps.run('the egress Deny and the Deny from x deleted (the label Deny alone)', async () => {
        await c.deleteClusterPolicy('y-out');
        await c.deleteClusterPolicy('x-to-z');
      });
      // An Admin Deny holds over a NetworkPolicy that allows everything, through a priority edit.
      await steps.run('allow-all in z', () => c.applyPolicies(allowAll('z')));
      await steps.run('the label Deny moved to priority 1', () => c.applyPolicies(red('Deny', 1)));
      // Back to NetworkPolicy: it returns, the label Deny becomes a Pass, priorities are swapped.
      await steps.run('z\'s isolating NetworkPolicies created again, then its allow-all deleted', async () => {
        await c.applyPolicies(denyIngress('z'), sameNamespaceOnly('z'));
        await c.deletePolicy('z', 'allow-all');
      });
      await steps.run('the label Deny edited to Pass', () => c.applyPolicies(red('Pass', 15)));
      await steps.run('priorities swapped: pass-y 20 -> 5, red 15 -> 60', () => c.applyPolicies(passY(5), red('Pass', 60)));
      await steps.run('z/a and z/c leave the subject, y/a leaves the peers', async () => {
        await c.setPodLabels('z/a', { pod: 'a' });
        await c.setPodLabels('z/c', { pod: 'c' });
        await c.setPodLabels('y/a', { pod: 'a' });
      });
      await steps.run('the Admin Accept inside z deleted (NetworkPolicy keeps z/b -> z/c)', () => c.deleteClusterPolicy('z-internal'));
      await steps.run('every other ClusterNetworkPolicy deleted', async () => {
        for (const name of ['red', 'pass-y', 'open-z', 'guard-x']) await c.deleteClusterPolicy(name);
      });
    } finally {
      const records = await watch.stop();
      console.log(`        ${steps}; watch ended at ${watch.elapsed()} ms`);
      console.log(`        CRD installed -> its Admin Deny enforced in ${pickedUpMs} ms, both daemons' /status listing all five by ${servedMs} ms (discovery every ${DISCOVERY_MS} ms)`);
      assertNoUnexpected(records, steps.toString());
    }
    assert.ok(pickedUpMs >= 0 && pickedUpMs <= DISCOVERY_MS + SLACK_MS, `enforced ${pickedUpMs} ms after the CRD was installed; discovery runs every ${DISCOVERY_MS} ms`);
    await c.expectMatrices([{ ...TCP_80, expected: new Reachability(true).expectAllIngress('z/*', false).expect('z/*', 'z/*', true) }]);
  });

  it('Removing the CRD (its objects with it) returns enforcement to NetworkPolicy alone, Admin Accepts included; installed again, new policies are enforced within the discovery interval; NetworkPolicy\'s denials hold throughout.', async () => {
    const c = cluster();
    await c.reset();
    if (!c.clusterPolicyCrdInstalled) await c.setClusterPolicyCrd(true);
    const guard = cnp('guard-x', 'Admin', 10, { subject: ns('x'), ingress: [{ action: 'Deny', from: [ns('z')] }] });
    await c.applyPolicies(
      denyIngress('z'),
      guard,
      cnp('open-z-b', 'Admin', 20, { subject: { pods: { namespaceSelector: { matchLabels: { ns: 'z' } }, podSelector: { matchLabels: { pod: 'b' } } } }, ingress: [{ action: 'Accept', from: [ns('y')] }] }),
    );
    const networkPolicyAlone = new Reachability(true).expectAllIngress('z/*', false);
    await c.expectMatrices([{ ...TCP_80, expected: networkPolicyAlone.clone().expect('y/*', 'z/b', true).expect('z/*', 'x/*', false) }]);

    const watch = c.watchPairs([
      { from: 'y/a', to: 'z/a', ...TCP_80, allowed: false },
      { from: 'x/c', to: 'z/c', ...UDP_80, allowed: false },
      { from: 'x/a', to: 'z/b', ...TCP_81, allowed: false },
      { from: 'x/a', to: 'y/c', ...TCP_80, allowed: true },
      { from: 'y/b', to: 'x/c', ...UDP_80, allowed: true },
    ]);
    const steps = new Steps(c, () => watch.elapsed());
    let liftedMs = -1;
    let forgottenMs = -1;
    let enforcedMs = -1;
    try {
      await steps.run('the CRD removed', async () => {
        const removed = Date.now();
        await c.setClusterPolicyCrd(false);
        // The objects go first, and their watch takes them away before discovery says "not served".
        liftedMs = await msUntil(c, removed, 'z/a', 'x/b', TCP_80, 'ok');
        await waitForStatus(c, (s) => s.served === false && s.count === 0, 'both daemons say the CRD is gone');
        forgottenMs = Date.now() - removed;
      });
      await c.expectMatrices([{ ...TCP_80, expected: networkPolicyAlone }]);
      await steps.run('the CRD installed again, and an Admin Deny created with it', async () => {
        const installed = Date.now();
        await c.setClusterPolicyCrd(true);
        await c.applyPolicies(guard);
        enforcedMs = await msUntil(c, installed, 'z/a', 'x/b', TCP_80, 'timeout');
      });
    } finally {
      const records = await watch.stop();
      console.log(`        ${steps}; watch ended at ${watch.elapsed()} ms`);
      console.log(`        CRD removed -> enforcement lifted in ${liftedMs} ms, both daemons not serving after ${forgottenMs} ms; installed again -> enforced in ${enforcedMs} ms`);
      assertNoUnexpected(records, steps.toString());
    }
    assert.ok(enforcedMs >= 0 && enforcedMs <= DISCOVERY_MS + SLACK_MS, `enforced ${enforcedMs} ms after the CRD was installed again`);
    await c.expectMatrices([{ ...TCP_80, expected: networkPolicyAlone.clone().expect('z/*', 'x/*', false) }]);
  });
});
