import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import * as k8s from '@kubernetes/client-node';
import { FakeApiServer } from '../../lib/lab/api-server.js';
import type { KubeObject } from '../../lib/lab/api-server.js';

/**
 * The fake API server, driven through the real @kubernetes/client-node: raw authenticated fetch,
 * Watch, the generated CoreV1Api and informers, so code under test sees what a real API server does.
 */

const mainJs = path.resolve(fileURLToPath(import.meta.url), '../../../lib/lab/api-server-main.js');

const pod = (name: string, labels: Record<string, string> = {}, namespace = 'default'): KubeObject =>
  ({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace, labels }, spec: { nodeName: 'node-a' } });

async function until(what: string, predicate: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function kubeConfig(server: FakeApiServer): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  kc.loadFromString(server.kubeconfig());
  return kc;
}

/** GET through plain fetch, authenticated the way the library's own requests are. */
async function kubeGet(kc: k8s.KubeConfig, apiPath: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const url = `${kc.getCurrentCluster()?.server ?? ''}${apiPath}`;
  const ctx = new k8s.RequestContext(url, k8s.HttpMethod.GET);
  await kc.applySecurityAuthentication(ctx);
  const res = await fetch(url, { headers: ctx.getHeaders() });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

interface WatchEvent { type: string; object: { kind?: string; code?: number; metadata?: { name?: string; resourceVersion?: string } } }

/** A k8s.Watch recording every event and the done() outcome. */
async function watch(kc: k8s.KubeConfig, apiPath: string, params: Record<string, string | number | boolean | undefined>) {
  const events: WatchEvent[] = [];
  let doneCalls = 0;
  let doneErr: unknown;
  const controller = await new k8s.Watch(kc).watch(apiPath, params, (type, object) => events.push({ type, object }), (err) => {
    doneCalls += 1;
    doneErr = err;
  });
  return { events, controller, done: () => doneCalls > 0, doneCalls: () => doneCalls, doneErr: () => doneErr };
}

describe('fake API server', function () {
  this.timeout(20_000);
  let server: FakeApiServer;
  let kc: k8s.KubeConfig;
  const informers: { stop(): Promise<void> }[] = [];
  const controllers: AbortController[] = [];

  beforeEach(async () => {
    server = await FakeApiServer.start({ bookmarkIntervalMs: 0 });
    kc = kubeConfig(server);
  });
  afterEach(async () => {
    for (const i of informers.splice(0)) await i.stop();
    for (const c of controllers.splice(0)) c.abort();
    await server.close();
  });

  describe('lists', () => {
    it('lists every kind with the global resourceVersion, items without kind/apiVersion', async () => {
      server.apply({ kind: 'Namespace', metadata: { name: 'default', labels: { team: 'a' } } });
      server.apply(pod('b'));
      server.apply(pod('a', {}, 'other'));
      server.apply({ kind: 'NetworkPolicy', metadata: { name: 'deny', namespace: 'default' }, spec: { podSelector: {} } });
      server.apply({ kind: 'Node', metadata: { name: 'node-a' } });
      const { status, body } = await kubeGet(kc, '/api/v1/pods');
      assert.equal(status, 200);
      assert.equal(body.kind, 'PodList');
      assert.equal(body.apiVersion, 'v1');
      assert.deepEqual(body.metadata, { resourceVersion: server.resourceVersion });
      const items = body.items as KubeObject[];
      assert.deepEqual(items.map((i) => `${i.metadata?.namespace}/${i.metadata?.name}`), ['default/b', 'other/a']);
      assert.equal(items[0]?.kind, undefined);
      assert.equal(items[0]?.apiVersion, undefined);
      assert.match(String(items[0]?.metadata?.uid), /^[0-9a-f-]{36}$/);
      assert.match(String(items[0]?.metadata?.creationTimestamp), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
      const itemCount = async (apiPath: string): Promise<number> => ((await kubeGet(kc, apiPath)).body.items as unknown[]).length;
      assert.equal(await itemCount('/api/v1/namespaces/other/pods'), 1);
      const policies = await kubeGet(kc, '/apis/networking.k8s.io/v1/networkpolicies?resourceVersion=0');
      assert.equal(policies.body.kind, 'NetworkPolicyList');
      assert.equal(policies.body.apiVersion, 'networking.k8s.io/v1');
      assert.equal(await itemCount('/apis/networking.k8s.io/v1/namespaces/other/networkpolicies'), 0);
      assert.equal(await itemCount('/api/v1/nodes'), 1);
      assert.equal(await itemCount('/api/v1/namespaces'), 1);
      const single = await kubeGet(kc, '/api/v1/namespaces/default');
      assert.equal(single.body.kind, 'Namespace');
      assert.deepEqual(server.stats().lists, { pods: 2, networkpolicies: 2, nodes: 1, namespaces: 1 });
    });

    it('works through the generated CoreV1Api client', async () => {
      server.apply(pod('a', { app: 'web' }));
      const list = await kc.makeApiClient(k8s.CoreV1Api).listPodForAllNamespaces();
      assert.equal(list.metadata?.resourceVersion, server.resourceVersion);
      assert.equal(list.items[0]?.metadata?.labels?.app, 'web');
      assert.equal(list.items[0]?.spec?.nodeName, 'node-a');
      const read = await kc.makeApiClient(k8s.CoreV1Api).readNamespacedPod({ name: 'a', namespace: 'default' });
      assert.equal(read.metadata?.name, 'a');
    });

    it('answers errors with Status objects: 404, 405, 401, 400', async () => {
      const missing = await kubeGet(kc, '/api/v1/services');
      assert.equal(missing.status, 404);
      assert.equal(missing.body.kind, 'Status');
      assert.equal(missing.body.reason, 'NotFound');
      assert.equal((await kubeGet(kc, '/api/v1/namespaces/default/pods/nope')).status, 404);
      const post = await fetch(`${server.url}/api/v1/pods`, { method: 'POST', headers: { authorization: 'Bearer fake-token' }, body: '{}' });
      assert.equal(post.status, 405);
      assert.equal(((await post.json()) as { code: number }).code, 405);
      assert.equal((await fetch(`${server.url}/api/v1/pods`)).status, 401);
      assert.equal((await kubeGet(kc, '/api/v1/pods?labelSelector=app%3Dweb')).status, 400);
      assert.equal((await kubeGet(kc, '/api/v1/pods?resourceVersion=abc')).status, 400);
    });

    it('creates Events and Leases, refusing a taken name (409 AlreadyExists) and a stale resourceVersion (409 Conflict), and nothing else writable', async () => {
      const send = async (method: string, apiPath: string, body: unknown) => {
        const response = await fetch(`${server.url}${apiPath}`, { method, headers: { authorization: 'Bearer fake-token', 'content-type': 'application/json' }, body: JSON.stringify(body) });
        return { status: response.status, body: (await response.json()) as Record<string, unknown> & { metadata: { resourceVersion: string } } };
      };
      const leases = '/apis/coordination.k8s.io/v1/namespaces/kube-system/leases';
      const created = await send('POST', leases, { metadata: { name: 'l' }, spec: { holderIdentity: 'a' } });
      assert.equal(created.status, 201);
      assert.equal((await send('POST', leases, { metadata: { name: 'l' }, spec: {} })).body['reason'], 'AlreadyExists');
      const updated = await send('PUT', `${leases}/l`, { metadata: { name: 'l', resourceVersion: created.body.metadata.resourceVersion }, spec: { holderIdentity: 'b' } });
      assert.equal(updated.status, 200);
      const stale = await send('PUT', `${leases}/l`, { metadata: { name: 'l', resourceVersion: created.body.metadata.resourceVersion }, spec: { holderIdentity: 'c' } });
      assert.deepEqual([stale.status, stale.body['reason']], [409, 'Conflict']);
      assert.equal((await send('PUT', `${leases}/absent`, { metadata: { name: 'absent' } })).status, 404);
      assert.equal((server.get('Lease', 'kube-system', 'l')!['spec'] as Record<string, unknown>)['holderIdentity'], 'b');
      assert.equal((await send('POST', '/api/v1/namespaces/default/pods', { metadata: { name: 'p' } })).status, 405);
      const event = (name: string, about: string) => ({ metadata: { name }, involvedObject: { kind: 'NetworkPolicy', namespace: 'x', name: about } });
      assert.equal((await send('POST', '/api/v1/namespaces/x/events', event('e1', 'p1'))).status, 201);
      assert.equal((await send('POST', '/api/v1/namespaces/x/events', event('e2', 'p2'))).status, 201);
      assert.equal((await send('POST', '/api/v1/namespaces/y/events', { ...event('e3', 'p1'), metadata: { name: 'e3', namespace: 'x' } })).status, 400);
      const found = await kubeGet(kc, '/api/v1/namespaces/x/events?fieldSelector=involvedObject.kind%3DNetworkPolicy%2CinvolvedObject.name%3Dp1');
      assert.deepEqual((found.body['items'] as { metadata: { name: string } }[]).map((e) => e.metadata.name), ['e1']);
      assert.deepEqual(server.stats().writes, { 'POST leases': 1, 'PUT leases': 1, 'POST events': 2 });
    });

    it('fails the next matching requests on demand (setFailure), as ApiException through the client', async () => {
      const core = kc.makeApiClient(k8s.CoreV1Api);
      server.setFailure({ path: /^\/api\/v1\/pods/, status: 500, times: 1 });
      await assert.rejects(core.listPodForAllNamespaces(), (err: unknown) => err instanceof k8s.ApiException && err.code === 500);
      assert.equal((await core.listPodForAllNamespaces()).items.length, 0);
      server.setFailure({ status: 403 });
      assert.equal((await kubeGet(kc, '/api/v1/nodes')).status, 403);
      assert.equal((await kubeGet(kc, '/api/v1/nodes')).body.reason, 'Forbidden');
      server.setFailure(null);
      assert.equal((await kubeGet(kc, '/api/v1/nodes')).status, 200);
      assert.equal(server.stats().failures, 3);
    });
  });

  describe('watches through k8s.Watch', () => {
    it('replays from a resourceVersion, then streams ADDED/MODIFIED/DELETED live, and BOOKMARKs on request', async () => {
      server.apply(pod('a'));
      const { body } = await kubeGet(kc, '/api/v1/pods');
      const rv = String((body.metadata as { resourceVersion: string }).resourceVersion);
      server.apply(pod('a', { v: '2' })); // before the watch: replayed from history
      const w = await watch(kc, '/api/v1/pods', { resourceVersion: rv, allowWatchBookmarks: true });
      controllers.push(w.controller);
      await until('the replayed MODIFIED', () => w.events.length === 1);
      server.apply(pod('b'));
      server.apply({ kind: 'Node', metadata: { name: 'node-a' } }); // another kind: not on this watch
      assert.equal(server.delete('Pod', 'default', 'a'), true);
      assert.equal(server.delete('Pod', 'default', 'a'), false);
      server.bookmark();
      await until('the bookmark', () => w.events.some((e) => e.type === 'BOOKMARK'));
      assert.deepEqual(w.events.map((e) => `${e.type} ${e.object.metadata?.name ?? '-'}`), ['MODIFIED a', 'ADDED b', 'DELETED a', 'BOOKMARK -']);
      const rvs = w.events.map((e) => Number(e.object.metadata?.resourceVersion));
      assert.deepEqual(rvs, [Number(rv) + 1, Number(rv) + 2, Number(rv) + 4, Number(rv) + 4]);
      assert.equal(w.events[0]?.object.kind, 'Pod');
      assert.deepEqual(w.events[3]?.object, { kind: 'Pod', apiVersion: 'v1', metadata: { resourceVersion: String(Number(rv) + 4) } });
      assert.equal(server.stats().openWatches, 1);
      assert.match(server.requests().at(-1) ?? '', /^GET \/api\/v1\/pods\?watch=true&resourceVersion=\d+&allowWatchBookmarks=true$/);
    });

    it('starts with synthetic ADDED events for resourceVersion "" or "0"', async () => {
      server.apply(pod('a'));
      server.apply(pod('b'));
      const w = await watch(kc, '/api/v1/namespaces/default/pods', { resourceVersion: '0' });
      controllers.push(w.controller);
      await until('two ADDED', () => w.events.length === 2);
      assert.deepEqual(w.events.map((e) => e.type), ['ADDED', 'ADDED']);
    });

    it('sends periodic bookmarks only to watches that allowed them', async () => {
      await server.close();
      server = await FakeApiServer.start({ bookmarkIntervalMs: 50 });
      kc = kubeConfig(server);
      const withBookmarks = await watch(kc, '/api/v1/pods', { resourceVersion: server.resourceVersion, allowWatchBookmarks: true });
      const without = await watch(kc, '/api/v1/pods', { resourceVersion: server.resourceVersion });
      controllers.push(withBookmarks.controller, without.controller);
      await until('two bookmarks', () => withBookmarks.events.length >= 2);
      assert.equal(without.events.length, 0);
    });

    it('answers a watch from a compacted resourceVersion with one 410 Expired ERROR event, then ends (done(null))', async () => {
      server.apply(pod('a'));
      const old = server.resourceVersion;
      server.apply(pod('a', { v: '2' }));
      server.compact();
      const w = await watch(kc, '/api/v1/pods', { resourceVersion: old });
      await until('done', w.done);
      assert.equal(w.events.length, 1);
      assert.equal(w.events[0]?.type, 'ERROR');
      assert.deepEqual(w.events[0]?.object, {
        kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', reason: 'Expired', code: 410,
        message: `too old resource version: ${old} (${server.resourceVersion})`,
      });
      assert.equal(w.doneErr(), null);
      // The current resourceVersion is still fine.
      const fresh = await watch(kc, '/api/v1/pods', { resourceVersion: server.resourceVersion });
      controllers.push(fresh.controller);
      server.apply(pod('b'));
      await until('the live ADDED', () => fresh.events.length === 1);
    });

    it('expires resourceVersions that fell out of the bounded history', async () => {
      await server.close();
      server = await FakeApiServer.start({ bookmarkIntervalMs: 0, historyLimit: 2 });
      kc = kubeConfig(server);
      const start = server.resourceVersion;
      for (const name of ['a', 'b', 'c']) server.apply(pod(name));
      const expired = await watch(kc, '/api/v1/pods', { resourceVersion: start });
      await until('done', expired.done);
      assert.equal(expired.events[0]?.object.code, 410);
      const kept = await watch(kc, '/api/v1/pods', { resourceVersion: String(Number(start) + 1) });
      controllers.push(kept.controller);
      await until('b and c replayed', () => kept.events.length === 2);
      assert.deepEqual(kept.events.map((e) => e.object.metadata?.name), ['b', 'c']);
    });

    it('ends streams on closeWatches() and after timeoutSeconds, calling done(null)', async () => {
      const a = await watch(kc, '/api/v1/pods', { resourceVersion: server.resourceVersion });
      const b = await watch(kc, '/api/v1/nodes', { resourceVersion: server.resourceVersion });
      await until('two open watches', () => server.stats().openWatches === 2);
      server.closeWatches();
      await until('both done', () => a.done() && b.done());
      assert.equal(a.doneErr(), null);
      assert.equal(server.stats().openWatches, 0);
      const started = Date.now();
      const timed = await watch(kc, '/api/v1/pods', { resourceVersion: server.resourceVersion, timeoutSeconds: 1 });
      await until('timeout', timed.done);
      assert.equal(timed.doneErr(), null);
      assert.ok(Date.now() - started >= 900);
    });

    it('reports an aborted watch to done() with an AbortError', async () => {
      const w = await watch(kc, '/api/v1/pods', { resourceVersion: server.resourceVersion });
      w.controller.abort();
      await until('done', w.done);
      assert.equal((w.doneErr() as Error | null)?.name, 'AbortError');
      await until('the server side to close', () => server.stats().openWatches === 0);
    });

    it('reports an injected failure on the watch request as done(err) with statusCode', async () => {
      server.setFailure({ path: /watch=true/, status: 403, times: 1 });
      const w = await watch(kc, '/api/v1/pods', {});
      await until('done', w.done);
      assert.equal((w.doneErr() as { statusCode?: number }).statusCode, 403);
      assert.equal(w.events.length, 0);
    });
  });

  describe('bearer tokens and their rotation', () => {
    const get = (apiPath: string, token?: string) => fetch(`${server.url}${apiPath}`, token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } });

    it('accepts any of its tokens, answers others with 401 and an Unauthorized Status, and counts refusals per resource', async () => {
      await server.close();
      server = await FakeApiServer.start({ bookmarkIntervalMs: 0, tokens: ['old', 'new'] });
      assert.equal((await get('/api/v1/pods', 'old')).status, 200);
      assert.equal((await get('/api/v1/pods', 'new')).status, 200);
      const refused = await get('/api/v1/pods', 'other');
      assert.equal(refused.status, 401);
      assert.deepEqual(await refused.json(), { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'Unauthorized', reason: 'Unauthorized', code: 401 });
      assert.equal((await get('/api/v1/pods?watch=1')).status, 401);
      assert.equal((await get('/version', 'other')).status, 401);
      assert.equal((await get('/healthz')).status, 200, 'health checks need no token');
      const stats = server.stats();
      assert.deepEqual(stats.unauthorized, { pods: 2, '/version': 1 });
      assert.deepEqual(stats.lists, { pods: 2 }, 'refused requests are in no other count');
      assert.deepEqual(stats.watches, {});
      assert.match(server.kubeconfig(), /token: "old"/);
      assert.match(server.kubeconfig(server.url, { tokenFile: '/run/token' }), /tokenFile: "\/run\/token"/);
    });

    it('leaves open watches alone when their token stops being accepted, as a real API server does (it authenticates a watch once, at its start)', async () => {
      const w = await watch(kc, '/api/v1/pods', { resourceVersion: server.resourceVersion });
      controllers.push(w.controller);
      await until('the watch', () => server.stats().openWatches === 1);
      assert.equal(server.setTokens(['rotated']), 0);
      server.apply(pod('a'));
      await until('the event on the old watch', () => w.events.length === 1);
      assert.equal(w.done(), false);
      assert.equal((await kubeGet(kc, '/api/v1/pods')).status, 401, 'a new request with the old token is refused');
    });

    it('with closeRefusedWatches, ends cleanly the watches opened with a refused token, and only those', async () => {
      await server.close();
      server = await FakeApiServer.start({ bookmarkIntervalMs: 0, tokens: ['fake-token', 'kept'] });
      kc = kubeConfig(server);
      const old = await watch(kc, '/api/v1/pods', { resourceVersion: server.resourceVersion });
      controllers.push(old.controller);
      const kept = await fetch(`${server.url}/api/v1/nodes?watch=1&resourceVersion=${server.resourceVersion}`, { headers: { authorization: 'Bearer kept' } });
      await until('two watches', () => server.stats().openWatches === 2);
      assert.equal(server.setTokens(['kept'], { closeRefusedWatches: true }), 1);
      await until('the old watch to end', old.done);
      assert.equal(old.doneErr(), null, 'ended as at its timeout, not cut');
      assert.equal(server.stats().openWatches, 1);
      server.apply({ kind: 'Node', metadata: { name: 'n' } });
      const reader = kept.body!.getReader();
      const { value } = await reader.read();
      assert.match(Buffer.from(value!).toString('utf8'), /"type":"ADDED".*"name":"n"/);
      await reader.cancel();
    });

    it('counts watches that begin with every object (streaming lists) apart from watches that resume', async () => {
      const rv = server.resourceVersion;
      for (const query of [`watch=1&resourceVersion=${rv}`, 'watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true', 'watch=1&resourceVersion=0', 'watch=1']) {
        const controller = new AbortController();
        controllers.push(controller);
        await fetch(`${server.url}/api/v1/pods?${query}`, { headers: { authorization: 'Bearer fake-token' }, signal: controller.signal });
      }
      assert.deepEqual(server.stats().watches, { pods: 4 });
      assert.deepEqual(server.stats().streamingLists, { pods: 3 });
    });
  });

  describe('stop() and restart()', () => {
    it('refuses connections while stopped, cuts open watches, and comes back on the same port with the data', async () => {
      server.apply(pod('a'));
      const url = server.url;
      const w = await watch(kc, '/api/v1/pods', { resourceVersion: server.resourceVersion });
      await until('open watch', () => server.stats().openWatches === 1);
      await server.stop();
      await until('watch done', w.done);
      assert.ok(w.doneErr() instanceof Error, 'a cut stream is reported to done() as an error');
      await assert.rejects(kubeGet(kc, '/api/v1/pods'), (err: Error) => /fetch failed/.test(err.message) && (err.cause as { code?: string }).code === 'ECONNREFUSED');
      const during = server.resourceVersion;
      server.apply(pod('b')); // changes while the API server is unreachable are replayed afterwards
      await server.restart();
      assert.equal(server.url, url);
      const { body } = await kubeGet(kc, '/api/v1/pods');
      assert.equal((body.items as unknown[]).length, 2);
      const resumed = await watch(kc, '/api/v1/pods', { resourceVersion: during });
      controllers.push(resumed.controller);
      await until('the replayed ADDED b', () => resumed.events.length === 1);
      assert.equal(resumed.events[0]?.object.metadata?.name, 'b');
    });
  });

  describe('informers (k8s.makeInformer)', () => {
    function podInformer() {
      const core = kc.makeApiClient(k8s.CoreV1Api);
      const informer = k8s.makeInformer(kc, '/api/v1/pods', () => core.listPodForAllNamespaces());
      informers.push(informer);
      const seen: string[] = [];
      const errors: unknown[] = [];
      informer.on('add', (p) => seen.push(`add ${p.metadata?.name} ${p.metadata?.labels?.v ?? ''}`.trim()));
      informer.on('update', (p) => seen.push(`update ${p.metadata?.name} ${p.metadata?.labels?.v ?? ''}`.trim()));
      informer.on('delete', (p) => seen.push(`delete ${p.metadata?.name}`));
      informer.on('error', (err) => errors.push(err));
      return { informer, seen, errors };
    }

    it('syncs by list, then follows add/update/delete through the watch', async () => {
      server.apply(pod('a'));
      const { informer, seen } = podInformer();
      await informer.start();
      assert.deepEqual(seen, ['add a']);
      await until('the watch', () => server.stats().openWatches === 1);
      server.apply(pod('b'));
      server.apply(pod('a', { v: '2' }));
      server.delete('Pod', 'default', 'b');
      await until('three events', () => seen.length === 4);
      assert.deepEqual(seen, ['add a', 'add b', 'update a 2', 'delete b']);
      assert.deepEqual(informer.list().map((p) => p.metadata?.name), ['a']);
      assert.match(server.requests().at(-1) ?? '', /^GET \/api\/v1\/pods\?watch=true&resourceVersion=\d+$/, 'informers send neither allowWatchBookmarks nor timeoutSeconds');
    });

    it('re-watches from its resourceVersion after closeWatches(), and relists after a 410', async () => {
      server.apply(pod('a'));
      const { informer, seen } = podInformer();
      await informer.start();
      await until('the watch', () => server.stats().openWatches === 1);
      server.closeWatches();
      await until('the re-watch', () => server.stats().watches.pods === 2 && server.stats().openWatches === 1);
      assert.equal(server.stats().lists.pods, 1, 'no relist after a clean stream end');
      server.apply(pod('a', { v: '2' }));
      await until('update', () => seen.includes('update a 2'));
      // The stream ends, and changes happen and are compacted before the informer re-watches.
      server.closeWatches();
      server.apply(pod('a', { v: '3' }));
      server.compact();
      await until('the relist', () => server.stats().lists.pods === 2 && server.stats().openWatches === 1);
      await until('update from the relist', () => seen.includes('update a 3'));
      // (The informer waits its 1 s reconnect backoff before that relist: the ERROR event does not reset it.)
      assert.equal(server.stats().watches.pods, 4, 'watch, re-watch, 410 watch, watch after the relist');
    });

    it('emits error and stays stopped when the API server goes away; start() after restart() resumes the watch', async () => {
      server.apply(pod('a'));
      const { informer, seen, errors } = podInformer();
      await informer.start();
      await until('the watch', () => server.stats().openWatches === 1);
      await server.stop();
      await until('the error', () => errors.length === 1);
      assert.equal((errors[0] as Error).message, 'terminated', 'undici reports the cut stream as TypeError: terminated');
      server.apply(pod('b'));
      await server.restart();
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.deepEqual(server.stats().watches, { pods: 1 }, 'the informer does not retry by itself');
      await informer.start();
      await until('the replayed add', () => seen.length === 2);
      assert.deepEqual(seen, ['add a', 'add b']);
      assert.equal(server.stats().lists.pods, 1, 'start() keeps the resourceVersion: it re-watches without relisting');
    });

    it('emits error (and stops) when the list fails, then syncs on start()', async () => {
      server.apply(pod('a'));
      server.setFailure({ path: /^\/api\/v1\/pods$/, status: 500, times: 1 });
      const { informer, seen, errors } = podInformer();
      await informer.start();
      assert.equal(errors.length, 1);
      assert.equal((errors[0] as k8s.ApiException<unknown>).code, 500);
      assert.deepEqual(seen, []);
      await informer.start();
      assert.deepEqual(seen, ['add a']);
    });
  });

  describe('HTTP admin API and the executable', () => {
    let dir = '';
    beforeEach(async () => {
      dir = await mkdtemp(path.join(tmpdir(), 'fake-apiserver-'));
    });
    afterEach(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    function admin(socketPath: string, method: string, op: string, body?: unknown): Promise<{ status: number; body: unknown }> {
      return new Promise((resolve, reject) => {
        const req = http.request({ socketPath, method, path: `/fake/${op}`, headers: { 'content-type': 'application/json' } }, (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => (text += chunk));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: res.headers['content-type'] === 'application/json' ? JSON.parse(text) : text }));
        });
        req.on('error', reject);
        req.end(body === undefined ? undefined : JSON.stringify(body));
      });
    }

    it('is driven over its unix socket, and the kube API answers there too', async () => {
      const socketPath = path.join(dir, 'api.sock');
      await server.close();
      server = await FakeApiServer.start({ socketPath, bookmarkIntervalMs: 0 });
      kc = kubeConfig(server);
      const w = await watch(kc, '/api/v1/pods', { resourceVersion: server.resourceVersion, allowWatchBookmarks: true });
      assert.equal((await admin(socketPath, 'POST', 'apply', pod('a'))).status, 200);
      assert.equal(((await admin(socketPath, 'POST', 'apply', [pod('b'), pod('c')])).body as unknown[]).length, 2);
      assert.deepEqual((await admin(socketPath, 'POST', 'delete', { kind: 'Pod', namespace: 'default', name: 'b' })).body, { deleted: true });
      await admin(socketPath, 'POST', 'bookmark');
      await until('5 events', () => w.events.length === 5);
      assert.deepEqual(w.events.map((e) => e.type), ['ADDED', 'ADDED', 'ADDED', 'DELETED', 'BOOKMARK']);
      const { bytesSent, ...stats } = (await admin(socketPath, 'GET', 'stats')).body as { bytesSent: number };
      assert.deepEqual(stats, { lists: {}, watches: { pods: 1 }, streamingLists: {}, unauthorized: {}, openWatches: 1, failures: 0, patches: {}, forbidden: 0, writes: {} });
      assert.ok(bytesSent > 0);
      await admin(socketPath, 'POST', 'close-watches');
      await until('done', w.done);
      await admin(socketPath, 'POST', 'compact');
      await admin(socketPath, 'POST', 'failure', { path: 'nodes', status: 503, times: 1 });
      assert.equal((await kubeGet(kc, '/api/v1/nodes')).status, 503);
      assert.equal((await kubeGet(kc, '/api/v1/nodes')).status, 200);
      assert.deepEqual((await admin(socketPath, 'POST', 'tokens', { tokens: ['rotated'], closeRefusedWatches: true })).body, { ok: true, closedWatches: 0 });
      assert.equal((await kubeGet(kc, '/api/v1/nodes')).status, 401, 'the kubeconfig\'s token is no longer accepted');
      assert.equal((await admin(socketPath, 'POST', 'tokens', { tokens: [''] })).status, 400);
      assert.equal((await admin(socketPath, 'POST', 'tokens', { tokens: null })).status, 200);
      assert.equal((await admin(socketPath, 'POST', 'nope')).status, 404);
      assert.equal((await admin(socketPath, 'POST', 'apply', { kind: 'Widget', metadata: { name: 'x' } })).status, 400);
      assert.match(String((await admin(socketPath, 'GET', 'kubeconfig')).body), /insecure-skip-tls-verify: true/);
      assert.deepEqual(server.list('Pod').map((p) => p.metadata.name), ['a', 'c']);
    });

    it('runs as a process: ready line, kubeconfig file, SIGTERM exits 0', async () => {
      const socketPath = path.join(dir, 'api.sock');
      const kubeconfigFile = path.join(dir, 'kubeconfig');
      const child = spawn(process.execPath, [mainJs, '--port', '0', '--socket', socketPath, '--kubeconfig-out', kubeconfigFile, '--bookmark-ms', '100'], { stdio: ['ignore', 'pipe', 'inherit'] });
      try {
        const [line] = (await once(createInterface(child.stdout), 'line')) as [string];
        assert.match(line, /^ready http:\/\/127\.0\.0\.1:\d+$/);
        await admin(socketPath, 'POST', 'apply', pod('a'));
        const fileKc = new k8s.KubeConfig();
        fileKc.loadFromFile(kubeconfigFile);
        assert.equal(fileKc.getCurrentCluster()?.server, line.slice('ready '.length));
        const list = await fileKc.makeApiClient(k8s.CoreV1Api).listPodForAllNamespaces();
        assert.deepEqual(list.items.map((p) => p.metadata?.name), ['a']);
        const exited = once(child, 'exit');
        child.kill('SIGTERM');
        assert.deepEqual(await exited, [0, null]);
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL');
      }
    });
  });
});
