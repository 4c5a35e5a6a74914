import { spawn } from 'node:child_process';
import { existsSync, lstatSync, readlinkSync, realpathSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';

/** Whether stdio processes can run inside bubblewrap here, and why not when they cannot. */
export type SandboxAvailability = { available: true } | { available: false; reason: string };

export interface SandboxRequest {
  /** The command as configured (a bare name is looked up on PATH). */
  command: string;
  args: string[];
  /** The only writable directory; also the working directory unless `cwd` says otherwise. */
  workDir: string;
  /** The working directory inside, when not `workDir` (a directory under it). */
  cwd?: string | undefined;
  /** Allow the process to use the host's network (otherwise it gets an empty namespace). */
  network: boolean;
  /** Extra paths mounted read-only at the same place (the server's code and node_modules). */
  readOnlyPaths: string[];
  /** Searched for a bare `command`. */
  path: string | undefined;
  /**
   * Mount the command's directory, and the directory of each absolute path among the
   * arguments, read-only (true by default: an MCP server configured as `node /srv/x.js`).
   * Workspace commands come from users and agents: for them it is false, or `cat
   * /etc/shadow` would mount /etc.
   */
  mountCommandPaths?: boolean;
  /**
   * The process runs on a terminal of its own (a PTY the server opened for it): the sandbox
   * keeps that terminal as its controlling terminal, for job control. Without it, bwrap
   * starts a new session (`--new-session`), so that a process cannot push input into a
   * terminal it shares with the host (TIOCSTI); a PTY of its own carries nothing else.
   */
  ownTerminal?: boolean;
  /**
   * bwrap writes what it made (`child-pid`, namespace ids) as JSON to this inherited file
   * descriptor once the sandbox runs (`--info-fd`).
   */
  infoFd?: number;
}

export interface SandboxedCommand {
  command: string;
  args: string[];
}

let probe: Promise<SandboxAvailability> | undefined;

/**
 * Finds out once per process whether `bwrap` exists and may create the namespaces the
 * sandbox needs (it may be missing, or forbidden inside a container or by a sysctl).
 * Resolves to the verdict; never rejects.
 */
export function detectSandbox(bwrapPath = 'bwrap'): Promise<SandboxAvailability> {
  probe ??= runProbe(bwrapPath);
  return probe;
}

function runProbe(bwrapPath: string): Promise<SandboxAvailability> {
  return new Promise((done) => {
    const args = [
      '--die-with-parent',
      '--unshare-pid',
      '--unshare-net',
      '--ro-bind',
      '/',
      '/',
      '--proc',
      '/proc',
      '--dev',
      '/dev',
      'true',
    ];
    let stderr = '';
    const child = spawn(bwrapPath, args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10_000 });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      if (stderr.length < 1000) stderr += chunk;
    });
    child.on('error', (error: NodeJS.ErrnoException) => {
      done({
        available: false,
        reason:
          error.code === 'ENOENT'
            ? 'bubblewrap (bwrap) is not installed'
            : `bwrap: ${error.message}`,
      });
    });
    child.on('close', (code, signal) => {
      if (code === 0) done({ available: true });
      else
        done({
          available: false,
          reason: `bwrap cannot create a sandbox here: ${stderr.trim() || `exit ${code ?? signal}`}`,
        });
    });
  });
}

/** Resolves a command the way the shell would, so its directory can be mounted. */
export function resolveCommand(command: string, path: string | undefined): string | undefined {
  if (command.includes('/')) return existsSync(command) ? resolve(command) : undefined;
  for (const dir of (path ?? '').split(':')) {
    if (dir === '') continue;
    const candidate = resolve(dir, command);
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

// The system directories a dynamically linked program (node, python, a shell) reads.
const SYSTEM_PATHS = ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32'];
// Only the parts of /etc that programs need to run, resolve names and verify TLS: not
// /etc/shadow, SSH host keys or the host's own configuration.
const ETC_PATHS = [
  '/etc/alternatives',
  '/etc/ca-certificates',
  '/etc/crypto-policies',
  '/etc/gai.conf',
  '/etc/group',
  '/etc/host.conf',
  '/etc/hosts',
  '/etc/ld.so.cache',
  '/etc/ld.so.conf',
  '/etc/ld.so.conf.d',
  '/etc/localtime',
  '/etc/mime.types',
  '/etc/nsswitch.conf',
  '/etc/os-release',
  '/etc/passwd',
  '/etc/pki',
  '/etc/protocols',
  '/etc/resolv.conf',
  '/etc/services',
  '/etc/ssl',
  '/etc/timezone',
];

/**
 * Wraps a command in bubblewrap: the system directories programs need read-only (not /home,
 * /root or most of /etc), a private /tmp, /proc and /dev, the work directory the only
 * writable place, its own PID namespace (the sandbox dies with its first process and with
 * Orchestra), no capabilities (bwrap keeps them when Orchestra runs as root, and a root
 * process with CAP_SYS_ADMIN could remount /usr read-write), and no network unless `network`
 * is set.
 */
export function sandboxCommand(request: SandboxRequest, bwrapPath = 'bwrap'): SandboxedCommand {
  const args = [
    '--die-with-parent',
    '--unshare-pid',
    '--unshare-ipc',
    '--unshare-uts',
    '--unshare-cgroup-try',
    ...(request.ownTerminal === true ? [] : ['--new-session']),
    '--cap-drop',
    'ALL',
  ];
  if (!request.network) args.push('--unshare-net');
  if (request.infoFd !== undefined) args.push('--info-fd', String(request.infoFd));
  for (const path of SYSTEM_PATHS) {
    const stat = lstatOrUndefined(path);
    if (stat === undefined) continue;
    // Merged-/usr systems make /bin, /lib… symlinks into /usr: recreate the link, not a copy.
    if (stat.isSymbolicLink()) args.push('--symlink', readlinkSync(path), path);
    else args.push('--ro-bind', path, path);
  }
  for (const path of ETC_PATHS) args.push('--ro-bind-try', path, path);
  const readOnly = new Set<string>(request.readOnlyPaths.map((p) => resolve(p)));
  if (request.mountCommandPaths !== false) {
    const resolved = resolveCommand(request.command, request.path);
    if (resolved !== undefined) {
      readOnly.add(dirname(resolved));
      readOnly.add(dirname(realpathSync(resolved)));
    }
    for (const arg of request.args) {
      // A script given by absolute path must be readable inside.
      if (isAbsolute(arg) && existsSync(arg)) readOnly.add(dirname(realpathSync(arg)));
    }
  }
  args.push('--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp');
  for (const path of readOnly) {
    if (existsSync(path)) args.push('--ro-bind', path, path);
  }
  // Last, so the work directory stays writable even when it lies under a read-only path.
  args.push('--bind', request.workDir, request.workDir, '--chdir', request.cwd ?? request.workDir);
  args.push('--', request.command, ...request.args);
  return { command: bwrapPath, args };
}

function lstatOrUndefined(path: string) {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}
