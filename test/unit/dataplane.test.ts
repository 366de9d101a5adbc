import assert from 'node:assert/strict';
import { POLICY_TABLE } from '../../rules/dataplane.js';
import { compile } from '../../rules/snapshot.js';
import { makeSettings } from '../../rules/settings.js';
import type { CompilerSettings, SettingsInput } from '../../rules/settings.js';
import { renderIpsets, renderIptables } from '../../rules/render.js';
import { hostInterfaceName } from '../../rules/names.js';
import { namespace, node, pod, policy, snapshotOf } from '../support/builders.js';
import { IpsetModel, IptablesModel } from '../support/tracer.js';
import type { Packet } from '../support/tracer.js';

/** Behaviour of the rendered rules that has no counterpart in policy semantics: the guard rails. */

function settings(overrides: Partial<SettingsInput> = {}): CompilerSettings {
  const result = makeSettings({ nodeName: 'node-a', ...overrides });
  if (!result.ok) throw new Error(result.errors.join('; '));
  return result.settings;
}

const objects = [
  node('node-a', '10.0.0.1'),
  namespace('ns1'),
  pod('ns1', 'a', { ip: '10.1.1.1', labels: { app: 'a' } }),
  pod('ns1', 'b', { ip: '10.1.1.2', labels: { app: 'b' } }),
  pod('ns1', 'remote', { ip: '10.1.9.9', node: 'node-b' }),
  policy('ns1', 'deny-all', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] }),
];

function loaded(overrides: Partial<SettingsInput> = {}, objs = objects) {
  const dataplane = compile(snapshotOf(objs), settings(overrides));
  const iptables = IptablesModel.parse(renderIptables(dataplane));
  const ipsets = IpsetModel.parse(renderIpsets(dataplane.ipsets.values()));
  const trace = (hook: 'FORWARD' | 'INPUT', packet: Packet) => iptables.trace(hook, { localAddresses: ['10.0.0.1'], ...packet }, ipsets, POLICY_TABLE);
  return { dataplane, iptables, ipsets, trace };
}

const ifaceA = hostInterfaceName('eni', 'ns1', 'a');
const ifaceB = hostInterfaceName('eni', 'ns1', 'b');

describe('the rendered dataplane', () => {
  it('names host-side interfaces as the AWS VPC CNI does', () => {
    // `printf default.busybox1 | sha1sum` starts with 4405ed05989.
    assert.match(ifaceA, /^eni[0-9a-f]{11}$/);
    assert.equal(hostInterfaceName('eni', 'default', 'busybox1'), 'eni4405ed05989');
  });

  it('drops a packet from a pod interface whose source address is not the pod\'s own', () => {
    const { trace } = loaded({}, objects.slice(0, 4));
    const spoofed = trace('FORWARD', { src: '10.1.1.99', dst: '10.1.1.2', protocol: 'tcp', dport: 80, inIface: ifaceA, outIface: ifaceB });
    assert.equal(spoofed.verdict, 'DROP', spoofed.describe());
    const toNode = trace('INPUT', { src: '10.1.1.2', dst: '10.0.0.1', protocol: 'tcp', dport: 22, inIface: ifaceA });
    assert.equal(toNode.verdict, 'DROP', toNode.describe());
    const honest = trace('FORWARD', { src: '10.1.1.1', dst: '10.1.1.2', protocol: 'tcp', dport: 80, inIface: ifaceA, outIface: ifaceB });
    assert.equal(honest.verdict, 'ACCEPT', honest.describe());
  });

  it('drops traffic of a pod interface no known pod owns yet, in both directions', () => {
    const { trace } = loaded({}, objects.slice(0, 4));
    const unknown = 'eni0123456789a';
    assert.equal(trace('FORWARD', { src: '10.1.1.50', dst: '10.1.1.2', protocol: 'tcp', dport: 80, inIface: unknown, outIface: ifaceB }).verdict, 'DROP');
    assert.equal(trace('FORWARD', { src: '10.1.1.1', dst: '10.1.1.50', protocol: 'tcp', dport: 80, inIface: ifaceA, outIface: unknown }).verdict, 'DROP');
    assert.equal(trace('INPUT', { src: '10.1.1.50', dst: '10.0.0.1', protocol: 'udp', dport: 53, inIface: unknown }).verdict, 'DROP');
  });

  it('lets unknown pod interfaces through when the setting says allow', () => {
    const { trace } = loaded({ unknownEndpoint: 'allow' }, objects.slice(0, 4));
    assert.equal(trace('FORWARD', { src: '10.1.1.50', dst: '10.1.1.2', protocol: 'tcp', dport: 80, inIface: 'eni0123456789a', outIface: ifaceB }).verdict, 'ACCEPT');
  });

  it('drops unknown interfaces deep in a dispatch tree too, not only at its root', () => {
    const many = [...objects.slice(0, 2), ...Array.from({ length: 120 }, (_, i) => pod('ns1', `p${i}`, { ip: `10.1.2.${i + 1}` }))];
    const { trace, dataplane } = loaded({}, many);
    assert.ok([...dataplane.chains.keys()].some((n) => n.startsWith('pal-fd-')), 'a tree was built');
    const known = hostInterfaceName('eni', 'ns1', 'p7');
    // Same first characters as a known interface, so the walk goes down that branch and must still drop.
    const sibling = `${known.slice(0, 5)}ffffffffff`.slice(0, 14);
    const verdict = trace('FORWARD', { src: '10.1.2.8', dst: '10.1.2.9', protocol: 'tcp', dport: 80, inIface: sibling, outIface: hostInterfaceName('eni', 'ns1', 'p8') });
    assert.equal(verdict.verdict, 'DROP', verdict.describe());
    const ok = trace('FORWARD', { src: '10.1.2.8', dst: '10.1.2.9', protocol: 'tcp', dport: 80, inIface: known, outIface: hostInterfaceName('eni', 'ns1', 'p8') });
    assert.equal(ok.verdict, 'ACCEPT', ok.describe());
  });

  it('passes replies of established connections even where policy denies new ones', () => {
    const { trace } = loaded();
    const reply = trace('FORWARD', { src: '10.1.1.1', dst: '10.1.1.2', protocol: 'tcp', dport: 80, inIface: ifaceA, outIface: ifaceB, ctstate: 'ESTABLISHED' });
    assert.equal(reply.verdict, 'ACCEPT');
    const fresh = trace('FORWARD', { src: '10.1.1.1', dst: '10.1.1.2', protocol: 'tcp', dport: 80, inIface: ifaceA, outIface: ifaceB });
    assert.equal(fresh.verdict, 'DROP');
  });

  it('ends each isolated endpoint chain with a drop that names the pod and direction, and counts it there', () => {
    const { dataplane, trace } = loaded();
    const a = dataplane.endpoints.find((e) => e.name === 'a')!;
    assert.deepEqual([a.isolatedIngress, a.isolatedEgress], [true, true]);
    const lastOf = (chain: string) => dataplane.chains.get(chain)!.rules.at(-1)!;
    assert.deepEqual(lastOf(a.toChain).target, ['-j', 'DROP']);
    assert.equal(lastOf(a.toChain).comment, 'drop ingress ns1/a');
    assert.equal(lastOf(a.fromChain).comment, 'drop egress ns1/a');
    const denied = trace('FORWARD', { src: '10.1.9.9', dst: '10.1.1.1', protocol: 'tcp', dport: 80, inIface: 'eth0', outIface: ifaceA });
    assert.equal(denied.reason, `mangle/${a.toChain} rule ${dataplane.chains.get(a.toChain)!.rules.length}`);
  });

  it('gives a pod that no policy isolates no drop rule at all', () => {
    const { dataplane } = loaded({}, objects.slice(0, 4));
    for (const endpoint of dataplane.endpoints) {
      const rules = [...dataplane.chains.get(endpoint.toChain)!.rules, ...dataplane.chains.get(endpoint.fromChain)!.rules];
      assert.ok(rules.every((r) => !(r.target[1] === 'DROP' && r.match.length === 0)), `${endpoint.name} has an unconditional drop`);
    }
  });

  it('hooks FORWARD and INPUT only, each with one rule into palisade\'s entry chain', () => {
    const { dataplane } = loaded();
    assert.deepEqual(dataplane.hooks.map((h) => `${h.chain} -> ${h.rule.target.join(' ')}`), ['FORWARD -> -j pal-FORWARD', 'INPUT -> -j pal-INPUT']);
  });

  it('renders a structurally sound ruleset: declared targets, no loops, short names, sets defined', () => {
    const { iptables, ipsets } = loaded({}, [...objects, policy('ns1', 'web', { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '0.0.0.0/0', except: ['10.0.0.0/8'] } }, { namespaceSelector: {} }], ports: [{ port: 'http' }, { port: 80, endPort: 90 }] }] })]);
    assert.deepEqual(iptables.check(ipsets), []);
  });

  it('uses the configured chain prefix, interface prefixes and mark bit', () => {
    const { dataplane, trace } = loaded({ chainPrefix: 'pz', interfacePrefixes: ['eni', 'cali'], allowMark: 0x200000 });
    assert.ok([...dataplane.chains.keys(), ...dataplane.ipsets.keys()].every((n) => n.startsWith('pz-')));
    const calico = hostInterfaceName('cali', 'ns1', 'a');
    assert.equal(trace('FORWARD', { src: '10.1.1.1', dst: '10.1.9.9', protocol: 'tcp', dport: 80, inIface: calico, outIface: 'eth0' }).verdict, 'DROP');
    const text = renderIptables(dataplane);
    assert.ok(text.includes('0x200000/0x200000') && !text.includes('0x100000'));
  });
});
