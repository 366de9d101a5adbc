import assert from 'node:assert/strict';
import { compile } from '../../rules/snapshot.js';
import type { Snapshot } from '../../rules/snapshot.js';
import { makeSettings } from '../../rules/settings.js';
import { Names } from '../../rules/names.js';
import { renderIpsets, renderIptables } from '../../rules/render.js';
import type { Dataplane } from '../../rules/dataplane.js';
import { plan, planIsEmpty } from '../../lib/dataplane/plan.js';
import { liveStateFromDesired, liveStateFromKernel } from '../../lib/dataplane/live-state.js';
import { parseSavedTable } from '../../lib/iptables/saved-table.js';
import { pod, policy, snapshotOf } from '../support/builders.js';
import { SimulatedCluster } from '../support/cluster-sim.js';
import { IpsetModel, IptablesModel } from '../support/tracer.js';

/** The planner: what it writes, in which order, and what it leaves alone. */

const names = new Names('pal');

function compiled(snapshot: Snapshot): Dataplane {
  const settings = makeSettings({ nodeName: 'node-a' });
  assert.ok(settings.ok);
  return compile(snapshot, settings.settings);
}

const a = pod('ns1', 'a', { ip: '10.1.0.1', labels: { app: 'a' } });
const b = pod('ns1', 'b', { ip: '10.1.0.2', labels: { app: 'b' } });
const x = (app: string) => pod('ns1', 'x', { ip: '10.1.0.3', labels: { app } });
const fromB = policy('ns1', 'a-from-b', { podSelector: { matchLabels: { app: 'a' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'b' } } }] }] });
const denyA = policy('ns1', 'deny-a', { podSelector: { matchLabels: { app: 'a' } } });
// Keeps the "app=b" set installed on the node after a-from-b is gone.
const bFromB = policy('ns1', 'b-from-b', { podSelector: { matchLabels: { app: 'b' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'b' } } }] }] });

describe('the dataplane planner', () => {
  it('writes nothing when the kernel already holds the desired state', () => {
    const desired = compiled(snapshotOf([a, b, fromB]));
    assert.equal(planIsEmpty(plan(desired, liveStateFromDesired(desired), names)), true);
  });

  it('creates sets first, then writes every chain and the hooks in one transaction, onto an empty kernel', () => {
    const desired = compiled(snapshotOf([a, b, fromB]));
    const writes = plan(desired, { chains: new Map(), builtin: new Map(), foreignJumps: [], sets: new Map() }, names);
    assert.match(writes.ipsetBefore, /^create pal-p-\S+ hash:ip /);
    assert.equal(writes.chainsWritten.length, desired.chains.size);
    assert.match(writes.iptables, /-I FORWARD 1 -m comment --comment "pal:\S+ palisade network policy" -j pal-FORWARD\n-I INPUT 1 /);
    assert.equal(writes.ipsetAfter, '');
  });

  it('removes set members before the rules change and adds them after, so a removed policy never lends its set to a new member', () => {
    // x joins app=b while a-from-b is deleted: in between, the old a-from-b rules must not see x in the set.
    const oldSnapshot = snapshotOf([a, b, x('c'), fromB, denyA, bFromB]);
    const newSnapshot = snapshotOf([a, b, x('b'), denyA, bFromB]);
    const before = compiled(oldSnapshot);
    const after = compiled(newSnapshot);
    const writes = plan(after, liveStateFromDesired(before), names);
    assert.equal(writes.ipsetBefore, '');
    assert.match(writes.ipsetAfter, /^add pal-p-\S+ 10\.1\.0\.3 -exist\n$/);

    const iptables = IptablesModel.parse(renderIptables(before));
    const ipsets = IpsetModel.parse(renderIpsets(before.ipsets.values()));
    const sim = new SimulatedCluster(newSnapshot, ['node-a']);
    const xToA = { src: '10.1.0.3', dst: '10.1.0.1', protocol: 'TCP' as const, port: 80 };
    for (const [stage, text, load] of [['sets before', writes.ipsetBefore, 'ipset'], ['iptables', writes.iptables, 'iptables'], ['sets after', writes.ipsetAfter, 'ipset']] as const) {
      if (load === 'ipset') ipsets.load(text);
      else iptables.load(text);
      sim.overrideNode('node-a', iptables, ipsets);
      assert.equal(sim.send(xToA).allowed, false, `x reached a after "${stage}", though both states deny it`);
    }
  });

  it('gives back removed members if the iptables step fails', () => {
    const before = compiled(snapshotOf([a, b, x('b'), fromB]));
    const after = compiled(snapshotOf([a, b, x('c'), fromB]));
    const writes = plan(after, liveStateFromDesired(before), names);
    assert.match(writes.ipsetBefore, /^del pal-p-\S+ 10\.1\.0\.3 -exist\n$/);
    assert.match(writes.ipsetRollback, /^add pal-p-\S+ 10\.1\.0\.3 -exist\n$/);
  });

  it('rebuilds a set aside and swaps it in when most of it changes', () => {
    const many = (app: string) => Array.from({ length: 100 }, (_, i) => pod('ns1', `m${i}`, { ip: `10.2.0.${i + 1}`, labels: { app }, node: 'node-b' }));
    const before = compiled(snapshotOf([a, fromB, ...many('b')]));
    const after = compiled(snapshotOf([a, fromB, b, ...many('c')]));
    const writes = plan(after, liveStateFromDesired(before), names);
    assert.match(writes.ipsetBefore, /^create pal-t-\S+ hash:ip [^\n]*\nflush pal-t-\S+\nswap pal-t-\S+ pal-p-\S+\ndestroy pal-t-\S+\n$/);
    assert.match(writes.ipsetAfter, /\nadd pal-t-\S+ 10\.1\.0\.2\nswap pal-t-\S+ pal-p-\S+\ndestroy pal-t-\S+\n$/);
  });

  it('puts its hook back at position 1 by deleting every jump into its chains by their own text, leaving other rules alone', () => {
    const desired = compiled(snapshotOf([a]));
    const saved = [
      '*mangle',
      ':INPUT ACCEPT [0:0]',
      ':FORWARD ACCEPT [0:0]',
      ':OUTPUT ACCEPT [0:0]',
      '-A FORWARD -j OTHER-AGENT',
      '-A FORWARD -m comment --comment "pal:whatever palisade network policy" -j pal-FORWARD',
      '-A FORWARD -j pal-FORWARD',
      '-A OUTPUT -j pal-fw-old',
      'COMMIT',
      '',
    ].join('\n');
    const live = liveStateFromKernel(parseSavedTable(saved, 'mangle'), new Map(), (n) => names.owns(n));
    const writes = plan(desired, { ...liveStateFromDesired(desired), builtin: live.builtin }, names);
    const lines = writes.iptables.split('\n');
    assert.deepEqual(lines.filter((l) => /^-[DI] /.test(l)).map((l) => l.replace(/pal:[A-Za-z0-9_-]{16} /, 'pal:H ')), [
      '-D FORWARD -m comment --comment "pal:whatever palisade network policy" -j pal-FORWARD',
      '-D FORWARD -j pal-FORWARD',
      '-I FORWARD 1 -m comment --comment "pal:H palisade network policy" -j pal-FORWARD',
      '-I INPUT 1 -m comment --comment "pal:H palisade network policy" -j pal-INPUT',
      '-D OUTPUT -j pal-fw-old',
    ]);
    assert.deepEqual(writes.findings.map((f) => f.kind).sort(), ['foreign-jump', 'hook-duplicated', 'hook-missing', 'hook-moved']);
  });

  it('deletes chains and sets it no longer needs, after everything that used them is rewritten', () => {
    const before = compiled(snapshotOf([a, b, fromB]));
    const after = compiled(snapshotOf([a, b]));
    const writes = plan(after, liveStateFromDesired(before), names);
    const lines = writes.iptables.trim().split('\n');
    assert.ok(lines.at(-2)!.startsWith('-X pal-pi-'), lines.join('\n'));
    assert.deepEqual(writes.destroySets.length, 1);
    // The whole transaction loads into the old state.
    const iptables = IptablesModel.parse(renderIptables(before));
    iptables.load(writes.iptables);
    assert.equal(iptables.chains().some((c) => c.startsWith('pal-pi-')), false);
  });
});
