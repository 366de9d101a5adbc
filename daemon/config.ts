import { parseArgs } from 'node:util';
import { UsageError } from '../lib/errors.js';
import type { BackendChoice } from '../lib/iptables/backend.js';
import { makeSettings, DEFAULT_DROP_LOG, DEFAULT_SETTINGS } from '../rules/settings.js';
import { parseDropLogFlags } from './compiler-flags.js';
import { budgetOf, DEFAULT_POLICY_BUDGET } from '../rules/policy-budget.js';
import type { CompilerSettings } from '../rules/settings.js';
import { DEFAULT_STARTUP_TAINT, parseStartupTaint } from './startup-taint.js';
import type { StartupTaint } from './startup-taint.js';

/**
 * The daemon's configuration: parsed once at the edge from flags and environment variables, every
 * problem reported together, then frozen. Nothing else in palisade reads process.env.
 */

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';
const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'];

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

export interface DaemonConfig {
  /** null: the in-cluster service account. */
  readonly kubeconfig: string | null;
  readonly compiler: CompilerSettings;
  readonly statusAddr: ListenAddress;
  readonly metricsAddr: ListenAddress;
  readonly iptablesBackend: BackendChoice;
  readonly refreshIntervalMs: number;
  /** How long changes are gathered before one compile and apply: bursts coalesce, nothing stalls. */
  readonly syncDelayMs: number;
  readonly logLevel: LogLevel;
  /** Records of denied connections /drops keeps (the drop log's own settings are in compiler.dropLog). */
  readonly dropLogBuffer: number;
  /** The taint palisade removes from its own node after its first apply; null: none (--startup-taint none). */
  readonly startupTaint: StartupTaint | null;
  /** Events on NetworkPolicies palisade cannot fully enforce, from the holder of one Lease; null when off. */
  readonly policyEvents: PolicyEventsConfig | null;
  /** How often discovery is asked whether the API server serves ClusterNetworkPolicies (their CRD installed or removed). */
  readonly clusterPolicyDiscoveryIntervalMs: number;
}

export interface PolicyEventsConfig {
  /** Where the Lease is: the daemon's own namespace (POD_NAMESPACE, from the downward API). */
  readonly leaseNamespace: string;
  readonly leaseName: string;
  /** holderIdentity and the Events' reportingInstance: "<pod>_<node>", or the node's name without a pod name. */
  readonly identity: string;
}

/** The one Lease the reporters elect their leader on; the Role's resourceNames name it too. */
export const POLICY_REPORTER_LEASE = 'palisade-policy-reporter';
export const DEFAULT_LEASE_NAMESPACE = 'kube-system';

export const DEFAULT_DROP_LOG_BUFFER = 1000;
/** Discovery more often than this would cost the API server requests for nothing a CRD change needs. */
const MIN_DISCOVERY_INTERVAL_MS = 1000;
const MAX_DROP_LOG_BUFFER = 1_000_000;

/** Each flag, its environment variable, and its default. The table is the documentation too. */
export const DAEMON_FLAGS = [
  { flag: 'kubeconfig', env: ['PALISADE_KUBECONFIG', 'KUBECONFIG'], default: '(in-cluster service account)', help: 'kubeconfig file' },
  { flag: 'node-name', env: ['PALISADE_NODE_NAME', 'NODE_NAME'], default: '(required)', help: 'this node, as Kubernetes names it' },
  { flag: 'interface-prefix', env: ['PALISADE_INTERFACE_PREFIX'], default: DEFAULT_SETTINGS.interfacePrefixes.join(','), help: 'host-side veth prefixes, comma separated (eni: AWS VPC CNI, cali: Calico)' },
  { flag: 'status-addr', env: ['PALISADE_STATUS_ADDR'], default: '127.0.0.1:9710', help: 'node-local status endpoint' },
  { flag: 'metrics-addr', env: ['PALISADE_METRICS_ADDR'], default: '0.0.0.0:9711', help: 'Prometheus metrics endpoint' },
  { flag: 'iptables-backend', env: ['PALISADE_IPTABLES_BACKEND'], default: 'auto', help: 'auto, legacy or nft' },
  { flag: 'refresh-interval', env: ['PALISADE_REFRESH_INTERVAL'], default: '10s', help: 'how often the live rules are read back and repaired' },
  { flag: 'sync-delay', env: ['PALISADE_SYNC_DELAY'], default: '20ms', help: 'how long changes are gathered into one sync' },
  { flag: 'log-level', env: ['PALISADE_LOG_LEVEL'], default: 'info', help: 'trace, debug, info, warn or error' },
  { flag: 'chain-prefix', env: ['PALISADE_CHAIN_PREFIX'], default: DEFAULT_SETTINGS.chainPrefix, help: 'prefix of every chain and ipset' },
  { flag: 'allow-mark', env: ['PALISADE_ALLOW_MARK'], default: `0x${DEFAULT_SETTINGS.allowMark.toString(16)}`, help: 'packet-mark bit meaning "allowed"; the two bits above it mean ClusterNetworkPolicy Pass and Deny' },
  { flag: 'unknown-endpoint', env: ['PALISADE_UNKNOWN_ENDPOINT'], default: DEFAULT_SETTINGS.unknownEndpoint, help: 'drop or allow traffic of pod interfaces not known yet' },
  { flag: 'policy-max-rules', env: ['PALISADE_POLICY_MAX_RULES'], default: String(DEFAULT_POLICY_BUDGET.rules), help: 'iptables rules one NetworkPolicy may need before it fails closed' },
  { flag: 'policy-max-sets', env: ['PALISADE_POLICY_MAX_SETS'], default: String(DEFAULT_POLICY_BUDGET.sets), help: 'ipsets one NetworkPolicy may need before it fails closed' },
  { flag: 'policy-max-set-entries', env: ['PALISADE_POLICY_MAX_SET_ENTRIES'], default: String(DEFAULT_POLICY_BUDGET.setEntries), help: 'ipBlock set entries one NetworkPolicy may need before it fails closed' },
  { flag: 'drop-log', env: ['PALISADE_DROP_LOG'], default: 'on', help: 'on or off: log denied new connections, serve them at /drops' },
  { flag: 'drop-log-rate', env: ['PALISADE_DROP_LOG_RATE'], default: String(DEFAULT_DROP_LOG.rate), help: 'drop-log records per second per node (burst: twice that; one pod: a tenth)' },
  { flag: 'drop-log-buffer', env: ['PALISADE_DROP_LOG_BUFFER'], default: String(DEFAULT_DROP_LOG_BUFFER), help: 'records of denied connections /drops keeps' },
  { flag: 'drop-log-group', env: ['PALISADE_DROP_LOG_GROUP'], default: String(DEFAULT_DROP_LOG.group), help: 'NFLOG group the drop log uses (one no other program on the node binds)' },
  { flag: 'startup-taint', env: ['PALISADE_STARTUP_TAINT'], default: DEFAULT_STARTUP_TAINT, help: 'KEY[=VALUE]:EFFECT taint removed from this node once its rules are in place, or none' },
  { flag: 'policy-events', env: ['PALISADE_POLICY_EVENTS'], default: 'on', help: 'on or off: report NetworkPolicies palisade cannot fully enforce as Events (one daemon, elected on a Lease, writes them)' },
  { flag: 'lease-namespace', env: ['PALISADE_LEASE_NAMESPACE', 'POD_NAMESPACE'], default: DEFAULT_LEASE_NAMESPACE, help: `namespace of the Lease ${POLICY_REPORTER_LEASE} (the DaemonSet sets POD_NAMESPACE from the downward API)` },
  { flag: 'pod-name', env: ['PALISADE_POD_NAME', 'POD_NAME'], default: '(none: the node name)', help: 'this pod, for the Lease holder and the Events\' reportingInstance (the DaemonSet sets POD_NAME from the downward API)' },
  { flag: 'cluster-policy-discovery-interval', env: ['PALISADE_CLUSTER_POLICY_DISCOVERY_INTERVAL'], default: '30s', help: 'how often to ask the API server whether it serves ClusterNetworkPolicies (their CRD installed or removed); at once, too, when their watch is answered 404' },
  { flag: 'policy-max-selector-pods', env: ['PALISADE_POLICY_MAX_SELECTOR_PODS'], default: String(DEFAULT_POLICY_BUDGET.selectorPods), help: 'pods palisade may look at to fill the selector sets of one NetworkPolicy before it fails closed' },
] as const;

type FlagName = (typeof DAEMON_FLAGS)[number]['flag'];

export function daemonFlagHelp(): string {
  return DAEMON_FLAGS.map((f) => `  --${f.flag.padEnd(18)} ${f.help} (env ${f.env.join(' or ')}; default ${f.default})`).join('\n');
}

/** "10s", "500ms", "2m", or a bare number of seconds. */
export function parseDuration(text: string): number | null {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (match === null) return null;
  const value = Number(match[1]);
  const unit = match[2] ?? 's';
  return Math.round(value * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit as 'ms' | 's' | 'm' | 'h']);
}

export function parseListenAddress(text: string): ListenAddress | null {
  const match = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]*):(\d{1,5})$/.exec(text);
  if (match === null) return null;
  const port = Number(match[2]);
  if (port > 65535) return null;
  const host = match[1]!.replace(/^\[|\]$/g, '');
  return { host: host === '' ? '0.0.0.0' : host, port };
}

export function parseDaemonConfig(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): DaemonConfig {
  const options = Object.fromEntries(DAEMON_FLAGS.map((f) => [f.flag, { type: 'string' as const }]));
  const { values, positionals } = parseArgs({ args: [...argv], options, allowPositionals: true, strict: true });
  const errors: string[] = [];
  if (positionals.length > 0) errors.push(`unexpected arguments: ${positionals.join(' ')}`);
  const read = (flag: FlagName): { value: string; from: string } | undefined => {
    const fromFlag = values[flag];
    if (typeof fromFlag === 'string') return { value: fromFlag, from: `--${flag}` };
    const spec = DAEMON_FLAGS.find((f) => f.flag === flag)!;
    for (const name of spec.env) {
      const value = env[name];
      if (value !== undefined && value !== '') return { value, from: name };
    }
    return undefined;
  };
  const withDefault = (flag: FlagName) => read(flag) ?? { value: DAEMON_FLAGS.find((f) => f.flag === flag)!.default, from: `default of --${flag}` };

  const duration = (flag: FlagName, min: number): number => {
    const { value, from } = withDefault(flag);
    const ms = parseDuration(value);
    if (ms === null || ms < min) errors.push(`${from} "${value}": must be a duration of at least ${min} ms, like 10s or 1500ms`);
    return ms ?? min;
  };
  const address = (flag: FlagName): ListenAddress => {
    const { value, from } = withDefault(flag);
    const parsed = parseListenAddress(value);
    if (parsed === null) errors.push(`${from} "${value}": must be HOST:PORT, like 127.0.0.1:9710`);
    return parsed ?? { host: '127.0.0.1', port: 0 };
  };

  const backend = withDefault('iptables-backend');
  if (!['auto', 'legacy', 'nft'].includes(backend.value)) errors.push(`${backend.from} "${backend.value}": must be auto, legacy or nft`);
  const level = withDefault('log-level');
  if (!(LOG_LEVELS as readonly string[]).includes(level.value)) errors.push(`${level.from} "${level.value}": must be one of ${LOG_LEVELS.join(', ')}`);
  const unknown = read('unknown-endpoint');
  if (unknown !== undefined && unknown.value !== 'drop' && unknown.value !== 'allow') errors.push(`${unknown.from} "${unknown.value}": must be drop or allow`);
  const mark = read('allow-mark');
  const allowMark = mark === undefined ? undefined : /^(0x[0-9a-fA-F]+|\d+)$/.test(mark.value) ? Number(mark.value) : NaN;
  if (mark !== undefined && Number.isNaN(allowMark)) errors.push(`${mark.from} "${mark.value}": not a number`);
  const nodeName = read('node-name');
  if (nodeName === undefined) errors.push('--node-name (or NODE_NAME, set from the downward API in the DaemonSet) is required');
  const limit = (flag: FlagName): number | undefined => {
    const given = read(flag);
    if (given === undefined) return undefined;
    if (!/^[0-9]+$/.test(given.value) || Number(given.value) < 1) {
      errors.push(`${given.from} "${given.value}": must be a whole number of at least 1`);
      return undefined;
    }
    return Number(given.value);
  };
  const policyBudget = budgetOf({ rules: limit('policy-max-rules'), sets: limit('policy-max-sets'), setEntries: limit('policy-max-set-entries'), selectorPods: limit('policy-max-selector-pods') });
  const prefixes = read('interface-prefix')?.value.split(',').map((s) => s.trim());
  const chainPrefix = read('chain-prefix')?.value;
  const named = (flag: FlagName) => {
    const given = read(flag);
    return given === undefined ? undefined : { value: given.value, name: given.from };
  };
  const dropLog = parseDropLogFlags({ mode: named('drop-log'), rate: named('drop-log-rate'), group: named('drop-log-group') }, errors);
  const buffer = withDefault('drop-log-buffer');
  const dropLogBuffer = /^[0-9]+$/.test(buffer.value) ? Number(buffer.value) : NaN;
  if (!(dropLogBuffer >= 1 && dropLogBuffer <= MAX_DROP_LOG_BUFFER)) errors.push(`${buffer.from} "${buffer.value}": must be a whole number of records from 1 to ${MAX_DROP_LOG_BUFFER}`);
  const taintFlag = withDefault('startup-taint');
  const startupTaint = parseStartupTaint(taintFlag.value);
  if (!startupTaint.ok) errors.push(`${taintFlag.from} "${taintFlag.value}": ${startupTaint.error}`);
  const policyEventsMode = withDefault('policy-events');
  if (policyEventsMode.value !== 'on' && policyEventsMode.value !== 'off') errors.push(`${policyEventsMode.from} "${policyEventsMode.value}": must be on or off`);
  const leaseNamespace = withDefault('lease-namespace');
  if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(leaseNamespace.value)) errors.push(`${leaseNamespace.from} "${leaseNamespace.value}": must be a namespace name (a DNS label)`);
  const podName = read('pod-name');
  if (podName !== undefined && !/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(podName.value)) errors.push(`${podName.from} "${podName.value}": must be a pod name (a DNS subdomain)`);
  const node = nodeName?.value ?? 'unset';
  const policyEvents: PolicyEventsConfig | null = policyEventsMode.value === 'off' ? null : {
    leaseNamespace: leaseNamespace.value,
    leaseName: POLICY_REPORTER_LEASE,
    identity: podName === undefined ? node : `${podName.value}_${node}`,
  };
  const settings = makeSettings({
    nodeName: nodeName?.value ?? 'unset',
    ...(prefixes === undefined ? {} : { interfacePrefixes: prefixes }),
    ...(chainPrefix === undefined ? {} : { chainPrefix }),
    ...(allowMark === undefined || Number.isNaN(allowMark) ? {} : { allowMark }),
    ...(unknown === undefined || (unknown.value !== 'drop' && unknown.value !== 'allow') ? {} : { unknownEndpoint: unknown.value }),
    policyBudget,
    dropLog,
  });
  if (!settings.ok) errors.push(...settings.errors);
  const kubeconfig = read('kubeconfig')?.value ?? null;
  const config: DaemonConfig = {
    kubeconfig,
    compiler: settings.ok ? settings.settings : (undefined as never),
    statusAddr: address('status-addr'),
    metricsAddr: address('metrics-addr'),
    iptablesBackend: backend.value as BackendChoice,
    refreshIntervalMs: duration('refresh-interval', 1000),
    syncDelayMs: duration('sync-delay', 0),
    logLevel: level.value as LogLevel,
    dropLogBuffer: Number.isNaN(dropLogBuffer) ? DEFAULT_DROP_LOG_BUFFER : dropLogBuffer,
    startupTaint: startupTaint.ok ? startupTaint.taint : null,
    policyEvents: policyEvents === null ? null : Object.freeze(policyEvents),
    clusterPolicyDiscoveryIntervalMs: duration('cluster-policy-discovery-interval', MIN_DISCOVERY_INTERVAL_MS),
  };
  if (errors.length > 0) throw new UsageError(errors.join('\n'));
  return Object.freeze(config);
}
