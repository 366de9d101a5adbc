import type { CommandRunner } from '../exec.js';
import { commandAvailable } from '../exec.js';
import { Ipset } from '../ipset.js';
import { Iptables, BACKENDS } from '../iptables/iptables.js';
import type { Backend } from '../iptables/iptables.js';
import type { RetryPolicy } from '../retry.js';
import { HISTORIC_TABLES, POLICY_TABLE } from '../../rules/dataplane.js';

/**
 * Removes everything palisade put on a node, and nothing else: jumps from built-in chains into
 * palisade's chains, those chains, and palisade's sets, for the current prefix and every historic one,
 * in both iptables backends and in the table palisade uses and those it used before. Safe to run
 * twice: a second run finds nothing and writes nothing.
 */

/** Every table palisade ever wrote to, current first. */
export const OWNED_TABLES: readonly string[] = [POLICY_TABLE, ...HISTORIC_TABLES];

/**
 * Deletes, in one transaction, the chains of `table` that `owns` claims and every jump into them from
 * other chains; returns what went.
 */
export async function removeOwnedChains(iptables: Iptables, table: string, owns: (name: string) => boolean): Promise<{ hooksRemoved: number; chainsRemoved: string[] }> {
  const saved = await iptables.save({ table });
  const jumps: string[] = [];
  const chains: string[] = [];
  for (const chain of saved.values()) {
    if (owns(chain.name)) {
      chains.push(chain.name);
      continue;
    }
    // Jumps from any other chain, built-in or not, would keep ours from being deleted.
    for (const rule of chain.rules) if (rule.target !== null && owns(rule.target)) jumps.push(rule.text.replace(/^-A /, '-D '));
  }
  if (jumps.length > 0 || chains.length > 0) {
    const lines = [...chains.map((c) => `:${c} - [0:0]`), ...jumps, ...chains.map((c) => `-X ${c}`)];
    await iptables.restore(`*${table}\n${lines.join('\n')}\nCOMMIT\n`);
  }
  return { hooksRemoved: jumps.length, chainsRemoved: chains.sort() };
}

export interface CleanupReport {
  readonly backends: readonly { backend: Backend; table: string; hooksRemoved: number; chainsRemoved: readonly string[] }[];
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
    for (const table of OWNED_TABLES) backends.push({ backend, table, ...(await removeOwnedChains(iptables, table, owns)) });
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
