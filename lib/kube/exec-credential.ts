import { spawn } from 'node:child_process';
import path from 'node:path';
import { CredentialsError, KubeConfigError } from '../errors.js';
import { cachedToken } from './token-source.js';
import type { TokenSource } from './token-source.js';

/**
 * A kubeconfig's client-go credential plugin (`exec`), as `aws eks get-token` is: run with the
 * kubeconfig's args and env (an argv array, never a shell), its ExecCredential read from stdout, its
 * token kept until shortly before status.expirationTimestamp, and the plugin run again then, or at once
 * after the server refused the token. Checked at load as kubectl checks it, and failures name the
 * command and the tail of what it printed on stderr. Its args are never printed: some plugins take
 * keys there.
 */

export const EXEC_API_VERSIONS = ['client.authentication.k8s.io/v1', 'client.authentication.k8s.io/v1beta1'] as const;
export type ExecApiVersion = (typeof EXEC_API_VERSIONS)[number];

export interface ExecPlugin {
  /** As the kubeconfig names it, for messages. */
  readonly command: string;
  /** What is run: the command, resolved against the kubeconfig's folder when it is a relative path. */
  readonly program: string;
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly apiVersion: ExecApiVersion;
  readonly installHint: string | null;
  /** spec.cluster for KUBERNETES_EXEC_INFO, when the kubeconfig sets provideClusterInfo. */
  readonly cluster: Readonly<Record<string, unknown>> | null;
}

/** Refresh a token this long before it expires (or half its remaining life, if that is shorter). */
const REFRESH_MARGIN_MS = 60_000;
/** A token that comes without an expirationTimestamp is fetched again after this long, or on a 401. */
const UNDATED_TOKEN_MS = 10 * 60_000;
const TIMEOUT_MS = 30_000;
const MAX_STDOUT_BYTES = 1 << 20;
const STDERR_TAIL_CHARS = 400;

type Yaml = Record<string, unknown>;

function isRecord(value: unknown): value is Yaml {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isApiVersion(value: unknown): value is ExecApiVersion {
  return EXEC_API_VERSIONS.some((v) => v === value);
}

/** A user's `exec` stanza, checked; `where` names the kubeconfig and user for messages. */
export function execPlugin(exec: Yaml, where: string, baseDir: string, cluster: Readonly<Record<string, unknown>>): ExecPlugin {
  const apiVersion = exec['apiVersion'];
  if (apiVersion === 'client.authentication.k8s.io/v1alpha1') {
    throw new KubeConfigError(`${where}: exec apiVersion client.authentication.k8s.io/v1alpha1 was removed in Kubernetes 1.24; use ${EXEC_API_VERSIONS.join(' or ')}`);
  }
  if (!isApiVersion(apiVersion)) throw new KubeConfigError(`${where}: exec apiVersion ${JSON.stringify(apiVersion ?? null)} is not one of ${EXEC_API_VERSIONS.join(', ')}`);
  const command = exec['command'];
  if (typeof command !== 'string' || command === '') throw new KubeConfigError(`${where}: exec has no command`);
  const args = exec['args'] ?? [];
  if (!Array.isArray(args) || !args.every((a) => typeof a === 'string')) throw new KubeConfigError(`${where}: exec args must be a list of strings`);
  const env: Record<string, string> = {};
  for (const entry of Array.isArray(exec['env']) ? exec['env'] : exec['env'] === undefined || exec['env'] === null ? [] : [exec['env']]) {
    if (!isRecord(entry) || typeof entry['name'] !== 'string' || entry['name'] === '' || typeof entry['value'] !== 'string') {
      throw new KubeConfigError(`${where}: exec env must be a list of {name, value} strings`);
    }
    env[entry['name']] = entry['value'];
  }
  // The daemon never has a terminal, so Never and IfAvailable both mean "not interactive" here. kubectl
  // insists on the field with v1; palisade does not, since either value would mean the same.
  const interactiveMode = exec['interactiveMode'];
  if (interactiveMode === 'Always') {
    throw new KubeConfigError(`${where}: the exec plugin ${command} has interactiveMode: Always, which needs a terminal, and palisade runs without one; use Never or IfAvailable`);
  }
  if (interactiveMode !== undefined && interactiveMode !== null && interactiveMode !== 'Never' && interactiveMode !== 'IfAvailable') {
    throw new KubeConfigError(`${where}: exec interactiveMode ${JSON.stringify(interactiveMode)} is not one of Never, IfAvailable, Always`);
  }
  // As kubectl does: a command with a slash is a path, relative to the kubeconfig; a bare name is looked up on PATH.
  const program = command.includes('/') && !path.isAbsolute(command) ? path.resolve(baseDir, command) : command;
  return {
    command,
    program,
    args,
    env,
    apiVersion,
    installHint: typeof exec['installHint'] === 'string' && exec['installHint'] !== '' ? exec['installHint'] : null,
    cluster: exec['provideClusterInfo'] === true ? cluster : null,
  };
}

interface Outcome {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

function run(plugin: ExecPlugin): Promise<Outcome> {
  const info = { apiVersion: plugin.apiVersion, kind: 'ExecCredential', spec: { interactive: false, ...(plugin.cluster === null ? {} : { cluster: plugin.cluster }) } };
  return new Promise((resolve, reject) => {
    // stdin is /dev/null: a plugin that waits for an answer on it gets end-of-file rather than hanging.
    const child = spawn(plugin.program, [...plugin.args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...plugin.env, KUBERNETES_EXEC_INFO: JSON.stringify(info) },
    });
    const stdout: Buffer[] = [];
    let stdoutBytes = 0;
    let stderr = '';
    let failure: string | null = null;
    const timer = setTimeout(() => {
      failure = `did not finish within ${TIMEOUT_MS / 1000} s and was killed`;
      child.kill('SIGKILL');
    }, TIMEOUT_MS);
    child.stdout.on('data', (chunk: Buffer) => {
      stdoutBytes += chunk.length;
      if (stdoutBytes <= MAX_STDOUT_BYTES) stdout.push(chunk);
      else if (failure === null) {
        failure = `printed more than ${MAX_STDOUT_BYTES} bytes and was killed`;
        child.kill('SIGKILL');
      }
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString('utf8')).slice(-4 * STDERR_TAIL_CHARS);
    });
    child.on('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const hint = plugin.installHint === null ? '' : `\n${plugin.installHint}`;
      reject(new CredentialsError(`cannot run the kubeconfig's exec plugin ${plugin.command}: ${error.message}${hint}`, error));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (failure !== null) reject(new CredentialsError(`the kubeconfig's exec plugin ${plugin.command} ${failure}${stderrTail(stderr)}`));
      else resolve({ code, signal, stdout: Buffer.concat(stdout).toString('utf8'), stderr });
    });
  });
}

function stderrTail(stderr: string): string {
  const text = stderr.trim();
  if (text === '') return '';
  return `; stderr: ${text.length > STDERR_TAIL_CHARS ? `…${text.slice(-STDERR_TAIL_CHARS)}` : text}`;
}

/** The token of an ExecCredential printed by `plugin`, and when it expires (null: not said). */
function readCredential(plugin: ExecPlugin, outcome: Outcome): { token: string; expires: number | null } {
  const fail = (what: string, cause?: unknown): CredentialsError => new CredentialsError(`the kubeconfig's exec plugin ${plugin.command} ${what}${stderrTail(outcome.stderr)}`, cause);
  if (outcome.code !== 0) throw fail(outcome.code === null ? `was killed by ${outcome.signal ?? 'a signal'}` : `exited with code ${outcome.code}`);
  let credential: unknown;
  try {
    credential = JSON.parse(outcome.stdout);
  } catch (error) {
    throw fail(`printed no ExecCredential JSON (${outcome.stdout.trim() === '' ? 'nothing on stdout' : error instanceof Error ? error.message : String(error)})`, error);
  }
  if (!isRecord(credential) || credential['kind'] !== 'ExecCredential') throw fail(`printed JSON that is not an ExecCredential (kind ${JSON.stringify(isRecord(credential) ? credential['kind'] ?? null : null)})`);
  if (credential['apiVersion'] !== plugin.apiVersion) {
    throw fail(`is configured for ${plugin.apiVersion} but printed ${JSON.stringify(credential['apiVersion'] ?? null)}`);
  }
  const status = credential['status'];
  if (!isRecord(status)) throw fail('printed an ExecCredential without a status');
  const token = status['token'];
  if (typeof token !== 'string' || token === '') {
    const certificate = typeof status['clientCertificateData'] === 'string' && status['clientCertificateData'] !== '';
    throw fail(certificate ? 'returned a client certificate and no token; palisade takes only tokens from exec plugins' : 'printed an ExecCredential without status.token');
  }
  const timestamp = status['expirationTimestamp'];
  if (timestamp === undefined || timestamp === null) return { token, expires: null };
  const expires = typeof timestamp === 'string' ? Date.parse(timestamp) : NaN;
  if (!Number.isFinite(expires)) throw fail(`printed an expirationTimestamp that is not a time: ${JSON.stringify(timestamp)}`);
  return { token, expires };
}

export function execToken(plugin: ExecPlugin, now: () => number = Date.now): TokenSource {
  return cachedToken(`the kubeconfig's exec plugin ${plugin.command}`, async () => {
    const { token, expires } = readCredential(plugin, await run(plugin));
    const at = now();
    const refreshAt = expires === null ? at + UNDATED_TOKEN_MS : expires - Math.min(REFRESH_MARGIN_MS, Math.max(0, expires - at) / 2);
    return { token, refreshAt };
  }, now);
}
