/**
 * The monitoring manifests against a real Prometheus (the `prometheus` binary) scraping the two lab
 * daemons. It runs in the external host's namespace, which reaches both nodes' link addresses (node-a
 * directly, node-b through node-a), and listens there on the external host's address. Its scrape job is
 * what the Prometheus Operator generates from manifests/monitoring/podmonitor.yaml (static targets in
 * place of Kubernetes discovery, every 1 s instead of 30 s), its rules are the PrometheusRule's, and it
 * evaluates them every second. The dashboard's queries are taken from grafana-dashboard.json with the
 * node variable set to every node.
 *
 * One rule is changed for the test: PalisadeTargetDown's `for` (5m in the manifest, which promtool's
 * cases check) becomes 10s, so the alert is seen firing without a five-minute wait.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { policy } from '../support/builders.js';
import { EXTERNAL_IP, NODE_A, NODE_B, NODES, Reachability, TCP_80, useE2eCluster } from '../support/e2e-cluster.js';
import { MONITORING_DIR, PrometheusServer, prometheusUnavailableReason, ruleGroups, scrapeConfig } from '../support/prometheus.js';
import type { AlertState, QueryResult, RuleGroup } from '../support/prometheus.js';

const TEST_FOR = '10s';
const PROMETHEUS_ADDR = `${EXTERNAL_IP}:9090`;
/** Dashboard queries that may rightly be empty in a healthy lab (no drift, nothing down). */
const MAY_BE_EMPTY = [/drift_repairs_total/, /up\{job="palisade", node=~"\$node"\} == 0$/, /palisade_ready\{node=~"\$node"\} == 0$/, /enforcement_refused/, /drop_log_reader_up/];

interface DashboardTarget {
  readonly panel: string;
  readonly expr: string;
}

async function dashboardTargets(): Promise<DashboardTarget[]> {
  const dashboard = JSON.parse(await readFile(path.join(MONITORING_DIR, 'grafana-dashboard.json'), 'utf8')) as { panels: { title: string; targets: { expr: string }[] }[] };
  return dashboard.panels.flatMap((p) => p.targets.map((t) => ({ panel: p.title, expr: t.expr })));
}

/** The node variable set to "All", as Grafana substitutes it into a regex matcher. */
function withAllNodes(expr: string): string {
  return expr.replaceAll('$node', NODES.map((n) => n.name).join('|'));
}

function withTestFor(groups: readonly RuleGroup[]): RuleGroup[] {
  return groups.map((g) => ({ ...g, rules: g.rules.map((r) => (r.alert === 'PalisadeTargetDown' ? { ...r, for: TEST_FOR } : r)) }));
}

function finite(result: readonly QueryResult[]): QueryResult[] {
  return result.filter((r) => Number.isFinite(Number(r.value[1])));
}

async function until<T>(what: string, deadlineMs: number, attempt: () => Promise<T | undefined>, explain: () => Promise<string>): Promise<T> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const value = await attempt();
    if (value !== undefined) return value;
    if (Date.now() > deadline) assert.fail(`${what}: not within ${deadlineMs} ms\n${await explain()}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

const describeAlert = (a: AlertState): string => `${a.labels['alertname']}{${Object.entries(a.labels).filter(([k]) => k !== 'alertname').map(([k, v]) => `${k}="${v}"`).join(', ')}} ${a.state}`;

describe('Monitoring: a real Prometheus scraping both nodes as the PodMonitor does, with the shipped rules and dashboard', function () {
  this.timeout(180_000);
  const cluster = useE2eCluster({ prefix: 'paltest-e2e-mon' });

  describe('with Prometheus in the external host\'s namespace', function () {
    let prometheus: PrometheusServer | undefined;
    const server = (): PrometheusServer => {
      if (prometheus === undefined) throw new Error('prometheus was not started');
      return prometheus;
    };

    before(async function () {
      this.timeout(60_000);
      const reason = await prometheusUnavailableReason(['prometheus']);
      if (reason !== null) {
        if (process.env['PALISADE_REQUIRE_NETNS'] === '1') throw new Error(`prometheus is required (PALISADE_REQUIRE_NETNS=1) but unavailable: ${reason}`);
        console.warn(`      skipped: ${reason}`);
        this.skip();
      }
      const targets = NODES.map((n) => ({ address: `${n.address}:9711`, pod: `palisade-${n.name}`, node: n.name }));
      prometheus = await PrometheusServer.start(cluster().lab.external!, {
        listen: PROMETHEUS_ADDR,
        scrapeConfigs: [await scrapeConfig(targets, { interval: '1s' })],
        groups: withTestFor(await ruleGroups()),
        evaluationInterval: '1s',
      });
    });

    after(async () => {
      await prometheus?.stop();
      prometheus = undefined;
    });

    const targetsReport = async (): Promise<string> => JSON.stringify(await server().targets(), null, 1) + '\n' + server().lines.slice(-10).join('\n');

    it('scrapes both daemons with the PodMonitor\'s labels: job palisade, the node, and palisade\'s own pod in kube-system', async () => {
      const up = await until('both targets up', 20_000, async () => {
        const result = await server().query('up{job="palisade"} == 1');
        return result.length === NODES.length ? result : undefined;
      }, targetsReport);
      const byNode = new Map(up.map((r) => [r.metric['node'], r.metric]));
      for (const n of NODES) {
        const labels = byNode.get(n.name);
        assert.ok(labels !== undefined, `no up series for ${n.name}`);
        assert.equal(labels['namespace'], 'kube-system');
        assert.equal(labels['pod'], `palisade-${n.name}`);
        assert.equal(labels['instance'], `${n.address}:9711`);
        assert.equal(labels['endpoint'], 'metrics');
      }
      const ready = await server().query('palisade_ready == 1');
      assert.deepEqual(ready.map((r) => r.metric['node']).sort(), [NODE_A, NODE_B]);
    });

    it('answers every dashboard query with data; drops name the dropped pod, never palisade\'s as exported_*', async () => {
      const c = cluster();
      await c.reset();
      // Policy changes while Prometheus watches: syncs and change-to-enforced observations on both
      // nodes, and drops on x's pods (a and b on node-a, c on node-b) as the matrix is probed.
      await c.applyPolicies(policy('x', 'deny-ingress', { podSelector: {}, policyTypes: ['Ingress'] }));
      await c.expectMatrix(new Reachability(true).expectAllIngress('x/*', false), TCP_80);

      const targets = await dashboardTargets();
      const empty = new Set<string>();
      await until('every dashboard query answered', 30_000, async () => {
        empty.clear();
        for (const t of targets) {
          if (MAY_BE_EMPTY.some((re) => re.test(t.expr))) continue;
          if (finite(await server().query(withAllNodes(t.expr))).length === 0) empty.add(`${t.panel}: ${t.expr}`);
        }
        return empty.size === 0 ? true : undefined;
      }, async () => `still without data:\n${[...empty].join('\n')}\n${await targetsReport()}`);

      const byPod = targets.find((t) => t.panel.startsWith('Dropped packets by pod'));
      assert.ok(byPod !== undefined);
      const drops = await until('drops for x/a, x/b and x/c', 20_000, async () => {
        const result = (await server().query(withAllNodes(byPod.expr))).filter((r) => Number(r.value[1]) > 0);
        const pods = new Set(result.map((r) => `${r.metric['namespace']}/${r.metric['pod']} ${r.metric['direction']} on ${r.metric['node']}`));
        return ['x/a ingress on node-a', 'x/b ingress on node-a', 'x/c ingress on node-b'].every((p) => pods.has(p)) ? result : undefined;
      }, async () => [
        `the panel's query: ${JSON.stringify((await server().query(withAllNodes(byPod.expr))).map((r) => [r.metric, r.value[1]]))}`,
        `stored: ${JSON.stringify((await server().query('palisade_dropped_packets_total{namespace="x"}')).map((r) => [r.metric['pod'], r.metric['direction'], r.value[1]]))}`,
        ...await Promise.all(NODES.map(async (n) => `${n.name} exports: ${(await c.lab.metrics(n.name)).split('\n').filter((l) => l.startsWith('palisade_dropped_packets_total')).join('; ')}`)),
      ].join('\n'));
      assert.ok(drops.every((r) => r.metric['namespace'] === 'x'), JSON.stringify(drops.map((r) => r.metric)));
      assert.deepEqual(await server().query('{__name__=~"palisade_.+", exported_namespace!=""} or {__name__=~"palisade_.+", exported_pod!=""}'), []);

      const p99 = targets.find((t) => t.expr.startsWith('histogram_quantile(0.99, sum by (le, node) (rate(palisade_change_to_enforced_seconds_bucket'));
      assert.ok(p99 !== undefined, 'the dashboard has a change-to-enforced p99 per node');
      const perNode = finite(await server().query(withAllNodes(p99.expr)));
      assert.deepEqual(perNode.map((r) => r.metric['node']).sort(), [NODE_A, NODE_B]);
      for (const r of perNode) assert.ok(Number(r.value[1]) > 0 && Number(r.value[1]) < 10, `p99 on ${r.metric['node']}: ${r.value[1]} s`);
    });

    it('fires PalisadeTargetDown naming the node whose daemon was killed, and nothing else; it clears once the daemon is back', async () => {
      const c = cluster();
      await c.reset();
      const firing = (alerts: AlertState[]) => alerts.filter((a) => a.state === 'firing');
      assert.deepEqual(firing(await server().alerts()).map(describeAlert), [], 'alerts firing before the daemon is killed');
      const killedAt = Date.now();
      await c.lab.stopDaemon(NODE_B, 'SIGKILL');
      try {
        const alerts = await until('PalisadeTargetDown firing for node-b', 30_000, async () => {
          const now = firing(await server().alerts());
          return now.some((a) => a.labels['alertname'] === 'PalisadeTargetDown') ? now : undefined;
        }, async () => (await server().alerts()).map(describeAlert).join('\n'));
        console.log(`        PalisadeTargetDown firing ${Date.now() - killedAt} ms after the kill (for: ${TEST_FOR}, scrape and evaluation every 1 s)`);
        assert.deepEqual(alerts.map(describeAlert), [
          `PalisadeTargetDown{container="palisade", endpoint="metrics", instance="${NODES[1].address}:9711", job="palisade", namespace="kube-system", node="node-b", pod="palisade-node-b", severity="critical"} firing`,
        ]);
        assert.equal(alerts[0]!.annotations['summary'], 'palisade on node-b cannot be scraped');
        assert.match(alerts[0]!.annotations['description'] ?? '', /on node node-b \(pod palisade-node-b\)/);
      } finally {
        await c.lab.startDaemon(NODE_B);
        await c.lab.waitReady(NODE_B);
      }
      await until('PalisadeTargetDown cleared', 15_000, async () => {
        const now = await server().alerts();
        return now.some((a) => a.labels['alertname'] === 'PalisadeTargetDown') ? undefined : true;
      }, async () => (await server().alerts()).map(describeAlert).join('\n'));
    });
  });
});
