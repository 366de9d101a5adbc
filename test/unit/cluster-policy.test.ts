import assert from 'node:assert/strict';
import { parseClusterPolicy } from '../../rules/cluster-policy.js';
import type { ClusterPolicyRecord, ClusterRule } from '../../rules/model.js';
import { MATCH_ALL } from '../../rules/selector.js';
import { parseObjects } from '../../rules/snapshot.js';
import { formatProblem } from '../../rules/problems.js';
import type { Problem } from '../../rules/problems.js';
import { clusterPolicy, node } from '../support/builders.js';

/** ClusterNetworkPolicy parsing: what the CRD accepts and defaults, what it refuses, and how each failure closes. */

type Obj = Record<string, unknown>;

function parse(spec: Obj, name = 'p'): { record: ClusterPolicyRecord; problems: readonly Problem[] } {
  const { record, problems } = parseClusterPolicy(clusterPolicy(name, spec));
  assert.ok(record !== null, 'a named policy always yields a record');
  return { record, problems };
}

const errors = (problems: readonly Problem[]): string[] => problems.filter((p) => p.severity === 'error').map((p) => `${p.field}: ${p.message}`);
const warnings = (problems: readonly Problem[]): string[] => problems.filter((p) => p.severity === 'warning').map((p) => `${p.field}: ${p.message}`);

const fromAll = [{ namespaces: {} }];
const valid = (extra: Obj = {}): Obj => ({ tier: 'Admin', priority: 10, subject: { namespaces: {} }, ingress: [{ action: 'Deny', from: fromAll }], ...extra });
const DENY_ALL: ClusterRule = { name: '', action: 'Deny', peers: [], protocols: null, failClosed: 'the policy is invalid' };

describe('ClusterNetworkPolicy parsing', () => {
  it('reads the API documentation\'s cluster-wide allow example as written', () => {
    const { record, problems } = parse({
      tier: 'Admin',
      priority: 30,
      subject: { namespaces: {} },
      ingress: [{ action: 'Accept', name: 'allow-monitoring-ns-ingress', from: [{ namespaces: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring-ns' } } }] }],
      egress: [{ action: 'Accept', name: 'allow-kube-dns-egress', to: [{ pods: { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'kube-system' } }, podSelector: { matchLabels: { app: 'kube-dns' } } } }] }],
    }, 'cluster-wide-allow-example');
    assert.deepEqual(problems, []);
    assert.equal(record.name, 'cluster-wide-allow-example');
    assert.equal(record.tier, 'Admin');
    assert.equal(record.priority, 30);
    assert.equal(record.failed, false);
    assert.deepEqual(record.subject, { kind: 'namespaces', namespaceSelector: MATCH_ALL });
    assert.equal(record.ingress[0]!.name, 'allow-monitoring-ns-ingress');
    assert.equal(record.ingress[0]!.action, 'Accept');
    assert.equal(record.ingress[0]!.protocols, null);
    assert.equal(record.ingress[0]!.failClosed, null);
    const peer = record.egress[0]!.peers[0]!;
    assert.equal(peer.kind, 'pods');
    assert.equal(peer.kind === 'pods' && peer.podSelector.canonical, 'app In (kube-dns)');
  });

  it('lets an absent namespaceSelector in pods select every namespace, unlike NetworkPolicy', () => {
    const { record } = parse(valid({ subject: { pods: { podSelector: { matchLabels: { app: 'x' } } } } }));
    assert.equal(record.subject.kind, 'pods');
    assert.equal(record.subject.namespaceSelector, MATCH_ALL);
  });

  it('reads a port number as a range of one, a range as inclusive, and a named port by name', () => {
    const { record, problems } = parse(valid({
      egress: [{
        action: 'Deny',
        to: [{ pods: { podSelector: {} } }],
        protocols: [
          { tcp: { destinationPort: { number: 443 } } },
          { udp: { destinationPort: { range: { start: 30000, end: 32767 } } } },
          { sctp: { destinationPort: { number: 9 } } },
          { destinationNamedPort: 'web-alt' },
        ],
      }],
    }));
    assert.deepEqual(errors(problems), []);
    assert.deepEqual(record.egress[0]!.protocols, [
      { kind: 'range', protocol: 'TCP', start: 443, end: 443 },
      { kind: 'range', protocol: 'UDP', start: 30000, end: 32767 },
      { kind: 'range', protocol: 'SCTP', start: 9, end: 9 },
      { kind: 'named', name: 'web-alt' },
    ]);
  });

  it('reads nodes and networks peers, masking host bits with a warning and leaving IPv6 out', () => {
    const { record, problems } = parse(valid({
      egress: [{ action: 'Deny', to: [{ nodes: { matchLabels: { 'node-role.kubernetes.io/control-plane': '' } } }, { networks: ['169.254.169.254/32', '10.0.0.1/8', 'fd00::/8', '169.254.169.254/32'] }] }],
    }));
    assert.deepEqual(errors(problems), []);
    assert.deepEqual(record.egress[0]!.peers.map((p) => (p.kind === 'networks' ? p.networks.map((c) => c.text) : p.kind)), ['nodes', ['169.254.169.254/32', '10.0.0.0/8']]);
    assert.deepEqual(warnings(problems), [
      'spec.egress[0].to[1].networks[1]: "10.0.0.1/8" has host bits set; it is read as 10.0.0.0/8, as the API server and other enforcers read it',
      'spec.egress[0].to[1].networks[2]: IPv6 CIDR fd00::/8 matches no IPv4 packet (IPv4 clusters only)',
    ]);
  });

  it('keeps no rules for a direction the policy leaves out: there is no implicit isolation', () => {
    const { record } = parse(valid());
    assert.equal(record.ingress.length, 1);
    assert.deepEqual(record.egress, []);
  });

  const invalid: readonly [string, Obj, string, RegExp][] = [
    ['a missing tier', valid({ tier: undefined }), 'spec.tier', /tier is required/],
    ['a tier in the wrong case', valid({ tier: 'admin' }), 'spec.tier', /"admin" is not "Admin" or "Baseline"/],
    ['a missing priority', valid({ priority: undefined }), 'spec.priority', /priority is required/],
    ['a priority over 1000', valid({ priority: 1001 }), 'spec.priority', /1001 is not an integer from 0 to 1000/],
    ['a negative priority', valid({ priority: -1 }), 'spec.priority', /-1 is not an integer/],
    ['a fractional priority', valid({ priority: 1.5 }), 'spec.priority', /1.5 is not an integer/],
    ['a subject with both namespaces and pods', valid({ subject: { namespaces: {}, pods: { podSelector: {} } } }), 'spec.subject', /exactly one of namespaces or pods, not namespaces and pods/],
    ['an empty subject', valid({ subject: {} }), 'spec.subject', /exactly one of namespaces or pods/],
    ['a pods subject without podSelector', valid({ subject: { pods: { namespaceSelector: {} } } }), 'spec.subject.pods.podSelector', /podSelector is required/],
    ['an invalid subject selector', valid({ subject: { namespaces: { matchLabels: { 'a b': 'c' } } } }), 'spec.subject.namespaces.matchLabels.a b', /not a valid label key/],
    ['a rule without an action', valid({ ingress: [{ from: fromAll }] }), 'spec.ingress[0].action', /action is required/],
    ['an unknown action', valid({ ingress: [{ action: 'Allow', from: fromAll }] }), 'spec.ingress[0].action', /"Allow" is not "Accept", "Deny" or "Pass"/],
    ['a rule without from', valid({ ingress: [{ action: 'Deny' }] }), 'spec.ingress[0].from', /from is required/],
    ['a rule with an empty to', valid({ egress: [{ action: 'Deny', to: [] }] }), 'spec.egress[0].to', /needs at least 1 item/],
    ['26 ingress rules', valid({ ingress: Array.from({ length: 26 }, () => ({ action: 'Deny', from: fromAll })) }), 'spec.ingress', /26 items; the CRD allows at most 25/],
    ['26 peers', valid({ ingress: [{ action: 'Deny', from: Array.from({ length: 26 }, () => ({ namespaces: {} })) }] }), 'spec.ingress[0].from', /at most 25/],
    ['a rule name of 101 characters', valid({ ingress: [{ name: 'x'.repeat(101), action: 'Deny', from: fromAll }] }), 'spec.ingress[0].name', /at most 100 characters/],
    ['a peer with two fields', valid({ egress: [{ action: 'Deny', to: [{ namespaces: {}, networks: ['10.0.0.0/8'] }] }] }), 'spec.egress[0].to[0]', /exactly one of .*not namespaces and networks/],
    ['an empty peer', valid({ ingress: [{ action: 'Deny', from: [{}] }] }), 'spec.ingress[0].from[0]', /exactly one of namespaces, pods/],
    ['an empty protocols list', valid({ ingress: [{ action: 'Deny', from: fromAll, protocols: [] }] }), 'spec.ingress[0].protocols', /at least 1 item/],
    ['tcp without destinationPort', valid({ ingress: [{ action: 'Deny', from: fromAll, protocols: [{ tcp: {} }] }] }), 'spec.ingress[0].protocols[0].tcp.destinationPort', /destinationPort is required/],
    ['a protocol entry with tcp and udp', valid({ ingress: [{ action: 'Deny', from: fromAll, protocols: [{ tcp: { destinationPort: { number: 1 } }, udp: { destinationPort: { number: 1 } } }] }] }), 'spec.ingress[0].protocols[0]', /not tcp and udp/],
    ['port 0', valid({ ingress: [{ action: 'Deny', from: fromAll, protocols: [{ tcp: { destinationPort: { number: 0 } } }] }] }), 'spec.ingress[0].protocols[0].tcp.destinationPort.number', /not a port number/],
    ['a range whose start is not below its end', valid({ ingress: [{ action: 'Deny', from: fromAll, protocols: [{ udp: { destinationPort: { range: { start: 80, end: 80 } } } }] }] }), 'spec.ingress[0].protocols[0].udp.destinationPort.range', /start \(80\) must be less than end \(80\)/],
    ['a port with number and range', valid({ ingress: [{ action: 'Deny', from: fromAll, protocols: [{ tcp: { destinationPort: { number: 1, range: { start: 1, end: 2 } } } }] }] }), 'spec.ingress[0].protocols[0].tcp.destinationPort', /exactly one of number or range/],
    ['an invalid CIDR', valid({ egress: [{ action: 'Deny', to: [{ networks: ['10.0.0.0/33'] }] }] }), 'spec.egress[0].to[0].networks[0]', /invalid prefix length/],
    ['a CIDR with leading zeros', valid({ egress: [{ action: 'Deny', to: [{ networks: ['010.0.0.0/8'] }] }] }), 'spec.egress[0].to[0].networks[0]', /no leading zeros/],
    ['a named port towards networks', valid({ egress: [{ action: 'Deny', to: [{ networks: ['10.0.0.0/8'] }], protocols: [{ destinationNamedPort: 'http' }] }] }), 'spec.egress[0]', /destinationNamedPort cannot be used with networks peers/],
    ['a named port towards nodes', valid({ egress: [{ action: 'Deny', to: [{ nodes: {} }], protocols: [{ destinationNamedPort: 'http' }] }] }), 'spec.egress[0]', /with nodes peers/],
    ['an invalid domain name', valid({ egress: [{ action: 'Accept', to: [{ domainNames: ['www.*.example.com'] }] }] }), 'spec.egress[0].to[0].domainNames[0]', /not a domain name/],
    ['an invalid name', valid(), 'metadata.name', /not a valid name/],
  ];
  for (const [what, spec, field, message] of invalid) {
    it(`refuses ${what} with its field, and fails the policy closed`, () => {
      const { record, problems } = parse(spec, what === 'an invalid name' ? 'Bad_Name' : 'p');
      const found = problems.filter((p) => p.severity === 'error');
      assert.ok(found.some((p) => p.field === field && message.test(p.message)), `expected an error at ${field} matching ${message}, got:\n${found.map(formatProblem).join('\n')}`);
      assert.equal(record.failed, true);
    });
  }

  it('fails an invalid policy closed: Deny everything in each direction it declares, for its subject', () => {
    const { record } = parse({ tier: 'Baseline', priority: 5, subject: { namespaces: { matchLabels: { team: 'x' } } }, egress: [{ action: 'Allow', to: fromAll }] });
    assert.equal(record.failed, true);
    assert.equal(record.tier, 'Baseline');
    assert.equal(record.priority, 5);
    assert.equal(record.subject.namespaceSelector.canonical, 'team In (x)');
    assert.deepEqual(record.egress, [DENY_ALL]);
    assert.deepEqual(record.ingress, [], 'ingress was not declared, so it is left alone');
  });

  it('takes what an invalid policy leaves unreadable at its closed end: every pod, the Admin tier, priority 0', () => {
    const { record } = parse({ tier: 'Middle', priority: 'high', subject: { everyone: true }, ingress: 'all', egress: [] });
    assert.deepEqual(record, { name: 'p', tier: 'Admin', priority: 0, subject: { kind: 'namespaces', namespaceSelector: MATCH_ALL }, ingress: [DENY_ALL], egress: [DENY_ALL], failed: true });
  });

  it('fails a policy without a spec closed in both directions', () => {
    const { record, problems } = parseClusterPolicy({ apiVersion: 'policy.networking.k8s.io/v1alpha2', kind: 'ClusterNetworkPolicy', metadata: { name: 'p' } });
    assert.deepEqual(errors(problems), ['spec: a ClusterNetworkPolicy needs a spec object']);
    assert.deepEqual(record?.ingress, [DENY_ALL]);
    assert.deepEqual(record?.egress, [DENY_ALL]);
  });

  it('warns of fields the API server would drop, and keeps the policy', () => {
    const { record, problems } = parse(valid({ podSelector: {}, ingress: [{ action: 'Deny', from: [{ namespaces: {}, namespaceSelector: {} }], ports: [] }] }));
    assert.equal(record.failed, false);
    assert.equal(record.ingress[0]!.failClosed, null, 'beside a known field, an unknown one is only dropped');
    assert.deepEqual(warnings(problems).map((w) => w.split(':')[0]), ['spec.podSelector', 'spec.ingress[0].ports', 'spec.ingress[0].from[0].namespaceSelector']);
  });

  it('fails a rule closed when a peer has no field palisade knows: an Accept rule matches nothing', () => {
    const { record, problems } = parse(valid({ egress: [{ action: 'Accept', to: [{ services: [{ name: 'api' }] }] }, { action: 'Deny', to: fromAll }] }));
    assert.equal(record.failed, false, 'the rest of the policy stands');
    assert.equal(record.egress[0]!.failClosed, 'spec.egress[0].to[0] (services) has no field palisade knows (written for a newer ClusterNetworkPolicy CRD?)');
    assert.equal(record.egress[1]!.failClosed, null);
    assert.deepEqual(warnings(problems), ['spec.egress[0]: spec.egress[0].to[0] (services) has no field palisade knows (written for a newer ClusterNetworkPolicy CRD?): this Accept rule matches nothing (the API\'s fail-closed reading)'], 'one warning, which does not call the field a typo that may allow more');
  });

  it('fails a Pass rule with an unknown peer closed as Deny for everything, and says so', () => {
    const { record, problems } = parse(valid({ ingress: [{ action: 'Pass', from: [{ networks: ['10.0.0.0/8'] }] }] }));
    assert.notEqual(record.ingress[0]!.failClosed, null, 'networks is no ingress peer: to palisade it is a newer CRD\'s field');
    assert.ok(warnings(problems).some((w) => /this Pass rule is taken as Deny for every ingress packet of its subject/.test(w)), warnings(problems).join('\n'));
  });

  it('fails a rule closed when a protocol entry has no field palisade knows', () => {
    const { record } = parse(valid({ ingress: [{ action: 'Deny', from: fromAll, protocols: [{ icmp: { type: 8 } }] }] }));
    assert.equal(record.ingress[0]!.failClosed, 'spec.ingress[0].protocols[0] (icmp) has no field palisade knows (written for a newer ClusterNetworkPolicy CRD?)');
  });

  it('reports domainNames as unsupported: an Accept rule with them matches nothing', () => {
    const { record, problems } = parse(valid({ egress: [{ action: 'Accept', name: 'allow-github', to: [{ domainNames: ['github.com', '*.github.com'] }] }] }));
    assert.deepEqual(errors(problems), []);
    assert.equal(record.failed, false);
    assert.equal(record.egress[0]!.failClosed, 'domainNames peers (github.com, *.github.com) are not supported by palisade');
    assert.ok(warnings(problems).some((w) => /this Accept rule matches nothing/.test(w)));
  });

  it('says domainNames belong to Accept rules, and denies everything for a Deny rule that lists them', () => {
    const { record, problems } = parse(valid({ egress: [{ action: 'Deny', to: [{ domainNames: ['example.com'] }] }] }));
    assert.notEqual(record.egress[0]!.failClosed, null);
    assert.ok(warnings(problems).some((w) => w === 'spec.egress[0].action: domainNames peers are for Accept rules only, as the API says'));
    assert.ok(warnings(problems).some((w) => /this Deny rule is taken as Deny for every egress packet/.test(w)));
  });

  it('warns of a named port no container port can have', () => {
    const { problems } = parse(valid({ ingress: [{ action: 'Deny', from: fromAll, protocols: [{ destinationNamedPort: 'Web_Port' }] }] }));
    assert.deepEqual(warnings(problems), ['spec.ingress[0].protocols[0].destinationNamedPort: "Web_Port" is not a valid container port name, so no pod has a port of that name']);
  });
});

describe('ClusterNetworkPolicy in a snapshot', () => {
  it('takes kind ClusterNetworkPolicy of policy.networking.k8s.io/v1alpha2, sorted by name, the last definition winning', () => {
    const { snapshot, problems } = parseObjects([
      { object: clusterPolicy('zeta', valid({ priority: 1 })) },
      { object: clusterPolicy('alpha', valid({ priority: 2 })) },
      { object: clusterPolicy('alpha', valid({ priority: 3 })), origin: 'cnp.yaml:7' },
    ]);
    assert.deepEqual(snapshot.clusterPolicies.map((p) => [p.name, p.priority]), [['alpha', 3], ['zeta', 1]]);
    assert.deepEqual(problems.map(formatProblem), ['cnp.yaml:7: warning: ClusterNetworkPolicy alpha field metadata.name: defined more than once; the last definition is used']);
    assert.deepEqual(snapshot.policies, []);
  });

  it('refuses another API version of the kind', () => {
    const { snapshot, problems } = parseObjects([{ object: { ...clusterPolicy('p', valid()), apiVersion: 'policy.networking.k8s.io/v1alpha1' } }]);
    assert.deepEqual(snapshot.clusterPolicies, []);
    assert.deepEqual(problems.map((p) => `${p.severity} ${p.field}`), ['error apiVersion']);
  });

  it('keeps Node labels, for nodes peers', () => {
    const { snapshot } = parseObjects([{ object: node('cp-1', '10.0.0.9', { labels: { 'node-role.kubernetes.io/control-plane': '' } }) }]);
    assert.deepEqual(snapshot.nodes[0]!.labels, { 'node-role.kubernetes.io/control-plane': '' });
    assert.deepEqual(snapshot.nodes[0]!.addresses, ['10.0.0.9']);
  });
});
