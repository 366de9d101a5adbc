import { parseArgs } from 'node:util';
import { UsageError } from '../lib/errors.js';
import { hostRunner } from '../lib/exec.js';
import { cleanup } from '../lib/dataplane/cleanup.js';
import { BACKENDS } from '../lib/iptables/iptables.js';
import type { Backend } from '../lib/iptables/iptables.js';
import { DEFAULT_SETTINGS, HISTORIC_CHAIN_PREFIXES } from '../rules/settings.js';
import type { CommandIO } from './command-io.js';

export const CLEANUP_HELP = `Usage: palisade cleanup [--chain-prefix pal] [--iptables-backend all|legacy|nft]

Removes every hook, chain and ipset palisade created on this node (for the given prefix and every
prefix earlier versions used), in both iptables backends unless one is named, in the mangle table and
the filter table earlier versions used, and nothing else.
Safe to run twice. Run it only after the palisade daemon on this node has stopped for good: the
node's pods are then no longer isolated by policy.
`;

export async function cleanupCommand(argv: readonly string[], io: CommandIO): Promise<number> {
  const { values, positionals } = parseArgs({
    args: [...argv],
    options: { 'chain-prefix': { type: 'string' }, 'iptables-backend': { type: 'string', default: 'all' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
    strict: true,
  });
  if (values.help === true) {
    io.stdout(CLEANUP_HELP);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`cleanup takes no arguments, got ${positionals.join(' ')}`);
  const choice = values['iptables-backend'];
  if (choice !== 'all' && !(BACKENDS as readonly string[]).includes(choice)) throw new UsageError(`--iptables-backend "${choice}": must be all, legacy or nft`);
  const prefix = values['chain-prefix'] ?? DEFAULT_SETTINGS.chainPrefix;
  if (!/^[a-z][a-z0-9]{0,7}$/.test(prefix)) throw new UsageError(`--chain-prefix "${prefix}": must be 1 to 8 lowercase letters or digits`);
  const report = await cleanup({
    runner: hostRunner,
    prefixes: [...new Set([prefix, ...HISTORIC_CHAIN_PREFIXES])],
    backends: choice === 'all' ? BACKENDS : [choice as Backend],
  });
  for (const b of report.backends) io.stdout(`${b.backend} ${b.table}: removed ${b.hooksRemoved} hook rules and ${b.chainsRemoved.length} chains\n`);
  io.stdout(`ipset: removed ${report.setsRemoved.length} sets${report.setsInUse.length > 0 ? `; still in use: ${report.setsInUse.join(', ')}` : ''}\n`);
  return report.setsInUse.length > 0 ? 1 : 0;
}
