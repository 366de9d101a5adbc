import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Evaluator } from '../../rules/evaluator.js';
import { compile, loadedCompiler, parseObjects } from '../../rules/snapshot.js';
import type { Snapshot } from '../../rules/snapshot.js';
import { makeSettings } from '../../rules/settings.js';
import { renderIpsets, renderIptables } from '../../rules/render.js';
import { notAPodAddress, parseIPv4 } from '../../rules/ipv4.js';
import { MAX_COMMENT_BYTES } from '../../rules/rule-hash.js';
import { splitRuleLine } from '../../lib/iptables/tokens.js';
import { SimulatedCluster } from '../support/cluster-sim.js';
import { IpsetModel, IptablesModel } from '../support/tracer.js';
import { NODES, randomPacket, seededShuffle } from '../support/random-cluster.js';
import { ambiguousAddresses, ATTACKER_NS, collidingVethSuffix, hostileCluster, TEST_BUDGET } from '../support/hostile-cluster.js';
import type { HostileCluster } from '../support/hostile-cluster.js';

/**
 * Random clusters with an attacker in them (hostile-cluster.ts): whatever the attacker writes, every
 * node's rules load and stay within iptables' limits, the rules still agree with the evaluator, and
 * no packet between victims (or between a victim and a node or an outsider) is treated otherwise than
 * it would be if the attacker did not exist.
 */

const seed = Number(process.env['PALISADE_PROPERTY_SEED'] ?? 20261203);
const options = { vethSuffix: collidingVethSuffix };

function snapshotOf(objects: readonly Record<string, unknown>[]): Snapshot {
  return parseObjects(objects.map((object) => ({ object })), TEST_BUDGET).snapshot;
}

function settingsFor(nodeName: string) {
  const result = makeSettings({ nodeName, policyBudget: TEST_BUDGET });
  assert.ok(result.ok);
  return result.settings;
}

function simulate(snapshot: Snapshot): SimulatedCluster {
  return new SimulatedCluster(snapshot, NODES.map((n) => n.name), { policyBudget: TEST_BUDGET }, options);
}

const withPackets = (count: number) => hostileCluster.chain((cluster) =>
  fc.tuple(fc.constant(cluster), fc.array(randomPacket(cluster.victimAddresses), { minLength: count, maxLength: count }), fc.array(randomPacket(cluster.addresses), { minLength: count, maxLength: count })));

function objectsOf(cluster: HostileCluster): Record<string, unknown>[] {
  return [...cluster.victim, ...cluster.attacker];
}

describe('an attacker tenant against the compiler (property-based)', function () {
  this.timeout(240_000);

  it('can never make a node\'s rules unloadable: sound chains, comments within 255 bytes, only pod addresses in sets', () => {
    fc.assert(fc.property(hostileCluster, (cluster) => {
      const snapshot = snapshotOf(objectsOf(cluster));
      for (const { name } of NODES) {
        const dataplane = compile(snapshot, settingsFor(name), options);
        const iptables = renderIptables(dataplane);
        const ipsets = IpsetModel.parse(renderIpsets(dataplane.ipsets.values()));
        const problems = IptablesModel.parse(iptables).check(ipsets);
        assert.deepEqual(problems.filter((p) => !['unreachable: pal-allow (table mangle)', 'unreachable: pal-pass (table mangle)', 'unreachable: pal-deny (table mangle)'].includes(p)), [], iptables);
        for (const line of iptables.split('\n')) {
          if (!line.startsWith('-')) continue;
          const tokens = splitRuleLine(line);
          const comment = tokens[tokens.indexOf('--comment') + 1] ?? '';
          assert.ok(Buffer.byteLength(comment) <= MAX_COMMENT_BYTES, `comment of ${Buffer.byteLength(comment)} bytes: ${line}`);
        }
        for (const set of dataplane.ipsets.values()) {
          if (set.type !== 'hash:ip') continue;
          for (const member of set.members) {
            const value = parseIPv4(member);
            assert.ok(value !== null && notAPodAddress(value) === null, `set ${set.name} (${set.description}) holds ${member}`);
          }
        }
      }
    }), { numRuns: 300, seed });
  });

  it('leaves the rules in agreement with the evaluator wherever an address says which pod sent a packet', () => {
    let packets = 0;
    fc.assert(fc.property(withPackets(15), ([cluster, , probes]) => {
      const snapshot = snapshotOf(objectsOf(cluster));
      const ambiguous = ambiguousAddresses(snapshot, collidingVethSuffix);
      const evaluator = new Evaluator(snapshot, { selectorPods: TEST_BUDGET.selectorPods });
      const sim = simulate(snapshot);
      for (const packet of probes) {
        if (ambiguous.has(packet.src) || ambiguous.has(packet.dst)) continue;
        packets++;
        const expected = evaluator.evaluate(packet);
        const traced = sim.send(packet);
        if (traced.allowed !== expected.allowed) {
          assert.fail(`${JSON.stringify(packet)}: evaluator says ${expected.allowed ? 'allowed' : 'denied'} (${expected.egress.reason}; ${expected.ingress.reason}) but the rules say ${traced.allowed ? 'allowed' : 'denied'}\n${traced.describe()}\n${JSON.stringify(objectsOf(cluster))}`);
        }
      }
    }), { numRuns: 300, seed });
    assert.ok(packets >= 3000, `only ${packets} packets were checked`);
  });

  it('changes no verdict between victims, nodes and outsiders, in the rules or in the evaluator', () => {
    let packets = 0;
    fc.assert(fc.property(withPackets(15), ([cluster, probes]) => {
      const attacked = snapshotOf(objectsOf(cluster));
      const alone = snapshotOf(cluster.victim);
      const [simAttacked, simAlone] = [simulate(attacked), simulate(alone)];
      const [evalAttacked, evalAlone] = [new Evaluator(attacked, { selectorPods: TEST_BUDGET.selectorPods }), new Evaluator(alone, { selectorPods: TEST_BUDGET.selectorPods })];
      for (const packet of probes) {
        packets++;
        const before = simAlone.send(packet);
        const after = simAttacked.send(packet);
        if (before.allowed !== after.allowed) {
          assert.fail(`${JSON.stringify(packet)}: ${before.allowed ? 'allowed' : 'denied'} without the attacker, ${after.allowed ? 'allowed' : 'denied'} with it\n${after.describe()}\n${JSON.stringify(cluster.attacker)}`);
        }
        assert.equal(evalAttacked.evaluate(packet).allowed, evalAlone.evaluate(packet).allowed, `evaluator on ${JSON.stringify(packet)}`);
      }
    }), { numRuns: 300, seed });
    assert.ok(packets >= 4000, `only ${packets} packets were checked`);
  });

  it('give byte-identical rules whatever order the attacker\'s and the victims\' objects arrive in', () => {
    const text = (objects: readonly Record<string, unknown>[]) => {
      const dataplane = compile(snapshotOf(objects), settingsFor('node-a'), options);
      return renderIpsets(dataplane.ipsets.values()) + renderIptables(dataplane);
    };
    fc.assert(fc.property(hostileCluster.chain((c) => fc.tuple(fc.constant(c), fc.shuffledSubarray(objectsOf(c), { minLength: objectsOf(c).length }))), ([cluster, shuffled]) => {
      assert.equal(text(shuffled), text(objectsOf(cluster)));
    }), { numRuns: 150, seed });
  });

  it('end the same after the attacker\'s objects come and go one by one, in any order, as a compile from scratch', () => {
    fc.assert(fc.property(hostileCluster, fc.integer(), (cluster, shuffleSeed) => {
      const compiler = loadedCompiler(snapshotOf(cluster.victim), settingsFor('node-a'), options);
      compiler.build();
      const attacker = snapshotOf(objectsOf(cluster));
      const steps: (() => void)[] = [
        ...attacker.nodes.map((n) => () => compiler.setNode(n)),
        ...attacker.namespaces.map((ns) => () => compiler.setNamespace(ns)),
        ...attacker.pods.map((p) => () => compiler.setPod(p)),
        ...attacker.policies.map((p) => () => compiler.setPolicy(p)),
      ];
      seededShuffle(steps, shuffleSeed);
      steps.forEach((step, i) => {
        step();
        if (i % 2 === 0) compiler.build();
      });
      const full = compile(attacker, settingsFor('node-a'), options);
      compiler.recheckBudgets();
      const incremental = compiler.build();
      assert.equal(renderIpsets(incremental.ipsets.values()) + renderIptables(incremental), renderIpsets(full.ipsets.values()) + renderIptables(full));
      // And back: the attacker's pods deleted, the victims' rules are what they were.
      for (const p of attacker.pods) if (p.namespace === ATTACKER_NS) compiler.deletePod(p.namespace, p.name);
      for (const p of attacker.policies) if (p.namespace === ATTACKER_NS) compiler.deletePolicy(p.namespace, p.name);
      compiler.deleteNamespace(ATTACKER_NS);
      compiler.recheckBudgets();
      const after = compiler.build();
      const alone = compile(snapshotOf(cluster.victim), settingsFor('node-a'), options);
      assert.equal(renderIpsets(after.ipsets.values()) + renderIptables(after), renderIpsets(alone.ipsets.values()) + renderIptables(alone));
    }), { numRuns: 200, seed });
  });
});
