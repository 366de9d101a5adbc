import type { CommandRunner } from '../exec.js';
import { commandAvailable } from '../exec.js';
import { Ipset } from '../ipset.js';
import { Iptables, BACKENDS } from '../iptables/iptables.js';
import type { Backend } from '../iptables/iptables.js';
import type { RetryPolicy } from '../retry.js';

/**
 * Removes everything palisade put on a node, and nothing else: jumps from built-in chains into
 * palisade's chains, those chains, and palisade's sets, for the current prefix and every historic one,
 * in both iptables backends. Safe to run twice: a second run finds nothing and writes nothing.
 */

export interface CleanupReport {
  readonly backends: readonly { backend: Backend; hooksRemoved: number; chainsRemoved: readonly string[] }[];
  readonly setsRemoved: readonly string[];
  readonly setsInUse: readonly string[];
}

export interface CleanupOptions {
  readonly runner: CommandRunner;
  readonly prefixes: readonly string[];
  readonly backends?: readonly Backend[];
  readonly retry?: RetryPolicy;
}

export async function cleanup(options: CleanupOptions): Promise<CleanupReport> {
  const owns = (name: string) => options.prefixes.some((p) => name.startsWith(`${p}-`));
  const backends: CleanupReport['backends'][number][] = [];
  for (const backend of options.backends ?? BACKENDS) {
    // On the host, a backend whose tools are not installed has nothing of ours in it.
    if (options.runner.describe() === 'host' && !(await commandAvailable(`iptables-${backend}-restore`))) continue;
    const iptables = new Iptables({ runner: options.runner, backend, ...(options.retry === undefined ? {} : { retry: options.retry }) });
    const table = await iptables.save();
    const jumps: string[] = [];
    const chains: string[] = [];
    for (const chain of table.values()) {
      if (owns(chain.name)) {
        chains.push(chain.name);
        continue;
      }
      // Jumps from any other chain, built-in or not, would keep ours from being deleted.
      for (const rule of chain.rules) if (rule.target !== null && owns(rule.target)) jumps.push(rule.text.replace(/^-A /, '-D '));
    }
    if (jumps.length > 0 || chains.length > 0) {
      const lines = [...chains.map((c) => `:${c} - [0:0]`), ...jumps, ...chains.map((c) => `-X ${c}`)];
      await iptables.restore(`*filter\n${lines.join('\n')}\nCOMMIT\n`);
    }
    backends.push({ backend, hooksRemoved: jumps.length, chainsRemoved: chains.sort() });
  }
  const ipset = new Ipset({ runner: options.runner, ...(options.retry === undefined ? {} : { retry: options.retry }) });
  const setsRemoved: string[] = [];
  const setsInUse: string[] = [];
  for (const name of [...(await ipset.save(owns)).keys()].sort()) {
    const outcome = await ipset.destroy(name);
    if (outcome === 'destroyed') setsRemoved.push(name);
    else if (outcome === 'in-use') setsInUse.push(name);
  }
  return { backends, setsRemoved, setsInUse };
}
