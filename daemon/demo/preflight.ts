/** What the demo needs before it creates anything: Linux, root, and these tools on PATH. */

import { commandAvailable } from '../../lib/exec.js';

const REQUIRED_TOOLS: readonly { command: string; package: string }[] = [
  { command: 'ip', package: 'iproute2' },
  { command: 'iptables-nft-restore', package: 'iptables' },
  { command: 'iptables-nft-save', package: 'iptables' },
  { command: 'ipset', package: 'ipset' },
];

/** Null when the demo can run, else what is missing and how to get it. */
export async function missingRequirements(): Promise<string | null> {
  if (process.platform !== 'linux') return `it needs Linux network namespaces, and this is ${process.platform}`;
  const problems: string[] = [];
  if (process.getuid?.() !== 0) problems.push('it must run as root (it creates network namespaces and firewalls inside them): run it with sudo');
  const absent: { command: string; package: string }[] = [];
  for (const tool of REQUIRED_TOOLS) if (!(await commandAvailable(tool.command))) absent.push(tool);
  if (absent.length > 0) {
    const packages = [...new Set(['iptables', 'ipset', ...absent.map((t) => t.package)])];
    problems.push(`missing on PATH: ${absent.map((t) => t.command).join(', ')}; install them with: apt-get install -y ${packages.join(' ')}`);
  }
  return problems.length === 0 ? null : problems.join('; ');
}
