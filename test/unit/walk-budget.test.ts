import assert from 'node:assert/strict';
import type { Dataplane } from '../../rules/dataplane.js';
import { makeSettings } from '../../rules/settings.js';
import type { CompilerSettings } from '../../rules/settings.js';
import type { Snapshot } from '../../rules/snapshot.js';
import { compile, parseObjects } from '../../rules/snapshot.js';
import type { SyntheticCluster, SyntheticOptions, WalkResult } from '../../bench/synthetic-cluster.js';
import { syntheticCluster, traceWalks, withDoubledRemotePods } from '../../bench/synthetic-cluster.js';

/**
 * The walk budget, pinned structurally: the first packet of a new connection walks a bounded number of
 * rules, and the ruleset does not grow with the number of pods elsewhere in the cluster. The cluster is
 * the benchmark's (bench/synthetic-cluster.ts) at a fifth of its size, with the same 250 local pods
 * and the same two policies per namespace, so what shapes the walk (dispatch tree over 250
 * interfaces, policies per pod, rules per policy) is the same. No timings are asserted.
 */

const SCALE: SyntheticOptions = { pods: 2_000, namespaces: 200, policies: 400, localPods: 250, nodes: 40, seed: 7 };
const WALK_BUDGET = 200;

function snapshotOf(cluster: SyntheticCluster): Snapshot {
  const { snapshot, problems } = parseObjects(cluster.objects.map((object) => ({ object })));
  assert.deepEqual(problems.filter((p) => p.severity === 'error'), [], 'the synthetic cluster must be valid');
  return snapshot;
}

function ruleCount(dataplane: Dataplane): number {
  let rules = dataplane.hooks.length;
  for (const chain of dataplane.chains.values()) rules += chain.rules.length;
  return rules;
}

function memberCount(dataplane: Dataplane): number {
  let members = 0;
  for (const set of dataplane.ipsets.values()) members += set.members.size;
  return members;
}

describe('walk budget at a reduced cluster scale', function () {
  this.timeout(120_000);

  let settings: CompilerSettings;
  let cluster: SyntheticCluster;
  let snapshot: Snapshot;
  let dataplane: Dataplane;
  let walks: WalkResult[];

  before(() => {
    const result = makeSettings({ nodeName: 'node-0' });
    assert.ok(result.ok);
    settings = result.settings;
    cluster = syntheticCluster(SCALE);
    snapshot = snapshotOf(cluster);
    dataplane = compile(snapshot, settings);
    walks = traceWalks(cluster, dataplane, snapshot);
  });

  it('generates the cluster it was asked for, with isolated local pods', () => {
    assert.equal(snapshot.pods.length, SCALE.pods);
    assert.equal(snapshot.namespaces.length, SCALE.namespaces);
    assert.equal(snapshot.policies.length, SCALE.policies);
    assert.equal(dataplane.endpoints.length, SCALE.localPods);
    const isolated = dataplane.endpoints.filter((e) => e.isolatedIngress).length;
    assert.ok(isolated >= SCALE.localPods / 2, `only ${isolated} local pods are isolated for ingress`);
    assert.ok(dataplane.endpoints.some((e) => e.ingressPolicies.length >= 4), 'some local pod should be selected by several policies');
  });

  it('walks at most 200 rules for the first packet of any connection to or from a local pod', () => {
    assert.ok(walks.length >= 4 * SCALE.localPods, `only ${walks.length} probes traced`);
    assert.ok(walks.some((w) => w.verdict === 'DROP') && walks.some((w) => w.verdict === 'ACCEPT'), 'the probes should meet both verdicts');
    const worst = walks.reduce((a, b) => (b.rulesWalked > a.rulesWalked ? b : a));
    assert.ok(worst.rulesWalked <= WALK_BUDGET, `${worst.rulesWalked} rules walked, over the budget of ${WALK_BUDGET}:\n${worst.describe()}`);
  });

  it('gives every traced packet the verdict the evaluator gives', () => {
    const wrong = walks.filter((w) => w.verdict !== w.expected);
    assert.equal(wrong.length, 0, `${wrong.length} of ${walks.length} verdicts differ from the evaluator, e.g.:\n${wrong[0]?.describe() ?? ''}`);
  });

  it('keeps the same rules and chains when the number of remote pods doubles', () => {
    const doubled = syntheticCluster(withDoubledRemotePods(SCALE));
    const bigger = compile(snapshotOf(doubled), settings);
    assert.ok(memberCount(bigger) > memberCount(dataplane), 'the doubled cluster should put more pods in the sets');
    assert.equal(ruleCount(bigger), ruleCount(dataplane));
    assert.deepEqual([...bigger.chains.keys()].sort(), [...dataplane.chains.keys()].sort());
  });
});
