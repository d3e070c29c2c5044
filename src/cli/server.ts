/**
 * `castellan server`: runs the CA until SIGINT/SIGTERM, then drains.
 * Exit codes: 0 stopped cleanly, 1 failed at run time, 2 invalid configuration.
 */
import { helpText, parseCommand } from '../config/flags.ts';
import { CastellanError } from '../platform/errors.ts';
import { createLogger } from '../platform/logger.ts';
import { installProcessGuard } from './guard.ts';
import { withIstioEnvAliases } from '../identity/impersonation.ts';
import { startCaServer } from '../server/ca-server.ts';
import { resolveServerConfig, SERVER_FLAGS } from '../server/config.ts';

export async function run(argv: string[]): Promise<number> {
  let config;
  try {
    const parsed = parseCommand('server', argv, SERVER_FLAGS, { env: withIstioEnvAliases(process.env) });
    if (parsed.values.help) {
      process.stdout.write(helpText('server', '[flags]', SERVER_FLAGS));
      return 0;
    }
    config = resolveServerConfig(parsed.values);
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    return 2;
  }
  const logger = createLogger({ level: config.logLevel });
  installProcessGuard(logger);
  let handle;
  try {
    handle = await startCaServer(config, { logger });
  } catch (e) {
    const msg = e instanceof CastellanError ? e.message : `failed to start: ${(e as Error).message}`;
    logger.fatal({ event: 'server.start_failed', code: e instanceof CastellanError ? e.code : 'internal', err: e instanceof CastellanError ? undefined : e }, msg);
    logger.flush();
    process.stderr.write(`castellan server: ${msg}\n`);
    return e instanceof CastellanError && e.kind === 'INVALID_ARGUMENT' ? 2 : 1;
  }
  const h = handle;
  return new Promise<number>((resolve) => {
    const stop = (signal: string): void => {
      logger.info({ event: 'server.signal', signal }, 'shutting down');
      h.close().then(
        () => resolve(0),
        (e: unknown) => {
          logger.error({ err: e }, 'shutdown failed');
          resolve(1);
        },
      );
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}
