/** The `switchboard` command. Exit codes: 0 success, 1 an error answer, 2 bad usage. */
import { Command, CommanderError, Option } from 'commander';
import { VERSION } from '../version.js';
import type { Logger } from 'pino';
import type { RunningAgent } from './agent.js';
import { ConfigError, envValues, readConfigFile, resolveConfig, type AgentConfig } from './config.js';

/** Resolves the configuration: flags, environment, file, in that order of precedence. */
function configured(flags: Record<string, unknown>): AgentConfig {
  const { config, ...rest } = flags;
  const file = typeof config === 'string' ? readConfigFile(config) : {};
  return resolveConfig([
    { name: 'flag', values: rest },
    { name: 'env', values: envValues(process.env) },
    { name: typeof config === 'string' ? `config file ${config}` : 'file', values: file },
  ]);
}

function agentCommand(program: Command, exit: (code: number) => void): void {
  program
    .command('agent')
    .description('start a registry node')
    .addOption(new Option('--mode <mode>', 'standalone | ap | cp (default standalone)'))
    .option('--http-addr <host:port>', 'address of the REST API, HOST:PORT (default 127.0.0.1:7700; 0.0.0.0:PORT listens on every interface, port 0 picks a free port)')
    .option('--data-dir <dir>', 'standalone, ap: where state is kept (default ./data)')
    .option('--dev', 'standalone, ap: keep everything in memory; a new epoch at each start')
    .option('--node-id <id>', 'name of this node (ap, cp; default the host name)')
    .option('--peer-addr <host:port>', 'ap: address for peer links, HOST:PORT (default 127.0.0.1:7701)')
    .option('--peers <list>', 'ap: the other nodes, ID@HOST:PORT,...')
    .option('--etcd <urls>', 'cp: the etcd cluster, URL,URL,... (each with its port, like http://127.0.0.1:2379)')
    .option('--etcd-prefix <prefix>', 'cp: key prefix of the registry in etcd (default /switchboard/)')
    .option('--etcd-ca-file <file>', 'cp: CA certificates (PEM) to trust for https:// etcd endpoints (default the system CAs)')
    .option('--etcd-cert-file <file>', 'cp: client certificate (PEM) for etcd with --client-cert-auth; with --etcd-key-file')
    .option('--etcd-key-file <file>', "cp: the client certificate's private key (PEM, unencrypted)")
    .option('--etcd-username <name>', 'cp: etcd user (etcd auth); its password from --etcd-password-file or SWITCHBOARD_ETCD_PASSWORD')
    .option('--etcd-password-file <file>', "cp: file holding the etcd user's password (a trailing newline is ignored)")
    // Declared only to refuse it with a hint (resolveConfig) instead of "unknown option".
    .addOption(new Option('--etcd-password <password>').hideHelp())
    .option('--join <list>', 'ap: peer-link addresses of running nodes to join through, HOST:PORT,...')
    .option('--cluster <name>', 'ap: the cluster name; nodes of different clusters refuse each other (default switchboard)')
    .option('--peer-secret-file <file>', 'ap: a file holding the secret every peer link proves (the same on every node, at least 32 random bytes); default none')
    .option('--peer-tls-cert-file <file>', "ap: this node's certificate for TLS on the peer links (PEM; with --peer-tls-key-file and --peer-tls-ca-file); default plain TCP")
    .option('--peer-tls-key-file <file>', "ap: the private key of --peer-tls-cert-file (PEM, unencrypted)")
    .option('--peer-tls-ca-file <file>', "ap: the CA that signs every member's peer certificate; a peer whose certificate it did not sign is refused")
    .option('--peer-tls-crl-file <file>', "ap: the certificate revocation lists (PEM) of every CA in the members' chains; a peer whose certificate one lists is refused (with the --peer-tls-* settings; read again on SIGHUP)")
    .option('--alert-webhooks <urls>', 'alert receivers: URL,URL,... (a JSON POST per alert episode)')
    .option('--check-deny-networks <cidrs>', 'networks active checks may not reach, CIDR,CIDR,... (default: link-local and the cloud metadata addresses, docs/health.md; "" denies none)')
    .option('--check-allow-networks <cidrs>', 'the only networks active checks may reach, CIDR,CIDR,... (default none: all not denied; deny wins)')
    .option('--api-tokens-file <file>', 'require bearer tokens on the API: a file of "SCOPE TOKEN" lines (read | write | forward: cp nodes to each other); read again on SIGHUP; default none (open)')
    .option('--metrics-open', 'with --api-tokens-file: answer GET /metrics without a token')
    .option('--tls-cert-file <file>', 'serve the HTTP API over HTTPS with this certificate (PEM, its chain after it); with --tls-key-file')
    .option('--tls-key-file <file>', "the certificate's private key (PEM, unencrypted)")
    .option('--tls-ca-file <file>', "cp: CA certificates (PEM) that signed the other nodes' --tls-cert-file, the only ones trusted when this node calls them (forwarded reports); default Node's CAs and this node's own certificate file")
    .option('--proxy-addr <host:port>', 'also serve the service proxy here: http://HOST:PORT/SERVICE/PATH goes to an instance of SERVICE (docs/api.md); default off')
    .option('--proxy-namespace <name>', 'with --proxy-addr: the namespace whose services the proxy routes to (default default)')
    .option('--proxy-strategy <name>', 'with --proxy-addr: round-robin | random | weighted | consistent-hash (on the Switchboard-Key header; default round-robin)')
    .option('--otlp-endpoint <url>', 'send traces (OpenTelemetry, OTLP/HTTP) to this URL; off when unset')
    .option('--log-level <level>', 'fatal | error | warn | info | debug | trace (default info)')
    .option('--log-format <format>', 'json | pretty | auto (default auto: pretty on a terminal)')
    .option('--config <file>', 'a JSON file with the same keys in camelCase (httpAddr, dataDir, ..., limits)')
    .addHelpText('after', '\nA setting of another mode (say --peers without --mode ap) is refused, whether it comes from a flag,\nthe environment (SWITCHBOARD_<FLAG>) or the config file.')
    .action(async (flags: Record<string, unknown>) => {
      const refuse = (err: ConfigError): void => {
        process.stderr.write(`switchboard agent: invalid configuration: ${err.message} [${err.code}]\n${err.hint === undefined ? '' : `  hint: ${err.hint}\n`}`);
        exit(2);
      };
      let cfg: AgentConfig;
      try {
        cfg = configured(flags);
      } catch (err) {
        if (err instanceof ConfigError) return refuse(err);
        throw err;
      }
      // With a token file or peer revocation lists, SIGHUP reads them again. The handler is there before anything slow
      // (loading the server, storage recovery, waiting for etcd): a SIGHUP then (a reload
      // that logrotate or a deployment sends to every node) is kept for when the node is
      // ready instead of ending the process. Without either, SIGHUP keeps its default
      // (the process ends).
      let agent: RunningAgent | undefined;
      let logger: Logger | undefined;
      let reloadWhenReady = false;
      const reread = cfg.apiTokens === null ? 'the peer revocation lists are' : cfg.peerTls?.crlFile ? 'the API token file and the peer revocation lists are' : 'the API token file is';
      const deferred = (): void => void logger?.info({ signal: 'SIGHUP' }, `signal received while starting: ${reread} read again once the node is ready`);
      const onHup = (): void => {
        if (agent !== undefined) return void agent.reload();
        if (!reloadWhenReady) deferred();
        reloadWhenReady = true;
      };
      if (cfg.apiTokens !== null || cfg.peerTls?.crlFile) process.on('SIGHUP', onHup);
      // Loaded here so that operator commands start without the server's modules.
      const { createLogger, startAgent } = await import('./agent.js');
      logger = createLogger(cfg);
      if (reloadWhenReady) deferred();
      try {
        agent = await startAgent(cfg, logger);
      } catch (err) {
        process.off('SIGHUP', onHup);
        if (err instanceof ConfigError) return refuse(err);
        throw err;
      }
      const running = agent;
      if (reloadWhenReady) void running.reload();
      const onSignal = (sig: string) => {
        running.logger.info({ signal: sig }, 'signal received');
        running.stop().then(() => exit(0), (err) => {
          running.logger.error({ err }, 'shutdown failed');
          exit(1);
        });
      };
      process.once('SIGTERM', () => onSignal('SIGTERM'));
      process.once('SIGINT', () => onSignal('SIGINT'));
    });
}

/** `switchboard cluster remove`: the words that run `cmd`, from the program down. */
function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c !== null; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/** After a usage error, every command points at its own help, named in full. */
function addUsageHints(cmd: Command): void {
  cmd.showHelpAfterError(`(run ${commandPath(cmd)} --help for usage)`);
  for (const sub of cmd.commands) addUsageHints(sub);
}

export async function main(argv: string[]): Promise<number | undefined> {
  let code: number | undefined;
  const exit = (c: number): void => {
    code = c;
    process.exitCode = c;
  };
  const program = new Command('switchboard')
    .description('Switchboard: service registry and discovery')
    .version(VERSION)
    .exitOverride()
    // Options after a subcommand belong to it, so that the program's own --version never
    // swallows `instances --version ^1.2`.
    .enablePositionalOptions()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  agentCommand(program, exit);
  // The agent starts without loading the operator commands (and their HTTP client).
  if (argv[0] !== 'agent') {
    const [{ registerOperatorCommands }, { registerStorageCommands }] = await Promise.all([import('./ops.js'), import('./storage-cmd.js')]);
    registerOperatorCommands(program, exit);
    registerStorageCommands(program, exit);
  }
  addUsageHints(program);
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.exitCode === 0) return 0;
      return 2;
    }
    throw err;
  }
  return code;
}
