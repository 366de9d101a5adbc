/**
 * What the shipped monitoring manifests turn into inside Prometheus, for the tests that run the real
 * thing (promtool, and a Prometheus server in a lab namespace):
 *
 *   prometheusrule.yaml ── ruleFile() ──────────────────────► the rule file Prometheus and promtool read
 *   podmonitor.yaml ────── scrapeConfig(targets) ───────────► a scrape job relabelled as the Prometheus
 *                          (static targets carrying the          Operator's generated job relabels a
 *                           __meta_kubernetes_pod_* labels        discovered pod
 *                           Kubernetes discovery would set)
 *
 * The manifests are the only copy: nothing here repeats a rule, a relabeling or a label.
 *
 *   const prometheus = await PrometheusServer.start(namespace, { listen: '203.0.113.10:9090', config, rules });
 *   const result = await prometheus.query('up{job="palisade"}');
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';
import { commandAvailable } from '../../lib/exec.js';
import { LabProcess } from '../../lib/lab/process.js';
import type { NetworkNamespace } from '../../lib/netns.js';

type Obj = Record<string, unknown>;

export const MONITORING_DIR = path.resolve(fileURLToPath(import.meta.url), '../../../../manifests/monitoring');

export interface RuleGroup {
  readonly name: string;
  readonly interval?: string;
  readonly rules: readonly Rule[];
}

export interface Rule {
  readonly alert?: string;
  readonly record?: string;
  readonly expr: string;
  readonly for?: string;
  readonly labels?: Record<string, string>;
  readonly annotations?: Record<string, string>;
}

export async function readManifest(file: string): Promise<Obj> {
  return parse(await readFile(path.join(MONITORING_DIR, file), 'utf8')) as Obj;
}

/** The PrometheusRule's groups, as the Prometheus Operator hands them to Prometheus. */
export async function ruleGroups(): Promise<RuleGroup[]> {
  const rule = await readManifest('prometheusrule.yaml');
  return (rule['spec'] as { groups: RuleGroup[] }).groups;
}

/** A Prometheus rule file (`groups:`) holding the given groups. */
export function ruleFile(groups: readonly RuleGroup[]): string {
  return stringify({ groups });
}

/** Every alert's name, in the order the PrometheusRule lists them. */
export function alertNames(groups: readonly RuleGroup[]): string[] {
  return groups.flatMap((g) => g.rules.flatMap((r) => (r.alert === undefined ? [] : [r.alert])));
}

/** Prometheus's form of a Kubernetes label name in discovery labels: app.kubernetes.io/name → app_kubernetes_io_name. */
function sanitize(name: string): string {
  return name.replace(/[^a-zA-Z0-9_]/g, '_');
}

/** A PodMonitor relabeling (camelCase, as the CRD spells it) in Prometheus's own spelling. */
function relabelConfig(r: Obj): Obj {
  const out: Obj = {};
  if (r['sourceLabels'] !== undefined) out['source_labels'] = r['sourceLabels'];
  if (r['separator'] !== undefined) out['separator'] = r['separator'];
  if (r['targetLabel'] !== undefined) out['target_label'] = r['targetLabel'];
  if (r['regex'] !== undefined) out['regex'] = r['regex'];
  if (r['modulus'] !== undefined) out['modulus'] = r['modulus'];
  if (r['replacement'] !== undefined) out['replacement'] = r['replacement'];
  if (r['action'] !== undefined) out['action'] = String(r['action']).toLowerCase();
  return out;
}

/** A palisade pod as Kubernetes discovery would present it to the scrape job. */
export interface PodTarget {
  /** host:port of the metrics endpoint (the node's address: palisade is on the host network). */
  readonly address: string;
  readonly pod: string;
  readonly node: string;
}

export interface ScrapeOptions {
  /** Replaces the PodMonitor's interval, so a test sees changes within seconds. */
  readonly interval: string;
}

/**
 * The scrape job the Prometheus Operator generates for the PodMonitor's first endpoint (its
 * generatePodMonitorConfig: the phase filter, the selector and port keeps, the namespace, container,
 * pod, job and endpoint labels, then the endpoint's own relabelings), with static targets standing in
 * for Kubernetes discovery.
 */
export async function scrapeConfig(targets: readonly PodTarget[], options: ScrapeOptions): Promise<Obj> {
  const monitor = await readManifest('podmonitor.yaml');
  const metadata = monitor['metadata'] as { name: string; namespace: string };
  const spec = monitor['spec'] as { jobLabel?: string; selector: { matchLabels?: Record<string, string> }; podMetricsEndpoints: Obj[] };
  const endpoint = spec.podMetricsEndpoints[0]!;
  const port = endpoint['port'] as string;
  const matchLabels = spec.selector.matchLabels ?? {};
  const relabel: Obj[] = [
    { source_labels: ['job'], target_label: '__tmp_prometheus_job_name' },
    { action: 'drop', source_labels: ['__meta_kubernetes_pod_phase'], regex: '(Failed|Succeeded)' },
    ...Object.entries(matchLabels).map(([k, v]) => ({
      action: 'keep',
      source_labels: [`__meta_kubernetes_pod_label_${sanitize(k)}`, `__meta_kubernetes_pod_labelpresent_${sanitize(k)}`],
      regex: `(${v});true`,
    })),
    { action: 'keep', source_labels: ['__meta_kubernetes_pod_container_port_name'], regex: port },
    { source_labels: ['__meta_kubernetes_namespace'], target_label: 'namespace' },
    { source_labels: ['__meta_kubernetes_pod_container_name'], target_label: 'container' },
    { source_labels: ['__meta_kubernetes_pod_name'], target_label: 'pod' },
    { target_label: 'job', replacement: `${metadata.namespace}/${metadata.name}` },
    ...(spec.jobLabel === undefined ? [] : [{ source_labels: [`__meta_kubernetes_pod_label_${sanitize(spec.jobLabel)}`], target_label: 'job', regex: '(.+)', replacement: '${1}' }]),
    { target_label: 'endpoint', replacement: port },
    ...((endpoint['relabelings'] as Obj[] | undefined) ?? []).map(relabelConfig),
  ];
  const podLabels: Obj = {};
  for (const [k, v] of Object.entries(matchLabels)) {
    podLabels[`__meta_kubernetes_pod_label_${sanitize(k)}`] = v;
    podLabels[`__meta_kubernetes_pod_labelpresent_${sanitize(k)}`] = 'true';
  }
  return {
    job_name: `podMonitor/${metadata.namespace}/${metadata.name}/0`,
    honor_labels: endpoint['honorLabels'] ?? false,
    scrape_interval: options.interval,
    scrape_timeout: options.interval,
    metrics_path: endpoint['path'] ?? '/metrics',
    static_configs: targets.map((t) => ({
      targets: [t.address],
      labels: {
        ...podLabels,
        __meta_kubernetes_namespace: metadata.namespace,
        __meta_kubernetes_pod_name: t.pod,
        __meta_kubernetes_pod_node_name: t.node,
        __meta_kubernetes_pod_container_name: 'palisade',
        __meta_kubernetes_pod_container_port_name: port,
        __meta_kubernetes_pod_phase: 'Running',
      },
    })),
    relabel_configs: relabel,
  };
}

/** Null when the Prometheus tools are there, else why not. */
export async function prometheusUnavailableReason(commands: readonly string[] = ['promtool', 'prometheus']): Promise<string | null> {
  const missing: string[] = [];
  for (const command of commands) if (!(await commandAvailable(command))) missing.push(command);
  return missing.length === 0 ? null : `missing on PATH: ${missing.join(', ')} (apt-get install prometheus)`;
}

export interface QueryResult {
  readonly metric: Record<string, string>;
  readonly value: readonly [number, string];
}

export interface AlertState {
  readonly labels: Record<string, string>;
  readonly annotations: Record<string, string>;
  readonly state: 'pending' | 'firing' | 'inactive';
  readonly activeAt?: string;
}

export interface PrometheusServerOptions {
  /** host:port inside the namespace. */
  readonly listen: string;
  readonly scrapeConfigs: readonly Obj[];
  readonly groups: readonly RuleGroup[];
  readonly evaluationInterval: string;
}

/** A `prometheus` server inside a network namespace, its config, rules and storage in a temporary directory. */
export class PrometheusServer {
  readonly listen: string;
  private readonly netns: NetworkNamespace;
  private readonly process: LabProcess;
  private readonly dir: string;

  private constructor(netns: NetworkNamespace, process: LabProcess, dir: string, listen: string) {
    this.netns = netns;
    this.process = process;
    this.dir = dir;
    this.listen = listen;
  }

  static async start(netns: NetworkNamespace, options: PrometheusServerOptions): Promise<PrometheusServer> {
    const dir = await mkdtemp(path.join(tmpdir(), 'paltest-prometheus-'));
    try {
      await writeFile(path.join(dir, 'rules.yaml'), ruleFile(options.groups));
      await writeFile(path.join(dir, 'prometheus.yaml'), stringify({
        global: { scrape_interval: '1s', evaluation_interval: options.evaluationInterval },
        rule_files: [path.join(dir, 'rules.yaml')],
        scrape_configs: options.scrapeConfigs,
      }));
      const process = LabProcess.start(netns, [
        'prometheus',
        `--config.file=${path.join(dir, 'prometheus.yaml')}`,
        `--storage.tsdb.path=${path.join(dir, 'data')}`,
        `--web.listen-address=${options.listen}`,
        '--log.level=warn',
      ]);
      const server = new PrometheusServer(netns, process, dir, options.listen);
      await server.waitReady();
      return server;
    } catch (error) {
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
  }

  /** What the server printed, for failure messages. */
  get lines(): readonly string[] {
    return this.process.lines;
  }

  private async waitReady(timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const { status } = await this.get('/-/ready');
      if (status === 200) return;
      if (!this.process.running || Date.now() > deadline) {
        throw new Error(`prometheus did not become ready (HTTP ${status}, ${this.process.running ? 'running' : 'exited'}); it printed:\n${this.process.lines.slice(-30).join('\n')}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** GET on the server, from inside its namespace (a node fetch there, as lab.status does on a node). */
  async get(pathAndQuery: string): Promise<{ status: number; body: string }> {
    const script = 'fetch(process.argv[1]).then(async (r) => process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() })), (e) => { process.stdout.write(JSON.stringify({ status: 0, body: String(e) })); })';
    const out = await this.netns.run([process.execPath, '-e', script, `http://${this.listen}${pathAndQuery}`]);
    return JSON.parse(out) as { status: number; body: string };
  }

  private async api<T>(pathAndQuery: string): Promise<T> {
    const { status, body } = await this.get(pathAndQuery);
    if (status !== 200) throw new Error(`GET ${pathAndQuery}: HTTP ${status}: ${body.slice(0, 300)}`);
    const parsed = JSON.parse(body) as { status: string; data: T; error?: string };
    if (parsed.status !== 'success') throw new Error(`GET ${pathAndQuery}: ${parsed.error ?? body.slice(0, 300)}`);
    return parsed.data;
  }

  /** An instant query, evaluated now. */
  async query(expr: string): Promise<QueryResult[]> {
    const data = await this.api<{ resultType: string; result: QueryResult[] }>(`/api/v1/query?query=${encodeURIComponent(expr)}`);
    if (data.resultType !== 'vector') throw new Error(`${expr}: a ${data.resultType}, not a vector`);
    return data.result;
  }

  /** Every alert that is pending or firing. */
  async alerts(): Promise<AlertState[]> {
    return (await this.api<{ alerts: AlertState[] }>('/api/v1/alerts')).alerts;
  }

  /** The scrape targets and their health. */
  async targets(): Promise<{ labels: Record<string, string>; health: string; lastError: string }[]> {
    return (await this.api<{ activeTargets: { labels: Record<string, string>; health: string; lastError: string }[] }>('/api/v1/targets')).activeTargets;
  }

  async stop(): Promise<void> {
    try {
      await this.process.stop('SIGTERM', 5_000);
    } finally {
      await rm(this.dir, { recursive: true, force: true });
    }
  }
}
