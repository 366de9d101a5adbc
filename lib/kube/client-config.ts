import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { PalisadeError } from '../errors.js';

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
 * Tokens are never cached for longer than they are good for: a token file is read again every
 * minute (kubelet rotates projected service-account tokens well before they expire), an exec token
 * when its expirationTimestamp nears, and either at once after a 401.
 */

export interface ClientConfig {
  /** e.g. https://10.100.0.1:443 */
  readonly server: URL;
  readonly ca: Buffer | null;
  readonly cert: Buffer | null;
  readonly key: Buffer | null;
  readonly insecureSkipTlsVerify: boolean;
  readonly tlsServerName: string | null;
  /** Where the credentials came from, for messages. */
  readonly source: string;
  readonly credentials: TokenSource;
}

/** A bearer token, kept fresh. */
export interface TokenSource {
  token(): Promise<string | null>;
  /** The server refused the last token: read it afresh next time. */
  invalidate(): void;
}

export class KubeConfigError extends PalisadeError {
  constructor(message: string, cause?: unknown) {
    super('KUBECONFIG_INVALID', message, cause === undefined ? undefined : { cause });
    this.name = 'KubeConfigError';
  }
}

const NO_TOKEN: TokenSource = { token: async () => null, invalidate: () => {} };

function staticToken(token: string): TokenSource {
  return { token: async () => token, invalidate: () => {} };
}

/** Re-read after this long, as client-go does for the in-cluster token file. */
const TOKEN_FILE_TTL_MS = 60_000;

export function tokenFile(file: string, now: () => number = Date.now): TokenSource {
  let cached: { token: string; at: number } | null = null;
  return {
    async token() {
      if (cached !== null && now() - cached.at < TOKEN_FILE_TTL_MS) return cached.token;
      let text: string;
      try {
        text = await readFile(file, 'utf8');
      } catch (error) {
        throw new KubeConfigError(`cannot read the token file ${file}: ${error instanceof Error ? error.message : String(error)}`, error);
      }
      cached = { token: text.trim(), at: now() };
      return cached.token;
    },
    invalidate() {
      cached = null;
    },
  };
}

interface ExecSpec {
  readonly command: string;
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly apiVersion: string;
}

/** Refresh an exec token this long before it expires. */
const EXEC_REFRESH_MARGIN_MS = 60_000;

function execToken(spec: ExecSpec, baseDir: string, now: () => number = Date.now): TokenSource {
  let cached: { token: string; expires: number } | null = null;
  return {
    async token() {
      if (cached !== null && now() < cached.expires - EXEC_REFRESH_MARGIN_MS) return cached.token;
      const command = spec.command.includes('/') && !path.isAbsolute(spec.command) ? path.resolve(baseDir, spec.command) : spec.command;
      const stdout = await new Promise<string>((resolve, reject) => {
        execFile(command, [...spec.args], {
          env: { ...process.env, ...spec.env, KUBERNETES_EXEC_INFO: JSON.stringify({ apiVersion: spec.apiVersion, kind: 'ExecCredential', spec: { interactive: false } }) },
          timeout: 30_000,
          maxBuffer: 1 << 20,
        }, (error, out, err) => (error === null ? resolve(out) : reject(new KubeConfigError(`the kubeconfig's exec plugin ${spec.command} failed: ${error.message}${err === '' ? '' : `: ${err.trim().slice(0, 300)}`}`, error))));
      });
      let status: Record<string, unknown>;
      try {
        status = (JSON.parse(stdout) as { status?: Record<string, unknown> }).status ?? {};
      } catch (error) {
        throw new KubeConfigError(`the kubeconfig's exec plugin ${spec.command} printed no ExecCredential JSON`, error);
      }
      const token = status['token'];
      if (typeof token !== 'string' || token === '') throw new KubeConfigError(`the kubeconfig's exec plugin ${spec.command} returned no status.token`);
      const expiry = typeof status['expirationTimestamp'] === 'string' ? Date.parse(status['expirationTimestamp']) : NaN;
      cached = { token, expires: Number.isFinite(expiry) ? expiry : now() + 10 * 60_000 };
      return token;
    },
    invalidate() {
      cached = null;
    },
  };
}

const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** The pod's own service account, as client-go's rest.InClusterConfig reads it. */
export async function inClusterConfig(env: Readonly<Record<string, string | undefined>>, dir = SERVICE_ACCOUNT_DIR): Promise<ClientConfig> {
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
  const credentials = tokenFile(path.join(dir, 'token'));
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
export async function kubeconfigFile(file: string): Promise<ClientConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new KubeConfigError(`cannot load the kubeconfig ${file}: ${error instanceof Error ? error.message : String(error)}`, error);
  }
  return kubeconfigText(text, file);
}

/** A kubeconfig's current context, from its text; relative paths resolve against `file`'s folder. */
export async function kubeconfigText(text: string, file: string): Promise<ClientConfig> {
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
  let credentials = NO_TOKEN;
  if (typeof user['token'] === 'string' && user['token'] !== '') credentials = staticToken(user['token']);
  else if (typeof user['tokenFile'] === 'string' && user['tokenFile'] !== '') credentials = tokenFile(path.resolve(baseDir, user['tokenFile']));
  else if (isRecord(user['exec'])) {
    const exec = user['exec'];
    const env = Array.isArray(exec['env']) ? Object.fromEntries(exec['env'].filter(isRecord).map((e) => [String(e['name']), String(e['value'])])) : {};
    credentials = execToken({ command: String(exec['command'] ?? ''), args: Array.isArray(exec['args']) ? exec['args'].map(String) : [], env, apiVersion: String(exec['apiVersion'] ?? 'client.authentication.k8s.io/v1') }, baseDir);
  } else if (user['auth-provider'] !== undefined || user['username'] !== undefined) {
    throw new KubeConfigError(`the kubeconfig ${file}: user "${String(context['user'])}" uses an auth-provider or basic auth, which palisade does not support; use a token, a token file, a client certificate or an exec plugin`);
  }
  return {
    server,
    ca: await pem(cluster['certificate-authority-data'], cluster['certificate-authority'], baseDir, 'certificate authority', file),
    cert: await pem(user['client-certificate-data'], user['client-certificate'], baseDir, 'client certificate', file),
    key: await pem(user['client-key-data'], user['client-key'], baseDir, 'client key', file),
    insecureSkipTlsVerify: cluster['insecure-skip-tls-verify'] === true,
    tlsServerName: typeof cluster['tls-server-name'] === 'string' ? cluster['tls-server-name'] : null,
    source: `the kubeconfig ${file} (context ${contextName})`,
    credentials,
  };
}
