import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnCollect } from '../lib/exec.js';
import { Lab } from '../lib/lab/cluster.js';
import { removeStaleNamespaces } from '../lib/netns.js';
import { namespace, pod, policy } from '../test/support/builders.js';
import { namespaceBenchBlocked } from './preflight.js';
import type { Report } from './run.js';

/**
 * What a flood of refused connections costs the daemon, started as a user starts it (`palisade
 * daemon` against an API server, in the node's network namespace), with its drop log on and off. One
 * node, two pods, a deny-all ingress policy on the server pod; the client pod sends one-byte UDP
 * datagrams, each to a port of its own, so every one is the first packet of a new flow that the
 * server's isolation refuses. The kernel's limits (a tenth of the node's 100 records a second for one
 * pod, burst 20) decide how many reach userspace; the rest is counted as lost from the rule counters.
 *
 * Reported per mode: the CPU of the daemon and its ulogd child while idle and over a flood window
 * (which runs one second past the last datagram, to include the records' tail), records made and
 * counted lost. The load generator is bench/native/nflog-send.c, compiled here with cc.
 */

const PREFIX = 'palbench-dl';
const NODE = 'node-a';
const CLIENT = { namespace: 'x', name: 'client', ip: '10.1.1.11' };
const SERVER = { namespace: 'x', name: 'server', ip: '10.1.1.12' };
const RATES = [2_000, 20_000] as const;
const FLOOD_SECONDS = 3;
const IDLE_SECONDS = 3;
const NATIVE_DIR = fileURLToPath(new URL('../../bench/native/', import.meta.url));

async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** The daemon's own CPU and that of its children (ulogd), in seconds. */
async function treeCpu(pid: number): Promise<{ daemon: number; children: number }> {
  const children = (await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '')).trim().split(/\s+/).filter((p) => p !== '').map(Number);
  let childCpu = 0;
  for (const child of children) childCpu += await cpuSeconds(child).catch(() => 0);
  return { daemon: await cpuSeconds(pid), children: childCpu };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Records the daemon made (its counter: /drops keeps only the last --drop-log-buffer) and those it counted lost. */
async function drops(lab: Lab): Promise<{ records: number; lost: number }> {
  const metrics = await lab.metrics(NODE);
  const sum = (name: string): number => metrics.split('\n').filter((l) => l.startsWith(`${name}{`)).reduce((n, l) => n + Number(l.split(' ').at(-1)), 0);
  return { records: sum('palisade_denied_connections_total'), lost: sum('palisade_drop_log_lost_total') };
}

async function untilIsolated(lab: Lab): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const { body } = await lab.status(NODE, '/status');
    const endpoints = (JSON.parse(body) as { endpoints?: { name: string; isolated: { ingress: boolean } }[] }).endpoints ?? [];
    if (endpoints.some((e) => e.name === SERVER.name && e.isolated.ingress)) return;
    if (Date.now() > deadline) throw new Error('the server pod never became isolated');
    await sleep(100);
  }
}

export async function run(report: Report): Promise<void> {
  report.section('drop-log: a flood of refused new connections against the daemon (started as a user does), drop log on and off');
  const blocked = await namespaceBenchBlocked(PREFIX, ['cc', 'ulogd']);
  if (blocked !== null) {
    report.note(`skipped: ${blocked}`);
    return;
  }
  const dir = await mkdtemp(path.join(tmpdir(), 'palbench-dl-'));
  let lab: Lab | null = null;
  try {
    const sender = path.join(dir, 'nflog-send');
    const built = await spawnCollect(['cc', '-O2', '-o', sender, path.join(NATIVE_DIR, 'nflog-send.c')], { timeoutMs: 60_000 });
    if (built.code !== 0) throw new Error(`cc nflog-send.c failed: ${built.stderr.trim()}`);
    lab = await Lab.create({ prefix: PREFIX, nodes: [{ name: NODE, address: '127.0.0.1', podCidr: '10.1.1.0/24' }], daemonArgs: ['--iptables-backend', 'nft'] });
    await lab.api.apply([
      namespace('x'),
      pod(CLIENT.namespace, CLIENT.name, { ip: CLIENT.ip }),
      pod(SERVER.namespace, SERVER.name, { ip: SERVER.ip }),
      policy('x', 'deny-all-ingress', { podSelector: {}, policyTypes: ['Ingress'] }),
    ]);
    const client = await lab.addPod(NODE, CLIENT);
    await lab.addPod(NODE, SERVER);
    let base = 1024;
    const modes = [
      { mode: 'on', args: ['--drop-log', 'on'] },
      // The most a node lets through: a pod's share is then 1,000 records a second.
      { mode: 'on, rate 10,000', args: ['--drop-log', 'on', '--drop-log-rate', '10000'] },
      { mode: 'off', args: ['--drop-log', 'off'] },
    ];
    for (const { mode, args } of modes) {
      const daemon = await lab.startDaemon(NODE, args);
      await lab.waitReady(NODE);
      await untilIsolated(lab);
      await sleep(2000);
      const pid = daemon.child.pid!;
      const idle0 = await treeCpu(pid);
      await sleep(IDLE_SECONDS * 1000);
      const idle1 = await treeCpu(pid);
      const idle = (idle1.daemon + idle1.children - idle0.daemon - idle0.children) / IDLE_SECONDS;
      report.row(`drop log ${mode}: daemon + ulogd CPU, idle`, `${(idle * 100).toFixed(1)} % of a core`);
      for (const rate of RATES) {
        const count = rate * FLOOD_SECONDS;
        if (base + count > 65_000) base = 1024;
        const before = await drops(lab);
        const cpu0 = await treeCpu(pid);
        const started = performance.now();
        await client.netns.run([sender, SERVER.ip, String(base), String(count), String(rate)], { timeoutMs: 120_000 });
        base += count;
        await sleep(1000);
        const seconds = (performance.now() - started) / 1000;
        const cpu1 = await treeCpu(pid);
        // Lost records are counted on the daemon's refresh (every 10 s by default).
        await sleep(11_000);
        const after = await drops(lab);
        const daemonCpu = (cpu1.daemon - cpu0.daemon) / seconds;
        const ulogdCpu = (cpu1.children - cpu0.children) / seconds;
        report.row(`drop log ${mode}: ${rate.toLocaleString('en-US')} refused flows/s for ${FLOOD_SECONDS} s: daemon CPU`, `${(daemonCpu * 100).toFixed(1)} % of a core`);
        if (mode !== 'off') {
          report.row(`drop log ${mode}:   ulogd CPU`, `${(ulogdCpu * 100).toFixed(1)} % of a core`);
          report.row(`drop log ${mode}:   records made / counted lost`, `${after.records - before.records} / ${after.lost - before.lost}`);
        }
      }
      await lab.stopDaemon(NODE);
    }
    report.note(`one pod refusing ${RATES.join(' and ')} new UDP flows a second; CPU over the flood plus one second, from /proc (10 ms ticks); the kernel lets a pod have a tenth of the node's records a second: 10 (burst 20) by default, 1,000 (burst 1,000) at rate 10,000`);
  } finally {
    await lab?.destroy();
    await rm(dir, { recursive: true, force: true });
    await removeStaleNamespaces(PREFIX);
  }
}
