import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { KubeConfigError } from '../errors.js';
import { execPlugin, execToken } from './exec-credential.js';
import { tokenFile } from './token-file.js';
import { NO_TOKEN, staticToken } from './token-source.js';
import type { TokenSource } from './token-source.js';

export { KubeConfigError } from '../errors.js';
export { tokenFile } from './token-file.js';
export type { TokenSource } from './token-source.js';

/**
 * Where the API server is and how to prove who palisade is: from the pod's service account (in a
 * cluster) or from a kubeconfig file. Written here rather than taken from @kubernetes/client-node's
 * KubeConfig because that class loads the library's whole generated API client with it: measured,
 * 75 MiB of resident memory and 0.65 CPU seconds at every start, half of palisade's memory budget,
 * for a program that needs one GET. What is read is what the daemon's own credentials use:
 *
 * - clusters: server, certificate-authority(-data), insecure-skip-tls-verify, tls-server-name;
 * - users: token, tokenFile, client-certificate(-data) and client-key(-data), and exec plugins
 *   (client.authentication.k8s.io ExecCredential, as `aws eks get-token` prints).
 *
 * Tokens are never cached for longer than they are good for: a token file (the in-cluster one and a
 * kubeconfig's tokenFile alike, token-file.ts) is read again every minute, an exec token when its
 * expirationTimestamp nears (exec-credential.ts), and either at once after a 401.
 */

export interface ClientConfig {
  /** e.g. https://10.100.0.1:443 */
  readonly server: URL;
  readonly ca: Buffer | null;
  readonly cert: Buffer | null;
  readonly key: Buffer | null;
  readonly insecureSkipTlsVerify: boolean;
  readonly tlsServerName: string | null;
  /** Where the configuration came from, for messages. */
  readonly source: string;
  readonly credentials: TokenSource;
}

/** Seams for tests: the clock token caches run on. */
export interface CredentialOptions {
  readonly now?: () => number;
}

const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** The pod's own service account, as client-go's rest.InClusterConfig reads it. */
export async function inClusterConfig(env: Readonly<Record<string, string | undefined>>, dir = SERVICE_ACCOUNT_DIR, options: CredentialOptions = {}): Promise<ClientConfig> {
  const host = env['KUBERNETES_SERVICE_HOST'];
  const port = env['KUBERNETES_SERVICE_PORT'];
  if (host === undefined || host === '' || port === undefined || port === '') {
    throw new KubeConfigError('not running in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set, and no --kubeconfig was given');
  }
  let ca: Buffer;
  try {
    ca = await readFile(path.join(dir, 'ca.crt'));
  } catch (error) {
    throw new KubeConfigError(`cannot read the service account's CA ${path.join(dir, 'ca.crt')}: ${error instanceof Error ? error.message : String(error)}`, error);
  }
  const credentials = tokenFile(path.join(dir, 'token'), options.now);
  // Read once now, so a missing token stops the daemon at start with the path in the message.
  await credentials.token();
  return {
    server: new URL(`https://${host.includes(':') ? `[${host}]` : host}:${port}`),
    ca,
    cert: null,
    key: null,
    insecureSkipTlsVerify: false,
    tlsServerName: null,
    source: 'the in-cluster service account',
    credentials,
  };
}

type Yaml = Record<string, unknown>;

function isRecord(value: unknown): value is Yaml {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function named(list: unknown, name: string, what: string, file: string): Yaml {
  const entry = Array.isArray(list) ? list.find((e) => isRecord(e) && e['name'] === name) : undefined;
  const value = isRecord(entry) ? entry[what] : undefined;
  if (!isRecord(value)) throw new KubeConfigError(`${file}: no ${what} named "${name}"`);
  return value;
}

async function pem(data: unknown, file: unknown, baseDir: string, what: string, source: string): Promise<Buffer | null> {
  if (typeof data === 'string' && data !== '') return Buffer.from(data, 'base64');
  if (typeof file !== 'string' || file === '') return null;
  const resolved = path.resolve(baseDir, file);
  try {
    return await readFile(resolved);
  } catch (error) {
    throw new KubeConfigError(`${source}: cannot read the ${what} ${resolved}: ${error instanceof Error ? error.message : String(error)}`, error);
  }
}

/** A kubeconfig file's current context. */
export async function kubeconfigFile(file: string, options: CredentialOptions = {}): Promise<ClientConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new KubeConfigError(`cannot load the kubeconfig ${file}: ${error instanceof Error ? error.message : String(error)}`, error);
  }
  return kubeconfigText(text, file, options);
}

/** A kubeconfig's current context, from its text; relative paths resolve against `file`'s folder. */
export async function kubeconfigText(text: string, file: string, options: CredentialOptions = {}): Promise<ClientConfig> {
  let doc: unknown;
  try {
    // Loaded only for a kubeconfig: in a cluster, the daemon never needs a YAML parser.
    const { parse } = await import('yaml');
    doc = parse(text);
  } catch (error) {
    throw new KubeConfigError(`cannot load the kubeconfig ${file}: ${error instanceof Error ? error.message : String(error)}`, error);
  }
  if (!isRecord(doc)) throw new KubeConfigError(`${file} is not a kubeconfig (no mapping at the top)`);
  const contextName = doc['current-context'];
  if (typeof contextName !== 'string' || contextName === '') throw new KubeConfigError(`the kubeconfig ${file} has no current-context`);
  const context = named(doc['contexts'], contextName, 'context', file);
  const cluster = named(doc['clusters'], String(context['cluster'] ?? ''), 'cluster', file);
  const user = typeof context['user'] === 'string' && context['user'] !== '' ? named(doc['users'], context['user'], 'user', file) : {};
  const baseDir = path.dirname(path.resolve(file));
  let server: URL;
  try {
    server = new URL(String(cluster['server'] ?? ''));
  } catch (error) {
    throw new KubeConfigError(`the kubeconfig ${file}: cluster "${String(context['cluster'])}" has no valid server URL`, error);
  }
  const userName = String(context['user'] ?? '');
  const where = `the kubeconfig ${file}: user "${userName}"`;
  const ca = await pem(cluster['certificate-authority-data'], cluster['certificate-authority'], baseDir, 'certificate authority', file);
  const insecureSkipTlsVerify = cluster['insecure-skip-tls-verify'] === true;
  const tlsServerName = typeof cluster['tls-server-name'] === 'string' ? cluster['tls-server-name'] : null;
  let credentials = NO_TOKEN;
  if (typeof user['token'] === 'string' && user['token'] !== '') credentials = staticToken(user['token'], `the token in ${where}`);
  else if (typeof user['tokenFile'] === 'string' && user['tokenFile'] !== '') {
    credentials = tokenFile(path.resolve(baseDir, user['tokenFile']), options.now);
    // Read once now, as the in-cluster token is, so a missing file stops the daemon at start.
    await credentials.token();
  } else if (isRecord(user['exec'])) {
    const clusterInfo = {
      server: server.href,
      ...(ca === null ? {} : { 'certificate-authority-data': ca.toString('base64') }),
      ...(insecureSkipTlsVerify ? { 'insecure-skip-tls-verify': true } : {}),
      ...(tlsServerName === null ? {} : { 'tls-server-name': tlsServerName }),
      ...execExtension(cluster),
    };
    credentials = execToken(execPlugin(user['exec'], where, baseDir, clusterInfo), options.now);
  } else if (user['auth-provider'] !== undefined || user['username'] !== undefined) {
    throw new KubeConfigError(`${where} uses an auth-provider or basic auth, which palisade does not support; use a token, a token file, a client certificate or an exec plugin`);
  }
  return {
    server,
    ca,
    cert: await pem(user['client-certificate-data'], user['client-certificate'], baseDir, 'client certificate', file),
    key: await pem(user['client-key-data'], user['client-key'], baseDir, 'client key', file),
    insecureSkipTlsVerify,
    tlsServerName,
    source: `the kubeconfig ${file} (context ${contextName})`,
    credentials,
  };
}

/** The cluster's extension for exec plugins, which provideClusterInfo hands them as spec.cluster.config. */
function execExtension(cluster: Yaml): { config?: unknown } {
  const extensions = cluster['extensions'];
  const found = Array.isArray(extensions) ? extensions.find((e) => isRecord(e) && e['name'] === 'client.authentication.k8s.io/exec') : undefined;
  return isRecord(found) && found['extension'] !== undefined ? { config: found['extension'] } : {};
}
