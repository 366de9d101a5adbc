import assert from 'node:assert/strict';
import fc from 'fast-check';
import { compile, parseObjects } from '../../rules/snapshot.js';
import type { Snapshot } from '../../rules/snapshot.js';
import { makeSettings } from '../../rules/settings.js';
import { Names } from '../../rules/names.js';
import { renderIpsets, renderIptables } from '../../rules/render.js';
import { plan } from '../../lib/dataplane/plan.js';
import { liveStateFromDesired } from '../../lib/dataplane/live-state.js';
import { SimulatedCluster } from '../support/cluster-sim.js';
import { IpsetModel, IptablesModel } from '../support/tracer.js';
import { NODES, randomCluster, randomPacket } from '../support/random-cluster.js';
import type { RandomCluster } from '../support/random-cluster.js';

/**
 * An update is three writes (sets before, one iptables-restore, sets after). Between them the kernel
 * holds a mix of old and new state; in every such mix, a new connection may pass only if the old
 * state or the new state allows it, and after the last write the kernel enforces exactly the new state.
 */

type Obj = Record<string, unknown>;

function snapshotOf(objects: readonly Obj[]): Snapshot {
  return parseObjects(objects.map((object) => ({ object }))).snapshot;
}

/**
 * A small step from the first cluster towards the second, as real updates are: the same pods in the
 * same places, some relabelled, some namespaces relabelled, some policies removed, some added. Most
 * sets then survive the update with changed members, which is where a wrong write order would leak.
 */
function step(first: RandomCluster, second: RandomCluster, choices: readonly boolean[]): Obj[] {
  let c = 0;
  const pick = () => choices[c++ % choices.length] === true;
  const of = (cluster: RandomCluster, kind: string) => cluster.objects.filter((o) => o['kind'] === kind);
  const relabel = (object: Obj, from: Obj | undefined): Obj => {
    if (from === undefined || !pick()) return object;
    const meta = object['metadata'] as Obj;
    return { ...object, metadata: { ...meta, labels: (from['metadata'] as Obj)['labels'] } };
  };
  const pods = of(first, 'Pod').map((pod, i) => relabel(pod, of(second, 'Pod')[i]));
  const namespaces = of(first, 'Namespace').map((ns, i) => relabel(ns, of(second, 'Namespace')[i]));
  const kept = of(first, 'NetworkPolicy').filter(() => pick());
  const added = of(second, 'NetworkPolicy').filter(() => pick()).map((p) => ({ ...p, metadata: { ...(p['metadata'] as Obj), name: `new-${String((p['metadata'] as Obj)['name'])}` } }));
  return [...of(first, 'Node'), ...namespaces, ...pods, ...kept, ...added];
}

const seed = Number(process.env['PALISADE_PROPERTY_SEED'] ?? 20261126);

describe('updates written in three steps', function () {
  this.timeout(120_000);

  it('never let through a connection that both the old and the new state deny, and end at the new state', () => {
    const settings = makeSettings({ nodeName: 'node-a' });
    assert.ok(settings.ok);
    const names = new Names('pal');
    let checked = 0;
    fc.assert(fc.property(randomCluster, randomCluster, fc.array(fc.boolean(), { minLength: 1, maxLength: 32 }), fc.nat(), (first, second, choices, packetSeed) => {
      const oldSnapshot = snapshotOf(first.objects);
      const newSnapshot = snapshotOf(step(first, second, choices));
      const before = compile(oldSnapshot, settings.settings);
      const after = compile(newSnapshot, settings.settings);
      const writes = plan(after, liveStateFromDesired(before), names);

      const oldSim = new SimulatedCluster(oldSnapshot, NODES.map((n) => n.name));
      const newSim = new SimulatedCluster(newSnapshot, NODES.map((n) => n.name));
      const midSim = new SimulatedCluster(newSnapshot, NODES.map((n) => n.name));
      const iptables = IptablesModel.parse(renderIptables(before));
      const ipsets = IpsetModel.parse(renderIpsets(before.ipsets.values()));
      const onNodeA = (sim: SimulatedCluster, packet: Parameters<SimulatedCluster['send']>[0]) =>
        sim.send(packet).hops.filter((h) => h.node === 'node-a').every((h) => h.trace.verdict === 'ACCEPT');
      const packets = fc.sample(randomPacket(first.addresses), { numRuns: 25, seed: packetSeed });

      const stages: [string, () => void][] = [
        ['sets before', () => ipsets.load(writes.ipsetBefore)],
        ['iptables-restore', () => iptables.load(writes.iptables)],
        ['sets after', () => {
          ipsets.load(writes.ipsetAfter);
          ipsets.load(writes.destroySets.map((s) => `destroy ${s}`).join('\n'));
        }],
      ];
      for (const [stage, write] of stages) {
        write();
        midSim.overrideNode('node-a', iptables, ipsets);
        for (const packet of packets) {
          checked++;
          const mid = onNodeA(midSim, packet);
          const old = onNodeA(oldSim, packet);
          const now = onNodeA(newSim, packet);
          if (mid && !old && !now) assert.fail(`after "${stage}", ${JSON.stringify(packet)} passes although both states deny it\n${midSim.send(packet).describe()}`);
          if (stage === 'sets after') assert.equal(mid, now, `after the last write, ${JSON.stringify(packet)} must get the new state's verdict`);
        }
      }
    }), { numRuns: 500, seed });
    assert.ok(checked >= 20_000, `only ${checked} packet checks`);
  });
});
