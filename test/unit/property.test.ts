import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Evaluator } from '../../rules/evaluator.js';
import { compile, loadedCompiler, parseObjects } from '../../rules/snapshot.js';
import type { Snapshot } from '../../rules/snapshot.js';
import { makeSettings } from '../../rules/settings.js';
import type { CompilerSettings } from '../../rules/settings.js';
import { renderIpsets, renderIptables } from '../../rules/render.js';
import { SimulatedCluster } from '../support/cluster-sim.js';
import { IpsetModel, IptablesModel } from '../support/tracer.js';
import { NODES, randomCluster, randomPacket, seededShuffle } from '../support/random-cluster.js';

/**
 * Random clusters and random packets: the verdict of the compiled rules (walked by the tracer across
 * two nodes) must equal the evaluator's, packet for packet.
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

const seed = Number(process.env['PALISADE_PROPERTY_SEED'] ?? 20261126);

describe('compiled rules against the evaluator (property-based)', function () {
  this.timeout(120_000);

  it('agree on thousands of random packets through random clusters and policies', () => {
    let packets = 0;
    fc.assert(fc.property(randomCluster.chain((cluster) => fc.tuple(fc.constant(cluster), fc.array(randomPacket(cluster.addresses), { minLength: 20, maxLength: 20 }))), ([cluster, probes]) => {
      const snapshot = snapshotOf(cluster.objects);
      const evaluator = new Evaluator(snapshot);
      const sim = new SimulatedCluster(snapshot, NODES.map((n) => n.name));
      for (const packet of probes) {
        packets++;
        const expected = evaluator.evaluate(packet);
        const traced = sim.send(packet);
        if (traced.allowed !== expected.allowed) {
          assert.fail(`${JSON.stringify(packet)}: evaluator says ${expected.allowed ? 'allowed' : 'denied'} (${expected.egress.reason}; ${expected.ingress.reason}) but the rules say ${traced.allowed ? 'allowed' : 'denied'}\n${traced.describe()}\n${JSON.stringify(cluster.objects)}`);
        }
      }
    }), { numRuns: 1000, seed });
    assert.ok(packets >= 20000, `only ${packets} packets were checked`);
  });

  it('render structurally sound rulesets for any cluster', () => {
    fc.assert(fc.property(randomCluster, (cluster) => {
      const snapshot = snapshotOf(cluster.objects);
      for (const { name } of NODES) {
        const dataplane = compile(snapshot, settingsFor(name));
        const problems = IptablesModel.parse(renderIptables(dataplane)).check(IpsetModel.parse(renderIpsets(dataplane.ipsets.values())));
        // The allow chain always exists; it is unreachable only while no policy is installed.
        assert.deepEqual(problems.filter((p) => p !== 'unreachable: pal-allow (table mangle)'), []);
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
