import assert from 'node:assert/strict';
import type { DataplaneCompiler } from '../../rules/compiler.js';
import type { Dataplane } from '../../rules/dataplane.js';
import { makeSettings } from '../../rules/settings.js';
import { parsePod } from '../../rules/pod.js';
import { parsePolicy } from '../../rules/policy.js';
import { parseNamespace } from '../../rules/namespace.js';
import { compile, loadedCompiler } from '../../rules/snapshot.js';
import { Names } from '../../rules/names.js';
import { namespace, pod, policy, snapshotOf } from '../support/builders.js';

/**
 * The incremental compiler: a small change touches few chains and sets, unchanged ones keep their
 * identity, a node carries only the policies of its own pods, and the rule count does not depend on
 * how many pods the cluster has elsewhere.
 */

function settings() {
  const result = makeSettings({ nodeName: 'node-a' });
  assert.ok(result.ok);
  return result.settings;
}

function fed(objects: readonly Record<string, unknown>[]): DataplaneCompiler {
  return loadedCompiler(snapshotOf(objects), settings());
}

/** Names of chains and sets whose object changed (or appeared, or went) between two builds. */
function changed(before: Dataplane, after: Dataplane): { chains: string[]; sets: string[] } {
  const diff = <T>(a: ReadonlyMap<string, T>, b: ReadonlyMap<string, T>) =>
    [...new Set([...a.keys(), ...b.keys()])].filter((k) => a.get(k) !== b.get(k)).sort();
  return { chains: diff(before.chains, after.chains), sets: diff(before.ipsets, after.ipsets) };
}

const cluster = [
  namespace('web', { team: 'web' }),
  namespace('db', { team: 'db' }),
  pod('web', 'front', { ip: '10.1.0.1', labels: { app: 'front' } }),
  pod('web', 'api', { ip: '10.1.0.2', labels: { app: 'api' } }),
  pod('db', 'pg', { ip: '10.1.0.3', labels: { app: 'pg' } }),
  pod('db', 'pg-remote', { ip: '10.2.0.3', labels: { app: 'pg' }, node: 'node-b' }),
  pod('web', 'front-remote', { ip: '10.2.0.1', labels: { app: 'front' }, node: 'node-b' }),
  policy('db', 'pg-from-api', { podSelector: { matchLabels: { app: 'pg' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'web' } }, podSelector: { matchLabels: { app: 'api' } } }], ports: [{ port: 5432 }] }] }),
  policy('web', 'deny', { podSelector: {} }),
];

describe('the incremental compiler', () => {
  it('changes nothing when nothing changed', () => {
    const compiler = fed(cluster);
    const first = compiler.build();
    assert.deepEqual(changed(first, compiler.build()), { chains: [], sets: [] });
  });

  it('touches only set members when a remote pod is relabelled into a peer set', () => {
    const compiler = fed(cluster);
    const before = compiler.build();
    compiler.setPod(parsePod(pod('web', 'front-remote', { ip: '10.2.0.1', labels: { app: 'api' }, node: 'node-b' })).record!);
    const after = compiler.build();
    const delta = changed(before, after);
    assert.deepEqual(delta.chains, []);
    assert.equal(delta.sets.length, 1);
    assert.ok(after.ipsets.get(delta.sets[0]!)!.members.has('10.2.0.1'));
  });

  it('rewrites only the endpoint chains of a local pod whose policies changed', () => {
    const compiler = fed(cluster);
    const before = compiler.build();
    compiler.setPod(parsePod(pod('db', 'pg', { ip: '10.1.0.3', labels: { app: 'other' } })).record!);
    const after = compiler.build();
    const delta = changed(before, after);
    // pg is no longer selected: its two chains change, and the policy (now unused here) goes with its chain and set.
    const pg = after.endpoints.find((e) => e.name === 'pg')!;
    assert.deepEqual(delta.chains, [pg.fromChain, new Names('pal').policy('ingress', 'db', 'pg-from-api'), pg.toChain].sort());
    assert.equal(after.endpoints.find((e) => e.name === 'pg')!.isolatedIngress, false);
    assert.equal(delta.sets.length, 1);
    assert.equal(after.ipsets.has(delta.sets[0]!), false);
  });

  it('rewrites only a policy\'s own chain when its rules change but not what it selects', () => {
    const compiler = fed(cluster);
    const before = compiler.build();
    compiler.setPolicy(parsePolicy(policy('db', 'pg-from-api', { podSelector: { matchLabels: { app: 'pg' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'web' } }, podSelector: { matchLabels: { app: 'api' } } }], ports: [{ port: 5432 }, { port: 5433 }] }] })).record!);
    const delta = changed(before, compiler.build());
    assert.equal(delta.chains.length, 1);
    assert.match(delta.chains[0]!, /^pal-pi-/);
    assert.deepEqual(delta.sets, []);
  });

  it('rebuilds dispatch only when a local pod comes or goes', () => {
    const compiler = fed(cluster);
    const before = compiler.build();
    compiler.setPod(parsePod(pod('web', 'new', { ip: '10.1.0.9', labels: { app: 'front' } })).record!);
    const added = changed(before, compiler.build()).chains;
    assert.ok(added.includes('pal-from-wl-dispatch') && added.includes('pal-to-wl-dispatch'));
    const mid = compiler.build();
    compiler.setPod(parsePod(pod('web', 'new', { ip: '10.1.0.9', labels: { app: 'front', v: '2' } })).record!);
    assert.deepEqual(changed(mid, compiler.build()).chains, []);
  });

  it('moves pods between namespaceSelector sets when a namespace is relabelled', () => {
    const compiler = fed(cluster);
    const before = compiler.build();
    compiler.setNamespace(parseNamespace(namespace('web', { team: 'none' })).record!);
    const after = compiler.build();
    const delta = changed(before, after);
    assert.deepEqual(delta.chains, []);
    assert.equal(delta.sets.length, 1);
    assert.equal(after.ipsets.get(delta.sets[0]!)!.members.size, 0);
  });

  it('installs only policies that select a pod on this node', () => {
    const remoteOnly = policy('db', 'remote-only', { podSelector: { matchLabels: { app: 'nothing-here' } }, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8' } }] }] });
    const dataplane = compile(snapshotOf([...cluster, remoteOnly]), settings());
    const reference = compile(snapshotOf(cluster), settings());
    assert.deepEqual([...dataplane.chains.keys()], [...reference.chains.keys()]);
    assert.deepEqual([...dataplane.ipsets.keys()], [...reference.ipsets.keys()]);
  });

  it('keeps the rule count the same however many pods run elsewhere', () => {
    const count = (d: Dataplane) => [...d.chains.values()].reduce((n, c) => n + c.rules.length, 0);
    const remote = (n: number) => Array.from({ length: n }, (_, i) => pod(i % 2 === 0 ? 'web' : 'db', `r${i}`, { ip: `10.3.${i >> 8}.${i & 255}`, labels: { app: i % 3 === 0 ? 'api' : 'pg' }, node: 'node-b' }));
    const small = compile(snapshotOf([...cluster, ...remote(10)]), settings());
    const large = compile(snapshotOf([...cluster, ...remote(1000)]), settings());
    assert.equal(count(large), count(small));
    assert.equal(large.chains.size, small.chains.size);
    // Pinned: entry chains 9 (FORWARD 5 and INPUT 3 with prefixes eni and vlan, allow 1), dispatch 18
    // (each way: 2 node-link rules, 3 pods under 2 prefixes, unknown), three ingress-isolated endpoints
    // 9 each (from: anti-spoof, own node; to: itself under 2 names, clear, jump, mark test, drop log,
    // drop), the pg policy's one rule and the deny policy's empty chain.
    assert.equal(count(small), 9 + 18 + 3 * 9 + 1);
  });
});
