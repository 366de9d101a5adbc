import type { ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DataplaneCompiler } from '../rules/compiler.js';
import type { Dataplane } from '../rules/dataplane.js';
import { Names } from '../rules/names.js';
import { parsePod } from '../rules/pod.js';
import { parsePolicy } from '../rules/policy.js';
import { makeSettings } from '../rules/settings.js';
import { loadedCompiler, parseObjects } from '../rules/snapshot.js';
import { liveStateFromDesired } from '../lib/dataplane/live-state.js';
import { plan, planIsEmpty } from '../lib/dataplane/plan.js';
import { NetworkNamespace } from '../lib/netns.js';
import { namespaceBenchBlocked } from './preflight.js';
import { percentile } from './compile.bench.js';
import { BENCH_SCALE, podLabelChange, policyWithExtraPort, policyWithNewPeer, syntheticCluster, withDoubledRemotePods } from './synthetic-cluster.js';
import type { Obj, SyntheticCluster, SyntheticOptions } from './synthetic-cluster.js';
import type { Report } from './run.js';

/**
 * The real daemon, as the process it is on a node: `node dist/daemon/main.js daemon`, started exactly
 * as the README says (no V8 flags from the launcher), against the lab API server (its own process)
 * holding the synthetic cluster of real-sized pod objects (bench/real-pod.ts: about 7.5 KB each, with
 * managedFields, statuses and the rest), both inside a throwaway network namespace, with the kernel's
 * iptables and ipsets of that namespace as the dataplane. Measured from the outside:
 *
 * - start to ready: from spawning the daemon to its "ready" log line (the first apply completed), in
 *   wall time and in CPU seconds of the daemon and the programs it ran (from /proc);
 * - memory: VmRSS a few seconds after ready, and VmHWM (the peak), from /proc; again after a burst of
 *   10,000 pod updates (a rolling restart's worth);
 * - what the daemon reads from the API server: bytes at start and per 1,000 pod changes;
 * - growth: start and memory at 10,000, 25,000 and 50,000 pods;
 * - change to enforced: t0 just before the change is posted to the fake API server, until the
 *   `time` of the daemon's next "dataplane written" log line (logged once the writes completed).
 *   Only changes that alter this node's rules are used (checked beforehand on an in-process compiler
 *   fed the same cluster), each followed by its undo (also measured), one at a time: the next change
 *   is posted only once the daemon is idle again (no child process, its main thread not running).
 *
 * The latency part runs again on the same cluster with twice the remote pods, to show whether it
 * grows with the size of the cluster.
 *
 * PALBENCH_DAEMON_NODE_FLAGS (space-separated, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") is passed
 * to the daemon's node, for profiling; runDaemon() and the change pickers are exported for scripts
 * that correlate a profile with the measured changes (RunResult keeps t0 and every log line).
 *
 * The machine may be shared: how many cores other processes kept busy is reported, and the p99 of
 * the changes measured while the rest of the machine was quiet.
 */

const CHANGES = 100;
const GOAL_READY_MS = 3000;
const GOAL_READY_CPU_S = 2.5;
const GOAL_RSS_MIB = 150;
const GOAL_HWM_MIB = 180;
const GOAL_MIB_PER_1000_PODS = 2000 / 1024;
const BURST = 10_000;
/** Start-up runs whose median is reported. */
const STARTS = 3;
/** The daemon benchmark's cluster: the issue's figures are for 100 pods on the node. */
export const DAEMON_SCALE: SyntheticOptions = { ...BENCH_SCALE, localPods: 100 };
const GROWTH = [10_000, 25_000, 50_000] as const;
const GOAL_POD_P99_MS = 100;
const GOAL_POLICY_P99_MS = 200;
/** How much the median may grow with twice the remote pods and still count as "not growing" (noise). */
const GROWTH_ALLOWANCE = 1.25;
const SYNC_DELAY = '20ms';
/** Namespaces are palbench-daemon-XXXXXX: stale ones of this benchmark only are removed, never other runs' palbench-*. */
const PREFIX = 'palbench-daemon';
const SETTLE_MS = 3000;
const WRITE_TIMEOUT_MS = 5000;
/** A change counts as measured on a quiet machine when other processes kept fewer cores busy meanwhile. */
const QUIET_CORES = 0.5;

const ROOT = path.resolve(fileURLToPath(import.meta.url), '../../..');
const DAEMON_MAIN = path.join(ROOT, 'dist/daemon/main.js');
/** The lab API server's executable. */
const FAKE_API_MAIN = path.join(ROOT, 'dist/lib/lab/api-server-main.js');

const ms = (value: number) => (Number.isFinite(value) ? `${value.toFixed(value < 10 ? 1 : 0)} ms` : 'n/a');
const mib = (kib: number) => `${(kib / 1024).toFixed(1)} MiB`;
const count = (n: number) => n.toLocaleString('en-US');
const median = (values: readonly number[]) => percentile(values, 0.5);
const p99 = (values: readonly number[]) => percentile(values, 0.99);
const mean = (values: readonly number[]) => values.reduce((a, b) => a + b, 0) / Math.max(1, values.length);
const sleep = (milliseconds: number) => new Promise<void>((resolve) => setTimeout(resolve, milliseconds));

// ---------------------------------------------------------------------------------------------------------
// Processes in the namespace
// ---------------------------------------------------------------------------------------------------------

export interface LogLine {
  readonly time: number;
  readonly msg: string;
  readonly [field: string]: unknown;
}

/** A program run with `ip netns exec`, its output split into whole lines and JSON log lines parsed. */
class NsProcess {
  readonly child: ChildProcess;
  readonly lines: string[] = [];
  readonly logs: LogLine[] = [];
  private readonly partial = { stdout: '', stderr: '' };
  private wakers: (() => void)[] = [];
  private readonly exited: Promise<void>;

  constructor(ns: NetworkNamespace, argv: readonly string[]) {
    this.child = ns.spawn(argv);
    const collect = (stream: 'stdout' | 'stderr') => (chunk: Buffer) => {
      const parts = (this.partial[stream] + chunk.toString('utf8')).split('\n');
      this.partial[stream] = parts.pop() ?? '';
      for (const line of parts) if (line !== '') this.line(line);
    };
    this.child.stdout?.on('data', collect('stdout'));
    this.child.stderr?.on('data', collect('stderr'));
    this.exited = new Promise((resolve) => this.child.on('exit', () => {
      this.wake();
      resolve();
    }));
    this.child.on('error', () => this.wake());
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  private line(line: string): void {
    this.lines.push(line);
    if (line.startsWith('{')) {
      try {
        const parsed = JSON.parse(line) as Partial<LogLine>;
        if (typeof parsed.time === 'number' && typeof parsed.msg === 'string') this.logs.push(parsed as LogLine);
      } catch {
        // not a log line
      }
    }
    this.wake();
  }

  private wake(): void {
    const wakers = this.wakers;
    this.wakers = [];
    for (const w of wakers) w();
  }

  /** Resolves with find()'s first defined answer, re-asked on every new line; fails on exit or timeout. */
  async waitFor<T>(what: string, find: () => T | undefined, timeoutMs: number): Promise<T> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const found = find();
      if (found !== undefined) return found;
      if (!this.running) throw new Error(`${what}: the process exited (code ${this.child.exitCode}, signal ${this.child.signalCode}); last output:\n${this.lines.slice(-20).join('\n')}`);
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`${what}: timed out after ${timeoutMs} ms; last output:\n${this.lines.slice(-20).join('\n')}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wakers.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  logAfter(index: number, msg: string): { line: LogLine; index: number } | undefined {
    for (let i = index; i < this.logs.length; i++) if (this.logs[i]!.msg === msg) return { line: this.logs[i]!, index: i };
    return undefined;
  }

  /** SIGTERM, then SIGKILL if it has not exited after `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    if (this.child.pid === undefined) return;
    if (this.running) this.child.kill('SIGTERM');
    const timer = setTimeout(() => {
      if (this.running) this.child.kill('SIGKILL');
    }, graceMs);
    try {
      await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}

/** POST /fake/apply on the fake API server's admin socket (unix sockets cross network namespaces). */
function adminApply(socket: string, body: unknown): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, path: '/fake/apply', method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`admin apply: HTTP ${res.statusCode}: ${Buffer.concat(chunks).toString('utf8').slice(0, 300)}`))));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

// ---------------------------------------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------------------------------------

function procStatusKib(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match === null ? NaN : Number(match[1]);
}

/** The spawned `ip netns exec` child must be the daemon itself (ip execs in place), in the namespace. */
function verifyDaemonPid(pid: number, ns: NetworkNamespace): string | null {
  const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  if (!cmdline.includes(DAEMON_MAIN) || !cmdline.includes('daemon')) return `pid ${pid} runs ${cmdline.join(' ')}, not the daemon`;
  if (statSync(`/proc/${pid}/ns/net`).ino !== statSync(`/run/netns/${ns.name}`).ino) return `pid ${pid} is not in network namespace ${ns.name}`;
  return null;
}

function hasChildren(pid: number): boolean {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue;
    }
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid === pid) return true;
  }
  return false;
}

/** CPU seconds used by the whole machine (all processes), from /proc/stat. */
function machineBusySeconds(): number {
  const fields = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
  return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS;
}

/** CPU seconds used by a process and the children it has waited for (the daemon's iptables and ipset runs). */
function processSeconds(pid: number): number {
  const { own, children } = processSecondsSplit(pid);
  return own + children;
}

function processSecondsSplit(pid: number): { own: number; children: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
  // Fields 14-17 of stat (utime stime cutime cstime) are 11-14 after "state".
  return { own: ((fields[11] ?? 0) + (fields[12] ?? 0)) / CLOCK_TICKS, children: ((fields[13] ?? 0) + (fields[14] ?? 0)) / CLOCK_TICKS };
}

const CLOCK_TICKS = 100;

/** Nanoseconds the main (JavaScript) thread has run. */
function mainThreadNs(pid: number): number {
  return Number(readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ')[0]);
}

/**
 * Waits until the process has had no child process and its main thread has used (almost) no CPU for
 * `quietMs`; returns the epoch ms at which it went quiet, or NaN on timeout.
 */
async function idle(pid: number, quietMs = 30, timeoutMs = 10_000): Promise<number> {
  const started = performance.now();
  let quietSince = Date.now();
  let cpu = mainThreadNs(pid);
  for (;;) {
    await sleep(5);
    const now = Date.now();
    const next = mainThreadNs(pid);
    if (next - cpu > 500_000 || hasChildren(pid)) quietSince = now;
    cpu = next;
    if (now - quietSince >= quietMs) return quietSince;
    if (performance.now() - started > timeoutMs) return NaN;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Changes that alter this node's rules, found on an in-process compiler fed the same cluster
// ---------------------------------------------------------------------------------------------------------

interface Written {
  readonly chains: number;
  readonly deleted: number;
  readonly sets: number;
}

export interface Change {
  readonly kind: 'pod' | 'policy';
  /** e.g. "local pod relabel", "policy: one more port". */
  readonly what: string;
  readonly undo: boolean;
  readonly object: Obj;
  /** What the in-process compiler says the write touches. */
  readonly expected: Written;
}

function identityChanged(before: Dataplane, after: Dataplane): boolean {
  for (const field of ['chains', 'ipsets'] as const) {
    const [a, b] = [before[field] as ReadonlyMap<string, unknown>, after[field] as ReadonlyMap<string, unknown>];
    if (a.size !== b.size) return true;
    for (const [name, value] of b) if (a.get(name) !== value) return true;
  }
  return false;
}

export class Shadow {
  private readonly compiler: DataplaneCompiler;
  private readonly names: Names;
  private current: Dataplane;
  readonly baseline: Dataplane;

  constructor(cluster: SyntheticCluster) {
    const settings = makeSettings({ nodeName: cluster.localNode });
    if (!settings.ok) throw new Error(settings.errors.join('; '));
    this.names = new Names(settings.settings.chainPrefix);
    const { snapshot } = parseObjects(cluster.objects.map((object) => ({ object })));
    this.compiler = loadedCompiler(snapshot, settings.settings);
    this.baseline = this.compiler.build();
    this.current = this.baseline;
  }

  private set(kind: 'pod' | 'policy', object: Obj): void {
    if (kind === 'pod') {
      const record = parsePod(object).record;
      if (record === null) throw new Error('changed pod did not parse');
      this.compiler.setPod(record);
    } else {
      const record = parsePolicy(object).record;
      if (record === null) throw new Error('changed policy did not parse');
      this.compiler.setPolicy(record);
    }
  }

  /** Applies the object; returns what the write would touch, or null when this node's rules stay as they are. */
  private step(kind: 'pod' | 'policy', object: Obj): Written | null {
    this.set(kind, object);
    const before = this.current;
    this.current = this.compiler.build();
    if (!identityChanged(before, this.current)) return null;
    const writes = plan(this.current, liveStateFromDesired(before), this.names);
    return planIsEmpty(writes) ? null : { chains: writes.chainsWritten.length, deleted: writes.chainsDeleted.length, sets: writes.setsWritten.length };
  }

  /** Keeps the candidates whose change (and undo) both alter this node's rules, as change/undo pairs. */
  pick(kind: 'pod' | 'policy', candidates: Iterable<{ what: string; changed: Obj; original: Obj }>, pairs: number): Change[] {
    const out: Change[] = [];
    for (const { what, changed, original } of candidates) {
      if (out.length >= 2 * pairs) break;
      const forward = this.step(kind, changed);
      const back = this.step(kind, original);
      if (forward === null || back === null) continue;
      out.push({ kind, what, undo: false, object: changed, expected: forward }, { kind, what, undo: true, object: original, expected: back });
    }
    return out;
  }
}

function* stride(indexes: readonly number[], n: number): Iterable<number> {
  const step = Math.max(1, Math.floor(indexes.length / n));
  for (let round = 0; round < step; round++) for (let i = round; i < indexes.length; i += step) yield indexes[i]!;
}

function* interleave<T>(...sources: Iterable<T>[]): Iterable<T> {
  const iterators = sources.map((s) => s[Symbol.iterator]());
  for (let live = iterators.length; live > 0;) {
    live = 0;
    for (const it of iterators) {
      const next = it.next();
      if (next.done !== true) {
        live++;
        yield next.value;
      }
    }
  }
}

export function podChanges(shadow: Shadow, cluster: SyntheticCluster): Change[] {
  const local = cluster.podInfo.flatMap((p, i) => (p.local && p.counts ? [i] : []));
  const remote = cluster.podInfo.flatMap((p, i) => (!p.local && p.counts ? [i] : []));
  const candidates = (what: string, indexes: readonly number[]) => (function* () {
    for (const variant of [0, 1, 2]) for (const index of stride(indexes, CHANGES)) yield { what, changed: podLabelChange(cluster, index, variant), original: cluster.pods[index]! };
  })();
  // Half of them relabel a pod on this node (its endpoint chains change), half a pod elsewhere (sets change).
  const localPairs = shadow.pick('pod', candidates('local pod relabel', local), CHANGES / 4);
  const remotePairs = shadow.pick('pod', candidates('remote pod relabel', remote), CHANGES / 4);
  return [...interleave(pairs(localPairs), pairs(remotePairs))].flat();
}

export function policyChanges(shadow: Shadow, cluster: SyntheticCluster): Change[] {
  const installed = new Set(shadow.baseline.endpoints.flatMap((e) => [...e.ingressPolicies, ...e.egressPolicies]));
  const indexes = cluster.policies.flatMap((p, i) => {
    const meta = p['metadata'] as Obj;
    return installed.has(`${String(meta['namespace'])}/${String(meta['name'])}`) ? [i] : [];
  });
  const candidates = (what: string, make: (policy: Obj, k: number) => Obj, offset: number) => (function* () {
    let k = 0;
    for (const index of stride(indexes.slice(offset).concat(indexes.slice(0, offset)), CHANGES)) yield { what, changed: make(cluster.policies[index]!, k++), original: cluster.policies[index]! };
  })();
  const extraPort = shadow.pick('policy', candidates('policy: one more port', (p, k) => policyWithExtraPort(p, 20_000 + k), 0), CHANGES / 4);
  const newPeer = shadow.pick('policy', candidates('policy: new peer (new ipset)', (p, k) => policyWithNewPeer(p, 7 + k), Math.floor(indexes.length / 2)), CHANGES / 4);
  return [...interleave(pairs(extraPort), pairs(newPeer))].flat();
}

// ---------------------------------------------------------------------------------------------------------
// One run: API server + daemon in a fresh namespace
// ---------------------------------------------------------------------------------------------------------

export interface Measured {
  readonly change: Change;
  readonly latency: number;
  readonly written: Written;
  /** Epoch ms: t0, and the write's log time. */
  readonly t0: number;
  readonly writtenAt: number;
  /** From the write to the daemon being idle again: the read-back after the write. */
  readonly readBack: number;
  /** Writes logged beyond the first for this change (repairs after the read-back, say). */
  readonly extraWrites: number;
  /** Cores kept busy by processes outside this benchmark between t0 and the write (10 ms ticks: coarse). */
  readonly otherCores: number;
}

export interface RunResult {
  /** CPU seconds of the daemon and the programs it waited for, from spawn to ready. */
  readonly cpuToReady: number;
  /** Of which the programs it ran (iptables, ipset). */
  readonly cpuChildrenToReady: number;
  /** Bytes the lab API server sent (to this daemon, its only client) from spawn to ready. */
  readonly bytesAtStart: number;
  /** After the burst of pod updates, when one was asked for. */
  readonly burst: { readonly rssKib: number; readonly hwmKib: number; readonly bytesPer1000: number; readonly seconds: number } | null;
  readonly spawnToReady: number;
  readonly startedToReady: number;
  readonly spawnToStarted: number;
  readonly readySyncMs: number | null;
  readonly firstWrite: Written | null;
  readonly backend: string;
  readonly rssKib: number;
  readonly hwmKib: number;
  readonly rssAfterKib: number;
  readonly hwmAfterKib: number;
  readonly measured: Measured[];
  readonly missing: Change[];
  readonly warnings: string[];
  /** Cores kept busy by processes outside this benchmark while the changes were measured. */
  readonly otherCores: number;
  /** Every JSON log line of the daemon, and every line it printed (for profiling runs). */
  readonly logs: readonly LogLine[];
  readonly output: readonly string[];
}

/** The lab API server's counters, over its admin socket. */
function adminStats(socket: string): Promise<{ bytesSent: number }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, path: '/fake/stats', method: 'GET' }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as { bytesSent: number }) : reject(new Error(`admin stats: HTTP ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A kubelet-style status update of a pod: a new condition time and restart annotation, labels kept. */
function podUpdate(pod: Obj, round: number): Obj {
  const metadata = pod['metadata'] as Obj;
  const status = pod['status'] as Obj;
  return {
    ...pod,
    metadata: { ...metadata, annotations: { ...(metadata['annotations'] as Obj), 'kubectl.kubernetes.io/restartedAt': `2026-12-0${1 + (round % 9)}T00:00:00Z` } },
    status: { ...status, conditions: ((status['conditions'] as Obj[] | undefined) ?? []).map((c) => ({ ...c, lastTransitionTime: `2026-12-0${1 + (round % 9)}T00:00:0${round % 10}Z` })) },
  };
}

export interface RunOptions {
  readonly changes?: readonly Change[];
  /** Pod updates posted in a burst after the changes (0: none). */
  readonly burst?: number;
  /** Called with the daemon's pid once it is steady after ready (for profiling scripts). */
  readonly onSteady?: (pid: number) => Promise<void>;
}

export async function runDaemon(cluster: SyntheticCluster, options: RunOptions = {}): Promise<RunResult> {
  const changes = options.changes ?? [];
  const dir = await mkdtemp(path.join(tmpdir(), 'palbench-daemon-'));
  let ns: NetworkNamespace | null = null;
  const processes: NsProcess[] = [];
  try {
    ns = await NetworkNamespace.create(PREFIX);
    const socket = path.join(dir, 'api.sock');
    const kubeconfig = path.join(dir, 'kubeconfig');
    const api = new NsProcess(ns, [process.execPath, FAKE_API_MAIN, '--port', '6443', '--socket', socket, '--kubeconfig-out', kubeconfig, '--bookmark-ms', '1000']);
    processes.push(api);
    await api.waitFor('fake API server ready', () => api.lines.find((l) => l.startsWith('ready ')), 15_000);
    // The cluster goes in through the admin socket before the daemon starts, so its first lists see all of it.
    for (let i = 0; i < cluster.objects.length; i += 1000) await adminApply(socket, cluster.objects.slice(i, i + 1000));

    // Run as the README says, with no flags for node: the daemon sets up its own runtime. Profiling
    // flags may be added for a profiling run.
    const nodeFlags = (process.env['PALBENCH_DAEMON_NODE_FLAGS'] ?? '').split(' ').filter((f) => f !== '');
    const bytesBefore = (await adminStats(socket)).bytesSent;
    const spawnedAt = Date.now();
    const daemon = new NsProcess(ns, [process.execPath, ...nodeFlags, DAEMON_MAIN, 'daemon', '--kubeconfig', kubeconfig, '--node-name', cluster.localNode,
      '--sync-delay', SYNC_DELAY, '--refresh-interval', '10s', '--log-level', 'debug']);
    processes.push(daemon);
    const ready = await daemon.waitFor('the daemon ready', () => daemon.logAfter(0, 'ready: every watch has listed and the rules are in place'), 120_000);
    const split = processSecondsSplit(daemon.pid);
    const cpuToReady = split.own + split.children;
    const bytesAtStart = (await adminStats(socket)).bytesSent - bytesBefore;
    const started = daemon.logAfter(0, 'palisade started');
    const backendLine = daemon.logAfter(0, 'iptables backend chosen');
    const first = daemon.logAfter(0, 'dataplane written');
    const pidCheck = verifyDaemonPid(daemon.pid, ns);
    if (pidCheck !== null) throw new Error(pidCheck);

    // Steady state: a few seconds after ready, once the read-back after the first write is done.
    await sleep(SETTLE_MS);
    await idle(daemon.pid);
    const rssKib = procStatusKib(daemon.pid, 'VmRSS');
    const hwmKib = procStatusKib(daemon.pid, 'VmHWM');
    await options.onSteady?.(daemon.pid);

    // How busy the rest of the machine is while changes are measured: the tail depends on it.
    const cpu = () => ({ machine: machineBusySeconds(), mine: processSeconds(daemon.pid) + processSeconds(api.pid) + (process.cpuUsage().user + process.cpuUsage().system) / 1e6, at: performance.now() });
    const otherBetween = (a: ReturnType<typeof cpu>, b: ReturnType<typeof cpu>) => (b.machine - a.machine - (b.mine - a.mine)) / ((b.at - a.at) / 1000);
    const cpuBefore = cpu();
    const measured: Measured[] = [];
    const missing: Change[] = [];
    for (const change of changes) {
      // Measured alone: not behind the read-back of the previous write, nor a periodic refresh.
      await idle(daemon.pid);
      const from = daemon.logs.length;
      const cpuAtStart = cpu();
      const t0 = Date.now();
      await adminApply(socket, change.object);
      let write: { line: LogLine; index: number };
      try {
        write = await daemon.waitFor('the write', () => daemon.logAfter(from, 'dataplane written'), WRITE_TIMEOUT_MS);
      } catch (error) {
        if (!daemon.running) throw error;
        missing.push(change);
        continue;
      }
      const cpuAtWrite = cpu();
      const quietAt = await idle(daemon.pid);
      const extraWrites = daemon.logs.slice(write.index + 1).filter((l) => l.msg === 'dataplane written').length;
      const field = (name: string) => Number(write.line[name] ?? NaN);
      measured.push({
        change,
        latency: write.line.time - t0,
        t0,
        writtenAt: write.line.time,
        written: { chains: field('chains'), deleted: field('deleted'), sets: field('sets') },
        readBack: quietAt - write.line.time,
        extraWrites,
        otherCores: otherBetween(cpuAtStart, cpuAtWrite),
      });
    }
    const otherCores = otherBetween(cpuBefore, cpu());
    const rssAfterKib = procStatusKib(daemon.pid, 'VmRSS');
    const hwmAfterKib = procStatusKib(daemon.pid, 'VmHWM');
    let burst: RunResult['burst'] = null;
    if ((options.burst ?? 0) > 0) {
      const pods = cluster.pods;
      const count = options.burst!;
      const bytesStart = (await adminStats(socket)).bytesSent;
      const burstStarted = performance.now();
      for (let i = 0; i < count; i += 500) {
        await adminApply(socket, Array.from({ length: Math.min(500, count - i) }, (_, k) => podUpdate(pods[(i + k) % pods.length]!, 1 + Math.floor((i + k) / pods.length))));
      }
      await sleep(SETTLE_MS);
      await idle(daemon.pid);
      const seconds = (performance.now() - burstStarted) / 1000;
      burst = { rssKib: procStatusKib(daemon.pid, 'VmRSS'), hwmKib: procStatusKib(daemon.pid, 'VmHWM'), bytesPer1000: ((await adminStats(socket)).bytesSent - bytesStart) / (count / 1000), seconds };
    }
    const warnings = daemon.logs.filter((l) => l.msg !== 'dataplane written' && (Number(l['level']) >= 40)).map((l) => l.msg);
    return {
      cpuToReady,
      cpuChildrenToReady: split.children,
      bytesAtStart,
      burst,
      spawnToReady: ready.line.time - spawnedAt,
      startedToReady: started === undefined ? NaN : ready.line.time - started.line.time,
      spawnToStarted: started === undefined ? NaN : started.line.time - spawnedAt,
      readySyncMs: typeof ready.line['syncMs'] === 'number' ? ready.line['syncMs'] : null,
      firstWrite: first === undefined ? null : { chains: Number(first.line['chains']), deleted: Number(first.line['deleted']), sets: Number(first.line['sets']) },
      backend: backendLine === undefined ? '?' : `${String(backendLine.line['backend'])} (${String(backendLine.line['reason'])})`,
      rssKib,
      hwmKib,
      rssAfterKib,
      hwmAfterKib,
      measured,
      missing,
      warnings,
      otherCores,
      logs: daemon.logs,
      output: daemon.lines,
    };
  } finally {
    // The daemon first (it holds watches on the API server), then the API server, then the namespace.
    for (const p of processes.reverse()) await p.stop().catch(() => undefined);
    await ns?.destroy();
    await rm(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------------------------------

interface LatencySummary {
  pod: number[];
  policy: number[];
}

function reportLatencies(report: Report, label: string, result: RunResult): LatencySummary {
  const summary: LatencySummary = { pod: [], policy: [] };
  report.note(`${label}: while the changes were measured, processes outside this benchmark kept ${Math.max(0, result.otherCores).toFixed(2)} of ${cpus().length} cores busy on average (the tail grows with that); "quiet": under ${QUIET_CORES} cores busy elsewhere between t0 and the write`);
  for (const kind of ['pod', 'policy'] as const) {
    const mine = result.measured.filter((m) => m.change.kind === kind);
    const latencies = mine.map((m) => m.latency);
    summary[kind] = latencies;
    const goal = kind === 'pod' ? GOAL_POD_P99_MS : GOAL_POLICY_P99_MS;
    const title = kind === 'pod' ? 'pod label change' : 'policy change';
    report.row(`${label}: ${title} to enforced: median`, ms(median(latencies)));
    report.row(`${label}: ${title} to enforced: p99`, ms(p99(latencies)), { text: `< ${goal} ms`, met: latencies.length > 0 && p99(latencies) < goal });
    report.row(`${label}: ${title} to enforced: max`, ms(Math.max(...latencies)));
    const quiet = mine.filter((m) => m.otherCores < QUIET_CORES).map((m) => m.latency);
    report.row(`${label}: ${title}: p99 on a quiet machine (${quiet.length})`, ms(p99(quiet)));
    const whats = [...new Set(mine.map((m) => m.change.what))];
    const parts = whats.map((what) => {
      const of = mine.filter((m) => m.change.what === what).map((m) => m.latency);
      return `${what}: median ${ms(median(of))}, p99 ${ms(p99(of))} (${of.length})`;
    });
    report.note(`${latencies.length} changes (each change followed by its undo, both measured); ${parts.join('; ')}`);
    const avg = (get: (w: Written) => number, of: readonly Written[]) => mean(of.map(get)).toFixed(1);
    const written = mine.map((m) => m.written);
    const expected = mine.map((m) => m.change.expected);
    const readBacks = mine.map((m) => m.readBack).filter((t) => Number.isFinite(t));
    report.note(`per write on average ${avg((w) => w.chains, written)} chains written, ${avg((w) => w.deleted, written)} deleted, ${avg((w) => w.sets, written)} sets written (from the log; the in-process plan expected ${avg((w) => w.chains, expected)}, ${avg((w) => w.deleted, expected)}, ${avg((w) => w.sets, expected)}); read-back after the write, until idle: median ${ms(median(readBacks))}, max ${ms(Math.max(...readBacks))}`);
    const extra = mine.filter((m) => m.extraWrites > 0).length;
    const missing = result.missing.filter((c) => c.kind === kind).length;
    if (extra > 0 || missing > 0) report.note(`${missing} changes got no write within ${WRITE_TIMEOUT_MS} ms; ${extra} changes were followed by more writes (repairs)`);
  }
  return summary;
}

function medianOf(results: readonly RunResult[], pick: (r: RunResult) => number): number {
  return median(results.map(pick));
}

/** Start-up figures of several runs of the same cluster: the median of each, with its goal. */
function reportStarts(report: Report, results: readonly RunResult[]): void {
  const label = `start (median of ${results.length})`;
  const wall = medianOf(results, (r) => r.spawnToReady);
  const cpu = medianOf(results, (r) => r.cpuToReady);
  const rss = medianOf(results, (r) => r.rssKib);
  const hwm = medianOf(results, (r) => r.hwmKib);
  report.row(`${label}: spawn to ready (first apply done)`, ms(wall), { text: `< ${GOAL_READY_MS} ms`, met: wall < GOAL_READY_MS });
  report.row(`${label}: CPU from spawn to ready (daemon and its iptables/ipset runs)`, `${cpu.toFixed(2)} s`, { text: `<= ${GOAL_READY_CPU_S} s`, met: cpu <= GOAL_READY_CPU_S });
  report.row(`${label}:   of which iptables and ipset`, `${medianOf(results, (r) => r.cpuChildrenToReady).toFixed(2)} s`);
  report.row(`${label}:   of which spawn to "palisade started"`, ms(medianOf(results, (r) => r.spawnToStarted)));
  report.row(`${label}:   the first sync (compile + apply, syncMs)`, ms(medianOf(results, (r) => r.readySyncMs ?? NaN)));
  report.row(`${label}: VmRSS ${SETTLE_MS / 1000} s after ready`, mib(rss), { text: `<= ${GOAL_RSS_MIB} MiB`, met: rss <= GOAL_RSS_MIB * 1024 });
  report.row(`${label}: VmHWM (peak) by then`, mib(hwm), { text: `<= ${GOAL_HWM_MIB} MiB`, met: hwm <= GOAL_HWM_MIB * 1024 });
  report.row(`${label}: read from the API server at start`, `${(medianOf(results, (r) => r.bytesAtStart) / 1e6).toFixed(1)} MB`);
  report.note(`runs: ${results.map((r) => `${ms(r.spawnToReady)} / ${r.cpuToReady.toFixed(2)} s / ${mib(r.rssKib)}`).join('; ')} (wall / CPU / VmRSS)`);
  const burst = results.find((r) => r.burst !== null)?.burst;
  if (burst !== undefined && burst !== null) {
    report.row(`VmRSS / VmHWM after a burst of ${count(BURST)} pod updates`, `${mib(burst.rssKib)} / ${mib(burst.hwmKib)}`, { text: `peak <= ${GOAL_HWM_MIB} MiB`, met: burst.hwmKib <= GOAL_HWM_MIB * 1024 });
    report.row('read from the API server per 1,000 pod changes', `${(burst.bytesPer1000 / 1e6).toFixed(1)} MB`);
    report.note(`the burst was posted in ${burst.seconds.toFixed(1)} s, in batches of 500 (kubelet-style status updates)`);
  }
}

function reportStartup(report: Report, label: string, result: RunResult, goals: boolean): void {
  const goal = <T>(g: T) => (goals ? g : undefined);
  report.row(`${label}: spawn to ready (first apply done)`, ms(result.spawnToReady), goal({ text: `< ${GOAL_READY_MS} ms`, met: result.spawnToReady < GOAL_READY_MS }));
  report.row(`${label}:   CPU from spawn to ready (daemon and its iptables/ipset runs)`, `${result.cpuToReady.toFixed(2)} s`, goal({ text: `<= ${GOAL_READY_CPU_S} s`, met: result.cpuToReady <= GOAL_READY_CPU_S }));
  report.row(`${label}:     of which iptables and ipset`, `${result.cpuChildrenToReady.toFixed(2)} s`);
  report.row(`${label}:   of which spawn to "palisade started"`, ms(result.spawnToStarted));
  report.row(`${label}:   "palisade started" to ready (in-log)`, ms(result.startedToReady));
  report.row(`${label}:   the first sync (compile + apply, syncMs)`, result.readySyncMs === null ? 'n/a' : ms(result.readySyncMs));
  report.row(`${label}: VmRSS ${SETTLE_MS / 1000} s after ready`, mib(result.rssKib), goal({ text: `<= ${GOAL_RSS_MIB} MiB`, met: result.rssKib <= GOAL_RSS_MIB * 1024 }));
  report.row(`${label}: VmHWM (peak) by then`, mib(result.hwmKib), goal({ text: `<= ${GOAL_HWM_MIB} MiB`, met: result.hwmKib <= GOAL_HWM_MIB * 1024 }));
  if (result.measured.length > 0) report.row(`${label}: VmRSS / VmHWM after the ${result.measured.length} changes`, `${mib(result.rssAfterKib)} / ${mib(result.hwmAfterKib)}`);
  report.row(`${label}: read from the API server at start`, `${(result.bytesAtStart / 1e6).toFixed(1)} MB`);
  if (result.burst !== null) {
    report.row(`${label}: VmRSS / VmHWM after a burst of ${count(BURST)} pod updates`, `${mib(result.burst.rssKib)} / ${mib(result.burst.hwmKib)}`, goal({ text: `peak <= ${GOAL_HWM_MIB} MiB`, met: result.burst.hwmKib <= GOAL_HWM_MIB * 1024 }));
    report.row(`${label}: read from the API server per 1,000 pod changes`, `${(result.burst.bytesPer1000 / 1e6).toFixed(1)} MB`);
    report.note(`${label}: the burst was posted in ${result.burst.seconds.toFixed(1)} s, in batches of 500 (kubelet-style status updates)`);
  }
  const first = result.firstWrite;
  report.note(`${label}: backend ${result.backend}; first write: ${first === null ? 'none logged' : `${count(first.chains)} chains, ${count(first.sets)} sets`}; daemon pid checked: the spawned child is the daemon itself, in the namespace`);
  if (result.warnings.length > 0) report.note(`${label}: ${result.warnings.length} warnings/errors logged, e.g. "${result.warnings[0]}"`);
}

export async function run(report: Report): Promise<void> {
  const scale = DAEMON_SCALE;
  report.section(`daemon: the real process against the lab API server, ${count(scale.pods)} real-sized pods (${scale.localPods} local), ${count(scale.namespaces)} namespaces, ${count(scale.policies)} policies, in a throwaway network namespace`);
  const blocked = await namespaceBenchBlocked(PREFIX, ['ipset', 'iptables-nft-restore']);
  if (blocked !== null) {
    report.note(`skipped: ${blocked}`);
    return;
  }
  report.note(`started as \`node dist/daemon/main.js daemon\`, no flags for node; change to enforced: t0 just before POST /fake/apply, to the time of the daemon's next "dataplane written" log line; includes the --sync-delay of ${SYNC_DELAY}; the next change is posted once the daemon is idle again`);

  // Start-up, three times over, the median reported: the machine's other work moves single runs.
  const startCluster = syntheticCluster(scale);
  const starts: RunResult[] = [];
  for (let i = 0; i < STARTS; i++) starts.push(await runDaemon(startCluster, { burst: i === 0 ? BURST : 0 }));
  reportStarts(report, starts);

  const scales: { label: string; options: SyntheticOptions }[] = [
    { label: '1x', options: scale },
    { label: '2x remote pods', options: withDoubledRemotePods(scale) },
  ];
  const summaries: LatencySummary[] = [];
  for (const [i, { label, options }] of scales.entries()) {
    const cluster = i === 0 ? startCluster : syntheticCluster(options);
    const shadow = new Shadow(cluster);
    const pods = podChanges(shadow, cluster);
    const policies = policyChanges(shadow, cluster);
    // Interleaved so both kinds see the same conditions over the run.
    const changes = [...interleave(pairs(pods), pairs(policies))].flat();
    if (i > 0) report.note(`${label}: ${count(options.pods)} pods, same namespaces, local pods and policies`);
    const result = await runDaemon(cluster, { changes });
    if (i > 0) reportStartup(report, label, result, false);
    summaries.push(reportLatencies(report, label, result));
  }
  const [base, doubled] = summaries;
  if (base !== undefined && doubled !== undefined) {
    for (const kind of ['pod', 'policy'] as const) {
      const ratio = median(doubled[kind]) / median(base[kind]);
      const p99Ratio = p99(doubled[kind]) / p99(base[kind]);
      report.row(`${kind} change to enforced, 2x / 1x remote pods: median (p99)`, `${ratio.toFixed(2)}x (${p99Ratio.toFixed(2)}x)`, { text: `<= ${GROWTH_ALLOWANCE}x`, met: ratio <= GROWTH_ALLOWANCE });
    }
  }

  report.section(`daemon growth: start and memory with ${GROWTH.map(count).join(', ')} real-sized pods (${scale.localPods} local, same namespaces and policies)`);
  const points: { pods: number; result: RunResult }[] = [];
  for (const pods of GROWTH) {
    const result = await runDaemon(syntheticCluster({ ...scale, pods }));
    points.push({ pods, result });
    report.row(`${count(pods)} pods: spawn to ready, CPU to ready`, `${ms(result.spawnToReady)}, ${result.cpuToReady.toFixed(2)} s`);
    report.row(`${count(pods)} pods: VmRSS steady / VmHWM peak`, `${mib(result.rssKib)} / ${mib(result.hwmKib)}`);
    report.row(`${count(pods)} pods: read from the API server at start`, `${(result.bytesAtStart / 1e6).toFixed(0)} MB`);
  }
  const first = points[0]!;
  const last = points[points.length - 1]!;
  const kibPerPod = (last.result.rssKib - first.result.rssKib) / (last.pods - first.pods);
  report.row(`memory per additional pod (VmRSS, ${count(first.pods)} to ${count(last.pods)})`, `${(kibPerPod * 1024).toFixed(0)} bytes`, { text: '<= 2 KiB', met: kibPerPod <= GOAL_MIB_PER_1000_PODS });
  // Linear: each step's CPU per additional 1,000 pods no more than half again the first step's.
  const steps = points.slice(1).map((p, i) => (p.result.cpuToReady - points[i]!.result.cpuToReady) / ((p.pods - points[i]!.pods) / 1000));
  for (const [i, step] of steps.entries()) report.row(`CPU to ready per additional 1,000 pods, ${count(points[i]!.pods)} to ${count(points[i + 1]!.pods)}`, `${step.toFixed(3)} s`);
  const growth = Math.max(...steps) / steps[0]!;
  report.row('CPU per additional pod, steepest step / first step', `${growth.toFixed(2)}x`, { text: '<= 1.5x (linear)', met: growth <= 1.5 });
}

/** Change/undo pairs, kept together. */
function* pairs(changes: readonly Change[]): Iterable<Change[]> {
  for (let i = 0; i + 1 < changes.length; i += 2) yield [changes[i]!, changes[i + 1]!];
}
