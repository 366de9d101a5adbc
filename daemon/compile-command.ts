import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { UsageError } from '../lib/errors.js';
import { loadedCompiler } from '../rules/snapshot.js';
import { formatProblem } from '../rules/problems.js';
import { renderIpsets, renderIptables } from '../rules/render.js';
import { compilerSettingsFromFlags, COMPILER_FLAG_HELP, COMPILER_FLAGS } from './compiler-flags.js';
import { snapshotFromFiles } from './snapshot-files.js';
import type { CommandIO } from './command-io.js';

export const COMPILE_HELP = `Usage: palisade compile --node-name NAME [options] FILE|DIR...

Reads Pods, Namespaces, Nodes and NetworkPolicies (YAML or JSON, Lists included) and prints what the
node would be given: the ipset restore text, then the iptables-restore text. ClusterNetworkPolicies
are read and left out, with a warning: palisade does not enforce them yet.

Options:
  --node-name NAME        the node whose pods get endpoint chains (required)
${COMPILER_FLAG_HELP}
  --out DIR               write DIR/ipsets.restore and DIR/iptables.restore instead of printing
`;

export async function compileCommand(argv: readonly string[], io: CommandIO): Promise<number> {
  const { values, positionals } = parseArgs({
    args: [...argv],
    options: { ...COMPILER_FLAGS, out: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
    strict: true,
  });
  if (values.help === true) {
    io.stdout(COMPILE_HELP);
    return 0;
  }
  if (positionals.length === 0) throw new UsageError('compile: give at least one manifest file or directory');
  const settings = compilerSettingsFromFlags(values);
  const { snapshot } = await snapshotFromFiles(positionals, io.stderrLine, settings.policyBudget);
  const compiler = loadedCompiler(snapshot, settings);
  const dataplane = compiler.build();
  // Address claims were reported with the objects; interface names clash only among one node's pods.
  for (const problem of compiler.problems()) if (problem.field === 'metadata.name') io.stderrLine(formatProblem(problem));
  const ipsets = renderIpsets(dataplane.ipsets.values());
  const iptables = renderIptables(dataplane);
  if (values.out === undefined) {
    io.stdout(`# ipset restore\n${ipsets}# iptables-restore --noflush\n${iptables}`);
    return 0;
  }
  await mkdir(values.out, { recursive: true });
  await writeFile(path.join(values.out, 'ipsets.restore'), ipsets);
  await writeFile(path.join(values.out, 'iptables.restore'), iptables);
  io.stderrLine(`wrote ${path.join(values.out, 'ipsets.restore')} (${dataplane.ipsets.size} sets) and ${path.join(values.out, 'iptables.restore')} (${dataplane.chains.size} chains)`);
  return 0;
}
