import { parseArgs } from 'node:util';
import { UsageError } from '../../lib/errors.js';
import { commandAvailable } from '../../lib/exec.js';
import type { CommandIO } from '../command-io.js';
import { withSignalHandling } from './interrupt.js';
import { loadExamplePolicies } from './objects.js';
import { missingRequirements } from './preflight.js';
import { Demo } from './walkthrough.js';

export const DEMO_HELP = `Usage: palisade demo

Replays the "K8S: Network Policy" tutorial (two busybox pods; deny-all, allow-out-to-in,
isolate-namespace, allow-all) on a lab EKS node built from network namespaces on this machine: pods
wired like the AWS VPC CNI, an embedded API server, and a real "palisade daemon" process enforcing
the policies of manifests/examples. Every step prints the kubectl command it stands for, what was
observed (real packets between the pods, and the node's status endpoint), and ✔ or ✘ against what
the tutorial says; the exit status is 1 if any step differs.

Needs root, iproute2, iptables (nft) and ipset. It never touches the machine's own network
namespace: everything lives in namespaces named paldemo-*, deleted at the end, on Ctrl-C (SIGINT),
on SIGTERM and on errors. Takes about 10 seconds.
`;

export async function demoCommand(argv: readonly string[], io: CommandIO): Promise<number> {
  const { values, positionals } = parseArgs({ args: [...argv], options: { help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
  if (values.help === true) {
    io.stdout(DEMO_HELP);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`demo takes no arguments, got ${positionals.join(' ')}`);

  const missing = await missingRequirements();
  if (missing !== null) {
    io.stderrLine(`palisade demo: cannot run here: ${missing}`);
    return 1;
  }
  // Read before anything is created, so a missing file costs nothing to clean up.
  const policies = await loadExamplePolicies();
  const useIcmp = await commandAvailable('ping');

  const demo = new Demo(io, policies, useIcmp);
  return withSignalHandling(io, demo.interruption, () => demo.main());
}
