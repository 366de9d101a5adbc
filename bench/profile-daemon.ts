/**
 * For profiling, not a benchmark: starts the daemon as the daemon benchmark does on a cluster of N
 * real-sized pods and prints what it measured as one JSON line; optionally posts a burst of pod
 * updates, and writes a heap snapshot (SIGUSR2) into a folder once the daemon is steady.
 *
 *   node dist/bench/profile-daemon.js [--pods N] [--burst N] [--heap-snapshot DIR]
 *
 * PALBENCH_DAEMON_NODE_FLAGS adds flags for node (a CPU profile: "--cpu-prof --cpu-prof-dir=DIR").
 */
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DAEMON_SCALE, runDaemon } from './daemon.bench.js';
import { syntheticCluster } from './synthetic-cluster.js';

const { values } = parseArgs({ options: { pods: { type: 'string', default: '10000' }, burst: { type: 'string', default: '0' }, 'heap-snapshot': { type: 'string' } } });
const dir = values['heap-snapshot'];
if (dir !== undefined) process.env['PALBENCH_DAEMON_NODE_FLAGS'] = `${process.env['PALBENCH_DAEMON_NODE_FLAGS'] ?? ''} --heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${dir}`.trim();

async function snapshot(pid: number, folder: string): Promise<void> {
  const before = new Set(readdirSync(folder));
  process.kill(pid, 'SIGUSR2');
  let size = -1;
  let stable = 0;
  // Done once the file has stopped growing for two seconds.
  for (let i = 0; i < 1200 && stable < 20; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const file = readdirSync(folder).find((f) => !before.has(f) && f.endsWith('.heapsnapshot'));
    const now = file === undefined ? -1 : statSync(path.join(folder, file)).size;
    stable = now > 0 && now === size ? stable + 1 : 0;
    size = now;
  }
}

const pods = Number(values.pods);
const result = await runDaemon(syntheticCluster({ ...DAEMON_SCALE, pods }), {
  burst: Number(values.burst),
  ...(dir === undefined ? {} : { onSteady: (pid: number) => snapshot(pid, dir) }),
});
const mib = (kib: number) => Number((kib / 1024).toFixed(1));
console.log(JSON.stringify({
  pods,
  spawnToReady: result.spawnToReady,
  cpuToReady: result.cpuToReady,
  cpuChildren: result.cpuChildrenToReady,
  rssMiB: mib(result.rssKib),
  hwmMiB: mib(result.hwmKib),
  mbAtStart: Number((result.bytesAtStart / 1e6).toFixed(1)),
  burst: result.burst === null ? null : { rssMiB: mib(result.burst.rssKib), hwmMiB: mib(result.burst.hwmKib), mbPer1000: Number((result.burst.bytesPer1000 / 1e6).toFixed(2)) },
  firstSyncMs: result.readySyncMs,
  spawnToStarted: result.spawnToStarted,
  warnings: result.warnings.slice(0, 3),
}));
