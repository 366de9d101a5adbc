import assert from 'node:assert/strict';
import { SequenceTracker } from '../../lib/drop-log/sequence-gaps.js';
import { isGroupBusy, isUlogdReady, parseUlogdLogLine, renderUlogdConfig } from '../../lib/drop-log/ulogd-config.js';
import { parseUlogdLine } from '../../lib/drop-log/ulogd-record.js';

/** ulogd 2.0.8's JSON line for a UDP datagram, as its JSON plugin prints it (timestamp=0). */
function line(tweak: Record<string, unknown> = {}, drop: readonly string[] = []): string {
  const record: Record<string, unknown> = {
    dvc: 'Netfilter', 'raw.pktlen': 29, 'raw.pktcount': 1, 'oob.prefix': 'palisade DROP udp', 'oob.time.sec': 1796350084,
    'oob.time.usec': 958057, 'oob.mark': 0, 'oob.ifindex_in': 2, 'oob.hook': 1, 'oob.seq.local': 7, 'oob.family': 2,
    'oob.protocol': 2048, 'raw.label': 0, 'ip.protocol': 17, 'ip.tos': 0, 'ip.ttl': 64, 'ip.totlen': 29, 'ip.ihl': 5,
    src_port: 40002, dest_port: 7002, 'udp.len': 9, src_ip: '10.99.0.1', dest_ip: '10.99.0.2', ...tweak,
  };
  for (const key of drop) delete record[key];
  return JSON.stringify(record);
}

const READ_AT = new Date('2026-01-01T00:00:00Z');

function problemOf(text: string): string {
  const parsed = parseUlogdLine(text, READ_AT);
  assert.equal(parsed.ok, false, `expected a problem for ${text}`);
  return parsed.ok ? '' : parsed.problem;
}

describe('reading ulogd JSON lines', () => {
  it('reads a UDP record with its prefix, addresses, ports, kernel time and sequence number', () => {
    const parsed = parseUlogdLine(line(), READ_AT);
    assert.ok(parsed.ok);
    assert.deepEqual(parsed.packet, {
      prefix: 'palisade DROP udp', time: new Date(1796350084958), source: '10.99.0.1', destination: '10.99.0.2',
      protocol: 17, sourcePort: 40002, destinationPort: 7002, icmpType: null,
    });
    assert.equal(parsed.seq, 7);
  });

  it('reads ICMP with its type and no ports', () => {
    const parsed = parseUlogdLine(line({ 'ip.protocol': 1, 'icmp.type': 3, 'icmp.code': 3 }, ['src_port', 'dest_port']), READ_AT);
    assert.ok(parsed.ok);
    assert.equal(parsed.packet.icmpType, 3);
    assert.equal(parsed.packet.sourcePort, null);
  });

  it('reads SCTP ports under their own names when the CIM names are absent', () => {
    const parsed = parseUlogdLine(line({ 'ip.protocol': 132, 'sctp.sport': 5000, 'sctp.dport': 5001 }, ['src_port', 'dest_port']), READ_AT);
    assert.ok(parsed.ok);
    assert.deepEqual([parsed.packet.sourcePort, parsed.packet.destinationPort], [5000, 5001]);
  });

  it('gives null ports for a TCP record whose copy was too short to hold them', () => {
    const parsed = parseUlogdLine(line({ 'ip.protocol': 6 }, ['src_port', 'dest_port']), READ_AT);
    assert.ok(parsed.ok);
    assert.equal(parsed.packet.sourcePort, null);
  });

  it('ignores port fields of protocols without ports', () => {
    const parsed = parseUlogdLine(line({ 'ip.protocol': 47 }), READ_AT);
    assert.ok(parsed.ok);
    assert.deepEqual([parsed.packet.sourcePort, parsed.packet.destinationPort, parsed.packet.icmpType], [null, null, null]);
  });

  it('uses the time of reading when there is no timestamp, and an empty prefix when the rule has none', () => {
    const parsed = parseUlogdLine(line({}, ['oob.time.sec', 'oob.time.usec', 'oob.prefix']), READ_AT);
    assert.ok(parsed.ok);
    assert.equal(parsed.packet.time, READ_AT);
    assert.equal(parsed.packet.prefix, '');
  });

  it('reads a record without a sequence number, with seq null', () => {
    const parsed = parseUlogdLine(line({}, ['oob.seq.local']), READ_AT);
    assert.ok(parsed.ok);
    assert.equal(parsed.seq, null);
  });

  const malformed: [string, string, string][] = [
    ['a truncated line', line().slice(0, 40), 'not-json'],
    ['an empty line', '', 'not-json'],
    ['a JSON array', '[1,2]', 'not-an-object'],
    ['a JSON string', '"x"', 'not-an-object'],
    ['null', 'null', 'not-an-object'],
    ['an IPv6 record', line({ 'oob.family': 10, src_ip: '2001:db8::1' }), 'not-ipv4'],
    ['a record without addresses', line({}, ['src_ip', 'dest_ip']), 'no-addresses'],
    ['a record without a protocol', line({}, ['ip.protocol']), 'no-protocol'],
    ['an address that is not dotted IPv4', line({ src_ip: '10.0.0.256' }), 'bad-field'],
    ['an address that is a number', line({ dest_ip: 167772161 }), 'bad-field'],
    ['a port out of range', line({ dest_port: 70000 }), 'bad-field'],
    ['a negative port', line({ src_port: -1 }), 'bad-field'],
    ['a port that is a string', line({ src_port: '80' }), 'bad-field'],
    ['a protocol over 255', line({ 'ip.protocol': 300 }), 'bad-field'],
    ['a prefix that is not a string', line({ 'oob.prefix': 5 }), 'bad-field'],
    ['a fractional sequence number', line({ 'oob.seq.local': 1.5 }), 'bad-field'],
  ];
  for (const [what, text, problem] of malformed) {
    it(`skips ${what} as ${problem}, without throwing`, () => assert.equal(problemOf(text), problem));
  }
});

describe('counting lost records from NFLOG sequence numbers', () => {
  it('counts nothing for records in order from 0', () => {
    const tracker = new SequenceTracker();
    for (let seq = 0; seq < 5; seq++) assert.deepEqual(tracker.observe(seq), { kind: 'next' });
  });

  it('counts the records a gap skipped, and records lost before the first one read', () => {
    const tracker = new SequenceTracker();
    assert.deepEqual(tracker.observe(3), { kind: 'gap', missing: 3, expected: 0 });
    assert.deepEqual(tracker.observe(4), { kind: 'next' });
    assert.deepEqual(tracker.observe(10), { kind: 'gap', missing: 5, expected: 5 });
  });

  it('follows the 32-bit counter across its wrap', () => {
    const tracker = new SequenceTracker();
    tracker.observe(2 ** 32 - 2);
    assert.deepEqual(tracker.observe(2 ** 32 - 1), { kind: 'next' });
    assert.deepEqual(tracker.observe(0), { kind: 'next' });
    assert.deepEqual(tracker.observe(2), { kind: 'gap', missing: 1, expected: 1 });
  });

  it('calls a number from before a step backwards, not billions lost', () => {
    const tracker = new SequenceTracker();
    tracker.observe(0);
    tracker.observe(1);
    assert.deepEqual(tracker.observe(0), { kind: 'backwards', expected: 2 });
  });

  it('starts from 0 again after a reset (a new listener)', () => {
    const tracker = new SequenceTracker();
    tracker.observe(0);
    tracker.observe(1);
    tracker.reset();
    assert.deepEqual(tracker.observe(0), { kind: 'next' });
  });
});

describe('the ulogd configuration and log', () => {
  const base = { group: 42, pluginDir: '/usr/lib/x86_64-linux-gnu/ulogd/', socketPath: '/run/palisade/ulogd.sock', socketBufferBytes: 1 << 20, queueThreshold: 1, queueTimeoutMs: 100 };

  it('writes one NFLOG, BASE, IP2STR, JSON stack on the group, numbered, with JSON to the socket', () => {
    const text = renderUlogdConfig(base);
    assert.match(text, /^stack=log1:NFLOG,base1:BASE,ip2str1:IP2STR,json1:JSON$/m);
    assert.match(text, /^plugin="\/usr\/lib\/x86_64-linux-gnu\/ulogd\/ulogd_output_JSON.so"$/m);
    for (const setting of ['group=42', 'seq_local=1', 'bind=0', 'unbind=0', 'netlink_socket_buffer_size=1048576', 'netlink_qthreshold=1', 'netlink_qtimeout=10', 'mode="unix"', 'file="/run/palisade/ulogd.sock"', 'logfile="stdout"']) {
      assert.ok(text.split('\n').includes(setting), `has ${setting}`);
    }
  });

  it('refuses group 0 (ulogd would take over the family-wide logger), a quote in a path, and a socket path too long', () => {
    assert.throws(() => renderUlogdConfig({ ...base, group: 0 }), /NFLOG group 0/);
    assert.throws(() => renderUlogdConfig({ ...base, group: 65536 }), /NFLOG group 65536/);
    assert.throws(() => renderUlogdConfig({ ...base, pluginDir: '/x"y' }), /quote/);
    assert.throws(() => renderUlogdConfig({ ...base, socketPath: `/${'x'.repeat(120)}` }), /longer than 107 bytes/);
  });

  it('reads the level of ulogd\'s log lines, its readiness and a busy group', () => {
    assert.deepEqual(parseUlogdLogLine('Fri Dec  4 02:08:02 2026 <3> ulogd.c:1645 initialization finished, entering main loop'), { level: 3, message: 'ulogd.c:1645 initialization finished, entering main loop' });
    assert.ok(isUlogdReady('ulogd.c:1645 initialization finished, entering main loop'));
    assert.ok(isGroupBusy(parseUlogdLogLine('Fri Dec  4 02:08:48 2026 <7> ulogd_inppkt_NFLOG.c:619 unable to bind to log group 5').message));
    assert.deepEqual(parseUlogdLogLine('Fatal error.'), { level: null, message: 'Fatal error.' });
  });
});
