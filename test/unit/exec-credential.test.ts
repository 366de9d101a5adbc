import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { ApiClient } from '../../lib/kube/api-client.js';
import { kubeconfigFile, KubeConfigError } from '../../lib/kube/client-config.js';
import type { ClientConfig } from '../../lib/kube/client-config.js';
import { CredentialsError } from '../../lib/errors.js';
import { FakeApiServer } from '../../lib/lab/api-server.js';
import { writeFakePlugin } from '../support/fake-exec-plugin.js';
import type { FakePlugin } from '../support/fake-exec-plugin.js';

/**
 * Exec credential plugins (client.authentication.k8s.io ExecCredential, as `aws eks get-token` prints
 * it), run for real: a small Node.js program stands in for the plugin and records every run.
 */

const V1 = 'client.authentication.k8s.io/v1';
const V1BETA1 = 'client.authentication.k8s.io/v1beta1';
const T0 = Date.parse('2030-01-01T00:00:00Z');
const MINUTE = 60_000;

describe('exec credential plugins', function () {
  this.timeout(30_000);
  let dir = '';
  let plugin: FakePlugin;
  let now = T0;
  const clock = () => now;

  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'palisade-exec-'));
    plugin = await writeFakePlugin(dir);
    now = T0;
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** A kubeconfig whose user runs the fake plugin; `exec` overrides its exec stanza's fields. */
  async function load(exec: Record<string, unknown> = {}, server = 'https://10.0.0.1:443', cluster: Record<string, unknown> = {}): Promise<ClientConfig> {
    const file = path.join(dir, 'kubeconfig');
    await writeFile(file, stringify({
      apiVersion: 'v1', kind: 'Config', 'current-context': 'eks',
      contexts: [{ name: 'eks', context: { cluster: 'prod', user: 'aws' } }],
      clusters: [{ name: 'prod', cluster: { server, 'certificate-authority-data': Buffer.from('CA').toString('base64'), ...cluster } }],
      users: [{ name: 'aws', user: { exec: { apiVersion: V1BETA1, command: process.execPath, args: [plugin.script], ...exec } } }],
    }));
    return kubeconfigFile(file, { now: clock });
  }

  it('runs the plugin with the kubeconfig\'s args and env as an argv array (no shell), stdin at end-of-file, and KUBERNETES_EXEC_INFO', async () => {
    const args = [plugin.script, 'eks', 'get-token', '--cluster-name', 'prod; touch PWNED', '$(touch PWNED2)', 'two words', ''];
    const c = await load({ args, env: [{ name: 'PROBE', value: 'from the kubeconfig' }] });
    assert.equal(await c.credentials.token(), 'token-1');
    const [run] = await plugin.runs();
    assert.deepEqual(run?.argv, args.slice(1), 'every argument arrives as it was written, one by one');
    assert.equal(run?.probe, 'from the kubeconfig');
    assert.equal(run?.stdin, 'eof', 'the plugin gets no terminal and cannot wait for input');
    assert.deepEqual(run?.info, { apiVersion: V1BETA1, kind: 'ExecCredential', spec: { interactive: false } });
    assert.deepEqual((await readdir(dir)).filter((f) => f.startsWith('PWNED')), [], 'no shell ran the arguments');
    assert.equal(c.credentials.description, `the kubeconfig's exec plugin ${process.execPath}`);
  });

  it('hands the plugin the cluster when the kubeconfig sets provideClusterInfo', async () => {
    const c = await load({ provideClusterInfo: true }, 'https://10.0.0.1:443', {
      'tls-server-name': 'api.internal',
      extensions: [{ name: 'client.authentication.k8s.io/exec', extension: { region: 'eu-west-1' } }],
    });
    await c.credentials.token();
    const [run] = await plugin.runs();
    assert.deepEqual(run?.info, {
      apiVersion: V1BETA1, kind: 'ExecCredential',
      spec: { interactive: false, cluster: { server: 'https://10.0.0.1/', 'certificate-authority-data': Buffer.from('CA').toString('base64'), 'tls-server-name': 'api.internal', config: { region: 'eu-west-1' } } },
    });
  });

  it('keeps the token until a minute before its expirationTimestamp, runs the plugin once for requests asking together, and again when it nears expiry', async () => {
    const c = await load({ env: [{ name: 'EXPIRES', value: new Date(T0 + 15 * MINUTE).toISOString() }] });
    assert.deepEqual(await Promise.all([1, 2, 3, 4].map(() => c.credentials.token())), ['token-1', 'token-1', 'token-1', 'token-1']);
    now = T0 + 13 * MINUTE;
    assert.equal(await c.credentials.token(), 'token-1');
    assert.equal((await plugin.runs()).length, 1, 'one run for every request before the refresh time');
    now = T0 + 14.5 * MINUTE;
    assert.equal(await c.credentials.token(), 'token-2', 'run again within a minute of expiry');
    assert.equal((await plugin.runs()).length, 2);
  });

  it('keeps a token without an expirationTimestamp for ten minutes, unless it is refused first', async () => {
    const c = await load();
    assert.equal(await c.credentials.token(), 'token-1');
    now = T0 + 9 * MINUTE;
    assert.equal(await c.credentials.token(), 'token-1');
    c.credentials.invalidate('token-1');
    assert.equal(await c.credentials.token(), 'token-2', 'a refused token is fetched again at once');
    now = T0 + 20 * MINUTE;
    assert.equal(await c.credentials.token(), 'token-3');
  });

  it('runs the plugin again after a 401, once however many requests were refused, and the client retries each with the new token', async () => {
    const api = await FakeApiServer.start({ bookmarkIntervalMs: 0, tokens: ['token-2'] });
    try {
      const base = await load({ env: [{ name: 'EXPIRES', value: new Date(T0 + 15 * MINUTE).toISOString() }] }, api.url);
      const client = new ApiClient(base);
      assert.equal(await client.config.credentials.token(), 'token-1', 'the first token the plugin gave, which the server refuses');
      await client.getJson('/version');
      assert.deepEqual(api.stats().unauthorized, { '/version': 1 });
      assert.deepEqual(client.unauthorized, { recovered: 1, refused: 0 });
      assert.equal((await plugin.runs()).length, 2);

      // Every request refused with the same old token: the first refusal runs the plugin, the others
      // use what it gave.
      api.setTokens(['token-3']);
      await Promise.all(['pods', 'namespaces', 'nodes', 'pods'].map((r) => client.getJson(`/api/v1/${r}`)));
      assert.equal((await plugin.runs()).length, 3, 'one more run for four refusals');
      assert.deepEqual(client.unauthorized, { recovered: 5, refused: 0 });
      client.close();
    } finally {
      await api.close();
    }
  });

  it('names the command, the exit code and the tail of stderr when the plugin fails, never its arguments, and runs it again on the next request', async () => {
    await plugin.setMode('fail');
    const c = await load({ args: [plugin.script, '--role-arn', 'SECRET-ARG'] });
    const error = await c.credentials.token().then(() => null, (e: unknown) => e);
    assert.ok(error instanceof CredentialsError);
    assert.match(error.message, new RegExp(`^the kubeconfig's exec plugin ${escape(process.execPath)} exited with code 255; stderr: …`));
    assert.match(error.message, /An error occurred \(ExpiredToken\) when calling the GetCallerIdentity operation: The security token included in the request is expired$/);
    assert.ok(error.message.length < 600, `the stderr tail, not all 2 KB of it: ${error.message.length} characters`);
    assert.doesNotMatch(error.message, /SECRET-ARG/);
    await plugin.setMode('ok');
    assert.equal(await c.credentials.token(), 'token-2', 'a failure is not cached');
  });

  const badOutputs: readonly [string, RegExp][] = [
    ['garbage', /printed no ExecCredential JSON \(Unexpected token/],
    ['empty', /printed no ExecCredential JSON \(nothing on stdout\)/],
    ['other-version', /is configured for client\.authentication\.k8s\.io\/v1beta1 but printed "client\.authentication\.k8s\.io\/v1"/],
    ['no-token', /printed an ExecCredential without status\.token/],
    ['cert', /returned a client certificate and no token; palisade takes only tokens from exec plugins/],
  ];
  for (const [mode, message] of badOutputs) {
    it(`names the plugin when its output is unusable: ${mode}`, async () => {
      await plugin.setMode(mode);
      const c = await load();
      await assert.rejects(c.credentials.token(), (e: unknown) => e instanceof CredentialsError && e.message.startsWith(`the kubeconfig's exec plugin ${process.execPath} `) && message.test(e.message));
    });
  }

  it('names a plugin that is not installed, with its install hint', async () => {
    const c = await load({ command: 'aws-not-installed', args: ['eks', 'get-token'], installHint: 'Install the AWS CLI: https://aws.amazon.com/cli/' });
    await assert.rejects(c.credentials.token(), /^CredentialsError: cannot run the kubeconfig's exec plugin aws-not-installed: spawn aws-not-installed ENOENT\nInstall the AWS CLI/);
  });

  it('checks apiVersion and interactiveMode at load, as kubectl does, except that a missing interactiveMode is taken as IfAvailable for v1 too', async () => {
    const refused: readonly [Record<string, unknown>, RegExp][] = [
      [{ apiVersion: undefined }, /user "aws": exec apiVersion null is not one of client\.authentication\.k8s\.io\/v1, client\.authentication\.k8s\.io\/v1beta1/],
      [{ apiVersion: 'client.authentication.k8s.io/v1alpha1' }, /v1alpha1 was removed in Kubernetes 1\.24/],
      [{ interactiveMode: 'Always' }, /interactiveMode: Always, which needs a terminal, and palisade runs without one/],
      [{ interactiveMode: 'Sometimes' }, /exec interactiveMode "Sometimes" is not one of Never, IfAvailable, Always/],
      [{ args: 'eks get-token' }, /exec args must be a list of strings/],
      [{ env: [{ name: 'A' }] }, /exec env must be a list of \{name, value\} strings/],
    ];
    for (const [exec, message] of refused) {
      await assert.rejects(load(exec), (e: unknown) => e instanceof KubeConfigError && message.test(e.message), JSON.stringify(exec));
    }
    for (const exec of [{ apiVersion: V1 }, { apiVersion: V1, interactiveMode: 'Never' }, { apiVersion: V1BETA1, interactiveMode: 'IfAvailable' }]) {
      const c = await load(exec);
      assert.match(await c.credentials.token() ?? '', /^token-\d+$/, JSON.stringify(exec));
    }
    assert.deepEqual((await plugin.runs()).map((r) => (r.info as { apiVersion: string }).apiVersion), [V1, V1, V1BETA1], 'KUBERNETES_EXEC_INFO speaks the configured version');
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
