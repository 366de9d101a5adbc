import assert from 'node:assert/strict';
import { ApiClient } from '../../lib/kube/api-client.js';
import { kubeconfigText } from '../../lib/kube/client-config.js';
import { Daemon } from '../../daemon/daemon.js';
import { parseDaemonConfig } from '../../daemon/config.js';
import type { Logger } from '../../lib/logger.js';
import type { NetworkNamespace } from '../../lib/netns.js';
import { hostInterfaceName, Names } from '../../rules/names.js';
import { namespace, node, pod, policy } from '../support/builders.js';
import { FakeApiServer } from '../../lib/lab/api-server.js';
import { useNetns } from '../support/netns-fixture.js';
import { eventually } from '../support/eventually.js';

/**
 * The daemon end to end in one process: its real watches against a fake API server with real
 * list/watch semantics, and the real dataplane and node network in a throwaway network namespace.
 * Every wait is "until the condition holds or a deadline passes", never a fixed sleep.
 */

const NAMES = new Names('pal');

class RecordingLogger implements Logger {
  readonly lines: { level: string; fields: Record<string, unknown>; message: string }[] = [];
  debug(fields: Record<string, unknown>, message: string): void { this.lines.push({ level: 'debug', fields, message }); }
  info(fields: Record<string, unknown>, message: string): void { this.lines.push({ level: 'info', fields, message }); }
  warn(fields: Record<string, unknown>, message: string): void { this.lines.push({ level: 'warn', fields, message }); }
  error(fields: Record<string, unknown>, message: string): void { this.lines.push({ level: 'error', fields, message }); }
}


function seedObjects(): Record<string, unknown>[] {
  return [
    node('node-a', '10.0.0.1'),
    namespace('default', { nsname: 'default' }),
    namespace('other', { team: 'x' }),
    pod('default', 'busybox1', { ip: '10.1.0.1', labels: { name: 'in' } }),
    pod('default', 'busybox2', { ip: '10.1.0.2', labels: { name: 'out' } }),
    pod('other', 'remote', { ip: '10.2.0.1', labels: { app: 'r' }, node: 'node-b' }),
  ];
}

const allowOutToIn = policy('default', 'allow-out-to-in', {
  podSelector: {},
  ingress: [{ from: [{ podSelector: { matchLabels: { name: 'out' } } }] }],
  egress: [{ to: [{ podSelector: { matchLabels: { name: 'in' } } }] }],
  policyTypes: ['Ingress', 'Egress'],
});

interface Running {
  readonly daemon: Daemon;
  readonly logger: RecordingLogger;
  get(path: string): Promise<{ status: number; body: string }>;
  save(): Promise<string>;
  sets(): Promise<string>;
}

async function startDaemon(ns: NetworkNamespace, api: FakeApiServer): Promise<Running> {
  const config = parseDaemonConfig(['--node-name', 'node-a', '--status-addr', '127.0.0.1:0', '--metrics-addr', '127.0.0.1:0', '--refresh-interval', '1s', '--sync-delay', '20ms', '--log-level', 'debug'], {});
  const client = new ApiClient(await kubeconfigText(api.kubeconfig(), 'test kubeconfig'));
  const logger = new RecordingLogger();
  const daemon = new Daemon(config, { client, runner: ns, logger });
  await daemon.start();
  const get = async (path: string) => {
    const addr = path === '/metrics' ? daemon.addresses!.metrics : daemon.addresses!.status;
    const response = await fetch(`http://127.0.0.1:${addr.port}${path}`);
    return { status: response.status, body: await response.text() };
  };
  return { daemon, logger, get, save: () => ns.run(['iptables-nft-save', '-t', 'mangle']), sets: () => ns.run(['ipset', 'save']) };
}

describe('the palisade daemon against a fake API server', function () {
  this.timeout(60_000);
  const ns = useNetns('paltest-daemon', { perTest: true });
  let api: FakeApiServer;
  let running: Running | null = null;

  beforeEach(async () => {
    api = await FakeApiServer.start({ bookmarkIntervalMs: 200 });
    for (const object of seedObjects()) api.apply(object);
  });

  afterEach(async () => {
    await running?.daemon.stop();
    running = null;
    await api.close();
  });

  async function ready(): Promise<Running> {
    running = await startDaemon(ns(), api);
    const r = running;
    await eventually('readiness', async () => assert.equal((await r.get('/readyz')).status, 200));
    return r;
  }

  it('becomes ready once every watch has listed and the first apply is done, and hooks its rules in', async () => {
    const r = await ready();
    assert.equal((await r.get('/healthz')).body, 'ok\n');
    const saved = await r.save();
    assert.match(saved, /^-A FORWARD -m comment --comment "pal:\S+ palisade network policy" -j pal-FORWARD$/m);
    assert.match(saved, new RegExp(`^:${NAMES.endpoint('to', 'default', 'busybox1')} `, 'm'));
    // Each resource listed once, with a streaming list: no list request, one stream per resource.
    const status = JSON.parse((await r.get('/status')).body) as { watches: { resource: string; lists: number; listMode: string }[] };
    for (const watch of status.watches) assert.deepEqual([watch.resource, watch.lists, watch.listMode], [watch.resource, 1, 'streaming']);
    assert.deepEqual(api.stats().lists, {});
  });

  it('says why it is not ready while the API server cannot be reached, and keeps nothing from being enforced later', async () => {
    await api.stop();
    running = await startDaemon(ns(), api);
    const r = running;
    const notReady = await r.get('/readyz');
    assert.equal(notReady.status, 503);
    assert.match(notReady.body, /waiting for the first list of/);
    await api.restart();
    await eventually('readiness after the API server came up', async () => assert.equal((await r.get('/readyz')).status, 200), 20_000);
  });

  it('programs a policy added at the API server', async () => {
    const r = await ready();
    api.apply(allowOutToIn);
    const chain = NAMES.policy('ingress', 'default', 'allow-out-to-in');
    await eventually('the policy chain', async () => assert.match(await r.save(), new RegExp(`^-A ${chain} -m set --match-set pal-p-\\S+ src`, 'm')));
    await eventually('the set of name=out', async () => assert.match(await r.sets(), /^add pal-p-\S+ 10\.1\.0\.2$/m));
  });

  it('moves a relabelled pod between ipsets', async () => {
    const r = await ready();
    api.apply(allowOutToIn);
    await eventually('the set of name=out holding busybox2', async () => assert.match(await r.sets(), /^add pal-p-\S+ 10\.1\.0\.2$/m));
    api.apply(pod('default', 'busybox2', { ip: '10.1.0.2', labels: { name: 'elsewhere' } }));
    api.apply(pod('other', 'remote', { ip: '10.2.0.1', labels: { name: 'out' }, node: 'node-b' }));
    await eventually('busybox2 out of the set and nothing else', async () => {
      const sets = await r.sets();
      assert.doesNotMatch(sets, /^add pal-p-\S+ 10\.1\.0\.2$/m);
    });
    api.apply(pod('default', 'busybox2', { ip: '10.1.0.2', labels: { name: 'out' } }));
    await eventually('busybox2 back in the set', async () => assert.match(await r.sets(), /^add pal-p-\S+ 10\.1\.0\.2$/m));
  });

  it('keeps the rules while the API server is away, and converges when it is back', async () => {
    const r = await ready();
    api.apply(allowOutToIn);
    const chain = NAMES.policy('ingress', 'default', 'allow-out-to-in');
    await eventually('the policy chain', async () => assert.match(await r.save(), new RegExp(`^:${chain} `, 'm')));
    const before = await r.save();
    await api.stop();
    await eventually('a failed watch', async () => assert.ok(r.logger.lines.some((l) => /list or watch failed/.test(l.message))));
    const during = await r.save();
    const rulesOf = (text: string) => text.split('\n').filter((l) => l.startsWith('-A pal-')).sort();
    assert.deepEqual(rulesOf(during), rulesOf(before), 'nothing was flushed');
    await api.restart();
    api.delete('NetworkPolicy', 'default', 'allow-out-to-in');
    await eventually('the deleted policy gone', async () => assert.doesNotMatch(await r.save(), new RegExp(`^:${chain} `, 'm')), 20_000);
  });

  it('relists after 410 Gone and still sees every change', async () => {
    const r = await ready();
    const lists = api.stats().watches['networkpolicies'] ?? 0;
    // The policy arrives while the daemon is cut off, and the history it would resume from is gone.
    await api.stop();
    api.apply(allowOutToIn);
    api.compact();
    await api.restart();
    await eventually('a relist of network policies', async () => assert.ok((api.stats().watches['networkpolicies'] ?? 0) > lists));
    await eventually('the policy programmed', async () => assert.match(await r.save(), new RegExp(`^:${NAMES.policy('ingress', 'default', 'allow-out-to-in')} `, 'm')));
    const metrics = (await r.get('/metrics')).body;
    assert.match(metrics, /^palisade_watch_relists_total\{resource="NetworkPolicy"\} [1-9]/m);
  });

  it('reports a malformed policy and fails it closed while the rest is enforced', async () => {
    const r = await ready();
    api.apply(allowOutToIn);
    api.apply(policy('other', 'broken', { podSelector: {}, ingress: {} }));
    api.apply(pod('other', 'v6only', { ip: 'fd00::5', labels: { app: 'v6' } }));
    await eventually('the problems in the status', async () => {
      const status = JSON.parse((await r.get('/status')).body) as { failedPolicies: { policy: string; why: string[] }[]; problems: { object: string; message: string }[] };
      assert.deepEqual(status.failedPolicies.map((f) => f.policy), ['other/broken']);
      assert.match(status.failedPolicies[0]!.why.join(), /spec\.ingress: ingress must be a list of rules/);
      assert.ok(status.problems.some((p) => p.object === 'Pod other/v6only' && /IPv6/.test(p.message)));
    });
    await eventually('the valid policy programmed', async () => assert.match(await r.save(), new RegExp(`^:${NAMES.policy('ingress', 'default', 'allow-out-to-in')} `, 'm')));
    const metrics = (await r.get('/metrics')).body;
    assert.match(metrics, /^palisade_policies_failing 1$/m);
    assert.match(metrics, /^palisade_objects_with_problems\{kind="NetworkPolicy",severity="error"\} 1$/m);
    assert.ok(r.logger.lines.some((l) => l.level === 'warn' && l.fields['object'] === 'NetworkPolicy other/broken' && /object is invalid/.test(l.message)), 'the invalid policy is logged');
  });

  it('serves every status route, and answers bad explain queries with 400', async () => {
    const r = await ready();
    api.apply(allowOutToIn);
    await eventually('the policy programmed', async () => assert.match((await r.get('/rules')).body, /allow-out-to-in ingress rule 0/));
    const status = JSON.parse((await r.get('/status')).body) as Record<string, unknown> & { endpoints: { name: string; isolated: { ingress: boolean }; policies: { ingress: string[] }; chains: { ingress: string }; interfaces: string[] }[]; backend: { name: string; reason: string }; counts: Record<string, number> };
    assert.equal(status['node'], 'node-a');
    assert.equal(status['ready'], true);
    assert.ok(['nft', 'legacy'].includes(status.backend.name) && status.backend.reason.length > 0);
    const busybox1 = status.endpoints.find((e) => e.name === 'busybox1')!;
    assert.deepEqual([busybox1.isolated.ingress, busybox1.policies.ingress, busybox1.chains.ingress, busybox1.interfaces], [true, ['default/allow-out-to-in'], NAMES.endpoint('to', 'default', 'busybox1'), ['eni4405ed05989', 'vlan4405ed05989']]);
    assert.equal(status.counts['localEndpoints'], 2);
    const allowed = JSON.parse((await r.get('/explain?from=default/busybox2&to=default/busybox1&protocol=ICMP')).body) as { allowed: boolean };
    assert.equal(allowed.allowed, true);
    const denied = JSON.parse((await r.get('/explain?from=default/busybox1&to=10.1.0.2&port=80')).body) as { allowed: boolean; egress: { reason: string } };
    assert.equal(denied.allowed, false);
    for (const query of ['/explain?to=default/busybox1&port=80', '/explain?from=default/nope&to=default/busybox1&port=80', '/explain?from=default/busybox1&to=default/busybox2&port=99999', '/explain?from=default/busybox1&to=default/busybox2&port=80&protocol=GRE']) {
      const reply = await r.get(query);
      assert.equal(reply.status, 400, query);
      assert.match(reply.body, /"error"/);
    }
    assert.equal((await r.get('/nope')).status, 404);
  });

  it('exports its metrics under the palisade_ prefix with values that match the rules', async () => {
    const r = await ready();
    api.apply(allowOutToIn);
    await eventually('the policy programmed', async () => assert.match((await r.get('/metrics')).body, /^palisade_change_to_enforced_seconds_count\{resource="NetworkPolicy"\} [1-9]/m));
    const metrics = (await r.get('/metrics')).body;
    const status = JSON.parse((await r.get('/status')).body) as { counts: { rules: number; chains: number; ipsets: number } };
    assert.match(metrics, new RegExp(`^palisade_rules\\{table="mangle"\\} ${status.counts.rules}$`, 'm'));
    assert.match(metrics, new RegExp(`^palisade_chains\\{table="mangle"\\} ${status.counts.chains}$`, 'm'));
    assert.match(metrics, new RegExp(`^palisade_ipsets ${status.counts.ipsets}$`, 'm'));
    assert.match(metrics, /^palisade_local_endpoints 2$/m);
    assert.match(metrics, /^palisade_policies 1$/m);
    assert.match(metrics, /^palisade_ready 1$/m);
    assert.match(metrics, /^palisade_sync_duration_seconds_count [1-9]/m);
    assert.match(metrics, /^palisade_watch_restarts_total\{resource="Pod"\} [1-9]/m);
    assert.match(metrics, /^palisade_apply_failures_total 0$/m);
    assert.match(metrics, /^process_cpu_seconds_total /m);
    // Drop counters are read on each refresh (every second here).
    await eventually('drop counters', async () => assert.match((await r.get('/metrics')).body, /^palisade_dropped_packets_total\{namespace="default",pod="busybox1",direction="ingress"\} 0$/m));
  });

  it('turns a burst of 500 new pods into a handful of applies, not one per event', async () => {
    const r = await ready();
    const syncs = async () => Number(/^palisade_sync_duration_seconds_count (\d+)$/m.exec((await r.get('/metrics')).body)?.[1] ?? NaN);
    const before = await syncs();
    for (let i = 0; i < 500; i++) api.apply(pod('default', `web-${i}`, { ip: `10.3.${i >> 7}.${(i & 127) + 1}`, labels: { app: 'web' } }));
    await eventually('all 500 pods programmed', async () => {
      const status = JSON.parse((await r.get('/status')).body) as { counts: { localEndpoints: number } };
      assert.equal(status.counts.localEndpoints, 502);
    }, 30_000);
    const applies = (await syncs()) - before;
    assert.ok(applies >= 1 && applies <= 20, `${applies} applies for 500 events`);
  });

  it('repairs a flushed chain on its next refresh and counts the repair', async () => {
    const r = await ready();
    const chain = NAMES.endpoint('from', 'default', 'busybox1');
    await ns().run(['iptables-nft', '-t', 'mangle', '-F', chain]);
    await eventually('the repair', async () => {
      assert.match(await r.save(), new RegExp(`^-A ${chain} ! -s 10\\.1\\.0\\.1/32`, 'm'));
      assert.match((await r.get('/metrics')).body, /^palisade_drift_repairs_total\{kind="chain-modified"\} 1$/m);
    });
    const status = JSON.parse((await r.get('/status')).body) as { driftRepairs: Record<string, number> };
    assert.equal(status.driftRepairs['chain-modified'], 1);
  });

  it('leaves its rules in force when stopped, and a new daemon takes over without rewriting them', async () => {
    const first = await ready();
    api.apply(allowOutToIn);
    await eventually('the policy programmed', async () => assert.match(await first.save(), /allow-out-to-in ingress rule 0/));
    await first.daemon.stop();
    running = null;
    const rulesOf = (text: string) => text.split('\n').filter((l) => l.startsWith('-A ')).sort();
    const left = await first.save();
    assert.match(left, /allow-out-to-in ingress rule 0/);
    const second = await ready();
    assert.deepEqual(rulesOf(await second.save()), rulesOf(left));
    assert.equal(second.logger.lines.some((l) => l.message === 'dataplane written'), false, 'the new daemon wrote nothing');
  });

  /** A link in the daemon's namespace, as a veth (this kernel has no dummy links), with a host route to `address` when given. */
  async function addLink(name: string, address?: string): Promise<void> {
    await ns().run(['ip', 'link', 'add', name, 'type', 'veth', 'peer', 'name', `p${name}`.slice(0, 15)]);
    await ns().run(['ip', 'link', 'set', name, 'up']);
    if (address !== undefined) await ns().run(['ip', 'route', 'add', `${address}/32`, 'dev', name, 'scope', 'link']);
  }

  it('refuses to program a node where kube-proxy runs in IPVS mode, says why, and programs it once that is gone', async () => {
    await addLink('kube-ipvs0');
    running = await startDaemon(ns(), api);
    const r = running;
    await eventually('the refusal', async () => {
      const readyz = await r.get('/readyz');
      assert.equal(readyz.status, 503);
      assert.match(readyz.body, /refusing to enforce: kube-proxy runs in IPVS mode here \(the kube-ipvs0 link exists\)/);
    });
    const status = JSON.parse((await r.get('/status')).body) as { ready: boolean; nodeNetwork: { refusal: { reason: string } | null } };
    assert.equal(status.ready, false);
    assert.equal(status.nodeNetwork.refusal?.reason, 'kube-proxy-ipvs');
    assert.match((await r.get('/metrics')).body, /^palisade_enforcement_refused\{reason="kube-proxy-ipvs"\} 1$/m);
    assert.doesNotMatch(await r.save(), /pal-/, 'nothing is programmed');
    assert.ok(r.logger.lines.some((l) => l.level === 'error' && /IPVS mode/.test(l.message)));
    await ns().run(['ip', 'link', 'del', 'kube-ipvs0']);
    await eventually('readiness once the IPVS link is gone', async () => assert.equal((await r.get('/readyz')).status, 200));
    assert.match(await r.save(), /^-A FORWARD .*-j pal-FORWARD$/m);
    assert.match((await r.get('/metrics')).body, /^palisade_enforcement_refused\{reason="kube-proxy-ipvs"\} 0$/m);
  });

  it('enforces a multi-NIC pod\'s further interface as soon as the node routes to it, and forgets it when the route goes', async () => {
    api.apply(pod('default', 'multi', { ip: '10.1.0.7', labels: { name: 'in' }, annotations: { 'k8s.amazonaws.com/nicConfig': 'multi-nic-attachment' } }));
    const r = await ready();
    const second = hostInterfaceName('eni', 'default', 'multi.1');
    await addLink(second, '10.1.7.7');
    type Status = { endpoints: { name: string; interfaces: string[]; extraInterfaces?: { iface: string; address: string }[] }[] };
    await eventually('the further interface in the status', async () => {
      const multi = (JSON.parse((await r.get('/status')).body) as Status).endpoints.find((e) => e.name === 'multi');
      assert.deepEqual(multi?.extraInterfaces, [{ iface: second, address: '10.1.7.7' }]);
      assert.ok(multi.interfaces.includes(second));
    });
    const rules = (await r.get('/rules')).body;
    assert.match(rules, new RegExp(`-A pal-from-wl-dispatch -i ${second} .*-g pal-fx-[0-9a-f]{16}$`, 'm'));
    assert.match(rules, /-A pal-fx-[0-9a-f]{16} ! -s 10\.1\.7\.7\/32 .*anti-spoof default\/multi.* -j DROP/);
    await ns().run(['ip', 'route', 'del', '10.1.7.7/32', 'dev', second]);
    await eventually('the further interface gone', async () => {
      const multi = (JSON.parse((await r.get('/status')).body) as Status).endpoints.find((e) => e.name === 'multi');
      assert.equal(multi?.extraInterfaces, undefined);
    });
  });

  it('names the pods routed through an interface no prefix matches, in the status, a metric and the log', async () => {
    const r = await ready();
    await addLink('abc0123456789a', '10.1.0.2');
    await eventually('the unenforced route in the status', async () => {
      const status = JSON.parse((await r.get('/status')).body) as { nodeNetwork: { unenforcedPodRoutes: unknown[] } };
      assert.deepEqual(status.nodeNetwork.unenforcedPodRoutes, [{ iface: 'abc0123456789a', address: '10.1.0.2', table: 'main', pod: 'default/busybox2' }]);
    });
    assert.match((await r.get('/metrics')).body, /^palisade_unenforced_pod_routes 1$/m);
    assert.ok(r.logger.lines.some((l) => l.level === 'warn' && /no --interface-prefix matches/.test(l.message)));
    assert.equal((await r.get('/readyz')).status, 200, 'the rest of the node is enforced');
  });
});
