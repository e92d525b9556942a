/**
 * What every operator command shares: --addr, --namespace and --json, the client, the
 * output, error reporting (exit 1 for the agent's errors and an unreachable agent, 2 for
 * bad usage) and Ctrl-C handling for the commands that keep running.
 */
import { readFileSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { ApiClient, ApiError, DEFAULT_ADDR, UnreachableError, parseAddr } from './http.js';
import { namespaceArg } from './args.js';
import { Output, printFailure } from './output.js';

export interface Context {
  client: ApiClient;
  out: Output;
  /** The namespace given with --namespace, or undefined for the agent's default. */
  namespace: string | undefined;
  /** The command, for usage errors found after parsing. */
  command: Command;
}

export type Exit = (code: number) => void;

/** Adds the shared flags; --namespace only where a namespace applies. */
export function commonFlags(cmd: Command, withNamespace: boolean): Command {
  cmd.addOption(new Option('--addr <url>', 'the agent\'s URL').env('SWITCHBOARD_ADDR').default(DEFAULT_ADDR));
  cmd.addOption(new Option('--ca-file <file>', "CA certificates (PEM) to trust for an https:// agent whose certificate a private CA signed").env('SWITCHBOARD_CA_FILE'));
  cmd.addOption(new Option('--token <token>', 'bearer token for an agent that requires one (prefer SWITCHBOARD_TOKEN: a flag shows in ps)').env('SWITCHBOARD_TOKEN'));
  if (withNamespace) cmd.addOption(new Option('--namespace <ns>', 'the namespace (default: default)').argParser(namespaceArg));
  cmd.option('--json', "print the API's JSON answers instead of text");
  return cmd;
}

/** A usage error found after commander's parsing: reported like commander's own, exit 2. */
export function usageError(cmd: Command, message: string): never {
  cmd.error(`error: ${message}`, { exitCode: 2, code: 'switchboard.usage' });
  throw new Error('unreachable'); // cmd.error() always throws under exitOverride()
}

/**
 * Wraps a command's body: builds the context, maps failures to exit codes, and closes the
 * client's connections at the end whatever happened.
 */
export function runWith(exit: Exit, body: (ctx: Context, args: unknown[]) => Promise<number>) {
  return async (...params: unknown[]): Promise<void> => {
    const command = params[params.length - 1] as Command;
    const args = params.slice(0, -2);
    const opts = command.opts<{ addr: string; namespace?: string; json?: boolean; token?: string; caFile?: string }>();
    const ca = opts.caFile === undefined ? undefined : readCaFile(command, opts.caFile);
    const tokenFrom = command.getOptionValueSource('token') === 'env' ? 'SWITCHBOARD_TOKEN' : '--token';
    if (opts.token !== undefined && !/^[\x21-\x7e]+$/.test(opts.token)) usageError(command, `invalid ${tokenFrom}: give the token itself (visible ASCII, no spaces or line breaks)`);
    const addr = parseAddr(opts.addr);
    if (!addr.ok) {
      const from = command.getOptionValueSource('addr') === 'env' ? 'SWITCHBOARD_ADDR' : '--addr';
      usageError(command, `invalid ${from}: ${addr.message}`);
    }
    const out = new Output(opts.json === true);
    const client = new ApiClient(addr.url, { ...(opts.token === undefined ? {} : { token: opts.token }), ...(ca === undefined ? {} : { ca }) });
    quietOnClosedPipe();
    try {
      exit(await body({ client, out, namespace: opts.namespace, command }, args));
    } catch (err) {
      if (err instanceof ApiError || err instanceof UnreachableError) {
        printFailure(out, err, opts.token === undefined ? null : tokenFrom);
        exit(1);
        return;
      }
      throw err;
    } finally {
      await client.close();
    }
  };
}

/** The --ca-file (or SWITCHBOARD_CA_FILE) contents; a usage error when unreadable or not PEM. */
function readCaFile(command: Command, path: string): string {
  const from = command.getOptionValueSource('caFile') === 'env' ? 'SWITCHBOARD_CA_FILE' : '--ca-file';
  let pem: string;
  try {
    pem = readFileSync(path, 'utf8');
  } catch (err) {
    usageError(command, `invalid ${from}: cannot read ${path}: ${(err as Error).message}`);
  }
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) usageError(command, `invalid ${from}: ${path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  return pem;
}

let pipeGuarded = false;
/**
 * A reader that goes away (`switchboard instances web | head -1`) ends the output quietly:
 * the command's result stands, nothing more is written. Kept for the life of the process,
 * since writes still queued report their EPIPE after the command has returned.
 */
function quietOnClosedPipe(): void {
  if (pipeGuarded) return;
  pipeGuarded = true;
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
  });
}

/**
 * An AbortSignal that fires on the first SIGINT or SIGTERM; a second Ctrl-C ends the
 * process at once (exit 130). dispose() removes the handlers.
 */
export function interruption(): { signal: AbortSignal; dispose(): void } {
  const ctl = new AbortController();
  const onSignal = (sig: NodeJS.Signals): void => {
    if (ctl.signal.aborted) {
      process.exit(sig === 'SIGINT' ? 130 : 143);
    }
    ctl.abort(sig);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // A reader that goes away (`| head`) ends the command quietly instead of crashing it.
  const onPipe = (err: NodeJS.ErrnoException): void => {
    if (err.code === 'EPIPE') ctl.abort('EPIPE');
  };
  process.stdout.on('error', onPipe);
  return {
    signal: ctl.signal,
    dispose: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      process.stdout.off('error', onPipe);
    },
  };
}

/** Resolves after `ms`, or early (false) when the signal fires. */
export function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(false);
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** The namespace query parameter, sent only when --namespace was given. */
export const nsQuery = (ctx: Context): { namespace?: string } => (ctx.namespace === undefined ? {} : { namespace: ctx.namespace });

/** `service/id`, with the namespace in front when one was given and is not the default. */
export function instanceName(ctx: Context, service: string, id: string): string {
  return ctx.namespace !== undefined && ctx.namespace !== 'default' ? `${ctx.namespace}/${service}/${id}` : `${service}/${id}`;
}
