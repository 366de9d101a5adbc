import assert from 'node:assert/strict';
import { POLICY_TABLE } from '../../rules/dataplane.js';
import type { DataplaneCompiler } from '../../rules/compiler.js';
import type { Dataplane } from '../../rules/dataplane.js';
import { Evaluator } from '../../rules/evaluator.js';
import { hostInterfaceName, vethSuffix } from '../../rules/names.js';
import { formatProblem } from '../../rules/problems.js';
import { renderIpsets, renderIptables } from '../../rules/render.js';
import { makeSettings } from '../../rules/settings.js';
import type { SettingsInput } from '../../rules/settings.js';
import { loadedCompiler, parseObjects } from '../../rules/snapshot.js';
import type { CommandRunner, ExecResult } from '../../lib/exec.js';
import { readNodeNetwork, routesByInterface } from '../../lib/node-network.js';
import type { NodeNetwork } from '../../lib/node-network.js';
import { checkNodeNetwork, matchesPodPrefix } from '../../daemon/node-checks.js';
import { namespace, node, pod, policy, snapshotOf } from '../support/builders.js';
import { IpsetModel, IptablesModel } from '../support/tracer.js';
import type { Hook, Packet } from '../support/tracer.js';

/**
 * A node as EKS runs it, judged on the rules a node would load: a pod and itself (hairpin through a
 * Service), the node's own addresses, branch-ENI pods on `vlan` veths next to the node's VLAN links,
 * multi-NIC pods whose further interfaces only the node's routes reveal, and what the node's network
 * tells the daemon (kube-proxy in IPVS mode, pods on interfaces no prefix matches).
 */

type Obj = Record<string, unknown>;

const NODE_A = '10.0.0.1';
const NODE_A_EXTERNAL = '54.1.2.3';
const NODE_LOCAL_DNS = '169.254.20.10';
const A_IP = '10.1.1.10';
const B_IP = '10.1.1.20';
const M_IP = '10.1.1.30';
const M_SECOND_IP = '10.1.5.9';
const MULTI_NIC = { 'k8s.amazonaws.com/nicConfig': 'multi-nic-attachment' };

const base: readonly Obj[] = [
  node('node-a', NODE_A, NODE_A_EXTERNAL),
  node('node-b', '10.0.0.2'),
  namespace('x'),
  namespace('evil'),
  pod('x', 'a', { ip: A_IP, labels: { app: 'a' } }),
  pod('x', 'b', { ip: B_IP, labels: { app: 'b' } }),
];
const denyAll = policy('x', 'deny-all', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] });

function settings(overrides: Partial<SettingsInput> = {}) {
  const result = makeSettings({ nodeName: 'node-a', ...overrides });
  assert.ok(result.ok);
  return result.settings;
}

/** Suffixes as the VPC CNI makes them, except that evil/* pods named "twin-of-<name>" get x/<name>'s. */
function colliding(ns: string, name: string): string {
  return ns === 'evil' && name.startsWith('twin-of-') ? vethSuffix('x', name.slice('twin-of-'.length)) : vethSuffix(ns, name);
}

function compiler(objects: readonly Obj[], overrides: Partial<SettingsInput> = {}): DataplaneCompiler {
  const chosen = settings(overrides);
  const { snapshot, problems } = parseObjects(objects.map((object) => ({ object })), chosen.policyBudget);
  assert.deepEqual(problems.filter((p) => p.severity === 'error').map(formatProblem), [], 'test objects must be valid');
  return loadedCompiler(snapshot, chosen, { vethSuffix: colliding });
}

interface End {
  readonly iface?: string;
  readonly ip: string;
}

interface Loaded {
  readonly dataplane: Dataplane;
  /** A new TCP connection to port 80 through the hook (FORWARD unless said), with the node's local addresses. */
  send(from: End, to: End, hook?: Hook): 'ACCEPT' | 'DROP';
}

function load(dataplane: Dataplane, localAddresses: readonly string[] = [NODE_A]): Loaded {
  const iptables = IptablesModel.parse(renderIptables(dataplane));
  const ipsets = IpsetModel.parse(renderIpsets(dataplane.ipsets.values()));
  assert.deepEqual(iptables.check(ipsets).filter((p) => p !== 'unreachable: pal-allow (table mangle)'), []);
  return {
    dataplane,
    send: (from, to, hook = 'FORWARD') => {
      const packet: Packet = { src: from.ip, dst: to.ip, protocol: 'tcp', sport: 40000, dport: 80, inIface: from.iface ?? 'ens5', outIface: to.iface ?? 'ens5', localAddresses };
      return iptables.trace(hook, packet, ipsets, POLICY_TABLE).verdict;
    },
  };
}

const eni = (ns: string, name: string) => hostInterfaceName('eni', ns, name);
const vlan = (ns: string, name: string) => hostInterfaceName('vlan', ns, name);
const outsider: End = { ip: '10.9.9.9' };

describe('a pod and itself', () => {
  it('is allowed through a Service back to itself (hairpin) under deny-all, and explain agrees', () => {
    const loaded = load(compiler([...base, denyAll]).build());
    const a = { iface: eni('x', 'a'), ip: A_IP };
    assert.equal(loaded.send(a, a), 'ACCEPT', 'after DNAT a hairpin connection goes out and back on the pod\'s own veth');
    assert.equal(loaded.send({ iface: eni('x', 'b'), ip: B_IP }, a), 'DROP', 'another pod is still denied');
    const verdict = new Evaluator(snapshotOf([...base, denyAll])).evaluate({ src: A_IP, dst: A_IP, protocol: 'TCP', port: 80 });
    assert.equal(verdict.allowed, true);
    assert.equal(verdict.ingress.reason, 'a pod is never blocked from itself');
    assert.equal(verdict.egress.reason, 'a pod is never blocked from itself');
    assert.equal(verdict.ingress.isolated, true);
  });

  it('does not let a packet claiming the pod\'s own address in from elsewhere pass as the pod', () => {
    const loaded = load(compiler([...base, denyAll]).build());
    const a = { iface: eni('x', 'a'), ip: A_IP };
    assert.equal(loaded.send({ ip: A_IP }, a), 'DROP', 'from the node\'s uplink');
    assert.equal(loaded.send({ iface: eni('x', 'b'), ip: A_IP }, a), 'DROP', 'from another pod\'s veth');
  });
});

describe('the node a pod runs on', () => {
  const isolated = [...base, denyAll];

  it('is every local address of the node in the dataplane, node-local DNS included', () => {
    const loaded = load(compiler(isolated).build(), [NODE_A, NODE_LOCAL_DNS]);
    const a = { iface: eni('x', 'a'), ip: A_IP };
    assert.equal(loaded.send(a, { ip: NODE_LOCAL_DNS }, 'INPUT'), 'ACCEPT');
    assert.equal(loaded.send(a, { ip: NODE_A }, 'INPUT'), 'ACCEPT');
    assert.equal(loaded.send(a, { ip: '169.254.169.254' }), 'DROP', 'the instance metadata service is not the node');
    assert.equal(loaded.send(a, { ip: NODE_A_EXTERNAL }), 'DROP', 'an ExternalIP is not held by the node: traffic to it leaves');
  });

  it('is the same for the daemon\'s explain, which knows the node\'s live addresses', () => {
    const evaluator = new Evaluator(snapshotOf(isolated), { localNode: { name: 'node-a', addresses: new Set([NODE_A, NODE_LOCAL_DNS, '169.254.1.1']) } });
    const toDns = evaluator.evaluate({ src: A_IP, dst: NODE_LOCAL_DNS, protocol: 'UDP', port: 53 });
    assert.equal(toDns.allowed, true);
    assert.match(toDns.egress.reason, /169\.254\.20\.10 is node-a's own \(a local address of the node\)/);
    assert.equal(evaluator.evaluate({ src: A_IP, dst: NODE_A_EXTERNAL, protocol: 'TCP', port: 443 }).allowed, false);
    assert.equal(evaluator.evaluate({ src: A_IP, dst: '169.254.169.254', protocol: 'TCP', port: 80 }).allowed, false);
    assert.match(evaluator.assumptions().join('\n'), /node-a's own addresses are its local addresses now: 10\.0\.0\.1, 169\.254\.1\.1, 169\.254\.20\.10/);
  });

  it('is, offline, what the Node object and hostNetwork pods say, and explain says it assumes so', () => {
    const evaluator = new Evaluator(snapshotOf(isolated));
    assert.equal(evaluator.evaluate({ src: A_IP, dst: NODE_A, protocol: 'TCP', port: 10250 }).allowed, true);
    const external = evaluator.evaluate({ src: A_IP, dst: NODE_A_EXTERNAL, protocol: 'TCP', port: 443 });
    assert.equal(external.allowed, false, 'an ExternalIP is not the node\'s own');
    assert.equal(evaluator.evaluate({ src: A_IP, dst: NODE_LOCAL_DNS, protocol: 'UDP', port: 53 }).allowed, false);
    assert.match(evaluator.assumptions().join('\n'), /InternalIP addresses of its Node object .* ask the daemon's \/explain there/);
  });

  it('still keeps an ExternalIP from ever being a pod\'s address', () => {
    const c = compiler([...base, pod('evil', 'squat', { annotationIp: NODE_A_EXTERNAL, labels: { app: 'a' } })]);
    for (const set of c.build().ipsets.values()) assert.ok(!set.members.has(NODE_A_EXTERNAL));
  });
});

describe('branch-ENI pods (security groups for pods, strict mode)', () => {
  const sgp = pod('x', 'sgp', { ip: '10.1.9.9', labels: { app: 'sgp' }, annotations: { 'vpc.amazonaws.com/pod-eni': '[{"vlanId":7}]' } });
  const objects = [...base, sgp, policy('x', 'sgp-deny', { podSelector: { matchLabels: { app: 'sgp' } }, policyTypes: ['Ingress', 'Egress'] })];
  const sgpEnd = { iface: vlan('x', 'sgp'), ip: '10.1.9.9' };
  const trunkVlan = { iface: 'vlan.eth.7', ip: '10.9.9.9' };

  it('enforces the pod on its vlan veth, both ways through the VLAN link', () => {
    const loaded = load(compiler(objects).build());
    assert.equal(loaded.send(sgpEnd, trunkVlan), 'DROP', 'egress is checked');
    assert.equal(loaded.send(trunkVlan, sgpEnd), 'DROP', 'ingress is checked');
    const open = load(compiler([...base, sgp]).build());
    assert.equal(open.send(sgpEnd, trunkVlan), 'ACCEPT');
    assert.equal(open.send(trunkVlan, sgpEnd), 'ACCEPT');
  });

  it('lets the node\'s VLAN links through where unknown pod interfaces are dropped', () => {
    const loaded = load(compiler(objects).build());
    assert.equal(loaded.send(trunkVlan, { iface: 'ens5', ip: '10.0.0.9' }), 'ACCEPT');
    assert.equal(loaded.send({ iface: 'ens5', ip: '10.0.0.9' }, { iface: 'vlan.eth.12', ip: '10.9.9.8' }), 'ACCEPT');
    assert.equal(loaded.send({ iface: 'vlan0123456789a', ip: '10.1.9.10' }, trunkVlan), 'DROP', 'a vlan veth of no known pod');
  });
});

describe('multi-NIC pods', () => {
  const m = pod('x', 'm', { ip: M_IP, labels: { app: 'm' }, annotations: MULTI_NIC });
  const second = { iface: hostInterfaceName('eni', 'x', 'm.1'), ip: M_SECOND_IP };
  const primary = { iface: eni('x', 'm'), ip: M_IP };
  const routes = new Map([[primary.iface, [M_IP]], [second.iface, [M_SECOND_IP]], [eni('x', 'a'), [A_IP]]]);
  const fromB = { iface: eni('x', 'b'), ip: B_IP };
  const onlyFromB = policy('x', 'm-from-b', { podSelector: { matchLabels: { app: 'm' } }, policyTypes: ['Ingress', 'Egress'], ingress: [{ from: [{ podSelector: { matchLabels: { app: 'b' } } }] }] });

  it('drops a further interface until the node\'s routes tell its address, then enforces the pod\'s policy on it', () => {
    const c = compiler([...base, m, onlyFromB]);
    let loaded = load(c.build());
    assert.equal(loaded.send(fromB, second), 'DROP', 'unknown interface');
    c.setNodeRoutes(routes);
    loaded = load(c.build());
    assert.equal(loaded.send(fromB, second), 'ACCEPT', 'ingress allowed by the pod\'s policy');
    assert.equal(loaded.send(outsider, second), 'DROP', 'ingress denied by the pod\'s policy');
    assert.equal(loaded.send(second, outsider), 'DROP', 'egress isolated');
    assert.equal(loaded.send(fromB, primary), 'ACCEPT');
    const endpoint = loaded.dataplane.endpoints.find((e) => e.name === 'm');
    assert.deepEqual(endpoint?.extraInterfaces, [{ iface: second.iface, address: M_SECOND_IP }]);
  });

  it('checks each interface\'s own address', () => {
    const c = compiler([...base, m]);
    c.setNodeRoutes(routes);
    const loaded = load(c.build());
    assert.equal(loaded.send(primary, fromB), 'ACCEPT');
    assert.equal(loaded.send(second, fromB), 'ACCEPT');
    assert.equal(loaded.send({ iface: second.iface, ip: M_IP }, fromB), 'DROP', 'the first address from the second interface is spoofed');
    assert.equal(loaded.send({ iface: primary.iface, ip: M_SECOND_IP }, fromB), 'DROP', 'the second address from the first interface is spoofed');
    const isolated = compiler([...base, m, onlyFromB]);
    isolated.setNodeRoutes(routes);
    assert.equal(load(isolated.build()).send(primary, primary), 'ACCEPT', 'hairpin to its first address, where Services lead');
  });

  it('follows the routes: a further interface that goes is unknown again', () => {
    const c = compiler([...base, m]);
    c.setNodeRoutes(routes);
    assert.equal(load(c.build()).send(outsider, second), 'ACCEPT');
    c.setNodeRoutes(new Map([[primary.iface, [M_IP]]]));
    assert.equal(load(c.build()).send(outsider, second), 'DROP');
  });

  it('gives further interfaces only to pods that asked the VPC CNI for them', () => {
    const plain = pod('x', 'm', { ip: M_IP, labels: { app: 'm' } });
    const c = compiler([...base, plain]);
    c.setNodeRoutes(routes);
    assert.equal(load(c.build()).send(outsider, second), 'DROP');
  });

  it('never hands a further interface\'s traffic to another tenant\'s pod of the same interface name', () => {
    // evil/twin-of-m.1 gets the very name of x/m's second interface, and allows everything in.
    const twin = pod('evil', 'twin-of-m.1', { ip: '10.1.1.66', labels: { app: 'twin' } });
    const allowAll = policy('evil', 'allow-all', { podSelector: {}, ingress: [{}] });
    const c = compiler([...base, m, onlyFromB, twin, allowAll]);
    c.setNodeRoutes(routes);
    const loaded = load(c.build());
    assert.equal(loaded.send(outsider, second), 'DROP', 'equal claims cancel out: the interface is dropped');
    assert.equal(loaded.send(fromB, primary), 'ACCEPT', 'the pod\'s first interface is untouched');
    assert.match(c.problems().map(formatProblem).join('\n'), /Pod x\/m field metadata\.name: the host interface name of its interface number 1 .* is also that of evil\/twin-of-m\.1/);
  });
});

describe('what the node\'s network tells the daemon', () => {
  const network = (over: Partial<NodeNetwork>): NodeNetwork => ({ links: ['lo', 'ens5'], localAddresses: [NODE_A], hostRoutes: [], ...over });
  const prefixes = ['eni', 'vlan'];
  const local = new Map([[A_IP, 'x/a'], [B_IP, 'x/b']]);

  it('refuses kube-proxy in IPVS mode, saying why', () => {
    assert.equal(checkNodeNetwork(network({}), prefixes, local).refusal, null);
    const refusal = checkNodeNetwork(network({ links: ['ens5', 'kube-ipvs0'] }), prefixes, local).refusal;
    assert.equal(refusal?.reason, 'kube-proxy-ipvs');
    assert.match(refusal!.message, /IPVS mode .* programs nothing on this node; run kube-proxy in iptables or nftables mode/);
  });

  it('names the pods routed through interfaces no prefix matches', () => {
    const findings = checkNodeNetwork(network({
      hostRoutes: [
        { address: A_IP, iface: 'eni0123456789a', table: 'main' },
        { address: B_IP, iface: 'abc0123456789a', table: 'main' },
        { address: '10.1.9.9', iface: 'vlan0123456789a', table: '107' },
        { address: '10.7.7.7', iface: 'abc77', table: 'main' },
      ],
    }), prefixes, local);
    assert.deepEqual(findings.unenforced, [{ iface: 'abc0123456789a', address: B_IP, table: 'main', pod: 'x/b' }]);
  });

  it('tells the node\'s own links from pod interfaces', () => {
    assert.equal(matchesPodPrefix('vlan0123456789a', prefixes), true);
    assert.equal(matchesPodPrefix('vlan.eth.7', prefixes), false);
    assert.equal(matchesPodPrefix('eni', prefixes), false);
    assert.equal(matchesPodPrefix('ens5', prefixes), false);
  });

  it('is read from iproute2\'s JSON: links, local addresses, and host routes from every table', async () => {
    const out: Record<string, string> = {
      addr: JSON.stringify([
        { ifname: 'lo', addr_info: [{ family: 'inet', local: '127.0.0.1' }, { family: 'inet6', local: '::1' }] },
        { ifname: 'ens5', addr_info: [{ family: 'inet', local: NODE_A }] },
        { ifname: 'nodelocaldns', addr_info: [{ family: 'inet', local: NODE_LOCAL_DNS }] },
        { ifname: 'eni0123456789a', addr_info: [] },
      ]),
      route: JSON.stringify([
        { dst: 'default', gateway: '10.0.0.254', dev: 'ens5', flags: [] },
        { dst: '10.0.0.0/24', dev: 'ens5', protocol: 'kernel', scope: 'link', flags: [] },
        { dst: A_IP, dev: 'eni0123456789a', scope: 'link', flags: [] },
        { dst: '10.1.9.9', dev: 'vlan0123456789a', table: '107', scope: 'link', flags: [] },
        { type: 'local', dst: NODE_A, dev: 'ens5', table: 'local', scope: 'host', flags: [] },
        { type: 'broadcast', dst: '10.0.0.255', dev: 'ens5', table: 'local', scope: 'link', flags: [] },
      ]),
    };
    const runner: CommandRunner = {
      exec: (argv): Promise<ExecResult> => Promise.resolve({ code: 0, stdout: out[argv.includes('route') ? 'route' : 'addr']!, stderr: '' }),
      follow: () => ({ exited: new Promise(() => {}), stop: () => {} }),
      describe: () => 'fake',
    };
    const read = await readNodeNetwork(runner);
    assert.deepEqual(read.links, ['eni0123456789a', 'ens5', 'lo', 'nodelocaldns']);
    assert.deepEqual(read.localAddresses, [NODE_A, '127.0.0.1', NODE_LOCAL_DNS]);
    assert.deepEqual(read.hostRoutes, [{ address: A_IP, iface: 'eni0123456789a', table: 'main' }, { address: '10.1.9.9', iface: 'vlan0123456789a', table: '107' }]);
    assert.deepEqual([...routesByInterface(read)], [['eni0123456789a', [A_IP]], ['vlan0123456789a', ['10.1.9.9']]]);
  });

  it('fails a read with the command and what it printed', async () => {
    const runner: CommandRunner = {
      exec: () => Promise.resolve({ code: 0, stdout: 'Object "addr" is unknown', stderr: '' }),
      follow: () => ({ exited: new Promise(() => {}), stop: () => {} }),
      describe: () => 'host',
    };
    await assert.rejects(readNodeNetwork(runner), /ip -j addr show on host printed what is not its JSON/);
  });
});
