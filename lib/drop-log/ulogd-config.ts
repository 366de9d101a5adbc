/**
 * The configuration file palisade writes for its ulogd: one stack reading one NFLOG group, decoding
 * the IPv4 header (BASE), printing the addresses (IP2STR), and sending one JSON object per line to
 * palisade's unix socket (JSON, mode "unix"). ulogd's own log goes to its stdout, which palisade
 * reads. Pure: the paths come in, the text goes out.
 */
import { PalisadeError } from '../errors.js';

/** The plugins of the stack, in stack order, by the file each is in. */
export const ULOGD_PLUGINS = [
  { instance: 'log1', name: 'NFLOG', file: 'ulogd_inppkt_NFLOG.so' },
  { instance: 'base1', name: 'BASE', file: 'ulogd_raw2packet_BASE.so' },
  { instance: 'ip2str1', name: 'IP2STR', file: 'ulogd_filter_IP2STR.so' },
  { instance: 'json1', name: 'JSON', file: 'ulogd_output_JSON.so' },
] as const;

/** ulogd's log levels, as it prints them: `<N>` after the date. */
export const ULOGD_LOG_LEVEL = { debug: 1, info: 3, notice: 5, error: 7, fatal: 8 } as const;

export interface UlogdConfig {
  readonly group: number;
  readonly pluginDir: string;
  /** Where ulogd connects to hand over its JSON lines; at most 107 bytes (a unix socket path). */
  readonly socketPath: string;
  /** The netlink socket's receive buffer; 0 keeps the kernel's default. */
  readonly socketBufferBytes: number;
  /** The kernel sends a batch once it holds this many records... */
  readonly queueThreshold: number;
  /** ...or once the first has waited this long (the kernel counts in 10 ms steps). */
  readonly queueTimeoutMs: number;
}

const MAX_SOCKET_PATH = 107;

/** ulogd's config reader takes a quoted string up to the next quote, with no escapes. */
function quoted(field: string, value: string): string {
  if (/["\n\r\0]/.test(value)) throw new PalisadeError('NFLOG_READER_CONFIG', `${field} "${value}" holds a quote, a line break or a NUL, which ulogd's configuration cannot carry`);
  return `"${value}"`;
}

export function renderUlogdConfig(config: UlogdConfig): string {
  if (!Number.isInteger(config.group) || config.group < 1 || config.group > 65535) {
    // Group 0 would make ulogd take over the whole family's logging (its "system logging" mode).
    throw new PalisadeError('NFLOG_READER_CONFIG', `NFLOG group ${config.group}: use 1 to 65535`);
  }
  if (Buffer.byteLength(config.socketPath) > MAX_SOCKET_PATH) {
    throw new PalisadeError('NFLOG_READER_CONFIG', `the socket path ${config.socketPath} is longer than ${MAX_SOCKET_PATH} bytes, the limit of a unix socket path: use a shorter work directory`);
  }
  const dir = config.pluginDir.replace(/\/+$/, '');
  const lines = [
    '# Written by palisade for its drop log; rewritten at every start.',
    '[global]',
    'logfile="stdout"',
    `loglevel=${ULOGD_LOG_LEVEL.info}`,
    ...ULOGD_PLUGINS.map((p) => `plugin=${quoted('plugin directory', `${dir}/${p.file}`)}`),
    `stack=${ULOGD_PLUGINS.map((p) => `${p.instance}:${p.name}`).join(',')}`,
    '',
    '[log1]',
    `group=${config.group}`,
    // Number the records, so palisade can tell how many never reached it.
    'seq_local=1',
    // Never touch the family-wide logger, which other programs on the node may use.
    'bind=0',
    'unbind=0',
    ...(config.socketBufferBytes > 0 ? [`netlink_socket_buffer_size=${Math.floor(config.socketBufferBytes)}`] : []),
    `netlink_qthreshold=${Math.max(1, Math.floor(config.queueThreshold))}`,
    `netlink_qtimeout=${Math.max(1, Math.ceil(config.queueTimeoutMs / 10))}`,
    '',
    '[json1]',
    'mode="unix"',
    `file=${quoted('socket path', config.socketPath)}`,
    'sync=1',
    // oob.time.* carry the time; ulogd's local-time string would only cost a strftime per record.
    'timestamp=0',
    '',
  ];
  return lines.join('\n');
}

export interface UlogdLogLine {
  /** ulogd's level, or null for a line not in its format (something printed by a library). */
  readonly level: number | null;
  readonly message: string;
}

/** `Fri Dec  4 02:08:02 2026 <5> ulogd.c:408 registering plugin `NFLOG'` → level 5 and the rest. */
export function parseUlogdLogLine(line: string): UlogdLogLine {
  const match = /^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} <(\d+)> (.*)$/.exec(line);
  if (match === null) return { level: null, message: line };
  return { level: Number(match[1]), message: match[2]! };
}

/** The line ulogd logs once every plugin has started: the NFLOG group is bound from then on. */
export function isUlogdReady(message: string): boolean {
  return message.includes('initialization finished, entering main loop');
}

/** The line ulogd logs when another socket holds the group. */
export function isGroupBusy(message: string): boolean {
  return /unable to bind to log group \d+/.test(message);
}

/** The line ulogd logs when the netlink socket overran (it says so once per process). */
export function isOverrun(message: string): boolean {
  return message.includes('We are losing events');
}
