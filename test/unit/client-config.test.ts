import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { inClusterConfig, KubeConfigError, kubeconfigFile, kubeconfigText, tokenFile } from '../../lib/kube/client-config.js';
import { ApiClient } from '../../lib/kube/api-client.js';
import { FakeApiServer } from '../../lib/lab/api-server.js';

/** Reading credentials: kubeconfig files and the in-cluster service account, as the daemon needs them. */

describe('kubeconfig and in-cluster credentials', () => {
  let dir = '';
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'palisade-kubeconfig-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const config = (user: string, cluster = '    server: https://10.0.0.1:443\n    certificate-authority-data: Y2E=') => `apiVersion: v1
kind: Config
current-context: c
contexts:
- name: c
  context: {cluster: k, user: u}
clusters:
- name: k
  cluster:
${cluster}
users:
- name: u
  user:
${user}
`;

  it('reads the current context: server, CA data and a token', async () => {
    const c = await kubeconfigText(config('    token: abc'), 'kc');
    assert.equal(c.server.href, 'https://10.0.0.1/');
    assert.equal(c.ca?.toString(), 'ca');
    assert.equal(await c.credentials.token(), 'abc');
  });

  it('resolves file paths against the kubeconfig\'s folder, and reads client certificates', async () => {
    await writeFile(path.join(dir, 'cert.pem'), 'CERT');
    await writeFile(path.join(dir, 'key.pem'), 'KEY');
    await writeFile(path.join(dir, 'kubeconfig'), config('    client-certificate: cert.pem\n    client-key: key.pem'));
    const c = await kubeconfigFile(path.join(dir, 'kubeconfig'));
    assert.equal(c.cert?.toString(), 'CERT');
    assert.equal(c.key?.toString(), 'KEY');
    assert.equal(await c.credentials.token(), null);
  });

  it('reads a token file again once it is a minute old, or at once after the server refused it', async () => {
    const file = path.join(dir, 'token');
    await writeFile(file, 'one\n');
    let now = 0;
    const source = tokenFile(file, () => now);
    assert.equal(await source.token(), 'one');
    await writeFile(file, 'two\n');
    now = 30_000;
    assert.equal(await source.token(), 'one', 'cached within the minute');
    now = 61_000;
    assert.equal(await source.token(), 'two', 'rotated tokens are picked up');
    await writeFile(file, 'three\n');
    source.invalidate('one');
    assert.equal(await source.token(), 'two', 'a refusal of a token already replaced changes nothing');
    source.invalidate('two');
    assert.equal(await source.token(), 'three', 'a refused token is read again at once');
  });

  it('runs an exec plugin for its ExecCredential token, and again when it is about to expire', async () => {
    const script = path.join(dir, 'get-token');
    await writeFile(script, `#!/bin/sh\necho '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"'$TOKEN_PREFIX'-'$(date +%N)'","expirationTimestamp":"2000-01-01T00:00:00Z"}}'\n`);
    await chmod(script, 0o755);
    await writeFile(path.join(dir, 'kubeconfig'), config(`    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: ./get-token\n      env:\n      - {name: TOKEN_PREFIX, value: eks}`));
    const c = await kubeconfigFile(path.join(dir, 'kubeconfig'));
    const first = await c.credentials.token();
    assert.match(first ?? '', /^eks-\d+$/);
    assert.notEqual(await c.credentials.token(), first, 'an expired token is fetched again');
  });

  it('names what is wrong with a kubeconfig', async () => {
    await assert.rejects(kubeconfigText('current-context: c\ncontexts: []\n', 'kc'), (e: unknown) => e instanceof KubeConfigError && /no context named "c"/.test(e.message));
    await assert.rejects(kubeconfigText(config('    username: admin'), 'kc'), /auth-provider or basic auth, which palisade does not support/);
    await assert.rejects(kubeconfigFile(path.join(dir, 'missing')), /cannot load the kubeconfig/);
  });

  it('reads the service account as client-go does, and refuses outside a cluster', async () => {
    await writeFile(path.join(dir, 'ca.crt'), 'CA');
    await writeFile(path.join(dir, 'token'), 'sa-token');
    const c = await inClusterConfig({ KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' }, dir);
    assert.equal(c.server.href, 'https://[fd00::1]/');
    assert.equal(await c.credentials.token(), 'sa-token');
    await assert.rejects(inClusterConfig({}, dir), /not running in a cluster/);
  });

  it('sends the token, and after a 401 reads it afresh and tries once more', async () => {
    const api = await FakeApiServer.start({ bookmarkIntervalMs: 0, token: 'good' });
    try {
      const file = path.join(dir, 'token');
      await writeFile(file, 'stale');
      const base = await kubeconfigText(api.kubeconfig(), 'kc');
      const client = new ApiClient({ ...base, credentials: tokenFile(file) });
      await client.config.credentials.token(); // cached: the stale token is what the first request sends
      await writeFile(file, 'good');
      const version = await client.getJson('/version') as { gitVersion: string };
      assert.match(version.gitVersion, /fake/);
      client.close();
    } finally {
      await api.close();
    }
  });
});
