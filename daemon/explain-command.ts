import { parseArgs } from 'node:util';
import { UsageError } from '../lib/errors.js';
import { Evaluator } from '../rules/evaluator.js';
import type { DirectionVerdict, PacketProtocol, Verdict } from '../rules/evaluator.js';
import { parseIPv4 } from '../rules/ipv4.js';
import { printable } from '../rules/problems.js';
import { snapshotFromFiles } from './snapshot-files.js';
import { compilerSettingsFromFlags } from './compiler-flags.js';
import type { CommandIO } from './command-io.js';

export const EXPLAIN_HELP = `Usage: palisade explain --from NS/POD|IP --to NS/POD|IP --port N [--protocol TCP] [--via-service] [--output text|json] FILE|DIR...

Says whether NetworkPolicy allows a new connection, and which policies and rules decide it, for the
source's egress and the destination's ingress. Give pods or their addresses, never a Service's
ClusterIP: policy applies to the pod a Service sends the connection to.

Offline, a node's own addresses are what its Node object (InternalIP) and its hostNetwork pods say;
on the node, the daemon's /explain also knows every local address (node-local DNS, for one).

Audit policies (annotated palisade.io/audit: "true") never decide; an "audit" line under a direction
says whether they would deny the packet were they enforced.

ClusterNetworkPolicies (policy.networking.k8s.io/v1alpha2) in the manifests are evaluated in their
tiers, Admin before NetworkPolicy and Baseline after it; a "tier" line under a direction names the tier
that decided and the ClusterNetworkPolicies that select the pod. A pod reaching its own address is
not subject to them; --via-service asks about a pod reaching itself through a Service that sends it
back to the pod (a hairpin), which is.

Options:
  --from NS/POD|IP        source pod (namespace/name) or IPv4 address
  --to NS/POD|IP          destination pod or address
  --port N                destination port (not for ICMP)
  --protocol P            TCP (default), UDP, SCTP or ICMP
  --via-service           the pod reaches itself through a Service (--from and --to the same pod)
  --output F              text (default) or json: one object whose boolean "allowed" is the verdict
  --policy-max-… N        the per-policy budget, as the daemon's flags of the same names set it
`;

const PROTOCOLS: readonly PacketProtocol[] = ['TCP', 'UDP', 'SCTP', 'ICMP'];

interface Endpoint {
  readonly address: string;
  readonly pod: string | null;
}

function resolve(flag: string, value: string | undefined, evaluator: Evaluator): Endpoint {
  if (value === undefined) throw new UsageError(`--${flag} is required`);
  if (parseIPv4(value) !== null) {
    const pod = evaluator.podAt(value);
    return { address: value, pod: pod === undefined ? null : `${pod.namespace}/${pod.name}` };
  }
  const match = /^([^/]+)\/([^/]+)$/.exec(value);
  if (match === null) throw new UsageError(`--${flag} "${value}": expected NAMESPACE/POD or an IPv4 address`);
  const pod = evaluator.findPod(match[1]!, match[2]!);
  if (pod === undefined) throw new UsageError(`--${flag} ${value}: no such pod in the given manifests`);
  if (pod.ip === null) throw new UsageError(`--${flag} ${value}: the pod has no IPv4 address yet`);
  if (evaluator.addressOf(pod) === null) throw new UsageError(`--${flag} ${value}: the pod's address ${pod.ip} is not its own (a node or another pod holds it; see the warnings above)`);
  return { address: pod.ip, pod: value };
}

function parsePort(value: string | undefined, protocol: PacketProtocol): number | null {
  if (protocol === 'ICMP') {
    if (value !== undefined) throw new UsageError('--port makes no sense with ICMP');
    return null;
  }
  if (value === undefined) throw new UsageError('--port is required');
  const port = Number(value);
  if (!/^[0-9]+$/.test(value) || port < 1 || port > 65535) throw new UsageError(`--port "${value}": must be a number from 1 to 65535`);
  return port;
}

function describe(endpoint: Endpoint): string {
  return printable(endpoint.pod === null ? endpoint.address : `${endpoint.pod} (${endpoint.address})`);
}

function directionLine(v: DirectionVerdict): string {
  const lines = [`  ${v.direction.padEnd(7)} ${v.allowed ? 'allowed' : 'DENIED '}  ${printable(v.reason)}`];
  // Only where ClusterNetworkPolicies select the pod: a NetworkPolicy-only explanation reads as it always has.
  if (v.clusterPolicies.length > 0) {
    const decided = v.tier === null ? 'no tier decides (no policy applies to this packet)' : `decided in the ${v.tier} tier`;
    lines.push(`  ${''.padEnd(7)} tier     ${printable(`${decided}; ClusterNetworkPolicies selecting ${v.pod ?? ''} for ${v.direction}: ${v.clusterPolicies.join(', ')}`)}`);
  }
  // Audit policies decide nothing; their line says what they would do, under the verdict they left alone.
  if (v.audit !== null) lines.push(`  ${''.padEnd(7)} ${v.audit.wouldDeny ? 'audit: would deny' : 'audit'}  ${printable(`${v.audit.reason} (audit, not enforced: ${v.audit.policies.join(', ')})`)}`);
  return lines.join('\n');
}

export async function explainCommand(argv: readonly string[], io: CommandIO): Promise<number> {
  const { values, positionals } = parseArgs({
    args: [...argv],
    options: {
      from: { type: 'string' },
      to: { type: 'string' },
      port: { type: 'string' },
      protocol: { type: 'string', default: 'TCP' },
      'via-service': { type: 'boolean', default: false },
      output: { type: 'string', default: 'text' },
      'policy-max-rules': { type: 'string' },
      'policy-max-sets': { type: 'string' },
      'policy-max-set-entries': { type: 'string' },
      'policy-max-selector-pods': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help === true) {
    io.stdout(EXPLAIN_HELP);
    return 0;
  }
  const protocol = values.protocol.toUpperCase() as PacketProtocol;
  if (!PROTOCOLS.includes(protocol)) throw new UsageError(`--protocol "${values.protocol}": must be one of ${PROTOCOLS.join(', ')}`);
  if (values.output !== 'text' && values.output !== 'json') throw new UsageError(`--output "${values.output}": must be text or json`);
  const port = parsePort(values.port, protocol);
  if (positionals.length === 0) throw new UsageError('explain: give at least one manifest file or directory');
  // Only the budget matters here; the node name is a placeholder the settings require.
  const budget = compilerSettingsFromFlags(values, 'explain').policyBudget;
  const { snapshot } = await snapshotFromFiles(positionals, io.stderrLine, budget);
  const evaluator = new Evaluator(snapshot, { selectorPods: budget.selectorPods });
  const from = resolve('from', values.from, evaluator);
  const to = resolve('to', values.to, evaluator);
  const viaService = values['via-service'];
  if (viaService && from.address !== to.address) throw new UsageError('--via-service: --from and --to must be the same pod (a pod reaching itself through a Service)');
  const verdict: Verdict = evaluator.evaluate({ src: from.address, dst: to.address, protocol, port, ...(viaService ? { viaService } : {}) });
  if (values.output === 'json') {
    io.stdout(`${JSON.stringify({ allowed: verdict.allowed, from, to, protocol, port, egress: verdict.egress, ingress: verdict.ingress, assumptions: evaluator.assumptions() }, null, 2)}\n`);
  } else {
    const what = port === null ? protocol : `${protocol}/${port}`;
    const assuming = evaluator.assumptions().map((a) => `  assuming ${a}\n`).join('');
    io.stdout(`${describe(from)} -> ${describe(to)} ${what}: ${verdict.allowed ? 'ALLOWED' : 'DENIED'}\n${directionLine(verdict.egress)}\n${directionLine(verdict.ingress)}\n${assuming}`);
  }
  return 0;
}
