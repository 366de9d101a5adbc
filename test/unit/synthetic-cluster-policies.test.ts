import assert from 'node:assert/strict';
import type { ClusterPeer, ClusterPolicyRecord } from '../../rules/model.js';
import { formatProblem } from '../../rules/problems.js';
import { parseObjects } from '../../rules/snapshot.js';
import { CLUSTER_POLICY_COUNT, syntheticClusterPolicies } from '../../bench/synthetic-cluster-policies.js';
import type { SyntheticOptions } from '../../bench/synthetic-cluster.js';
import { syntheticCluster } from '../../bench/synthetic-cluster.js';

/**
 * The compile benchmark's ClusterNetworkPolicies are what it says they are: valid for the real parser,
 * with nothing failing closed, and of every shape the benchmark claims to cover. The cluster is the
 * walk-budget test's reduced one; the policies depend only on its namespaces.
 */

const SCALE: SyntheticOptions = { pods: 2_000, namespaces: 200, policies: 400, localPods: 250, nodes: 40, seed: 7 };

describe('the compile benchmark\'s ClusterNetworkPolicies', function () {
  this.timeout(60_000);

  let policies: readonly ClusterPolicyRecord[];

  before(() => {
    const objects = syntheticClusterPolicies(syntheticCluster(SCALE));
    const { snapshot, problems } = parseObjects(objects.map((object) => ({ object })));
    assert.deepEqual(problems.map(formatProblem), [], 'every synthetic ClusterNetworkPolicy parses without a problem');
    policies = snapshot.clusterPolicies;
  });

  it('number 100, none failed and no rule failing closed', () => {
    assert.equal(policies.length, CLUSTER_POLICY_COUNT);
    assert.ok(policies.every((p) => !p.failed && [...p.ingress, ...p.egress].every((r) => r.failClosed === null)));
  });

  it('cover both tiers, all three actions, and priorities that tie', () => {
    assert.deepEqual([...new Set(policies.map((p) => p.tier))].sort(), ['Admin', 'Baseline']);
    const actions = new Set(policies.flatMap((p) => [...p.ingress, ...p.egress].map((r) => r.action)));
    assert.deepEqual([...actions].sort(), ['Accept', 'Deny', 'Pass']);
    const keys = policies.map((p) => `${p.tier}/${p.priority}`);
    assert.ok(new Set(keys).size < keys.length, 'some policies share a tier and a priority');
  });

  it('select subjects by namespace labels and by pod labels, and name peers of every kind', () => {
    assert.deepEqual([...new Set(policies.map((p) => p.subject.kind))].sort(), ['namespaces', 'pods']);
    const peers = policies.flatMap((p) => [...p.ingress, ...p.egress].flatMap((r) => r.peers));
    assert.deepEqual([...new Set(peers.map((peer: ClusterPeer) => peer.kind))].sort(), ['namespaces', 'networks', 'nodes', 'pods']);
  });

  it('match port numbers, ranges and named ports', () => {
    const matches = policies.flatMap((p) => [...p.ingress, ...p.egress].flatMap((r) => r.protocols ?? []));
    assert.ok(matches.some((m) => m.kind === 'range' && m.start === m.end), 'a port number');
    assert.ok(matches.some((m) => m.kind === 'range' && m.start < m.end), 'a range');
    assert.ok(matches.some((m) => m.kind === 'named'), 'a named port');
    assert.deepEqual([...new Set(matches.flatMap((m) => (m.kind === 'range' ? [m.protocol] : [])))].sort(), ['SCTP', 'TCP', 'UDP']);
  });

  it('hold the guardrails: the metadata service, kube-system and namespace isolation', () => {
    const names = new Set(policies.map((p) => p.name));
    for (const name of ['block-instance-metadata', 'allow-instance-metadata-infra', 'kube-system-dns-only']) assert.ok(names.has(name), name);
    assert.ok(policies.some((p) => p.tier === 'Baseline' && p.name.endsWith('-baseline')), 'a tenant isolation baseline');
  });
});
