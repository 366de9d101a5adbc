/**
 * The drop log's NFLOG reader against the kernel: two network namespaces joined by a veth, NFLOG
 * rules in the receiving namespace's mangle table, and ulogd run by UlogdReader inside that
 * namespace. Every packet is sent between the two namespaces' own addresses.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PalisadeError } from '../../lib/errors.js';
import { commandAvailable } from '../../lib/exec.js';
import type { Logger } from '../../lib/logger.js';
import type { NflogPacket } from '../../lib/drop-log/nflog-packet.js';
import { UlogdReader } from '../../lib/drop-log/ulogd-reader.js';
import type { UlogdReaderOptions } from '../../lib/drop-log/ulogd-reader.js';
import type { NetworkNamespace } from '../../lib/netns.js';
import { useNetns } from '../support/netns-fixture.js';

const SENDER_IP = '10.99.0.1';
const RECEIVER_IP = '10.99.0.2';
const GROUP = 42;
const TCP_PORT = 7001;
const UDP_PORT = 7002;
const CLOSED_UDP_PORT = 7003;

/** Sends from inside a namespace: `udp HOST PORT COUNT LOCALPORT` datagrams, or one `tcp` SYN, from LOCALPORT. */
const SENDER = `
const [kind, host, port, count, localPort] = process.argv.slice(1);
if (kind === 'udp') {
  const socket = require('node:dgram').createSocket('udp4');
  socket.on('error', () => {});
  socket.bind(Number(localPort), () => {
    let left = Number(count);
    const next = () => (left-- > 0 ? socket.send('x', Number(port), host, next) : socket.close());
    next();
  });
} else {
  const connection = require('node:net').connect({ host, port: Number(port), localPort: Number(localPort) });
  connection.on('error', () => {});
  setTimeout(() => connection.destroy(), 300);
}`;

async function send(from: NetworkNamespace, kind: 'udp' | 'tcp', port: number, localPort: number, count = 1): Promise<void> {
  await from.run([process.execPath, '-e', SENDER, kind, RECEIVER_IP, String(port), String(count), String(localPort)]);
}

async function waitFor(what: string, condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

interface Recorded {
  readonly packets: NflogPacket[];
  readonly lost: { count: number; why: string }[];
  readonly logs: { level: string; message: string; fields: Record<string, unknown> }[];
  readonly logger: Logger;
}

function recorder(): Recorded {
  const logs: Recorded['logs'] = [];
  const at = (level: string) => (fields: Record<string, unknown>, message: string) => void logs.push({ level, message, fields });
  return { packets: [], lost: [], logs, logger: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') } };
}

describe('the NFLOG reader (ulogd) in network namespaces', function () {
  const sender = useNetns('paltest-nflog-a');
  const receiver = useNetns('paltest-nflog-b');
  const readers: UlogdReader[] = [];
  const dirs: string[] = [];

  before(async function () {
    if (!(await commandAvailable('ulogd')) && !(await commandAvailable('/usr/sbin/ulogd'))) {
      if (process.env['PALISADE_REQUIRE_NETNS'] === '1') throw new Error('ulogd required but not installed (apt-get install ulogd2 ulogd2-json)');
      console.warn('      skipped: ulogd is not installed (apt-get install ulogd2 ulogd2-json)');
      this.skip();
    }
    const a = sender();
    const b = receiver();
    await a.run(['ip', 'link', 'add', 'nflog0', 'type', 'veth', 'peer', 'name', 'nflog1', 'netns', b.name]);
    await a.run(['ip', 'address', 'add', `${SENDER_IP}/24`, 'dev', 'nflog0']);
    await a.run(['ip', 'link', 'set', 'nflog0', 'up']);
    await b.run(['ip', 'address', 'add', `${RECEIVER_IP}/24`, 'dev', 'nflog1']);
    await b.run(['ip', 'link', 'set', 'nflog1', 'up']);
    const log = (chain: string, match: string[], prefix: string) => ['-A', chain, ...match, '-j', 'NFLOG', '--nflog-group', String(GROUP), '--nflog-prefix', prefix, '--nflog-size', '128'];
    const rules = [
      log('INPUT', ['-p', 'tcp', '--syn', '--dport', String(TCP_PORT)], 'palisade DROP tcp'),
      ['-A', 'INPUT', '-p', 'tcp', '--dport', String(TCP_PORT), '-j', 'DROP'],
      log('INPUT', ['-p', 'udp', '--dport', String(UDP_PORT)], 'palisade DROP udp'),
      ['-A', 'INPUT', '-p', 'udp', '--dport', String(UDP_PORT), '-j', 'DROP'],
      // The closed port's answer: an ICMP port unreachable (type 3) leaving the receiver.
      log('OUTPUT', ['-p', 'icmp'], 'palisade DROP icmp'),
    ];
    for (const rule of rules) await b.run(['iptables', '-w', '-t', 'mangle', ...rule]);
  });

  afterEach(async () => {
    for (const reader of readers.splice(0)) await reader.stop();
    for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
  });

  async function reader(record: Recorded, options: Partial<UlogdReaderOptions> = {}): Promise<UlogdReader> {
    const workDir = await mkdtemp(path.join(tmpdir(), 'paltest-nflog-'));
    dirs.push(workDir);
    const made = new UlogdReader({
      group: GROUP,
      runner: receiver(),
      workDir,
      logger: record.logger,
      events: { packet: (p) => void record.packets.push(p), lost: (count, why) => void record.lost.push({ count, why }) },
      restartBaseMs: 50,
      ...options,
    });
    readers.push(made);
    return made;
  }

  it('turns a TCP SYN, a UDP datagram and an ICMP error into records with their prefix, addresses, ports and type', async () => {
    const seen = recorder();
    const r = await reader(seen);
    await r.start();
    assert.equal(r.running, true);
    const before = Date.now();
    await send(sender(), 'tcp', TCP_PORT, 40001);
    await send(sender(), 'udp', UDP_PORT, 40002);
    await send(sender(), 'udp', CLOSED_UDP_PORT, 40003);
    await waitFor('three kinds of record', () => ['tcp', 'udp', 'icmp'].every((k) => seen.packets.some((p) => p.prefix === `palisade DROP ${k}`)));
    const byPrefix = (kind: string) => seen.packets.find((p) => p.prefix === `palisade DROP ${kind}`)!;
    const { time: tcpTime, ...tcp } = byPrefix('tcp');
    assert.deepEqual(tcp, { prefix: 'palisade DROP tcp', source: SENDER_IP, destination: RECEIVER_IP, protocol: 6, sourcePort: 40001, destinationPort: TCP_PORT, icmpType: null });
    const { time: _udpTime, ...udp } = byPrefix('udp');
    assert.deepEqual(udp, { prefix: 'palisade DROP udp', source: SENDER_IP, destination: RECEIVER_IP, protocol: 17, sourcePort: 40002, destinationPort: UDP_PORT, icmpType: null });
    const { time: _icmpTime, ...icmp } = byPrefix('icmp');
    assert.deepEqual(icmp, { prefix: 'palisade DROP icmp', source: RECEIVER_IP, destination: SENDER_IP, protocol: 1, sourcePort: null, destinationPort: null, icmpType: 3 });
    assert.ok(Math.abs(tcpTime.getTime() - before) < 10_000, `record time ${tcpTime.toISOString()} is about now`);
    assert.deepEqual(seen.lost, [], 'nothing lost');
    assert.deepEqual([...r.skipped], [], 'no line skipped');
  });

  it('counts the records a full netlink buffer lost, from the sequence gap', async () => {
    const seen = recorder();
    const r = await reader(seen, { socketBufferBytes: 4096 });
    await r.start();
    const pid = r.pid;
    assert.ok(pid !== null);
    // ulogd stopped, the burst fills its socket's small buffer and the kernel drops the rest.
    process.kill(pid, 'SIGSTOP');
    try {
      await send(sender(), 'udp', UDP_PORT, 40010, 400);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    // The gap shows with the next record that gets through.
    await waitFor('the burst that fitted', () => seen.packets.length > 0);
    await new Promise((resolve) => setTimeout(resolve, 300));
    await send(sender(), 'udp', UDP_PORT, 40011, 1);
    await waitFor('the record after the burst', () => seen.packets.some((p) => p.sourcePort === 40011));
    const lost = seen.lost.reduce((sum, l) => sum + l.count, 0);
    assert.ok(lost > 0, `a loss was reported (received ${seen.packets.length})`);
    assert.equal(seen.packets.length + lost, 401, 'every record is either received or counted lost');
    assert.match(seen.lost[0]!.why, /never arrived/);
    assert.ok(seen.logs.some((l) => l.level === 'warn' && /overran/.test(l.message)), 'ulogd\'s overrun warning reaches the log');
  });

  it('refuses to start, saying so, when another listener holds the group', async () => {
    const first = await reader(recorder());
    await first.start();
    const second = await reader(recorder());
    await assert.rejects(second.start(), (error: unknown) => {
      assert.ok(error instanceof PalisadeError);
      assert.equal(error.code, 'NFLOG_GROUP_BUSY');
      assert.match(error.message, new RegExp(`NFLOG group ${GROUP} in network namespace paltest-nflog-b-\\w+ is already bound`));
      return true;
    });
    assert.equal(second.running, false);
  });

  it('says which program is missing', async () => {
    const r = await reader(recorder(), { program: '/nonexistent/ulogd' });
    await assert.rejects(r.start(), (error: unknown) => error instanceof PalisadeError && error.code === 'NFLOG_READER_MISSING' && /\/nonexistent\/ulogd/.test(error.message));
  });

  it('starts ulogd again when it is killed, numbering from 0 again without a false loss', async () => {
    const seen = recorder();
    const r = await reader(seen);
    await r.start();
    await send(sender(), 'udp', UDP_PORT, 40020, 3);
    await waitFor('three records', () => seen.packets.length === 3);
    const first = r.pid!;
    process.kill(first, 'SIGKILL');
    await waitFor('a new ulogd', () => r.pid !== null && r.pid !== first);
    assert.ok(seen.logs.some((l) => l.level === 'error' && /ulogd exited/.test(l.message)), 'the death is logged');
    await send(sender(), 'udp', UDP_PORT, 40021, 1);
    await waitFor('a record through the new ulogd', () => seen.packets.some((p) => p.sourcePort === 40021));
    assert.deepEqual(seen.lost, []);
    assert.equal(r.running, true);
  });

  it('skips malformed lines on its socket, logging each kind once, and keeps reading', async () => {
    const seen = recorder();
    const r = await reader(seen);
    await r.start();
    const socket = connect(path.join(dirs.at(-1)!, 'ulogd.sock'));
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.end('garbage\n{"truncated": \n[1,2]\n{"src_ip": "10.0.0.300", "dest_ip": "10.0.0.1", "ip.protocol": 6}\n');
    await waitFor('four lines skipped', () => [...r.skipped.values()].reduce((a, b) => a + b, 0) === 4);
    assert.deepEqual(Object.fromEntries(r.skipped), { 'not-json': 2, 'not-an-object': 1, 'bad-field': 1 });
    assert.equal(seen.logs.filter((l) => l.level === 'warn' && l.fields['kind'] === 'not-json').length, 1, 'one log line for the kind');
    await send(sender(), 'udp', UDP_PORT, 40030, 1);
    await waitFor('a record after the garbage', () => seen.packets.some((p) => p.sourcePort === 40030));
  });

  it('stops ulogd and removes its files', async () => {
    const r = await reader(recorder());
    await r.start();
    const pid = r.pid!;
    assert.deepEqual((await readdir(dirs.at(-1)!)).sort(), ['ulogd.conf', 'ulogd.pid', 'ulogd.sock']);
    await r.stop();
    assert.equal(r.running, false);
    assert.deepEqual(await readdir(dirs.at(-1)!), [], 'its work directory is left empty');
    await waitFor('ulogd gone', () => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    });
    // The group is free again.
    const again = await reader(recorder());
    await again.start();
  });
});
