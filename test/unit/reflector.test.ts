import assert from 'node:assert/strict';
import { ApiClient } from '../../lib/kube/api-client.js';
import { kubeconfigText } from '../../lib/kube/client-config.js';
import { Reflector } from '../../lib/kube/reflector.js';
import type { KubeObject, ReflectorHandler } from '../../lib/kube/reflector.js';
import { FakeApiServer } from '../../lib/lab/api-server.js';
import { silentLogger } from '../../lib/logger.js';

/** The reflector against the lab API server: paged lists, watch events, 410 relists, failures and backoff. */

class Recorder implements ReflectorHandler {
  readonly log: string[] = [];
  readonly pages: number[] = [];
  beginList(): void { this.log.push('begin'); }
  listPage(objects: readonly KubeObject[]): void { this.pages.push(objects.length); }
  endList(): void { this.log.push('end'); }
  event(type: string, object: KubeObject): void { this.log.push(`${type} ${String((object['metadata'] as Record<string, unknown>)['name'])}`); }
}

/** Objects handed on in pages, each page a few objects, so none is held back long. */
function handedOn(recorder: Recorder): number {
  assert.ok(recorder.pages.every((n) => n <= 16), `pages of ${recorder.pages.join(', ')}`);
  return recorder.pages.reduce((a, b) => a + b, 0);
}

const pod = (name: string) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'default' } });

async function until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('the reflector', function () {
  this.timeout(20_000);
  let api: FakeApiServer;
  let reflector: Reflector | null = null;

  beforeEach(async () => {
    api = await FakeApiServer.start({ bookmarkIntervalMs: 100 });
  });

  afterEach(async () => {
    await reflector?.stop();
    reflector = null;
    client?.close();
    client = null;
    await api.close();
  });

  let client: ApiClient | null = null;

  async function start(handler: ReflectorHandler, listMode: 'auto' | 'paged' = 'paged'): Promise<Reflector> {
    client = new ApiClient(await kubeconfigText(api.kubeconfig(), 'test kubeconfig'));
    reflector = new Reflector({ client, path: '/api/v1/pods', handler, logger: silentLogger, listMode, backoff: { attempts: Infinity, baseDelayMs: 20, maxDelayMs: 100, sleep: (ms) => new Promise((r) => setTimeout(r, ms)) } });
    reflector.start();
    return reflector;
  }

  it('lists a large resource in pages of 500, as one list', async () => {
    for (let i = 0; i < 1234; i++) api.apply(pod(`p${i}`));
    const recorder = new Recorder();
    const r = await start(recorder);
    await until('the first list', () => r.synced);
    assert.equal(handedOn(recorder), 1234);
    assert.deepEqual(recorder.log, ['begin', 'end']);
    assert.equal(api.stats().lists['pods'], 1);
    assert.equal(api.requests().filter((q) => /^GET \/api\/v1\/pods\?limit=500/.test(q)).length, 3, 'three pages of at most 500');
  });

  it('passes on watch events after the list, in order', async () => {
    const recorder = new Recorder();
    const r = await start(recorder);
    await until('the first list', () => r.synced);
    api.apply(pod('a'));
    api.apply({ ...pod('a'), metadata: { name: 'a', namespace: 'default', labels: { x: 'y' } } });
    api.delete('Pod', 'default', 'a');
    await until('three events', () => recorder.log.length >= 5);
    assert.deepEqual(recorder.log, ['begin', 'end', 'ADDED a', 'MODIFIED a', 'DELETED a']);
  });

  it('relists when the watch comes back to a resourceVersion the server no longer has (410 Gone)', async () => {
    const recorder = new Recorder();
    const r = await start(recorder);
    await until('the first list', () => r.synced);
    await api.stop();
    api.apply(pod('missed'));
    api.compact();
    await api.restart();
    await until('a relist', () => r.stats.relists === 1, 10_000);
    assert.ok(recorder.pages.at(-1)! >= 1, 'the relist saw the object the watch missed');
  });

  it('backs off when the server ends every watch at once with nothing in it, instead of asking again at once', async () => {
    await api.close();
    api = await FakeApiServer.start({ bookmarkIntervalMs: 0, endWatchesAfterMs: 0 });
    const recorder = new Recorder();
    const r = await start(recorder);
    await until('the first list', () => r.synced);
    await new Promise((resolve) => setTimeout(resolve, 500));
    // With the test's backoff (20 ms doubling to 100 ms), half a second allows a handful of watches; a
    // reflector asking again at once would open hundreds.
    assert.ok(r.stats.watches <= 12, `${r.stats.watches} watches in half a second`);
    assert.ok(r.stats.failures >= 3, `${r.stats.failures} failures`);
    assert.match(r.stats.lastError ?? '', /ended the watch of \/api\/v1\/pods within \d+ ms without sending anything/);
    assert.equal(r.stats.relists, 0, 'a watch that ends is resumed, never a reason to relist');
  });

  it('backs off and retries while the API server answers with errors, and recovers', async () => {
    api.setFailure({ path: /\/api\/v1\/pods/, status: 500, times: 3 });
    const recorder = new Recorder();
    const r = await start(recorder);
    await until('the first list', () => r.synced);
    assert.ok(r.stats.failures >= 3, `${r.stats.failures} failures`);
    assert.match(r.stats.lastError ?? '', /HTTP 500/);
  });

  it('catches what its handler throws on a watch event, counts it, and relists so the event is not lost', async () => {
    const recorder = new Recorder();
    let throwOnce = true;
    const handler: ReflectorHandler = {
      beginList: () => recorder.beginList(),
      listPage: (objects) => recorder.listPage(objects),
      endList: () => recorder.endList(),
      event: (type, object) => {
        if (throwOnce && (object['metadata'] as Record<string, unknown>)['name'] === 'poison') {
          throwOnce = false;
          throw new Error('handler bug');
        }
        recorder.event(type, object);
      },
    };
    const r = await start(handler);
    await until('the first list', () => r.synced);
    api.apply(pod('poison'));
    await until('a relist', () => r.stats.relists === 1);
    assert.equal(r.stats.handlerErrors, 1);
    assert.match(r.stats.lastError ?? '', /handler: handler bug/);
    assert.deepEqual(recorder.pages.at(-1), 1, 'the relist handed over the object the failed event carried');
    api.apply(pod('after'));
    await until('the watch resumed', () => recorder.log.includes('ADDED after'));
  });

  it('treats a list page its handler throws on as a failed list, and lists again', async () => {
    api.apply(pod('a'));
    let failures = 1;
    const recorder = new Recorder();
    const r = await start({
      beginList: () => recorder.beginList(),
      listPage: (objects) => {
        if (failures-- > 0) throw new Error('page handler bug');
        recorder.listPage(objects);
      },
      endList: () => recorder.endList(),
      event: (type, object) => recorder.event(type, object),
    });
    await until('the first complete list', () => r.synced);
    assert.equal(r.stats.handlerErrors, 1);
    assert.ok(r.stats.failures >= 1);
    assert.deepEqual(recorder.pages, [1]);
  });

  it('lists with a streaming list where the server offers one, then watches on the same stream', async () => {
    for (let i = 0; i < 1234; i++) api.apply(pod(`p${i}`));
    const recorder = new Recorder();
    const r = await start(recorder, 'auto');
    await until('the first list', () => r.synced);
    assert.equal(r.stats.listMode, 'streaming');
    assert.equal(handedOn(recorder), 1234);
    assert.equal(api.stats().lists['pods'] ?? 0, 0, 'no list request at all');
    api.apply(pod('late'));
    await until('the event', () => recorder.log.includes('ADDED late'));
    assert.equal(api.stats().watches['pods'], 1, 'one stream for the list and the watch');
  });

  it('falls back to paged lists when the server refuses streaming lists, and keeps to them', async () => {
    await api.close();
    api = await FakeApiServer.start({ bookmarkIntervalMs: 100, watchList: false });
    for (let i = 0; i < 600; i++) api.apply(pod(`p${i}`));
    const recorder = new Recorder();
    const r = await start(recorder, 'auto');
    await until('the first list', () => r.synced);
    assert.equal(r.stats.listMode, 'paged');
    assert.equal(r.stats.failures, 0, 'a refusal is no failure');
    assert.equal(handedOn(recorder), 600);
  });

  it('reads a list the server sends whole (a watch cache ignoring limit) item by item, in pages', async () => {
    await api.close();
    api = await FakeApiServer.start({ bookmarkIntervalMs: 100, pageCachedLists: false });
    for (let i = 0; i < 1234; i++) api.apply(pod(`p${i}`));
    const recorder = new Recorder();
    const r = await start(recorder);
    await until('the first list', () => r.synced);
    assert.equal(handedOn(recorder), 1234);
    assert.ok(api.requests().some((q) => /resourceVersion=0/.test(q)), 'the first list is served from the watch cache');
  });
});
