import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UlogdReader } from '../lib/drop-log/ulogd-reader.js';
import { SequenceTracker } from '../lib/drop-log/sequence-gaps.js';
import { spawnCollect } from '../lib/exec.js';
import { silentLogger } from '../lib/logger.js';
import { NetworkNamespace, removeStaleNamespaces } from '../lib/netns.js';
import { namespaceBenchBlocked } from './preflight.js';
import type { Report } from './run.js';

/**
 * The drop log's NFLOG reader, measured: ulogd as palisade runs it (UlogdReader: NFLOG, BASE, IP2STR,
 * JSON over a unix socket, parsed in this process) against a minimal C reader of the netlink socket
 * (bench/native/nflog-read.c, one line per record on a pipe, parsed in this process too). Both are
 * configured alike: group bound with sequence numbers, 128 bytes copied, a 1 MiB socket buffer, the
 * kernel handing over each record at once (queue threshold 1).
 *
 * In a throwaway network namespace, a C sender (bench/native/nflog-send.c) sends UDP datagrams to
 * 127.0.0.1, each to its own port so its record names it; an NFLOG rule in mangle OUTPUT logs them
 * all and mangle INPUT drops them. For each rate: records received against datagrams sent, losses
 * the reader counted from sequence gaps, CPU seconds of the reader process per 1,000 records
 * (/proc/PID/stat), CPU of this process, the latency from sendto() to the record in this process,
 * and the reader's resident memory.
 */

const PREFIX = 'palbench-nflog';
const GROUP = 77;
const BASE_PORT = 20000;
const LOG_PREFIX = 'palisade DROP bench ns/pod-name-0123456789 ingress';
const RATES = [
  { label: '200/s', rate: 200, count: 1_000 },
  { label: '2,000/s', rate: 2_000, count: 6_000 },
  { label: '20,000/s', rate: 20_000, count: 40_000 },
  { label: 'as fast as possible', rate: 0, count: 40_000 },
] as const;
/** Linux's USER_HZ, the unit of /proc/PID/stat's times, on every architecture palisade runs on. */
const CLOCK_TICKS = 100;
/** A phase ends when every record arrived, or nothing arrived for this long after the sender finished. */
const QUIET_MS = 1_500;
const NATIVE_DIR = fileURLToPath(new URL('../../bench/native/', import.meta.url));

const nowUs = (): number => (performance.timeOrigin + performance.now()) * 1000;

interface Reader {
  readonly name: string;
  pid: number;
  /** Called with the destination port of each record as it reaches this process. */
  onRecord: (port: number) => void;
  /** Losses the reader itself counted (sequence gaps). */
  counted: number;
  stop: () => Promise<void>;
}

async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

async function memory(pid: number): Promise<{ rss: number; peak: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kib = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: kib('VmRSS') / 1024, peak: kib('VmHWM') / 1024 };
}

function quantile(values: number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length - 1) * q))]!;
}

async function build(dir: string, name: string): Promise<string> {
  const out = path.join(dir, name);
  const result = await spawnCollect(['cc', '-O2', '-o', out, path.join(NATIVE_DIR, `${name}.c`)], { timeoutMs: 60_000 });
  if (result.code !== 0) throw new Error(`cc ${name}.c failed: ${result.stderr.trim()}`);
  return out;
}

async function startUlogd(netns: NetworkNamespace, workDir: string): Promise<Reader> {
  const reader: Reader = { name: 'ulogd', pid: 0, onRecord: () => {}, counted: 0, stop: async () => {} };
  const ulogd = new UlogdReader({
    group: GROUP,
    runner: netns,
    workDir,
    logger: silentLogger,
    events: {
      packet: (p) => reader.onRecord(p.destinationPort ?? -1),
      lost: (count) => void (reader.counted += count),
    },
  });
  await ulogd.start();
  if (ulogd.pid === null) throw new Error('ulogd started without a pid');
  reader.pid = ulogd.pid;
  reader.stop = () => ulogd.stop();
  return reader;
}

async function startNative(netns: NetworkNamespace, binary: string): Promise<Reader> {
  const child: ChildProcess = netns.spawn([binary, String(GROUP), String(1 << 20), '1']);
  const tracker = new SequenceTracker();
  const reader: Reader = {
    name: 'C reader',
    pid: child.pid ?? 0,
    onRecord: () => {},
    counted: 0,
    stop: async () => {
      child.kill('SIGTERM');
      await new Promise((resolve) => (child.exitCode !== null ? resolve(null) : child.once('close', resolve)));
    },
  };
  let partial = '';
  await new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => reject(new Error(`nflog-read exited ${code}`)));
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        if (line === 'ready') resolve();
        if (line === 'ready' || line === 'overrun') continue;
        const fields = line.split(' ');
        const verdict = tracker.observe(Number(fields[0]));
        if (verdict.kind === 'gap') reader.counted += verdict.missing;
        reader.onRecord(Number(fields[6]));
      }
    });
  });
  return reader;
}

async function measure(report: Report, netns: NetworkNamespace, sender: string, reader: Reader): Promise<void> {
  for (const phase of RATES) {
    const arrived = new Float64Array(phase.count).fill(NaN);
    let received = 0;
    let last = Date.now();
    reader.counted = 0;
    reader.onRecord = (port) => {
      const i = port - BASE_PORT;
      if (i >= 0 && i < phase.count && Number.isNaN(arrived[i]!)) {
        arrived[i] = nowUs();
        received++;
        last = Date.now();
      }
    };
    const cpuBefore = await cpuSeconds(reader.pid);
    const nodeBefore = process.cpuUsage();
    const started = performance.now();
    const sent = await netns.exec([sender, '127.0.0.1', String(BASE_PORT), String(phase.count), String(phase.rate)], { timeoutMs: 300_000 });
    if (sent.code !== 0) throw new Error(`nflog-send failed: ${sent.stderr}`);
    const sendSeconds = (performance.now() - started) / 1000;
    last = Math.max(last, Date.now());
    while (received < phase.count && Date.now() - last < QUIET_MS) await new Promise((resolve) => setTimeout(resolve, 20));
    const cpu = (await cpuSeconds(reader.pid)) - cpuBefore;
    const node = process.cpuUsage(nodeBefore);
    const latencies: number[] = [];
    for (const line of sent.stdout.split('\n')) {
      const [i, at] = line.split(' ').map(Number);
      if (i === undefined || at === undefined || Number.isNaN(at)) continue;
      const arrival = arrived[i];
      if (arrival !== undefined && !Number.isNaN(arrival)) latencies.push((arrival - at) / 1000);
    }
    const per1k = (seconds: number) => (received === 0 ? 'n/a' : `${((seconds * 1000 * 1000) / received).toFixed(1)} ms`);
    const label = `${reader.name}, ${phase.label} (${Math.round(phase.count / sendSeconds).toLocaleString('en-US')}/s sent)`;
    const missing = phase.count - received;
    report.row(`${label}: received / sent`, `${received.toLocaleString('en-US')} / ${phase.count.toLocaleString('en-US')}`, phase.rate > 0 && phase.rate <= 2_000 ? { text: 'none lost', met: missing === 0 } : undefined);
    report.row(`${label}: lost, counted by the reader`, `${missing.toLocaleString('en-US')}, ${reader.counted.toLocaleString('en-US')}`);
    report.row(`${label}: reader CPU per 1,000 records`, per1k(cpu));
    report.row(`${label}: palisade-side CPU per 1,000 records`, per1k((node.user + node.system) / 1e6));
    report.row(`${label}: latency p50 / p99`, `${quantile(latencies, 0.5).toFixed(2)} / ${quantile(latencies, 0.99).toFixed(2)} ms`);
  }
  const { rss, peak } = await memory(reader.pid);
  report.row(`${reader.name}: resident memory, peak`, `${rss.toFixed(1)} MiB, ${peak.toFixed(1)} MiB`);
}

export async function run(report: Report): Promise<void> {
  report.section('nflog-reader: NFLOG records to palisade, ulogd (chosen) against a minimal C reader');
  const blocked = await namespaceBenchBlocked(PREFIX, ['cc', 'iptables', 'ulogd']);
  if (blocked !== null) {
    report.note(`skipped: ${blocked}`);
    return;
  }
  report.note(`UDP to 127.0.0.1 in a network namespace, each datagram logged by one NFLOG rule (prefix of ${LOG_PREFIX.length} characters, 128 bytes copied); readers bound with a 1 MiB buffer, queue threshold 1`);
  const dir = await mkdtemp(path.join(tmpdir(), 'palbench-nflog-'));
  const netns = await NetworkNamespace.create(PREFIX);
  try {
    const [sender, native] = [await build(dir, 'nflog-send'), await build(dir, 'nflog-read')];
    // Past 65535, iptables wraps the port silently (70000 becomes 4464).
    const ports = `${BASE_PORT}:65535`;
    await netns.run(['iptables', '-w', '-t', 'mangle', '-A', 'OUTPUT', '-o', 'lo', '-p', 'udp', '--dport', ports, '-j', 'NFLOG', '--nflog-group', String(GROUP), '--nflog-prefix', LOG_PREFIX, '--nflog-size', '128']);
    await netns.run(['iptables', '-w', '-t', 'mangle', '-A', 'INPUT', '-i', 'lo', '-p', 'udp', '--dport', ports, '-j', 'DROP']);
    for (const start of [() => startUlogd(netns, dir), () => startNative(netns, native)]) {
      const reader = await start();
      try {
        await measure(report, netns, sender, reader);
      } finally {
        await reader.stop();
      }
    }
  } finally {
    await netns.destroy();
    await rm(dir, { recursive: true, force: true });
    await removeStaleNamespaces(PREFIX);
  }
}
