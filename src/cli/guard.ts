/**
 * Long-running commands (server, agent, authz serve) must not die because
 * one handler forgot to catch (security.md D4): every handler already turns
 * its errors into statuses, and this is the net under them. An unhandled
 * rejection or exception is logged as a bug (with its stack, never sent to a
 * caller) and counted; the process keeps serving.
 */
import type { Logger } from '../platform/logger.ts';

let installed = false;
/** How many escaped errors were caught by the net (exposed for tests and metrics). */
export const escaped = { count: 0 };

export function installProcessGuard(logger: Logger): void {
  if (installed) return;
  installed = true;
  process.on('unhandledRejection', (reason) => {
    escaped.count++;
    logger.error({ event: 'process.unhandled_rejection', err: reason }, 'bug: a promise rejection was not handled; the process keeps running');
  });
  process.on('uncaughtException', (err) => {
    escaped.count++;
    logger.error({ event: 'process.uncaught_exception', err }, 'bug: an exception escaped a handler; the process keeps running');
  });
}
