/**
 * The system tools the gateway runs as root — iproute2's `ip` and nftables'
 * `nft` — found at their distributions' absolute paths, never on PATH (whoever
 * starts the gateway chooses PATH), and run with array arguments and an
 * optional stdin, so no text from outside is ever parsed by a shell.
 */
import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';

/** Runs a tool with ARGS (stdin optional) and returns stdout; rejects with the tool's error text. */
export type SystemCommand = (args: readonly string[], input?: string) => Promise<string>;

export const IP_PATHS: readonly string[] = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'];
export const NFT_PATHS: readonly string[] = [
  '/usr/sbin/nft',
  '/sbin/nft',
  '/usr/bin/nft',
  '/bin/nft',
];

const COMMAND_TIMEOUT_MS = 30_000;

/** `ip` as a SystemCommand; a missing iproute2 is the first call's error. */
export const runIp: SystemCommand = systemCommand('ip', IP_PATHS, 'iproute2');
/** `nft` as a SystemCommand; a missing nftables is the first call's error. */
export const runNft: SystemCommand = systemCommand('nft', NFT_PATHS, 'nftables');

/** The first of `candidates` that is executable, or undefined. */
export function findExecutable(candidates: readonly string[]): string | undefined {
  return candidates.find((path) => {
    try {
      accessSync(path, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

function systemCommand(
  name: string,
  candidates: readonly string[],
  debianPackage: string,
): SystemCommand {
  let executable: string | undefined;
  return (args, input) => {
    executable ??= findExecutable(candidates);
    if (executable === undefined) {
      return Promise.reject(
        new Error(
          `${name} is not installed (looked for ${candidates.join(', ')}): apt-get install ${debianPackage}`,
        ),
      );
    }
    const file = executable;
    return new Promise((resolve, reject) => {
      const child = execFile(
        file,
        args,
        { timeout: COMMAND_TIMEOUT_MS, maxBuffer: 64 * 1024 * 1024 },
        (error, stdout, stderr) => {
          if (error) {
            reject(
              new Error(`${name} ${args.join(' ')} failed: ${stderr.trim() || error.message}`),
            );
          } else {
            resolve(stdout);
          }
        },
      );
      child.stdin?.on('error', () => {});
      child.stdin?.end(input ?? '');
    });
  };
}
