/**
 * Where this node's ulogd is: the program, and the directory of its plugins, which depends on the
 * distribution and the architecture (Debian: /usr/lib/x86_64-linux-gnu/ulogd, /usr/lib/aarch64-linux-gnu/ulogd;
 * others: /usr/lib64/ulogd, /usr/lib/ulogd, /usr/local/lib/ulogd). Found by looking, not by guessing
 * the architecture's name.
 */
import { readdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { PalisadeError } from '../errors.js';
import { commandAvailable } from '../exec.js';
import { ULOGD_PLUGINS } from './ulogd-config.js';

export const ULOGD_PACKAGES = 'ulogd2 ulogd2-json';
const PROGRAM_PLACES = ['/usr/sbin/ulogd', '/usr/local/sbin/ulogd'] as const;
const LIB_ROOTS = ['/usr/lib', '/usr/lib64', '/usr/local/lib', '/usr/local/lib64', '/lib', '/lib64'] as const;

/** `ulogd` on PATH, else where packages put it (PATH may lack sbin). */
export async function findUlogdProgram(): Promise<string> {
  if (await commandAvailable('ulogd')) return 'ulogd';
  for (const place of PROGRAM_PLACES) if (await commandAvailable(place)) return place;
  throw new PalisadeError('NFLOG_READER_MISSING', `ulogd is not installed (not on PATH, nor in ${PROGRAM_PLACES.join(' or ')}): install ${ULOGD_PACKAGES}`);
}

/** Directories that may hold ulogd's plugins: `<root>/ulogd` and `<root>/<multiarch>/ulogd`. */
async function candidateDirs(): Promise<string[]> {
  const dirs: string[] = [];
  for (const root of LIB_ROOTS) {
    dirs.push(path.join(root, 'ulogd'));
    const entries = await readdir(root, { withFileTypes: true }).catch(() => []);
    for (const entry of entries) if (entry.isDirectory() && /-linux-/.test(entry.name)) dirs.push(path.join(root, entry.name, 'ulogd'));
  }
  return dirs;
}

/** The first directory holding every plugin of the stack; the error names what is missing where. */
export async function findUlogdPluginDir(): Promise<string> {
  const partial: string[] = [];
  for (const dir of await candidateDirs()) {
    const missing = ULOGD_PLUGINS.filter((p) => !existsSync(path.join(dir, p.file))).map((p) => p.file);
    if (missing.length === 0) return dir;
    if (missing.length < ULOGD_PLUGINS.length) partial.push(`${dir} lacks ${missing.join(', ')}`);
  }
  const found = partial.length === 0 ? 'no ulogd plugin directory found' : partial.join('; ');
  throw new PalisadeError('NFLOG_READER_MISSING', `ulogd's plugins are not all installed (${found}): install ${ULOGD_PACKAGES}`);
}
