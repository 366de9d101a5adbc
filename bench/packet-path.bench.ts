import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Dataplane, EndpointInfo } from '../rules/dataplane.js';
import { POLICY_TABLE } from '../rules/dataplane.js';
import { Evaluator } from '../rules/evaluator.js';
import { DEFAULT_DROP_LOG, makeSettings } from '../rules/settings.js';
import { Names } from '../rules/names.js';
import { loadedCompiler, parseObjects } from '../rules/snapshot.js';
import type { Snapshot } from '../rules/snapshot.js';
import { renderIpsets, renderIptables } from '../rules/render.js';
import { commandAvailable, spawnCollect } from '../lib/exec.js';
import { namespaceBenchBlocked } from './preflight.js';
import { removeStaleNamespaces } from '../lib/netns.js';
import type { NetworkNamespace } from '../lib/netns.js';
import { PodNode } from '../lib/pod-network.js';
import type { PodHandle } from '../lib/pod-network.js';
import { Iptables } from '../lib/iptables/iptables.js';
import type { Backend } from '../lib/iptables/iptables.js';
import { Ipset } from '../lib/ipset.js';
import { DataplaneApplier } from '../lib/dataplane/applier.js';
import { UlogdReader } from '../lib/drop-log/ulogd-reader.js';
import { silentLogger } from '../lib/logger.js';
import { IpsetModel, IptablesModel } from '../test/support/tracer.js';
import type { Packet } from '../test/support/tracer.js';
import { BENCH_SCALE, UNALLOWED_PORT, syntheticCluster } from './synthetic-cluster.js';
import type { SyntheticCluster } from './synthetic-cluster.js';
import type { Report } from './run.js';

/**
 * Real packets between two pods of one node, through the kernel: new TCP connections per second
 * (connect, one-byte request, one-byte answer, close: TCP_CRR) and single-stream TCP throughput, with
 * the node holding the benchmark cluster's full dataplane (250 local pods, 2,000 policies, applied by
 * the real DataplaneApplier), against the same node with no policy at all, only one conntrack rule so
 * that connection tracking runs in both. Reported as ratios, per iptables backend.
 *
 * The two pods are local pods of the synthetic cluster, plumbed with their own namespace, name and
 * address, so their host interfaces are the ones palisade's dispatch tree expects; the pair is the one
 * whose first packet walks the most rules among the pairs that policy allows and that are isolated in
 * both directions that matter (client egress, server ingress). The other 248 local pods are not
 * plumbed: their chains and dispatch branches exist all the same.
 *
 * The load comes from small C programs (bench/native), compiled here with cc: a JavaScript load
 * generator would mostly measure itself. The palisade state is written once by the applier; after
 * that the node switches between the two states by restoring the whole of palisade's table (the baseline's
 * one rule, or the exact iptables-save text of what the applier wrote, checked at the end against a
 * fresh applier), which takes ~0.1 s instead of ~0.5 s. Palisade's sets stay loaded throughout: a set
 * no rule refers to is never consulted. Short windows alternate ABBA (baseline, palisade | palisade,
 * baseline | ...) and each ratio is the median of the per-round ratios, so that what other processes
 * on the machine do hits both states alike; the CPU the client and server spend per connection and
 * per byte (the packet path runs in their context) is reported too, being much less sensitive to them.
 */

const PREFIX = 'palbench-pp';
const ROUNDS = 20;
/** Seconds per measurement window. */
const WINDOW_SECONDS = 0.3;
/** Connections made, unmeasured, after each switch of state. */
const WARM_UP_SECONDS = 0.1;
/** The server ends itself after this long even if nobody stops it. */
const SERVER_LIFETIME_SECONDS = 180;
/** A port no generated policy allows. */
const DENIED_PORT = UNALLOWED_PORT;
const CRR_THREADS = 2;
const SERVER_THREADS = 4;
/** Every connect, read and write of the load generators gives up after this long. */
const IO_TIMEOUT_MS = 1000;
/** A bound on connections per measurement, whatever the machine. */
const MAX_CONNECTIONS = 2_000_000;
const GOAL_CONN_RATIO = 0.9;
const DROP_LOG_GROUP = DEFAULT_DROP_LOG.group;
const GOAL_THROUGHPUT_RATIO = 0.95;
/** The baseline's only rule: connection tracking active, no policy. */
/** The built-in chains of the mangle table, where palisade's rules live. */
const BUILTIN_CHAINS = ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'] as const;
const BASELINE_RULE = ['-A', 'FORWARD', '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT'];

/** Linear interpolation between the closest ranks. */
function quantile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const at = (sorted.length - 1) * q;
  const low = sorted[Math.floor(at)]!;
  const high = sorted[Math.ceil(at)]!;
  return low + (high - low) * (at - Math.floor(at));
}
const median = (values: readonly number[]) => quantile(values, 0.5);
const perSecond = (value: number) => `${Math.round(value).toLocaleString('en-US')} conn/s`;
const gbit = (value: number) => `${value.toFixed(2)} Gbit/s`;

interface Binaries {
  readonly server: string;
  readonly client: string;
}

interface Pair {
  readonly client: EndpointInfo;
  readonly server: EndpointInfo;
  readonly port: number;
  /** Rules walked by the first packet (SYN) of a connection, and by the packets after it. */
  readonly walkedNew: number;
  readonly walkedEstablished: number;
  readonly walkedReply: number;
  readonly allowedBy: string;
}

interface CrrResult {
  readonly connections: number;
  readonly refused: number;
  readonly timeouts: number;
  readonly errors: number;
  readonly seconds: number;
  /** CPU seconds of the client process. */
  readonly cpu: number;
}

type State = 'baseline' | 'palisade';

// ---------------------------------------------------------------------------------------------------------
// The dataplane and the pair
// ---------------------------------------------------------------------------------------------------------

function compileFor(cluster: SyntheticCluster): { dataplane: Dataplane; snapshot: Snapshot } {
  const settings = makeSettings({ nodeName: cluster.localNode });
  if (!settings.ok) throw new Error(settings.errors.join('; '));
  const { snapshot } = parseObjects(cluster.objects.map((object) => ({ object })));
  return { dataplane: loadedCompiler(snapshot, settings.settings).build(), snapshot };
}

/**
 * Among local pairs where the client is isolated for egress and the server for ingress and policy
 * allows the connection on one of the server's ports, the one whose SYN walks the most rules (ties: the
 * most policies in force, then names), checked against the evaluator and the tracer.
 */
function choosePair(cluster: SyntheticCluster, dataplane: Dataplane, snapshot: Snapshot): Pair {
  const iptables = IptablesModel.parse(renderIptables(dataplane));
  const ipsets = IpsetModel.parse(renderIpsets(dataplane.ipsets.values()));
  const evaluator = new Evaluator(snapshot);
  const infoByIp = new Map(cluster.podInfo.filter((p) => p.local).map((p) => [p.ip, p]));
  const trace = (client: EndpointInfo, server: EndpointInfo, port: number, ctstate: Packet['ctstate'], reply = false) => {
    const packet: Packet = reply
      ? { protocol: 'tcp', src: server.ip, dst: client.ip, sport: port, dport: 40000, inIface: server.interfaces[0]!, outIface: client.interfaces[0]!, localAddresses: [cluster.localNodeAddress], ...(ctstate === undefined ? {} : { ctstate }) }
      : { protocol: 'tcp', src: client.ip, dst: server.ip, sport: 40000, dport: port, inIface: client.interfaces[0]!, outIface: server.interfaces[0]!, localAddresses: [cluster.localNodeAddress], ...(ctstate === undefined ? {} : { ctstate }) };
    return iptables.trace('FORWARD', packet, ipsets, POLICY_TABLE);
  };
  let best: (Pair & { policies: number; key: string }) | undefined;
  for (const client of dataplane.endpoints) {
    if (!client.isolatedEgress) continue;
    for (const server of dataplane.endpoints) {
      if (server === client || !server.isolatedIngress) continue;
      const info = infoByIp.get(server.ip);
      if (info === undefined) continue;
      for (const { port, protocol } of info.app.ports) {
        if (protocol !== 'TCP') continue;
        const verdict = evaluator.evaluate({ src: client.ip, dst: server.ip, protocol: 'TCP', port });
        if (!verdict.allowed) continue;
        const first = trace(client, server, port, 'NEW');
        if (first.verdict !== 'ACCEPT') throw new Error(`the evaluator allows ${client.name} -> ${server.name}:${port} but the compiled rules drop it: ${first.describe()}`);
        const policies = client.egressPolicies.length + server.ingressPolicies.length;
        const key = `${client.namespace}/${client.name} ${server.namespace}/${server.name} ${port}`;
        const better = best === undefined || first.rulesWalked > best.walkedNew || (first.rulesWalked === best.walkedNew && (policies > best.policies || (policies === best.policies && key < best.key)));
        if (!better) continue;
        const allowedBy = [...verdict.egress.allowedBy, ...verdict.ingress.allowedBy].map((r) => r.policy);
        best = {
          client, server, port, policies, key,
          walkedNew: first.rulesWalked,
          walkedEstablished: trace(client, server, port, 'ESTABLISHED').rulesWalked,
          walkedReply: trace(client, server, port, 'ESTABLISHED', true).rulesWalked,
          allowedBy: [...new Set(allowedBy)].join(', '),
        };
      }
    }
  }
  if (best === undefined) throw new Error('no pair of local pods, isolated both ways, that policy allows to connect');
  return best;
}

// ---------------------------------------------------------------------------------------------------------
// Load generators
// ---------------------------------------------------------------------------------------------------------

const NATIVE_DIR = fileURLToPath(new URL('../../bench/native/', import.meta.url));

async function buildBinaries(dir: string): Promise<Binaries> {
  const build = async (name: string) => {
    const out = path.join(dir, name);
    const result = await spawnCollect(['cc', '-O2', '-pthread', '-o', out, path.join(NATIVE_DIR, `${name}.c`)], { timeoutMs: 60_000 });
    if (result.code !== 0) throw new Error(`cc ${name}.c failed: ${result.stderr.trim()}`);
    return out;
  };
  return { server: await build('pp-server'), client: await build('pp-client') };
}

function parseFields(stdout: string): Map<string, number> {
  const fields = new Map<string, number>();
  for (const match of stdout.matchAll(/(\w+)=([0-9.]+)/g)) fields.set(match[1]!, Number(match[2]));
  return fields;
}

/** Starts the server in the pod's namespace; resolves once it listens. It exits by itself after `lifetime`. */
async function startServer(pod: PodHandle, binary: string, port: number, lifetimeSeconds: number): Promise<ChildProcess> {
  const child = pod.netns.spawn([binary, String(port), String(SERVER_THREADS), String(lifetimeSeconds)], { ownGroup: true });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error('pp-server did not start within 5 s')), 5000);
    const fail = (error: Error) => {
      clearTimeout(timer);
      stopServer(child);
      reject(error);
    };
    child.stdout?.on('data', (chunk: Buffer) => {
      if (chunk.toString('utf8').includes('ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('error', (error) => fail(error));
    child.on('exit', (code) => fail(new Error(`pp-server exited with ${code}: ${stderr.trim()}`)));
  });
  child.removeAllListeners('exit');
  return child;
}

/** Ends the server this benchmark started, by its own process group id. */
function stopServer(child: ChildProcess): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

async function crr(pod: PodHandle, binary: string, ip: string, port: number, seconds: number, timeoutMs = IO_TIMEOUT_MS): Promise<CrrResult> {
  const argv = [binary, 'crr', ip, String(port), String(seconds), String(CRR_THREADS), String(timeoutMs), String(MAX_CONNECTIONS)];
  const stdout = await pod.netns.run(argv, { timeoutMs: (seconds + 10) * 1000 });
  const f = parseFields(stdout);
  const get = (key: string) => {
    const value = f.get(key);
    if (value === undefined) throw new Error(`pp-client crr printed no ${key}: ${stdout.trim()}`);
    return value;
  };
  return { connections: get('connections'), refused: get('refused'), timeouts: get('timeouts'), errors: get('errors'), seconds: get('seconds'), cpu: get('cpu') };
}

async function stream(pod: PodHandle, binary: string, ip: string, port: number, seconds: number): Promise<{ gbitPerSecond: number; bytes: number; cpu: number }> {
  const stdout = await pod.netns.run([binary, 'stream', ip, String(port), String(seconds), String(IO_TIMEOUT_MS * 5)], { timeoutMs: (seconds + 15) * 1000 });
  const f = parseFields(stdout);
  const bytes = f.get('bytes');
  const took = f.get('seconds');
  const cpu = f.get('cpu');
  if (bytes === undefined || took === undefined || cpu === undefined) throw new Error(`pp-client stream printed no result: ${stdout.trim()}`);
  return { gbitPerSecond: (bytes * 8) / took / 1e9, bytes, cpu };
}

// ---------------------------------------------------------------------------------------------------------
// The node's two states
// ---------------------------------------------------------------------------------------------------------

/** A whole table of palisade's holding only `rules`: restoring it deletes every other rule and user chain. */
const policyTable = (rules: readonly (readonly string[])[]) => [`*${POLICY_TABLE}`, ...BUILTIN_CHAINS.map((c) => `:${c} ACCEPT [0:0]`), ...rules.map((r) => r.join(' ')), 'COMMIT', ''].join('\n');
/** The baseline: no rule of palisade's in any chain, one conntrack rule so that connection tracking runs. */
const BASELINE_TEXT = policyTable([BASELINE_RULE]);

/** iptables-save text without comments and counters, to compare states. */
const normalised = (text: string) => text.split('\n').filter((line) => !line.startsWith('#') && line !== '').map((line) => line.replace(/\[\d+:\d+\]$/, '[0:0]')).join('\n');

/** Replaces the whole of palisade's table (user chains included) with `text`. */
async function restorePolicyTable(ns: NetworkNamespace, backend: Backend, text: string): Promise<void> {
  await ns.run([`iptables-${backend}-restore`, '-w', '5'], { input: text });
}

async function savePolicyTable(ns: NetworkNamespace, backend: Backend): Promise<string> {
  return ns.run([`iptables-${backend}-save`, '-t', POLICY_TABLE]);
}

const countRules = (text: string) => text.split('\n').filter((line) => line.startsWith('-A ')).length;

function applierFor(ns: NetworkNamespace, backend: Backend): DataplaneApplier {
  return new DataplaneApplier({ iptables: new Iptables({ runner: ns, backend }), ipset: new Ipset({ runner: ns }), names: new Names('pal') });
}

/** CPU seconds (user + system) a process has used, from /proc; USER_HZ is 100 on Linux. */
async function processCpu(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** CPU seconds the whole machine has been busy (not idle, not waiting for I/O), from /proc/stat. */
async function machineBusy(): Promise<number> {
  const first = (await readFile('/proc/stat', 'utf8')).split('\n')[0] ?? '';
  const ticks = first.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = ticks.reduce((a, b) => a + b, 0);
  return (total - (ticks[3] ?? 0) - (ticks[4] ?? 0)) / 100;
}

// ---------------------------------------------------------------------------------------------------------
// Per backend
// ---------------------------------------------------------------------------------------------------------

interface Window {
  readonly state: State;
  readonly round: number;
  readonly connPerSecond: number;
  readonly gbitPerSecond: number;
  readonly connections: number;
  readonly bytes: number;
  /** Client + server CPU seconds of each test (packet processing done in their context included). */
  readonly connCpu: number;
  readonly streamCpu: number;
}

async function benchBackend(report: Report, backend: Backend, binaries: Binaries, pair: Pair, dataplane: Dataplane): Promise<void> {
  const node = await PodNode.create(PREFIX);
  let server: ChildProcess | undefined;
  // The drop log as the daemon runs it: log rules before every drop (compiled in), ulogd on the group.
  let reader: UlogdReader | null = null;
  let logged = 0;
  const readerDir = await mkdtemp(path.join(tmpdir(), 'palbench-ul-'));
  try {
    if (dataplane.endpoints.some((e) => e.ingressLog !== null)) {
      reader = new UlogdReader({ group: DROP_LOG_GROUP, runner: node.netns, workDir: readerDir, logger: silentLogger, events: { packet: () => { logged++; }, lost: () => {} } });
      await reader.start();
    }
    const spec = (e: EndpointInfo) => ({ namespace: e.namespace, name: e.name, ip: e.ip });
    const client = await node.addPod(spec(pair.client));
    const serverPod = await node.addPod(spec(pair.server));
    for (const [pod, endpoint] of [[client, pair.client], [serverPod, pair.server]] as const) {
      if (!endpoint.interfaces.includes(pod.hostInterface)) throw new Error(`host interface ${pod.hostInterface} of ${endpoint.name} is not the one palisade dispatches on (${endpoint.interfaces.join(', ')})`);
    }
    // Inside the client pod only: every port, and TIME_WAIT reuse (closes reset anyway).
    await client.netns.run(['sysctl', '-q', '-w', 'net.ipv4.ip_local_port_range=1024 65000']);
    await client.netns.run(['sysctl', '-q', '-w', 'net.ipv4.tcp_tw_reuse=1']);
    server = await startServer(serverPod, binaries.server, pair.port, SERVER_LIFETIME_SECONDS);
    const serverPid = server.pid!;
    const ip = pair.server.ip;

    // The palisade state, written by the real applier into the empty node; later switches back to it
    // restore its exact iptables-save text.
    await restorePolicyTable(node.netns, backend, policyTable([]));
    const applyStarted = performance.now();
    await applierFor(node.netns, backend).applyAndCheck(dataplane);
    const applyMs = performance.now() - applyStarted;
    const palisadeText = await savePolicyTable(node.netns, backend);

    // Both states must really be what they claim: palisade's rules drop a port no policy allows (the
    // SYN times out) where the baseline lets it through to a closed port (refused).
    const closedPalisade = await crr(client, binaries.client, ip, DENIED_PORT, 0.3, 100);
    await restorePolicyTable(node.netns, backend, BASELINE_TEXT);
    const baselineText = await savePolicyTable(node.netns, backend);
    const openBaseline = await crr(client, binaries.client, ip, DENIED_PORT, 0.2, 200);
    if (openBaseline.refused === 0 || openBaseline.timeouts > 0) throw new Error(`baseline: a connection to the closed port ${DENIED_PORT} should be refused: ${JSON.stringify(openBaseline)}`);
    if (closedPalisade.timeouts === 0 || closedPalisade.refused > 0 || closedPalisade.connections > 0) throw new Error(`palisade: a connection to port ${DENIED_PORT} should be dropped: ${JSON.stringify(closedPalisade)}`);

    const windows: Window[] = [];
    let state: State = 'baseline';
    let ours = 0;
    const started = performance.now();
    const busyBefore = await machineBusy();
    const serverBefore = await processCpu(serverPid);
    for (let round = 0; round < ROUNDS; round++) {
      // ABBA: baseline, palisade | palisade, baseline | ... so each round switches state once, and
      // each round's two windows are next to each other in time.
      const order: State[] = round % 2 === 0 ? ['baseline', 'palisade'] : ['palisade', 'baseline'];
      for (const wanted of order) {
        if (wanted !== state || round === 0) {
          if (wanted !== state) await restorePolicyTable(node.netns, backend, wanted === 'baseline' ? BASELINE_TEXT : palisadeText);
          state = wanted;
          const warm = await crr(client, binaries.client, ip, pair.port, WARM_UP_SECONDS);
          ours += warm.cpu;
          if (warm.connections === 0) throw new Error(`${wanted}: no connection to ${ip}:${pair.port} succeeds: ${JSON.stringify(warm)}`);
        }
        await node.netns.run(['conntrack', '-F'], { timeoutMs: 10_000 });
        const server0 = await processCpu(serverPid);
        const rate = await crr(client, binaries.client, ip, pair.port, WINDOW_SECONDS);
        const server1 = await processCpu(serverPid);
        if (rate.refused + rate.timeouts + rate.errors > 0) throw new Error(`${wanted}: connections failed during the measurement: ${JSON.stringify(rate)}`);
        await node.netns.run(['conntrack', '-F'], { timeoutMs: 10_000 });
        const throughput = await stream(client, binaries.client, ip, pair.port, WINDOW_SECONDS);
        const server2 = await processCpu(serverPid);
        ours += rate.cpu + throughput.cpu;
        windows.push({
          state: wanted, round,
          connPerSecond: rate.connections / rate.seconds,
          gbitPerSecond: throughput.gbitPerSecond,
          connections: rate.connections,
          bytes: throughput.bytes,
          connCpu: rate.cpu + server1 - server0,
          streamCpu: throughput.cpu + server2 - server1,
        });
      }
    }
    const measuredSeconds = (performance.now() - started) / 1000;
    ours += (await processCpu(serverPid)) - serverBefore;
    const othersCores = Math.max(0, ((await machineBusy()) - busyBefore - ours) / measuredSeconds);

    // The palisade state was really palisade's all along: a fresh applier finds nothing to change.
    await restorePolicyTable(node.netns, backend, palisadeText);
    if (normalised(await savePolicyTable(node.netns, backend)) !== normalised(palisadeText)) throw new Error('the restored palisade state differs from what the applier wrote');
    const recheck = await applierFor(node.netns, backend).apply(dataplane);
    if (recheck.plan !== null) throw new Error('a fresh applier would still write to the restored palisade state');

    type Key = 'connPerSecond' | 'gbitPerSecond';
    /** Over all windows of a state: the server's CPU is only known to 10 ms, too coarse for one window. */
    const sum = (s: State, key: 'connections' | 'bytes' | 'connCpu' | 'streamCpu') => windows.filter((w) => w.state === s).reduce((total, w) => total + w[key], 0);
    const cpuPerConnection = (s: State) => (sum(s, 'connCpu') / sum(s, 'connections')) * 1e6;
    const cpuPerGigabyte = (s: State) => (sum(s, 'streamCpu') / sum(s, 'bytes')) * 1e9;
    const values = (s: State, key: Key) => windows.filter((w) => w.state === s).map((w) => w[key]);
    /** Per round, palisade over baseline: a round's two windows are adjacent, so drift of the machine cancels. */
    const perRound = (key: Key) => Array.from({ length: ROUNDS }, (_, round) => {
      const at = (s: State) => windows.find((w) => w.round === round && w.state === s)![key];
      return at('palisade') / at('baseline');
    });
    const quartiles = (key: Key) => `${quantile(perRound(key), 0.25).toFixed(2)} .. ${quantile(perRound(key), 0.75).toFixed(2)}`;
    const connRatio = median(perRound('connPerSecond'));
    const gbitRatio = median(perRound('gbitPerSecond'));
    report.row(`${backend}: new connections/s, baseline (conntrack rule only)`, perSecond(median(values('baseline', 'connPerSecond'))));
    report.row(`${backend}: new connections/s, palisade`, perSecond(median(values('palisade', 'connPerSecond'))));
    report.row(`${backend}:   ratio palisade / baseline`, connRatio.toFixed(3), { text: `>= ${GOAL_CONN_RATIO}`, met: connRatio >= GOAL_CONN_RATIO });
    report.row(`${backend}: single-stream throughput, baseline`, gbit(median(values('baseline', 'gbitPerSecond'))));
    report.row(`${backend}: single-stream throughput, palisade`, gbit(median(values('palisade', 'gbitPerSecond'))));
    report.row(`${backend}:   ratio palisade / baseline`, gbitRatio.toFixed(3), { text: `>= ${GOAL_THROUGHPUT_RATIO}`, met: gbitRatio >= GOAL_THROUGHPUT_RATIO });
    report.row(`${backend}: client + server CPU per connection: baseline / palisade`, `${cpuPerConnection('baseline').toFixed(1)} / ${cpuPerConnection('palisade').toFixed(1)} us`);
    report.row(`${backend}:   connections per CPU second, palisade / baseline`, (cpuPerConnection('baseline') / cpuPerConnection('palisade')).toFixed(3));
    report.row(`${backend}: client + server CPU per GB streamed: baseline / palisade`, `${(cpuPerGigabyte('baseline') * 1000).toFixed(0)} / ${(cpuPerGigabyte('palisade') * 1000).toFixed(0)} ms`);
    report.row(`${backend}:   bytes per CPU second, palisade / baseline`, (cpuPerGigabyte('baseline') / cpuPerGigabyte('palisade')).toFixed(3));
    report.note(`${backend}: ${ROUNDS} rounds, each a ${WINDOW_SECONDS} s window per state and test, ${measuredSeconds.toFixed(0)} s in all; a ratio is the median of the per-round ratios (quartiles: conn/s ${quartiles('connPerSecond')}, Gbit/s ${quartiles('gbitPerSecond')})`);
    report.note(`${backend}: other processes kept ${othersCores.toFixed(2)} of ${availableParallelism()} cores busy during the measurement; wall-clock rates depend on the CPU they leave, CPU per connection or per byte much less`);
    report.note(`${backend}: filter rules in the node: baseline ${countRules(baselineText)}, palisade ${countRules(palisadeText)} (applyAndCheck from empty ${applyMs.toFixed(0)} ms); port ${DENIED_PORT}: baseline refused ${openBaseline.refused} of ${openBaseline.refused + openBaseline.timeouts}, palisade dropped ${closedPalisade.timeouts} of ${closedPalisade.timeouts + closedPalisade.refused + closedPalisade.connections}`);
    report.note(`${backend}: drop log ${reader === null ? 'off' : `on: ulogd reading NFLOG group ${DROP_LOG_GROUP}, ${logged} records of the refused checks`}`);
  } finally {
    if (server !== undefined) stopServer(server);
    await reader?.stop();
    await node.destroy();
    await rm(readerDir, { recursive: true, force: true });
  }
}

export async function run(report: Report): Promise<void> {
  const cluster = syntheticCluster(BENCH_SCALE);
  report.section(`packet-path: TCP between two local pods of a node with ${BENCH_SCALE.localPods} local pods and ${BENCH_SCALE.policies} policies, against the same node without policy`);
  // cc builds the load generators in bench/native.
  const blocked = await namespaceBenchBlocked(PREFIX, ['cc', 'ipset', 'conntrack']);
  if (blocked !== null) {
    report.note(`skipped: ${blocked}`);
    return;
  }
  const { dataplane, snapshot } = compileFor(cluster);
  const pair = choosePair(cluster, dataplane, snapshot);
  report.row('rules walked by the SYN of client -> server (palisade)', String(pair.walkedNew));
  report.row('rules walked by later packets, either way (palisade)', `${pair.walkedEstablished} / ${pair.walkedReply}`);
  report.row('rules walked by any packet (baseline)', '1');
  report.note(`client ${pair.client.namespace}/${pair.client.name} (${pair.client.ip}, ${pair.client.egressPolicies.length} egress policies) -> server ${pair.server.namespace}/${pair.server.name} (${pair.server.ip}, ${pair.server.ingressPolicies.length} ingress policies), TCP ${pair.port}; allowed by ${pair.allowedBy}`);
  report.note(`connections: ${CRR_THREADS} client threads, connect + 1-byte request + 1-byte answer + close (RST); throughput: one stream of 256 KiB writes`);

  const dir = await mkdtemp(path.join(tmpdir(), 'palbench-pp-'));
  try {
    const binaries = await buildBinaries(dir);
    for (const backend of ['nft', 'legacy'] as const) {
      if (!(await commandAvailable(`iptables-${backend}-restore`))) {
        report.note(`${backend}: skipped, iptables-${backend}-restore not installed`);
        continue;
      }
      await benchBackend(report, backend, binaries, pair, dataplane);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
    await removeStaleNamespaces(PREFIX);
  }
}
