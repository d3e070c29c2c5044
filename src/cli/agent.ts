/**
 * `castellan agent`: serves Envoy SDS on a Unix socket with certificates from
 * the CA, until SIGINT/SIGTERM. Exit codes: 0 stopped cleanly, 1 failed at
 * run time (e.g. the socket path is unsafe), 2 invalid configuration.
 */
import { startAgent, type AgentHandle } from '../agent/agent.ts';
import { AGENT_FLAGS, resolveAgentConfig } from '../agent/config.ts';
import { helpText, parseCommand } from '../config/flags.ts';
import { CastellanError } from '../platform/errors.ts';
import { createLogger } from '../platform/logger.ts';
import { installProcessGuard } from './guard.ts';

export async function run(argv: string[]): Promise<number> {
  let config;
  try {
    const parsed = parseCommand('agent', argv, AGENT_FLAGS);
    if (parsed.values.help) {
      process.stdout.write(helpText('agent', '[flags]', AGENT_FLAGS));
      return 0;
    }
    config = resolveAgentConfig(parsed.values);
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    return 2;
  }
  const logger = createLogger({ level: config.logLevel, name: 'agent' });
  installProcessGuard(logger);
  let handle: AgentHandle;
  try {
    handle = await startAgent(config, { logger });
  } catch (e) {
    const msg = e instanceof CastellanError ? e.message : `failed to start: ${(e as Error).message}`;
    logger.fatal({ event: 'agent.start_failed', code: e instanceof CastellanError ? e.code : 'internal' }, msg);
    logger.flush();
    process.stderr.write(`castellan agent: ${msg}\n`);
    return e instanceof CastellanError && e.kind === 'INVALID_ARGUMENT' ? 2 : 1;
  }
  logger.info({ event: 'agent.started', socket: handle.sdsSocket, http: handle.httpAddress, ca: config.caAddress }, 'agent running');
  return new Promise<number>((resolve) => {
    // A repeated signal while stopping (Ctrl-C plus a forwarding wrapper) is ignored.
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      logger.info({ event: 'agent.signal', signal }, 'shutting down');
      handle.close().then(
        () => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          resolve(0);
        },
        (e: unknown) => {
          logger.error({ err: e }, 'shutdown failed');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
}
