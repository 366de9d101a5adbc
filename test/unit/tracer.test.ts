import assert from 'node:assert/strict';
import { IpsetModel, IptablesModel } from '../support/tracer.js';
import type { Hook, Packet } from '../support/tracer.js';

/** Wraps rule lines in a filter table section. */
const filter = (...lines: string[]): string => ['*filter', ...lines, 'COMMIT', ''].join('\n');

const TCP_PACKET: Packet = { src: '10.0.0.1', dst: '10.0.0.2', protocol: 'tcp', sport: 40000, dport: 80 };
const NO_SETS = IpsetModel.parse('');

interface TraceCase {
  name: string;
  rules: string;
  sets?: string;
  hook?: Hook;
  table?: string;
  packet?: Partial<Packet>;
  verdict: 'ACCEPT' | 'DROP';
  mark?: number;
  walked?: number;
  /** `chain#index` of every rule that matched, in walk order. */
  matched?: string[];
}

const GOTO_RULES = (how: '-j' | '-g'): string =>
  filter(
    ':FORWARD ACCEPT [0:0]',
    ':outer - [0:0]',
    ':inner - [0:0]',
    '-A FORWARD -j outer',
    '-A FORWARD -j DROP',
    `-A outer ${how} inner`,
    '-A outer -j ACCEPT',
    '-A inner -j RETURN',
  );

const NET_SETS = [
  'create pal-net hash:net family inet hashsize 1024 maxelem 65536',
  'add pal-net 10.0.0.0/8',
  'add pal-net 10.1.0.0/16 nomatch',
  'add pal-net 10.1.5.0/24',
].join('\n');

const IP_PORT_SETS = ['create pal-svc hash:ip,port family inet', 'add pal-svc 10.0.0.2,tcp:80', 'add pal-svc 10.0.0.2,udp:53'].join('\n');

const CASES: TraceCase[] = [
  // Jumps, gotos and policies.
  {
    name: 'a -j chain that falls off its end resumes after the jump',
    rules: filter(':FORWARD DROP [0:0]', ':a - [0:0]', '-A FORWARD -j a', '-A FORWARD -j ACCEPT'),
    verdict: 'ACCEPT',
    walked: 2,
    matched: ['FORWARD#1', 'FORWARD#2'],
  },
  {
    name: 'a RETURN inside a -j chain resumes after the jump',
    rules: GOTO_RULES('-j'),
    verdict: 'ACCEPT',
    walked: 4,
    matched: ['FORWARD#1', 'outer#1', 'inner#1', 'outer#2'],
  },
  {
    name: 'a RETURN inside a -g chain returns to the last -j caller, skipping the rest of the chain that did the goto',
    rules: GOTO_RULES('-g'),
    verdict: 'DROP',
    walked: 4,
    matched: ['FORWARD#1', 'outer#1', 'inner#1', 'FORWARD#2'],
  },
  {
    name: 'a RETURN in a chain reached by -g from a builtin chain applies the builtin policy',
    rules: filter(':FORWARD DROP [0:0]', ':x - [0:0]', '-A FORWARD -g x', '-A FORWARD -j ACCEPT', '-A x -j RETURN'),
    verdict: 'DROP',
    walked: 2,
  },
  {
    name: 'a RETURN in a builtin chain applies its policy',
    rules: filter(':INPUT DROP [0:0]', '-A INPUT -j RETURN', '-A INPUT -j ACCEPT'),
    hook: 'INPUT',
    verdict: 'DROP',
    walked: 1,
  },
  {
    name: 'falling off a builtin chain applies its declared DROP policy',
    rules: filter(':FORWARD DROP [0:0]', '-A FORWARD -s 192.168.0.0/16 -j ACCEPT'),
    verdict: 'DROP',
    walked: 1,
    matched: [],
  },
  {
    name: 'falling off a builtin chain whose policy was never declared accepts',
    rules: filter('-A FORWARD -s 192.168.0.0/16 -j DROP'),
    verdict: 'ACCEPT',
  },
  {
    name: 'LOG and counter-only rules do not stop the walk',
    rules: filter(':FORWARD DROP [0:0]', '-A FORWARD -j LOG --log-prefix "pal: "', '-A FORWARD -p tcp', '-A FORWARD -j ACCEPT'),
    verdict: 'ACCEPT',
    walked: 3,
  },
  {
    name: 'REJECT is treated as a drop',
    rules: filter('-A FORWARD -p tcp -j REJECT --reject-with tcp-reset'),
    verdict: 'DROP',
  },
  {
    name: 'rulesWalked counts every evaluated rule, matched or not, across chains',
    rules: filter(
      ':a - [0:0]',
      '-A FORWARD -s 1.1.1.1 -j DROP',
      '-A FORWARD -j a',
      '-A a -s 2.2.2.2 -j DROP',
      '-A a -s 3.3.3.3 -j DROP',
      '-A FORWARD -d 10.0.0.2 -j ACCEPT',
    ),
    verdict: 'ACCEPT',
    walked: 5,
    matched: ['FORWARD#2', 'FORWARD#3'],
  },
  // Marks.
  {
    name: 'a MARK --set-xmark is seen by a later mark match',
    rules: filter('-A FORWARD -j MARK --set-xmark 0x4000/0x4000', '-A FORWARD -m mark --mark 0x4000/0x4000 -j DROP'),
    packet: { mark: 0x1 },
    verdict: 'DROP',
    mark: 0x4001,
  },
  {
    name: 'MARK --set-mark V/M replaces only the masked bits',
    rules: filter('-A FORWARD -j MARK --set-mark 0x10/0xf0'),
    packet: { mark: 0xff },
    verdict: 'ACCEPT',
    mark: 0x1f,
  },
  {
    name: 'a negated mark match fires when the masked bits differ',
    rules: filter('-A FORWARD -m mark ! --mark 0x1/0x1 -j DROP'),
    packet: { mark: 0x2 },
    verdict: 'DROP',
  },
  {
    name: 'a mark match without a mask compares the whole mark',
    rules: filter('-A FORWARD -m mark --mark 1 -j DROP'),
    packet: { mark: 0x101 },
    verdict: 'ACCEPT',
  },
  // Negations and header matches.
  {
    name: 'a negated source does not match an address inside the network',
    rules: filter('-A FORWARD ! -s 10.0.0.0/8 -j DROP'),
    verdict: 'ACCEPT',
  },
  {
    name: 'a negated source matches an address outside the network',
    rules: filter('-A FORWARD ! -s 10.0.0.0/8 -j DROP'),
    packet: { src: '192.168.1.1' },
    verdict: 'DROP',
  },
  {
    name: 'a negated protocol matches other protocols only',
    rules: filter('-A FORWARD ! -p tcp -j DROP'),
    packet: { protocol: 'udp' },
    verdict: 'DROP',
  },
  {
    name: 'a negated destination port matches other ports',
    rules: filter('-A FORWARD -p tcp -m tcp ! --dport 80 -j DROP'),
    packet: { dport: 443 },
    verdict: 'DROP',
  },
  {
    name: 'a port range includes both ends',
    rules: filter('-A FORWARD -p tcp --dport 8000:8080 -j DROP'),
    packet: { dport: 8080 },
    verdict: 'DROP',
  },
  {
    name: 'a numeric protocol is understood',
    rules: filter('-A FORWARD -p 17 -m udp --dport 53 -j DROP'),
    packet: { protocol: 'udp', dport: 53 },
    verdict: 'DROP',
  },
  {
    name: 'an address without a prefix length is a single host',
    rules: filter('-A FORWARD -d 10.0.0.3 -j DROP'),
    verdict: 'ACCEPT',
  },
  // Interfaces.
  {
    name: 'an interface wildcard matches every name with the prefix',
    rules: filter('-A FORWARD -i eni+ -j DROP'),
    packet: { inIface: 'eni0a1b2c' },
    verdict: 'DROP',
  },
  {
    name: 'an interface wildcard does not match another prefix',
    rules: filter('-A FORWARD -i eni+ -j DROP'),
    packet: { inIface: 'eth0' },
    verdict: 'ACCEPT',
  },
  {
    name: 'a positive interface match never matches a packet without that interface',
    rules: filter('-A FORWARD -o eni+ -j DROP'),
    verdict: 'ACCEPT',
  },
  {
    name: 'a negated interface match matches a packet without that interface',
    rules: filter('-A FORWARD ! -o eni+ -j DROP'),
    verdict: 'DROP',
  },
  {
    name: 'an exact interface name does not match a longer name',
    rules: filter('-A FORWARD -i eth0 -j DROP'),
    packet: { inIface: 'eth01' },
    verdict: 'ACCEPT',
  },
  // Multiport.
  ...[
    { dport: 80, verdict: 'ACCEPT' as const },
    { dport: 8050, verdict: 'ACCEPT' as const },
    { dport: 8081, verdict: 'DROP' as const },
  ].map(({ dport, verdict }) => ({
    name: `multiport with a range ${verdict === 'ACCEPT' ? 'admits' : 'does not admit'} port ${dport}`,
    rules: filter(':FORWARD DROP [0:0]', '-A FORWARD -p tcp -m multiport --dports 80,443,8000:8080 -j ACCEPT'),
    packet: { dport },
    verdict,
  })),
  {
    name: 'a negated multiport list matches ports outside it',
    rules: filter('-A FORWARD -p udp -m multiport ! --dports 53,123 -j DROP'),
    packet: { protocol: 'udp', dport: 54 },
    verdict: 'DROP',
  },
  // Sets.
  ...[
    { src: '10.2.0.1', verdict: 'ACCEPT' as const, why: 'only the /8 contains it' },
    { src: '10.1.2.3', verdict: 'DROP' as const, why: 'the most specific entry is the nomatch /16' },
    { src: '10.1.5.9', verdict: 'ACCEPT' as const, why: 'a /24 inside the nomatch /16 is more specific' },
    { src: '11.0.0.1', verdict: 'DROP' as const, why: 'no entry contains it' },
  ].map(({ src, verdict, why }) => ({
    name: `hash:net ${verdict === 'ACCEPT' ? 'matches' : 'does not match'} ${src} because ${why}`,
    rules: filter(':FORWARD DROP [0:0]', '-A FORWARD -m set --match-set pal-net src -j ACCEPT'),
    sets: NET_SETS,
    packet: { src },
    verdict,
  })),
  {
    name: 'a negated set match fires for an address that is not in the set',
    rules: filter('-A FORWARD -m set ! --match-set pal-net dst -j DROP'),
    sets: NET_SETS,
    packet: { dst: '192.168.0.1' },
    verdict: 'DROP',
  },
  ...[
    { packet: { protocol: 'tcp' as const, dport: 80 }, verdict: 'ACCEPT' as const, what: 'matches the right protocol and port' },
    { packet: { protocol: 'udp' as const, dport: 80 }, verdict: 'DROP' as const, what: 'needs the protocol to match too' },
    { packet: { protocol: 'tcp' as const, dport: 53 }, verdict: 'DROP' as const, what: 'does not match a port listed for udp' },
    { packet: { protocol: 'icmp' as const, dport: undefined }, verdict: 'DROP' as const, what: 'never matches icmp' },
  ].map(({ packet, verdict, what }) => ({
    name: `hash:ip,port with dst,dst ${what}`,
    rules: filter(':FORWARD DROP [0:0]', '-A FORWARD -m set --match-set pal-svc dst,dst -j ACCEPT'),
    sets: IP_PORT_SETS,
    packet,
    verdict,
  })),
  // Conntrack and addrtype.
  ...(['ESTABLISHED', 'RELATED', 'NEW', 'INVALID'] as const).map((ctstate) => ({
    name: `conntrack RELATED,ESTABLISHED ${ctstate === 'ESTABLISHED' || ctstate === 'RELATED' ? 'accepts' : 'does not accept'} a ${ctstate} packet`,
    rules: filter(':FORWARD DROP [0:0]', '-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT'),
    packet: { ctstate },
    verdict: ctstate === 'ESTABLISHED' || ctstate === 'RELATED' ? ('ACCEPT' as const) : ('DROP' as const),
  })),
  {
    name: 'a packet without a ctstate is NEW',
    rules: filter('-A FORWARD -m conntrack --ctstate NEW -j DROP'),
    verdict: 'DROP',
  },
  {
    name: 'a negated ctstate matches other states',
    rules: filter('-A FORWARD -m conntrack ! --ctstate INVALID -j DROP'),
    packet: { ctstate: 'ESTABLISHED' },
    verdict: 'DROP',
  },
  {
    name: 'addrtype --dst-type LOCAL matches a destination that is one of the node addresses',
    rules: filter('-A INPUT -m addrtype --dst-type LOCAL -j DROP'),
    hook: 'INPUT',
    packet: { localAddresses: ['192.168.1.10', '10.0.0.2'] },
    verdict: 'DROP',
  },
  {
    name: 'addrtype --dst-type LOCAL does not match a remote destination',
    rules: filter('-A INPUT -m addrtype --dst-type LOCAL -j DROP'),
    hook: 'INPUT',
    packet: { localAddresses: ['192.168.1.10'] },
    verdict: 'ACCEPT',
  },
  {
    name: 'a negated addrtype --src-type LOCAL matches a remote source',
    rules: filter('-A OUTPUT -m addrtype ! --src-type LOCAL -j DROP'),
    hook: 'OUTPUT',
    packet: { localAddresses: ['192.168.1.10'] },
    verdict: 'DROP',
  },
  // Input forms.
  {
    name: 'iptables-save output with comments, counters and quoted comments is understood',
    rules: [
      '# Generated by iptables-save v1.8.7 on Mon Jan  1 00:00:00 2024',
      '*filter',
      ':INPUT ACCEPT [12:345]',
      ':FORWARD DROP [0:0]',
      ':OUTPUT ACCEPT [0:0]',
      ':pal-FORWARD - [0:0]',
      '[3:180] -A FORWARD -m comment --comment "palisade: \\"main\\" hook" -j pal-FORWARD',
      '-A pal-FORWARD -p tcp -m tcp --dport 80 -j ACCEPT',
      'COMMIT',
      '# Completed on Mon Jan  1 00:00:00 2024',
    ].join('\n'),
    verdict: 'ACCEPT',
    matched: ['FORWARD#1', 'pal-FORWARD#1'],
  },
  {
    name: 'a filter trace ignores rules in other tables',
    rules: filter('-A FORWARD -j ACCEPT') + '*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j DROP\nCOMMIT\n',
    verdict: 'ACCEPT',
  },
  {
    name: 'a raw table trace walks the raw table',
    rules: filter('-A FORWARD -j ACCEPT') + '*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j DROP\nCOMMIT\n',
    hook: 'PREROUTING',
    table: 'raw',
    verdict: 'DROP',
  },
  {
    name: '-I inserts at the given 1-based position',
    rules: filter('-A FORWARD -j ACCEPT', '-I FORWARD 1 -s 10.0.0.1 -j DROP'),
    verdict: 'DROP',
    walked: 1,
  },
];

function traceCase(c: TraceCase) {
  const model = IptablesModel.parse(c.rules);
  const sets = c.sets === undefined ? NO_SETS : IpsetModel.parse(c.sets);
  return model.trace(c.hook ?? 'FORWARD', { ...TCP_PACKET, ...c.packet }, sets, c.table);
}

describe('tracer: walking packets', () => {
  for (const c of CASES) {
    it(c.name, () => {
      const result = traceCase(c);
      const why = result.describe();
      assert.equal(result.verdict, c.verdict, why);
      if (c.mark !== undefined) assert.equal(result.mark, c.mark, why);
      if (c.walked !== undefined) assert.equal(result.rulesWalked, c.walked, why);
      if (c.matched !== undefined) {
        assert.deepEqual(result.steps.filter((s) => s.matched).map((s) => `${s.chain}#${s.index}`), c.matched, why);
      }
      assert.equal(result.steps.length, result.rulesWalked);
    });
  }

  it('steps quote each rule as written and describe() lists them', () => {
    const result = traceCase({ name: 'comment', rules: filter('-I FORWARD -m comment --comment "allow web" -j ACCEPT'), verdict: 'ACCEPT' });
    assert.deepEqual(result.steps, [
      { table: 'filter', chain: 'FORWARD', index: 1, text: '-A FORWARD -m comment --comment "allow web" -j ACCEPT', matched: true },
    ]);
    assert.match(result.describe(), /ACCEPT by filter\/FORWARD rule 1/);
    assert.match(result.describe(), /allow web/);
  });

  it('load() re-declaring an existing user chain flushes it, like iptables-restore --noflush', () => {
    const model = IptablesModel.parse(filter(':a - [0:0]', '-A FORWARD -j a', '-A a -j DROP'));
    model.load(filter(':a - [0:0]', '-A a -s 10.9.9.9 -j DROP'));
    assert.deepEqual(model.rules('a'), ['-A a -s 10.9.9.9 -j DROP']);
    assert.deepEqual(model.rules('FORWARD'), ['-A FORWARD -j a']);
    assert.deepEqual(model.chains(), ['INPUT', 'FORWARD', 'OUTPUT', 'a']);
    assert.equal(model.trace('FORWARD', TCP_PACKET, NO_SETS).verdict, 'ACCEPT');
  });

  it('a jump loop is stopped by the walk guard', () => {
    const model = IptablesModel.parse(filter(':a - [0:0]', ':b - [0:0]', '-A FORWARD -j a', '-A a -g b', '-A b -g a'));
    assert.throws(() => model.trace('FORWARD', TCP_PACKET, NO_SETS), /more than 100000 rules walked/);
  });
});

interface ErrorCase {
  name: string;
  run: () => unknown;
  error: RegExp;
}

const parseAndTrace = (rules: string, sets = '', packet: Partial<Packet> = {}) => () =>
  IptablesModel.parse(rules).trace('FORWARD', { ...TCP_PACKET, ...packet }, IpsetModel.parse(sets));

const ERROR_CASES: ErrorCase[] = [
  {
    name: 'an unknown option throws naming the line',
    run: () => IptablesModel.parse(filter('-A FORWARD -p tcp --frobnicate 1 -j ACCEPT')),
    error: /unknown option "--frobnicate" \(line 2: -A FORWARD -p tcp --frobnicate 1 -j ACCEPT\)/,
  },
  { name: 'an unknown match module throws', run: () => IptablesModel.parse(filter('-A FORWARD -m recent --set')), error: /unsupported match module "recent"/ },
  { name: 'an unmodelled target throws', run: () => IptablesModel.parse(filter('-A FORWARD -j CT --notrack')), error: /unsupported target CT/ },
  { name: 'an unknown command throws', run: () => IptablesModel.parse(filter('-Z FORWARD')), error: /unsupported command/ },
  { name: 'a stray word throws', run: () => IptablesModel.parse(filter('-A FORWARD -j ACCEPT now')), error: /unexpected token "now"/ },
  { name: 'a negation of an option that cannot be negated throws', run: () => IptablesModel.parse(filter('-A FORWARD ! -j ACCEPT')), error: /cannot be negated/ },
  { name: '-m tcp without -p tcp throws', run: () => IptablesModel.parse(filter('-A FORWARD -m tcp --dport 80 -j ACCEPT')), error: /-m tcp needs -p tcp/ },
  { name: 'a multiport list longer than 15 slots throws', run: () => IptablesModel.parse(filter('-A FORWARD -p tcp -m multiport --dports 1:2,3:4,5:6,7:8,9:10,11:12,13:14,15,16')), error: /too long/ },
  { name: 'an unterminated quote throws', run: () => IptablesModel.parse(filter('-A FORWARD -m comment --comment "oops -j ACCEPT')), error: /unterminated/ },
  { name: 'appending to an undeclared chain throws', run: () => IptablesModel.parse(filter('-A nowhere -j ACCEPT')), error: /chain nowhere does not exist/ },
  { name: 'a table without COMMIT throws', run: () => IptablesModel.parse('*filter\n-A FORWARD -j ACCEPT\n'), error: /never COMMITted/ },
  { name: 'a rule outside a table throws', run: () => IptablesModel.parse('-A FORWARD -j ACCEPT\n'), error: /outside a \*table/ },
  { name: 'an unknown table throws', run: () => IptablesModel.parse('*security\nCOMMIT\n'), error: /unsupported table/ },
  { name: 'a jump to a builtin chain throws', run: () => IptablesModel.parse(filter('-A FORWARD -j INPUT')), error: /cannot jump to builtin chain/ },
  { name: 'tracing into an undefined chain throws', run: parseAndTrace(filter('-A FORWARD -j pal-missing')), error: /undefined chain pal-missing/ },
  {
    name: 'tracing a table that names an undefined set throws even if the packet never reaches the rule',
    run: parseAndTrace(filter('-A FORWARD -j ACCEPT', '-A FORWARD -m set --match-set pal-nope src -j DROP')),
    error: /undefined set pal-nope/,
  },
  {
    name: 'a --match-set with the wrong number of direction flags throws',
    run: parseAndTrace(filter('-A FORWARD -m set --match-set pal-svc dst -j DROP'), IP_PORT_SETS),
    error: /1 direction flag/,
  },
  {
    name: 'a port match on a packet without that port throws',
    run: parseAndTrace(filter('-A FORWARD -p tcp --dport 80 -j DROP'), '', { dport: undefined }),
    error: /packet has none/,
  },
  { name: 'hash:net rejects a /0 member', run: () => IpsetModel.parse('create s hash:net\nadd s 0.0.0.0/0'), error: /\/0/ },
  { name: 'an unknown set type throws', run: () => IpsetModel.parse('create s list:set'), error: /unsupported set type/ },
  { name: 'adding to an undefined set throws', run: () => IpsetModel.parse('add s 10.0.0.1'), error: /set s does not exist/ },
  { name: 'adding a duplicate member without -exist throws', run: () => IpsetModel.parse('create s hash:ip\nadd s 10.0.0.1\nadd s 10.0.0.1'), error: /already in set/ },
  { name: 'nomatch on a hash:ip set throws', run: () => IpsetModel.parse('create s hash:ip\nadd s 10.0.0.1 nomatch'), error: /nomatch is not supported/ },
  { name: 'an unknown create option throws', run: () => IpsetModel.parse('create s hash:ip wibble 3'), error: /unknown create option/ },
  { name: 'testing an undefined set throws', run: () => IpsetModel.parse('').test('nope', ['src'], TCP_PACKET), error: /not defined/ },
];

describe('tracer: strictness', () => {
  for (const c of ERROR_CASES) it(c.name, () => assert.throws(c.run, c.error));
});

describe('tracer: IpsetModel', () => {
  it('keeps members in canonical form and applies flush, destroy, swap and -exist', () => {
    const sets = IpsetModel.parse(
      [
        'create a hash:net family inet hashsize 1024 maxelem 65536 -exist',
        'create a hash:net -exist',
        'add a 10.1.2.3/16',
        'add a 10.2.0.0/16 nomatch',
        'add a 10.2.0.0/16 -exist',
        'create b hash:ip,port',
        'add b 10.0.0.1,80',
        'create tmp hash:net',
        'add tmp 192.168.0.0/24',
        'swap tmp a',
        'destroy tmp',
      ].join('\n'),
    );
    assert.deepEqual(sets.names(), ['a', 'b']);
    assert.deepEqual(sets.members('a'), ['192.168.0.0/24']);
    assert.deepEqual(sets.members('b'), ['10.0.0.1,tcp:80']);
    assert.equal(sets.has('tmp'), false);
    const before = IpsetModel.parse('create a hash:net\nadd a 10.1.2.3/16\nadd a 10.2.0.0/16 nomatch\nadd a 10.2.0.0/16 -exist');
    assert.deepEqual(before.members('a'), ['10.1.0.0/16', '10.2.0.0/16']);
    assert.equal(IpsetModel.parse('create a hash:ip\nadd a 10.0.0.1\nflush a').members('a').length, 0);
  });

  it('tests source and destination dimensions separately', () => {
    const sets = IpsetModel.parse('create s hash:ip,port\nadd s 10.0.0.1,udp:5353');
    const packet: Packet = { src: '10.0.0.1', dst: '10.0.0.2', protocol: 'udp', sport: 5353, dport: 53 };
    assert.equal(sets.test('s', ['src', 'src'], packet), true);
    assert.equal(sets.test('s', ['src', 'dst'], packet), false);
  });
});

const SETS_FOR_CHECK = IpsetModel.parse('create pal-ok hash:ip\ncreate pal-ports hash:ip,port');

interface CheckCase {
  name: string;
  rules: string;
  sets?: IpsetModel;
  problems: RegExp[];
}

const CHECK_CASES: CheckCase[] = [
  {
    name: 'a well-formed ruleset has no problems',
    rules: filter(':pal-a - [0:0]', '-A FORWARD -j pal-a', '-A pal-a -m set --match-set pal-ok src -j ACCEPT'),
    sets: SETS_FOR_CHECK,
    problems: [],
  },
  {
    name: 'a jump to an undeclared chain is reported',
    rules: filter('-A FORWARD -j pal-missing'),
    problems: [/^filter\/FORWARD rule 1: jump to undeclared chain pal-missing$/],
  },
  {
    name: 'a jump loop is reported once',
    rules: filter(':pal-b - [0:0]', ':pal-a - [0:0]', '-A FORWARD -j pal-a', '-A pal-a -j pal-b', '-A pal-b -g pal-a'),
    problems: [/^jump loop: pal-a -> pal-b -> pal-a$/],
  },
  {
    name: 'a chain name over 28 characters is reported',
    rules: filter(`:${'c'.repeat(29)} - [0:0]`, `-A FORWARD -j ${'c'.repeat(29)}`),
    problems: [/^chain name too long \(29 > 28\)/],
  },
  {
    name: 'a set name over 31 characters is reported',
    rules: filter(`-A FORWARD -m set --match-set ${'s'.repeat(32)} src -j DROP`),
    problems: [/^set name too long \(32 > 31\)/],
  },
  {
    name: 'a --match-set naming a missing set is reported',
    rules: filter('-A FORWARD -m set --match-set pal-gone src -j DROP'),
    sets: SETS_FOR_CHECK,
    problems: [/^missing set: pal-gone \(filter\/FORWARD rule 1\)$/],
  },
  {
    name: 'a --match-set with the wrong number of flags for the set type is reported',
    rules: filter('-A FORWARD -m set --match-set pal-ports dst -j DROP'),
    sets: SETS_FOR_CHECK,
    problems: [/hash:ip,port but --match-set gives 1 direction flag/],
  },
  {
    name: 'a chain declared twice in one text is reported',
    rules: filter(':pal-a - [0:0]', ':pal-a - [0:0]', '-A FORWARD -j pal-a'),
    problems: [/^chain declared twice in one text: filter\/pal-a/],
  },
  {
    name: 'a chain no builtin chain reaches is reported as unreachable',
    rules: filter(':pal-orphan - [0:0]'),
    problems: [/^unreachable: pal-orphan$/],
  },
];

describe('tracer: check()', () => {
  for (const c of CHECK_CASES) {
    it(c.name, () => {
      const problems = IptablesModel.parse(c.rules).check(c.sets);
      assert.equal(problems.length, c.problems.length, problems.join('\n'));
      c.problems.forEach((re, i) => assert.match(problems[i]!, re));
    });
  }
});
