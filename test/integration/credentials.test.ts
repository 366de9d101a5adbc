import assert from 'node:assert/strict';
import { Lab } from '../../lib/lab/cluster.js';
import { QUICK_WATCH_MS } from '../../lib/kube/reflector.js';
import type { FakeApiStats } from '../../lib/lab/api-server.js';
import { namespace, node, pod, policy } from '../support/builders.js';
import { podClusterUnavailableReason } from '../support/pod-cluster.js';
import { prepareNamespaces } from '../support/netns-fixture.js';
import { eventually } from '../support/eventually.js';

/**
 * A real `palisade daemon` on a lab node whose service-account token is rotated under it, as kubelet
 * rotates a projected token: the daemon's kubeconfig names a token file (`tokenFile`), the lab writes
 * new tokens into it through a `..data` symlink swap, and the lab API server accepts only the tokens
 * the lab has issued and not expired.
 *
 * What a rotation may cost, per watched resource (pods, namespaces, networkpolicies, nodes), counted
 * by the API server: exactly one new watch, resumed from the resourceVersion the daemon had; at most
 * one request refused with 401 (the first attempt may carry the old token, which the daemon keeps for
 * up to a minute; the refusal makes it read the file and retry once); and no list, neither a list
 * request nor a watch that starts by sending every object (a streaming list). Lists growing is the
 * relist storm this must never be.
 */

const PREFIX = 'paltest-creds';
const NODE = 'node-a';
const PLURALS = ['pods', 'namespaces', 'networkpolicies', 'nodes'] as const;
const RECOVERED_LOG = /"msg":"the API server refused the token; fetched afresh, the new one was accepted"/;

interface WatchStatus { resource: string; lists: number; relists: number; watches: number; failures: number; lastError: string | null }
interface Status { watches: WatchStatus[]; endpoints: { namespace: string; name: string; policies: { ingress: string[] } }[] }


const count = (counts: Record<string, number>, key: string): number => counts[key] ?? 0;
const sum = (counts: Record<string, number>): number => Object.values(counts).reduce((a, b) => a + b, 0);
/** Refusals of the watches' requests only: discovery (is ClusterNetworkPolicy served?) authenticates too, on its own schedule. */
const sumWatched = (counts: Record<string, number>): number => PLURALS.reduce((n, p) => n + count(counts, p), 0);

describe('palisade daemon with a rotating service-account token', function () {
  this.timeout(120_000);
  let lab: Lab | null = null;

  before(async function () {
    await prepareNamespaces(this, PREFIX, podClusterUnavailableReason);
  });

  afterEach(async () => {
    const current = lab;
    lab = null;
    await current?.destroy();
  });

  /** A one-node lab authenticating with a token file, a pod on the node, and its daemon ready with every watch open. */
  async function readyLab(): Promise<Lab> {
    lab = await Lab.create({ prefix: PREFIX, nodes: [{ name: NODE, address: '172.31.0.1', podCidr: '10.1.1.0/24' }], rotatingToken: true });
    await lab.api.apply([namespace('default'), node(NODE, '172.31.0.1'), pod('default', 'web', { ip: '10.1.1.5', labels: { app: 'web' } })]);
    await lab.startDaemon(NODE);
    await lab.waitReady(NODE);
    await everyWatchOpen(lab);
    return lab;
  }

  async function everyWatchOpen(l: Lab): Promise<void> {
    await eventually('the four watches open', async () => assert.equal((await l.api.stats()).openWatches, PLURALS.length));
  }

  async function status(l: Lab): Promise<Status> {
    const { status: code, body } = await l.status(NODE, '/status');
    assert.equal(code, 200, body);
    return JSON.parse(body) as Status;
  }

  async function unauthorizedMetric(l: Lab, outcome: 'recovered' | 'refused'): Promise<number> {
    const match = new RegExp(`^palisade_api_unauthorized_total\\{outcome="${outcome}"\\} (\\d+)$`, 'm').exec(await l.metrics(NODE));
    assert.ok(match !== null, `palisade_api_unauthorized_total{outcome="${outcome}"} is exported`);
    return Number(match[1]);
  }

  /** Applies a policy selecting the pod, and waits until the daemon enforces it. */
  async function enforced(l: Lab, name: string): Promise<void> {
    await l.api.apply(policy('default', name, { podSelector: { matchLabels: { app: 'web' } }, policyTypes: ['Ingress'] }));
    await eventually(`default/${name} enforced`, async () => {
      const web = (await status(l)).endpoints.find((e) => e.name === 'web');
      assert.ok(web?.policies.ingress.includes(`default/${name}`), JSON.stringify(web));
      const rules = await l.status(NODE, '/rules');
      assert.match(rules.body, new RegExp(`default/${name}`));
    });
  }

  /** What the API server saw between two stats, per resource. */
  function growth(before: FakeApiStats, after: FakeApiStats) {
    return Object.fromEntries(PLURALS.map((p) => [p, {
      lists: count(after.lists, p) - count(before.lists, p),
      streamingLists: count(after.streamingLists, p) - count(before.streamingLists, p),
      watches: count(after.watches, p) - count(before.watches, p),
      unauthorized: count(after.unauthorized, p) - count(before.unauthorized, p),
    }]));
  }

  it('keeps watching through token rotations that cut its watches: one re-watch and at most one 401 per resource each time, no list', async () => {
    const l = await readyLab();
    const daemonAtStart = await status(l);
    for (const round of [1, 2]) {
      // A watch the server ends within QUICK_WATCH_MS of opening, having sent nothing, counts as a
      // failure (and backs off): let the watches of round 1 outlive that before round 2 cuts them.
      if (round > 1) await new Promise((resolve) => setTimeout(resolve, QUICK_WATCH_MS + 200));
      const before = await l.api.stats();
      await l.rotateToken();
      assert.equal(await l.expireOldTokens({ closeRefusedWatches: true }), PLURALS.length, 'every watch was opened with the old token');
      await enforced(l, `after-rotation-${round}`);
      await everyWatchOpen(l);
      const after = await l.api.stats();
      const grown = growth(before, after);
      for (const p of PLURALS) {
        const { unauthorized, ...requests } = grown[p]!;
        assert.deepEqual(requests, { lists: 0, streamingLists: 0, watches: 1 }, `round ${round}, ${p}: ${JSON.stringify(grown)}`);
        assert.ok(unauthorized <= 1, `round ${round}, ${p}: ${unauthorized} requests refused`);
      }
      const refusals = sumWatched(after.unauthorized) - sumWatched(before.unauthorized);
      assert.ok(refusals >= 1 && refusals <= PLURALS.length, `round ${round}: ${refusals} requests refused; the token read at most a minute ago is the old one, so at least one watch tried it`);
    }
    const statusAfter = await status(l);
    for (const w of statusAfter.watches) {
      const start = daemonAtStart.watches.find((s) => s.resource === w.resource)!;
      assert.deepEqual({ lists: w.lists, relists: w.relists, failures: w.failures, watches: w.watches }, { lists: start.lists, relists: 0, failures: start.failures, watches: start.watches + 2 }, `${w.resource} in /status`);
    }
    const refused = sum((await l.api.stats()).unauthorized);
    assert.equal(await unauthorizedMetric(l, 'recovered'), refused, 'every refusal recovered on its one retry');
    assert.equal(await unauthorizedMetric(l, 'refused'), 0);
    assert.equal(l.node(NODE).daemon!.lines.filter((line) => RECOVERED_LOG.test(line)).length, refused, 'each recovery logged once');
  });

  it('keeps its watches when the old token expires under them, as a real API server lets them run, and authenticates afresh when they end', async () => {
    const l = await readyLab();
    const before = await l.api.stats();
    await l.rotateToken();
    assert.equal(await l.expireOldTokens(), 0);
    await enforced(l, 'through-the-old-watch');
    const during = await l.api.stats();
    assert.deepEqual(growth(before, during), Object.fromEntries(PLURALS.map((p) => [p, { lists: 0, streamingLists: 0, watches: 0, unauthorized: 0 }])), 'nothing asked: the open watches carried the change');

    // The moment those watches time out and the daemon has to authenticate again.
    await l.api.closeWatches();
    await everyWatchOpen(l);
    await enforced(l, 'after-the-rewatch');
    const grown = growth(during, await l.api.stats());
    for (const p of PLURALS) {
      assert.ok(grown[p]!.lists === 0 && grown[p]!.streamingLists === 0 && grown[p]!.watches === 1 && grown[p]!.unauthorized <= 1, `${p}: ${JSON.stringify(grown)}`);
    }
    assert.equal(await unauthorizedMetric(l, 'refused'), 0);
  });

  it('keeps its rules and says which token file was refused while no token is accepted, backing off; a renewed token brings the watches back without a list', async () => {
    const l = await readyLab();
    const before = await l.api.stats();
    await l.api.setTokens(['issued-to-someone-else'], { closeRefusedWatches: true });
    await eventually('every watch to have failed twice', async () => {
      for (const w of (await status(l)).watches) assert.ok(w.failures >= 2, `${w.resource}: ${w.failures} failures`);
    });
    const failing = await status(l);
    for (const w of failing.watches) {
      assert.match(w.lastError ?? '', /HTTP 401: the API server refused the token from the token file \S+\/serviceaccount\/token \(the kubeconfig \S+ \(context fake\)\), and fetching it afresh gave the same token/, w.resource);
    }
    assert.equal((await l.status(NODE, '/readyz')).status, 200, 'the rules stay in force and the node stays ready');
    const failures = failing.watches.reduce((n, w) => n + w.failures, 0);
    const refusals = sumWatched((await l.api.stats()).unauthorized) - sumWatched(before.unauthorized);
    // One request per failed attempt (the file still holds the refused token, so it is not sent
    // twice), plus at most one attempt per watch under way when the counts were read.
    assert.ok(refusals >= failures && refusals <= failures + PLURALS.length, `${refusals} refusals for ${failures} failed attempts`);
    assert.ok(await unauthorizedMetric(l, 'refused') >= failures);

    await l.api.apply(policy('default', 'while-refused', { podSelector: { matchLabels: { app: 'web' } }, policyTypes: ['Ingress'] }));
    await l.rotateToken();
    await l.expireOldTokens();
    await eventually('the watches back', async () => assert.equal((await l.api.stats()).openWatches, PLURALS.length), 60_000);
    await enforced(l, 'while-refused');
    const grown = growth(before, await l.api.stats());
    for (const p of PLURALS) assert.deepEqual([grown[p]!.lists, grown[p]!.streamingLists], [0, 0], `${p} resumed from its resourceVersion: ${JSON.stringify(grown)}`);
    for (const w of (await status(l)).watches) assert.equal(w.relists, 0, w.resource);
  });
});
