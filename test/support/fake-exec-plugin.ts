import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';

/**
 * A client-go credential plugin for tests, written into a test's folder as a small Node.js program, in
 * the part of `aws eks get-token` that palisade relies on. Each run appends what it was given (argv,
 * the PROBE variable, KUBERNETES_EXEC_INFO, whether stdin was at end-of-file) to runs.jsonl, and then
 * does what the file `mode` in its folder says (default "ok"):
 *
 *   ok               prints an ExecCredential with token "token-<run number>" and, when the EXPIRES
 *                    variable is set, that expirationTimestamp
 *   fail             prints a long stderr ending in an AWS-style error line, exits 255
 *   garbage | empty  prints something that is not JSON, or nothing
 *   other-version    prints an ExecCredential of the other apiVersion
 *   no-token | cert  prints a status without a token; with only a client certificate
 */
export const PLUGIN_SOURCE = String.raw`
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
const dir = path.dirname(new URL(import.meta.url).pathname);
const runs = path.join(dir, 'runs.jsonl');
const run = (existsSync(runs) ? readFileSync(runs, 'utf8').split('\n').filter((l) => l !== '').length : 0) + 1;
const stdin = readFileSync(0, 'utf8') === '' ? 'eof' : 'data';
const info = JSON.parse(process.env.KUBERNETES_EXEC_INFO ?? 'null');
appendFileSync(runs, JSON.stringify({ argv: process.argv.slice(2), probe: process.env.PROBE ?? null, info, stdin }) + '\n');
const mode = existsSync(path.join(dir, 'mode')) ? readFileSync(path.join(dir, 'mode'), 'utf8').trim() : 'ok';
const apiVersion = mode === 'other-version'
  ? (info.apiVersion === 'client.authentication.k8s.io/v1' ? 'client.authentication.k8s.io/v1beta1' : 'client.authentication.k8s.io/v1')
  : info.apiVersion;
const status = mode === 'no-token' ? {} : mode === 'cert' ? { clientCertificateData: 'CERT', clientKeyData: 'KEY' }
  : { token: 'token-' + run, ...(process.env.EXPIRES ? { expirationTimestamp: process.env.EXPIRES } : {}) };
if (mode === 'fail') {
  process.stderr.write('debug: '.padEnd(2000, 'x') + '\n');
  process.stderr.write('An error occurred (ExpiredToken) when calling the GetCallerIdentity operation: The security token included in the request is expired\n');
  process.exit(255);
}
if (mode === 'garbage') process.stdout.write('Please log in: ');
else if (mode !== 'empty') process.stdout.write(JSON.stringify({ kind: 'ExecCredential', apiVersion, spec: {}, status }));
`;

export interface FakePlugin {
  readonly script: string;
  setMode(mode: string): Promise<void>;
  runs(): Promise<{ argv: string[]; probe: string | null; info: unknown; stdin: string }[]>;
}

export async function writeFakePlugin(dir: string): Promise<FakePlugin> {
  const script = path.join(dir, 'plugin.mjs');
  await writeFile(script, PLUGIN_SOURCE);
  return {
    script,
    setMode: (mode) => writeFile(path.join(dir, 'mode'), mode),
    async runs() {
      const text = await readFile(path.join(dir, 'runs.jsonl'), 'utf8').catch(() => '');
      return text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as { argv: string[]; probe: string | null; info: unknown; stdin: string });
    },
  };
}
