import assert from 'node:assert/strict';
import { parsePolicy } from '../../rules/policy.js';
import { parsePod } from '../../rules/pod.js';
import { parseNamespace } from '../../rules/namespace.js';
import { parseObjects } from '../../rules/snapshot.js';
import { formatProblem } from '../../rules/problems.js';
import type { Problem } from '../../rules/problems.js';
import { makeSelector, parseSelector, selectorMatches } from '../../rules/selector.js';
import { ProblemSink } from '../../rules/problems.js';
import { makeSettings } from '../../rules/settings.js';
import { pod, policy } from '../support/builders.js';

/** Parsing and validation of input objects: defaulting as the API server does it, every error named. */

function problemsOf(problems: readonly Problem[]): string[] {
  return problems.map(formatProblem);
}

function parsed(spec: Record<string, unknown>) {
  return parsePolicy(policy('ns1', 'p', spec));
}

describe('NetworkPolicy parsing', () => {
  const defaulting: readonly [string, Record<string, unknown>, boolean, boolean][] = [
    ['no policyTypes and no egress isolate ingress only', { podSelector: {} }, true, false],
    ['no policyTypes and a non-empty egress isolate both', { podSelector: {}, egress: [{}] }, true, true],
    ['no policyTypes and an empty egress list isolate ingress only', { podSelector: {}, egress: [] }, true, false],
    ['an empty policyTypes list is defaulted like an absent one', { podSelector: {}, policyTypes: [], egress: [{}] }, true, true],
    ['policyTypes Egress alone isolate egress only', { podSelector: {}, policyTypes: ['Egress'] }, false, true],
    ['policyTypes Ingress and Egress isolate both', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] }, true, true],
  ];
  for (const [name, spec, ingress, egress] of defaulting) {
    it(`defaults policyTypes: ${name}`, () => {
      const { record } = parsed(spec);
      assert.deepEqual([record!.affectsIngress, record!.affectsEgress], [ingress, egress]);
    });
  }

  it('drops the rules of a direction the policy does not isolate', () => {
    const { record } = parsed({ podSelector: {}, policyTypes: ['Egress'], ingress: [{}] });
    assert.deepEqual(record!.ingress, []);
  });

  it('reads absent and empty from, to and ports as "any"', () => {
    const { record } = parsed({ podSelector: {}, ingress: [{}, { from: [] }, { ports: [] }, { from: null, ports: null }] });
    assert.deepEqual(record!.ingress, Array(4).fill({ peers: null, ports: null }));
  });

  it('rejects "ingress: {}" with a hint, and fails closed', () => {
    const { record, problems } = parsed({ podSelector: {}, policyTypes: ['Ingress', 'Egress'], ingress: {}, egress: {} });
    assert.deepEqual(problemsOf(problems), [
      'error: NetworkPolicy ns1/p field spec.ingress: ingress must be a list of rules (to allow all ingress, write a list with one empty rule: "ingress: [{}]")',
      'error: NetworkPolicy ns1/p field spec.egress: egress must be a list of rules (to allow all egress, write a list with one empty rule: "egress: [{}]")',
    ]);
    assert.equal(record!.failed, true);
    assert.deepEqual([record!.affectsIngress, record!.affectsEgress, record!.ingress, record!.egress], [true, true, [], []]);
  });

  it('treats a malformed egress as present when defaulting policyTypes of a failed policy', () => {
    const { record } = parsed({ podSelector: {}, egress: 'everything' });
    assert.deepEqual([record!.failed, record!.affectsIngress, record!.affectsEgress], [true, true, true]);
  });

  it('isolates the whole namespace when the podSelector itself is invalid', () => {
    const { record, problems } = parsed({ podSelector: { matchExpressions: [{ key: 'app', operator: 'Equals', values: ['x'] }] }, ingress: [{}] });
    assert.equal(record!.failed, true);
    assert.equal(record!.podSelector.requirements.length, 0);
    assert.match(problemsOf(problems)[0]!, /spec\.podSelector\.matchExpressions\[0\]\.operator: "Equals" is not one of In, NotIn, Exists, DoesNotExist/);
  });

  const invalid: readonly [string, Record<string, unknown>, RegExp][] = [
    ['a CIDR that is no address', { ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.256/8' } }] }] }, /ipBlock\.cidr: "10\.0\.0\.256\/8" is not an IPv4 CIDR/],
    ['a prefix longer than 32', { ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/33' } }] }] }, /has an invalid prefix length/],
    ['an except outside its CIDR', { ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/16', except: ['10.1.0.0/24'] } }] }] }, /except\[0\]: 10\.1\.0\.0\/24 must be a strict subset of 10\.0\.0\.0\/16/],
    ['an except equal to its CIDR', { ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/16', except: ['10.0.0.0/16'] } }] }] }, /must be a strict subset/],
    ['ipBlock combined with a selector', { ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8' }, podSelector: {} }] }] }, /from\[0\]: ipBlock cannot be combined/],
    ['an empty peer', { ingress: [{ from: [{}] }] }, /from\[0\]: a peer must set podSelector, namespaceSelector or ipBlock/],
    ['a port out of range', { ingress: [{ ports: [{ port: 70000 }] }] }, /ports\[0\]\.port: 70000 is not a port number/],
    ['an endPort below the port', { ingress: [{ ports: [{ port: 90, endPort: 80 }] }] }, /ports\[0\]\.endPort: 80 must be a port number from 90 to 65535/],
    ['an endPort with a named port', { ingress: [{ ports: [{ port: 'http', endPort: 90 }] }] }, /endPort cannot be used with a named port/],
    ['an endPort without a port', { ingress: [{ ports: [{ endPort: 90 }] }] }, /endPort needs a numeric port/],
    ['a port number written as a string', { ingress: [{ ports: [{ port: '80' }] }] }, /"80" is neither a port number nor a valid port name/],
    ['an unknown protocol', { ingress: [{ ports: [{ protocol: 'ICMP' }] }] }, /protocol: "ICMP" is not TCP, UDP or SCTP/],
    ['an unknown policy type', { policyTypes: ['Inbound'] }, /policyTypes\[0\]: "Inbound" is not "Ingress" or "Egress"/],
    ['an invalid label value in a selector', { ingress: [{ from: [{ podSelector: { matchLabels: { app: 'a b' } } }] }] }, /matchLabels\.app: "a b" is not a valid label value/],
    ['In without values', { ingress: [{ from: [{ podSelector: { matchExpressions: [{ key: 'a', operator: 'In', values: [] }] } }] }] }, /operator In needs at least one value/],
    ['Exists with values', { ingress: [{ from: [{ podSelector: { matchExpressions: [{ key: 'a', operator: 'Exists', values: ['x'] }] } }] }] }, /operator Exists takes no values/],
  ];
  for (const [name, spec, message] of invalid) {
    it(`rejects ${name}, naming the field`, () => {
      const { record, problems } = parsed({ podSelector: {}, ...spec });
      assert.equal(record!.failed, true, 'an invalid policy fails closed');
      assert.match(problemsOf(problems).join('\n'), message);
    });
  }

  it('ignores an IPv6 peer with a warning, and drops a rule left with no peers instead of widening it', () => {
    const { record, problems } = parsed({
      podSelector: {},
      ingress: [
        { from: [{ ipBlock: { cidr: 'fd00::/8' } }] },
        { from: [{ ipBlock: { cidr: 'fd00::/8' } }, { ipBlock: { cidr: '10.0.0.0/8' } }] },
      ],
    });
    assert.equal(record!.failed, false);
    assert.equal(record!.ingress.length, 1);
    assert.equal(record!.ingress[0]!.peers!.length, 1);
    assert.ok(problems.every((p) => p.severity === 'warning'));
    assert.match(problemsOf(problems).join('\n'), /IPv6 CIDR fd00::\/8 ignored/);
    assert.match(problemsOf(problems).join('\n'), /rule ignored: every peer is an IPv6 ipBlock/);
  });

  it('blames an invalid peer on what is wrong with it, not on IPv6', () => {
    const { record, problems } = parsed({ podSelector: {}, ingress: [{ from: [{}] }] });
    assert.equal(record!.failed, true);
    assert.doesNotMatch(problemsOf(problems).join('\n'), /IPv6/);
  });

  // What the API server's legacy CIDR validation (IsValidCIDRForLegacyField) lets through is read as
  // Go's ParseCIDR reads it, with a warning; the upstream e2e suite writes "<podIP>/4" itself.
  const sloppy: readonly [string, string, RegExp][] = [
    ['10.0.0.1/4', '0.0.0.0/4', /host bits set; it is read as 0\.0\.0\.0\/4/],
    ['192.168.1.1/24', '192.168.1.0/24', /read as 192\.168\.1\.0\/24/],
    ['010.001.002.000/24', '10.1.2.0/24', /leading zeros are decimal/],
    ['10.1.2.3/032', '10.1.2.3/32', /read as 10\.1\.2\.3\/32/],
  ];
  for (const [written, read, warning] of sloppy) {
    it(`accepts the CIDR ${written} as the API server does, reading it as ${read} with a warning`, () => {
      const { record, problems } = parsed({ podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: written, except: [] } }] }] });
      assert.equal(record!.failed, false);
      const peer = record!.ingress[0]!.peers![0]!;
      assert.equal(peer.kind === 'ipBlock' ? peer.ipBlock.cidr.text : '', read);
      assert.ok(problems.every((p) => p.severity === 'warning'));
      assert.match(problemsOf(problems).join('\n'), warning);
    });
  }

  it('masks host bits in an except too, and still checks it lies strictly inside the CIDR', () => {
    const ok = parsed({ podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.1/8', except: ['10.1.2.3/16'] } }] }] });
    assert.equal(ok.record!.failed, false);
    const peer = ok.record!.ingress[0]!.peers![0]!;
    assert.deepEqual(peer.kind === 'ipBlock' ? peer.ipBlock.except.map((c) => c.text) : [], ['10.1.0.0/16']);
    const outside = parsed({ podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.1/16', except: ['10.0.0.9/8'] } }] }] });
    assert.equal(outside.record!.failed, true);
  });

  const unknownFields: readonly [string, Record<string, unknown>, RegExp][] = [
    ['in an ipBlock', { ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8', exept: ['10.1.0.0/16'] } }] }] }, /ipBlock\.exept: unknown field in ipBlock/],
    ['in a port', { ingress: [{ ports: [{ port: 80, portocol: 'UDP' }] }] }, /ports\[0\]\.portocol: unknown field in port/],
    ['in a match expression', { ingress: [{ from: [{ podSelector: { matchExpressions: [{ key: 'a', operator: 'Exists', value: ['x'] }] } }] }] }, /matchExpressions\[0\]\.value: unknown field in match expression/],
    ['in a rule', { ingress: [{ form: [] }] }, /ingress\[0\]\.form: unknown field in ingress rule/],
    ['in the spec', { podSelector: {}, ingres: [{}] }, /spec\.ingres: unknown field in NetworkPolicy spec/],
  ];
  for (const [where, spec, message] of unknownFields) {
    it(`warns of an unknown field ${where}, which the API server would drop and kubectl --validate=strict refuse`, () => {
      const { record, problems } = parsed({ podSelector: {}, ...spec });
      assert.equal(record!.failed, false);
      assert.match(problemsOf(problems).join('\n'), message);
      assert.ok(problems.every((p) => p.severity === 'warning'));
    });
  }

  it('defaults the namespace and the protocol, and keeps endPort', () => {
    const { record } = parsePolicy({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'p' }, spec: { podSelector: {}, ingress: [{ ports: [{ port: 80, endPort: 90 }] }] } });
    assert.equal(record!.namespace, 'default');
    assert.deepEqual(record!.ingress[0]!.ports, [{ kind: 'number', protocol: 'TCP', port: 80, endPort: 90 }]);
  });
});

describe('Pod parsing', () => {
  it('takes the IPv4 address from status.podIPs', () => {
    assert.equal(parsePod(pod('ns', 'a', { ip: '10.1.1.1' })).record!.ip, '10.1.1.1');
  });

  it('falls back to the VPC CNI annotation while status has no address', () => {
    assert.equal(parsePod(pod('ns', 'a', { annotationIp: '10.1.1.7' })).record!.ip, '10.1.1.7');
  });

  it('prefers the published status over the annotation', () => {
    assert.equal(parsePod(pod('ns', 'a', { ip: '10.1.1.1', annotationIp: '10.1.1.7' })).record!.ip, '10.1.1.1');
  });

  it('picks the IPv4 address of a dual-stack pod', () => {
    const object = pod('ns', 'a', { ip: '10.1.1.1' });
    (object['status'] as Record<string, unknown>)['podIPs'] = [{ ip: 'fd00::1' }, { ip: '10.1.1.1' }];
    const { record, problems } = parsePod(object);
    assert.equal(record!.ip, '10.1.1.1');
    assert.deepEqual(problems, []);
  });

  it('ignores an IPv6-only pod with a warning', () => {
    const { record, problems } = parsePod(pod('ns', 'a', { ip: 'fd00::1' }));
    assert.equal(record!.ip, null);
    assert.match(problemsOf(problems)[0]!, /warning: Pod ns\/a field status\.podIPs: IPv6 pod addresses are ignored/);
  });

  it('marks Succeeded and Failed pods finished', () => {
    assert.equal(parsePod(pod('ns', 'a', { ip: '10.1.1.1', phase: 'Succeeded' })).record!.finished, true);
    assert.equal(parsePod(pod('ns', 'a', { ip: '10.1.1.1', phase: 'Failed' })).record!.finished, true);
    assert.equal(parsePod(pod('ns', 'a', { ip: '10.1.1.1', phase: 'Pending' })).record!.finished, false);
  });

  it('keeps named container ports with their protocols', () => {
    const { record } = parsePod(pod('ns', 'a', { ip: '10.1.1.1', ports: [{ name: 'http', port: 8080 }, { name: 'dns', port: 53, protocol: 'UDP' }] }));
    assert.deepEqual(record!.namedPorts, [{ name: 'dns', protocol: 'UDP', port: 53 }, { name: 'http', protocol: 'TCP', port: 8080 }]);
  });

  it('drops an invalid label with a warning rather than failing the pod', () => {
    const { record, problems } = parsePod(pod('ns', 'a', { ip: '10.1.1.1', labels: { good: 'yes', 'bad key!': 'x' } }));
    assert.deepEqual(record!.labels, { good: 'yes' });
    assert.equal(problems[0]!.severity, 'warning');
  });

  it('rejects a pod without a name', () => {
    const { record, problems } = parsePod({ apiVersion: 'v1', kind: 'Pod', metadata: { namespace: 'ns' } });
    assert.equal(record, null);
    assert.match(problemsOf(problems)[0]!, /field metadata\.name: object has no name/);
  });
});

describe('Namespace and object-set parsing', () => {
  it('adds the kubernetes.io/metadata.name label the API server would', () => {
    assert.deepEqual(parseNamespace({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'x', labels: { team: 't' } } }).record!.labels, { team: 't', 'kubernetes.io/metadata.name': 'x' });
  });

  it('skips kinds it does not use with a warning and rejects a wrong apiVersion', () => {
    const { snapshot, problems } = parseObjects([
      { object: { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'd' } } },
      { object: { apiVersion: 'extensions/v1beta1', kind: 'NetworkPolicy', metadata: { name: 'old' } }, origin: 'f.yaml:3' },
    ]);
    assert.equal(snapshot.policies.length, 0);
    assert.deepEqual(problemsOf(problems), [
      'warning: Deployment d field kind: kind Deployment apps/v1 is not used by palisade; skipped',
      'f.yaml:3: error: NetworkPolicy old field apiVersion: NetworkPolicy must have apiVersion networking.k8s.io/v1, not "extensions/v1beta1"',
    ]);
  });
});

describe('label selectors', () => {
  const sink = () => new ProblemSink({ kind: 'Test', namespace: null, name: 't' });

  it('gives equal selectors one canonical form, whatever order they were written in', () => {
    const a = parseSelector({ matchLabels: { b: '2', a: '1' }, matchExpressions: [{ key: 'c', operator: 'In', values: ['y', 'x', 'x'] }] }, 's', sink())!;
    const b = parseSelector({ matchExpressions: [{ key: 'c', operator: 'In', values: ['x', 'y'] }, { key: 'a', operator: 'In', values: ['1'] }], matchLabels: { b: '2' } }, 's', sink())!;
    assert.equal(a.canonical, b.canonical);
  });

  it('matches an empty selector to everything', () => {
    assert.equal(selectorMatches(makeSelector([]), {}), true);
  });

  it('treats NotIn as true for a pod without the label', () => {
    assert.equal(selectorMatches(makeSelector([{ key: 'env', operator: 'NotIn', values: ['prod'] }]), {}), true);
  });

  it('accepts prefixed keys and rejects malformed ones', () => {
    assert.notEqual(parseSelector({ matchLabels: { 'app.kubernetes.io/name': 'x' } }, 's', sink()), null);
    const s = sink();
    assert.equal(parseSelector({ matchLabels: { 'Bad_Prefix/name': 'x' } }, 's', s), null);
    assert.equal(s.hasErrors, true);
  });
});

describe('compiler settings', () => {
  const cases: readonly [string, Parameters<typeof makeSettings>[0], RegExp][] = [
    ['an interface prefix too long for a 15-character name', { nodeName: 'n', interfacePrefixes: ['veths'] }, /interface prefix "veths": must be 1 to 4/],
    ['overlapping interface prefixes', { nodeName: 'n', interfacePrefixes: ['eni', 'en'] }, /overlap/],
    ['a chain prefix that would make names too long', { nodeName: 'n', chainPrefix: 'palisadeX' }, /chain prefix "palisadeX"/],
    ['a mark of several bits', { nodeName: 'n', allowMark: 0x3 }, /must be a single bit/],
    ['kube-proxy\'s masquerade mark', { nodeName: 'n', allowMark: 0x4000 }, /clashes with the kube-proxy masquerade mark/],
    ['a mark whose Pass bit (one up) is kube-proxy\'s masquerade mark', { nodeName: 'n', allowMark: 0x2000 }, /palisade's bit 0x4000 clashes with the kube-proxy masquerade mark/],
    ['a mark whose Deny bit (two up) is kube-proxy\'s drop mark', { nodeName: 'n', allowMark: 0x2000 }, /palisade's bit 0x8000 clashes with the kube-proxy drop mark/],
    ['a mark too high for the two bits above it', { nodeName: 'n', allowMark: 0x40000000 }, /no higher than 0x20000000/],
    ['an empty node name', { nodeName: '' }, /node name: must not be empty/],
  ];
  for (const [name, input, message] of cases) {
    it(`rejects ${name}`, () => {
      const result = makeSettings(input);
      assert.equal(result.ok, false);
      if (!result.ok) assert.match(result.errors.join('\n'), message);
    });
  }
});
