import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Evaluator } from '../../rules/evaluator.js';
import type { Verdict } from '../../rules/evaluator.js';
import { compile, loadedCompiler, parseObjects } from '../../rules/snapshot.js';
import type { Snapshot } from '../../rules/snapshot.js';
import { makeSettings } from '../../rules/settings.js';
import type { CompilerSettings } from '../../rules/settings.js';
import { renderIpsets, renderIptables } from '../../rules/render.js';
import { SimulatedCluster } from '../support/cluster-sim.js';
import { IpsetModel, IptablesModel } from '../support/tracer.js';
import { NODES, randomCluster, randomPacket, seededShuffle } from '../support/random-cluster.js';

/**
 * Random clusters (NetworkPolicies, audit policies and ClusterNetworkPolicies of both tiers) and
 * random packets, hairpins through a Service among them: the verdict of the compiled rules (walked
 * by the tracer across two nodes) must equal the evaluator's, packet for packet, and so must the
 * drop-log records.
 */

function snapshotOf(objects: readonly Record<string, unknown>[]): Snapshot {
  return parseObjects(objects.map((object) => ({ object }))).snapshot;
}

function settingsFor(nodeName: string): CompilerSettings {
  const result = makeSettings({ nodeName });
  assert.ok(result.ok);
  return result.settings;
}

function text(snapshot: Snapshot, nodeName = 'node-a'): string {
  const dataplane = compile(snapshot, settingsFor(nodeName));
  return renderIpsets(dataplane.ipsets.values()) + renderIptables(dataplane);
}

/**
 * The records a new connection's first packet makes, as the evaluator sees it: the source's egress
 * first (denied, or would-deny by audit policies); the destination's ingress only if egress let it go.
 */
function expectedLogs(verdict: Verdict): string[] {
  const records: string[] = [];
  for (const side of [verdict.egress, verdict.ingress]) {
    if (!side.allowed) {
      // A ClusterNetworkPolicy's Deny is logged as its rule; a NetworkPolicy isolation drop with the policies isolating the pod.
      const by = side.decidedBy === null ? [...side.policies].sort().join(',') : `${side.decidedBy.tier} ${side.decidedBy.policy} rule ${side.decidedBy.rule}`;
      records.push(`denied ${side.direction} ${side.pod} by ${by}`);
      break;
    }
    if (side.audit?.wouldDeny === true) records.push(`would-deny ${side.direction} ${side.pod} by ${[...side.audit.policies].sort().join(',')}`);
  }
  return records;
}

const seed = Number(process.env['PALISADE_PROPERTY_SEED'] ?? 20261126);

describe('compiled rules against the evaluator (property-based)', function () {
  this.timeout(120_000);

  it('agree on thousands of random packets through random clusters and policies', () => {
    let packets = 0;
    const records = { denied: 0, wouldDeny: 0 };
    const tiers = { Admin: 0, Baseline: 0, hairpin: 0 };
    fc.assert(fc.property(randomCluster.chain((cluster) => fc.tuple(fc.constant(cluster), fc.array(randomPacket(cluster.addresses), { minLength: 20, maxLength: 20 }))), ([cluster, probes]) => {
      const snapshot = snapshotOf(cluster.objects);
      const evaluator = new Evaluator(snapshot);
      const sim = new SimulatedCluster(snapshot, NODES.map((n) => n.name));
      for (const packet of probes) {
        packets++;
        const expected = evaluator.evaluate(packet);
        const traced = sim.send(packet);
        for (const side of [expected.egress, expected.ingress]) if (side.tier === 'Admin' || side.tier === 'Baseline') tiers[side.tier]++;
        if ('viaService' in packet && expected.egress.clusterPolicies.length > 0) tiers.hairpin++;
        if (traced.allowed !== expected.allowed) {
          assert.fail(`${JSON.stringify(packet)}: evaluator says ${expected.allowed ? 'allowed' : 'denied'} (${expected.egress.reason}; ${expected.ingress.reason}) but the rules say ${traced.allowed ? 'allowed' : 'denied'}\n${traced.describe()}\n${JSON.stringify(cluster.objects)}`);
        }
        const logged = traced.logged().map((l) => `${l.verdict} ${l.direction} ${l.namespace}/${l.pod} by ${[...l.policies].sort().join(',')}`).sort();
        const wanted = expectedLogs(expected).sort();
        for (const record of wanted) records[record.startsWith('denied') ? 'denied' : 'wouldDeny']++;
        if (JSON.stringify(logged) !== JSON.stringify(wanted)) {
          assert.fail(`${JSON.stringify(packet)}: the evaluator expects drop-log records ${JSON.stringify(wanted)} but the rules logged ${JSON.stringify(logged)}\n${traced.describe()}\n${JSON.stringify(cluster.objects)}`);
        }
      }
    }), { numRuns: 1000, seed });
    assert.ok(packets >= 20000, `only ${packets} packets were checked`);
    assert.ok(records.denied >= 300 && records.wouldDeny >= 100, `too few drop-log records were checked: ${JSON.stringify(records)}`);
    assert.ok(tiers.Admin >= 200 && tiers.Baseline >= 200 && tiers.hairpin >= 50, `too few verdicts decided by ClusterNetworkPolicy tiers: ${JSON.stringify(tiers)}`);
  });

  it('render structurally sound rulesets for any cluster', () => {
    fc.assert(fc.property(randomCluster, (cluster) => {
      const snapshot = snapshotOf(cluster.objects);
      for (const { name } of NODES) {
        const dataplane = compile(snapshot, settingsFor(name));
        const problems = IptablesModel.parse(renderIptables(dataplane)).check(IpsetModel.parse(renderIpsets(dataplane.ipsets.values())));
        // The allow chain always exists (the Pass and Deny chains while a ClusterNetworkPolicy is installed); each is unreachable while no rule has its action.
        assert.deepEqual(problems.filter((p) => !['unreachable: pal-allow (table mangle)', 'unreachable: pal-pass (table mangle)', 'unreachable: pal-deny (table mangle)'].includes(p)), []);
      }
    }), { numRuns: 200, seed });
  });

  it('give byte-identical output whatever order the objects arrive in', () => {
    fc.assert(fc.property(randomCluster.chain((c) => fc.tuple(fc.constant(c), fc.shuffledSubarray([...c.objects], { minLength: c.objects.length }))), ([cluster, shuffled]) => {
      assert.equal(text(snapshotOf(shuffled)), text(snapshotOf(cluster.objects)));
    }), { numRuns: 100, seed });
  });

  it('end the same after any sequence of incremental changes as a compile from scratch', () => {
    // Two random clusters over the same names: the compiler is fed the first, then moved object by
    // object to the second (updates, deletions, additions in random order), then compared.
    fc.assert(fc.property(randomCluster, randomCluster, fc.integer(), (first, second, shuffleSeed) => {
      const settings = settingsFor('node-a');
      const a = snapshotOf(first.objects);
      const b = snapshotOf(second.objects);
      const compiler = loadedCompiler(a, settings);
      compiler.build();
      const steps: (() => void)[] = [
        ...a.pods.filter((p) => !b.pods.some((q) => q.namespace === p.namespace && q.name === p.name)).map((p) => () => compiler.deletePod(p.namespace, p.name)),
        ...a.policies.filter((p) => !b.policies.some((q) => q.namespace === p.namespace && q.name === p.name)).map((p) => () => compiler.deletePolicy(p.namespace, p.name)),
        ...a.clusterPolicies.filter((p) => !b.clusterPolicies.some((q) => q.name === p.name)).map((p) => () => compiler.deleteClusterPolicy(p.name)),
        ...b.clusterPolicies.map((p) => () => compiler.setClusterPolicy(p)),
        ...b.namespaces.map((ns) => () => compiler.setNamespace(ns)),
        ...b.pods.map((p) => () => compiler.setPod(p)),
        ...b.policies.map((p) => () => compiler.setPolicy(p)),
      ];
      seededShuffle(steps, shuffleSeed);
      steps.forEach((step, i) => {
        step();
        if (i % 3 === 0) compiler.build();
      });
      const incremental = compiler.build();
      assert.equal(renderIpsets(incremental.ipsets.values()) + renderIptables(incremental), text(b));
      assert.deepEqual(incremental.endpoints, compile(b, settings).endpoints);
    }), { numRuns: 200, seed });
  });
});
