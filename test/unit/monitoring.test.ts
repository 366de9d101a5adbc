import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { hostRunner } from '../../lib/exec.js';
import { DaemonMetrics } from '../../daemon/metrics.js';
import { alertNames, MONITORING_DIR, prometheusUnavailableReason, readManifest, ruleFile, ruleGroups } from '../support/prometheus.js';

/**
 * The monitoring manifests as Prometheus sees them once deployed: every alert run through
 * `promtool test rules` against the cases in test/fixtures/monitoring/alerts.test.yaml (the rule file
 * is generated from the PrometheusRule, never kept twice); per-node alerts and legends that name the
 * node; and metric labels that the PodMonitor's target labels cannot overwrite.
 */

const root = path.resolve(fileURLToPath(import.meta.url), '../../../..');
const FIXTURE = path.join(root, 'test/fixtures/monitoring/alerts.test.yaml');
/** Labels a PodMonitor's scrape gives every series (node through palisade's relabeling). */
const TARGET_LABELS = ['job', 'instance', 'node', 'namespace', 'pod', 'container', 'endpoint'] as const;
/** Metrics whose namespace and pod name the pod they are about, kept by honorLabels. */
const POD_METRICS = ['palisade_dropped_packets_total', 'palisade_dropped_bytes_total'];
/** Alerts about the whole cluster rather than one node. */
const CLUSTER_WIDE = ['PalisadeTargetsMissing', 'PalisadeAbsent'];

type Obj = Record<string, unknown>;

interface PromtoolTests {
  readonly rule_files: string[];
  readonly tests: { alert_rule_test?: { alertname: string; exp_alerts: Obj[] }[] }[];
}

/** Writes the rule file from the PrometheusRule beside the test file, runs promtool on it. */
async function promtoolTestRules(testFile: string): Promise<{ code: number; output: string }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'paltest-promtool-'));
  try {
    const tests = parse(testFile) as PromtoolTests;
    assert.deepEqual(tests.rule_files, ['palisade.rules.yaml']);
    await writeFile(path.join(dir, 'palisade.rules.yaml'), ruleFile(await ruleGroups()));
    await writeFile(path.join(dir, 'alerts.test.yaml'), testFile);
    const result = await hostRunner.exec(['promtool', 'test', 'rules', path.join(dir, 'alerts.test.yaml')], { timeoutMs: 60_000 });
    return { code: result.code, output: `${result.stdout}${result.stderr}` };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe('the alerts, run by promtool', function () {
  this.timeout(60_000);

  before(async function () {
    const reason = await prometheusUnavailableReason(['promtool']);
    if (reason === null) return;
    if (process.env['PALISADE_REQUIRE_NETNS'] === '1') throw new Error(`promtool is required (PALISADE_REQUIRE_NETNS=1) but unavailable: ${reason}`);
    console.warn(`      skipped: ${reason}`);
    this.skip();
  });

  it('fire, with the labels and annotations naming the node, exactly as the fixture\'s cases expect', async () => {
    const { code, output } = await promtoolTestRules(await readFile(FIXTURE, 'utf8'));
    assert.equal(code, 0, `promtool test rules failed:\n${output}`);
    assert.match(output, /SUCCESS/);
  });

  it('are checked strictly: a case expecting another node fails', async () => {
    const wrong = (await readFile(FIXTURE, 'utf8')).replace('summary: palisade on ip-10-0-1-10.ec2.internal cannot be scraped', 'summary: palisade on ip-10-0-2-20.ec2.internal cannot be scraped');
    const { code, output } = await promtoolTestRules(wrong);
    assert.notEqual(code, 0, output);
    assert.match(output, /PalisadeTargetDown/);
  });

  it('pass promtool check rules', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'paltest-promtool-'));
    try {
      await writeFile(path.join(dir, 'palisade.rules.yaml'), ruleFile(await ruleGroups()));
      const result = await hostRunner.exec(['promtool', 'check', 'rules', path.join(dir, 'palisade.rules.yaml')]);
      assert.equal(result.code, 0, result.stdout + result.stderr);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('the monitoring manifests', () => {
  it('have a promtool case in which each alert fires, and one in which it does not', async () => {
    const tests = parse(await readFile(FIXTURE, 'utf8')) as PromtoolTests;
    const cases = tests.tests.flatMap((t) => t.alert_rule_test ?? []);
    const names = alertNames(await ruleGroups());
    assert.ok(names.length >= 12, names.join(', '));
    for (const name of names) {
      assert.ok(cases.some((c) => c.alertname === name && c.exp_alerts.length > 0), `no case in which ${name} fires`);
      assert.ok(cases.some((c) => c.alertname === name && c.exp_alerts.length === 0), `no case in which ${name} stays quiet`);
    }
    for (const c of cases) assert.ok(names.includes(c.alertname), `a case for ${c.alertname}, which the PrometheusRule does not have`);
  });

  it('name the node in every per-node alert, and never the instance', async () => {
    for (const group of await ruleGroups()) {
      for (const rule of group.rules) {
        if (rule.alert === undefined) continue;
        const text = JSON.stringify(rule.annotations);
        assert.doesNotMatch(text, /\$labels\.instance/, `${rule.alert} names the instance`);
        if (CLUSTER_WIDE.includes(rule.alert)) continue;
        assert.match(rule.annotations?.['summary'] ?? '', /\{\{ \$labels\.node \}\}/, `${rule.alert}'s summary does not name the node`);
        assert.match(rule.annotations?.['description'] ?? '', /\{\{ \$labels\.node \}\}/, `${rule.alert}'s description does not name the node`);
        assert.ok(rule.labels?.['severity'] !== undefined, `${rule.alert} has no severity`);
      }
    }
  });

  it('chart per node, filtered by the dashboard\'s node variable, with no legend showing an instance', async () => {
    const dashboard = JSON.parse(await readFile(path.join(MONITORING_DIR, 'grafana-dashboard.json'), 'utf8')) as { templating: { list: Obj[] }; panels: { title: string; targets: { expr: string; legendFormat: string }[] }[] };
    assert.ok(dashboard.templating.list.some((v) => v['name'] === 'node'));
    for (const panel of dashboard.panels) {
      for (const target of panel.targets) {
        assert.doesNotMatch(target.legendFormat, /instance/, `${panel.title}: ${target.legendFormat}`);
        for (const m of target.expr.matchAll(/\b(palisade_[a-z_]+|up)\{([^}]*)\}/g)) assert.match(m[2]!, /node=~"\$node"/, `${panel.title}: ${m[0]} is not filtered by $node`);
      }
    }
  });

  it('scrape with honorLabels and a node label, so no palisade label is overwritten by a target label', async () => {
    const monitor = await readManifest('podmonitor.yaml');
    const endpoint = (monitor['spec'] as { podMetricsEndpoints: Obj[] }).podMetricsEndpoints[0]!;
    assert.equal(endpoint['honorLabels'], true);
    assert.deepEqual(endpoint['relabelings'], [{ sourceLabels: ['__meta_kubernetes_pod_node_name'], targetLabel: 'node', action: 'replace' }]);
    assert.equal((monitor['spec'] as Obj)['jobLabel'], 'app.kubernetes.io/name');

    const metrics = new DaemonMetrics().registry.getMetricsAsArray() as unknown as { name: string; labelNames: readonly string[] }[];
    assert.ok(metrics.length > 30);
    for (const metric of metrics) {
      const clashing = metric.labelNames.filter((l) => (TARGET_LABELS as readonly string[]).includes(l));
      if (POD_METRICS.includes(metric.name)) assert.deepEqual(clashing, ['namespace', 'pod'], metric.name);
      else assert.deepEqual(clashing, [], `${metric.name} has labels a target label of the same name would replace`);
    }
  });
});
