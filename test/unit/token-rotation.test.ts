import assert from 'node:assert/strict';
import { lstat, mkdtemp, readdir, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ApiClient, ApiRequestError } from '../../lib/kube/api-client.js';
import { inClusterConfig, kubeconfigText } from '../../lib/kube/client-config.js';
import { Reflector } from '../../lib/kube/reflector.js';
import type { ReflectorHandler } from '../../lib/kube/reflector.js';
import { tokenFile } from '../../lib/kube/token-file.js';
import { FakeApiServer } from '../../lib/lab/api-server.js';
import { ProjectedTokenVolume } from '../../lib/lab/projected-token.js';
import { silentLogger } from '../../lib/logger.js';
import { selfSignedCertificate } from '../support/self-signed.js';

/**
 * A token that is rotated under the client, the way kubelet rotates a projected service-account
 * token: the API client and its token file against the lab API server, which accepts only the tokens
 * a test says. The client must pick a rotated token up, recover from a refusal with one retry, and
 * report a token that stays refused as an error naming where it came from, at a pace set by backoff.
 */

const T0 = Date.parse('2030-01-01T00:00:00Z');
const ignore: ReflectorHandler = { beginList: () => {}, listPage: () => {}, endList: () => {}, event: () => {} };

function total(counts: Record<string, number>): number {
  return Object.values(counts).reduce((a, b) => a + b, 0);
}

describe('token rotation, at the API client', function () {
  this.timeout(30_000);
  let dir = '';
  let api: FakeApiServer;
  let volume: ProjectedTokenVolume;
  let now = T0;
  const clients: ApiClient[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'palisade-rotation-'));
    api = await FakeApiServer.start({ bookmarkIntervalMs: 0, tokens: ['one'] });
    volume = new ProjectedTokenVolume(path.join(dir, 'serviceaccount'));
    await volume.write('one');
    now = T0;
  });
  afterEach(async () => {
    for (const client of clients.splice(0)) client.close();
    await api.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** A client whose kubeconfig names the projected token as its tokenFile, on the test's clock. */
  async function client(): Promise<ApiClient> {
    const kubeconfig = api.kubeconfig(api.url, { tokenFile: volume.tokenPath });
    const c = new ApiClient(await kubeconfigText(kubeconfig, path.join(dir, 'kubeconfig'), { now: () => now }));
    clients.push(c);
    return c;
  }

  it('writes the token volume as kubelet does: token through ..data, swapped in one rename, old versions removed', async () => {
    await volume.write('two');
    assert.equal(await readlink(volume.tokenPath), path.join('..data', 'token'));
    const data = await readlink(path.join(volume.dir, '..data'));
    assert.match(data, /^\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\./);
    assert.ok((await lstat(path.join(volume.dir, '..data'))).isSymbolicLink());
    assert.deepEqual((await readdir(volume.dir)).sort(), ['..data', data, 'token'].sort(), 'the old version is gone, nothing is staged');
  });

  it('uses a rotated token file from the first request after the minute is up, without a refusal', async () => {
    const c = await client();
    await c.getJson('/version');
    await volume.write('two');
    api.setTokens(['one', 'two']);
    now = T0 + 30_000;
    await c.getJson('/version');
    api.setTokens(['two']);
    now = T0 + 61_000;
    await c.getJson('/version');
    assert.deepEqual(api.stats().unauthorized, {}, 'never refused: the new token was read before the old one expired');
    assert.deepEqual(c.unauthorized, { recovered: 0, refused: 0 });
  });

  it('reads a refused token afresh at once and retries the request once with the new one', async () => {
    const c = await client();
    await c.getJson('/version');
    await volume.write('two');
    api.setTokens(['two']);
    const version = await c.getJson('/version') as { gitVersion: string };
    assert.match(version.gitVersion, /fake/);
    assert.deepEqual(api.stats().unauthorized, { '/version': 1 });
    assert.deepEqual(c.unauthorized, { recovered: 1, refused: 0 });
  });

  it('after a refusal, requests asking together all get the new token, and a late refusal of the old token keeps the new one', async () => {
    const file = path.join(dir, 'plain-token');
    await writeFile(file, 'one');
    const source = tokenFile(file, () => now);
    assert.equal(await source.token(), 'one');
    await writeFile(file, 'two');
    source.invalidate('one');
    assert.deepEqual(await Promise.all([source.token(), source.token()]), ['two', 'two']);
    await writeFile(file, 'three');
    source.invalidate('one');
    assert.equal(await source.token(), 'two', 'a refusal of a token already replaced changes nothing');
  });

  it('fails after a second refusal, naming the token file and the kubeconfig, after exactly two requests', async () => {
    const c = await client();
    await c.getJson('/version');
    await volume.write('two');
    api.setTokens(['three']);
    const error = await c.getJson('/api/v1/pods').then(() => null, (e: unknown) => e);
    assert.ok(error instanceof ApiRequestError);
    assert.equal(error.status, 401);
    assert.equal(error.reason, 'Unauthorized');
    assert.equal(error.message, `GET /api/v1/pods: HTTP 401: the API server refused the token from the token file ${volume.tokenPath} (the kubeconfig ${path.join(dir, 'kubeconfig')} (context fake)), and again after fetching it afresh: {"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}`);
    assert.deepEqual(api.stats().unauthorized, { pods: 2 });
    assert.deepEqual(c.unauthorized, { recovered: 0, refused: 1 });
  });

  it('does not send a refused token again when the file still holds it', async () => {
    const c = await client();
    await c.getJson('/version');
    api.setTokens(['two']);
    await assert.rejects(c.getJson('/api/v1/pods'), /HTTP 401: the API server refused the token from the token file .*, and fetching it afresh gave the same token/);
    assert.deepEqual(api.stats().unauthorized, { pods: 1 }, 'one request: the same token would be refused again');
  });

  it('fails with the file named when the token file is gone or empty', async () => {
    const c = await client();
    await c.getJson('/version');
    api.setTokens(['two']);
    await rm(volume.dir, { recursive: true });
    await assert.rejects(c.getJson('/version'), new RegExp(`^CredentialsError: cannot read the token file ${volume.tokenPath}: ENOENT`));
    await volume.write('');
    await assert.rejects(c.getJson('/version'), new RegExp(`^CredentialsError: the token file ${volume.tokenPath} is empty$`));
  });

  it('paces a token that stays refused with the reflector\'s backoff: one request per attempt, the delays doubling', async () => {
    const c = await client();
    api.setTokens(['not-ours']);
    const delays: number[] = [];
    const reflector = new Reflector({
      client: c, path: '/api/v1/pods', handler: ignore, logger: silentLogger,
      backoff: { attempts: Infinity, baseDelayMs: 10, maxDelayMs: 80, sleep: (ms) => {
        delays.push(ms);
        return new Promise((resolve) => setTimeout(resolve, 5));
      } },
    });
    reflector.start();
    while (reflector.stats.failures < 6) await new Promise((resolve) => setTimeout(resolve, 5));
    await reflector.stop();
    assert.deepEqual(delays.slice(0, 6), [10, 20, 40, 80, 80, 80]);
    assert.equal(total(api.stats().unauthorized), reflector.stats.failures, 'one refused request per failed attempt');
    assert.match(reflector.stats.lastError ?? '', new RegExp(`HTTP 401: the API server refused the token from the token file ${volume.tokenPath}`));
  });
});

describe('token rotation, in the cluster', function () {
  this.timeout(30_000);
  let dir = '';
  let api: FakeApiServer | null = null;

  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'palisade-incluster-'));
  });
  afterEach(async () => {
    await api?.close();
    api = null;
    await rm(dir, { recursive: true, force: true });
  });

  it('reads KUBERNETES_SERVICE_HOST/PORT, trusts ca.crt, and follows the projected token through a rotation', async function () {
    const tls = await selfSignedCertificate();
    if (tls === null) {
      console.warn('      skipped: no openssl program to make a certificate with');
      this.skip();
    }
    api = await FakeApiServer.start({ bookmarkIntervalMs: 0, tokens: ['one'], tls });
    const volume = new ProjectedTokenVolume(dir);
    await writeFile(path.join(dir, 'ca.crt'), tls.cert);
    await volume.write('one');
    const port = new URL(api.url).port;
    const c = new ApiClient(await inClusterConfig({ KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: port }, dir));
    try {
      assert.equal(c.config.credentials.description, `the token file ${path.join(dir, 'token')}`);
      await c.getJson('/version');
      await volume.write('two');
      api.setTokens(['two']);
      await c.getJson('/api/v1/namespaces');
      assert.deepEqual(api.stats().unauthorized, { namespaces: 1 });
      assert.deepEqual(c.unauthorized, { recovered: 1, refused: 0 });
    } finally {
      c.close();
    }
  });
});
