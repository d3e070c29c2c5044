import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

/**
 * Field names that may carry secrets. pino replaces their values before a
 * line is written, wherever they appear one or two levels deep. Code should
 * never log secrets in the first place; this is the second line of defence.
 */
const REDACT = [
  'token', 'authorization', 'csr', 'key', 'privateKey', 'private_key', 'password', 'secret',
  '*.token', '*.authorization', '*.csr', '*.key', '*.privateKey', '*.private_key', '*.password', '*.secret',
  'req.headers.authorization',
];

export interface LoggerOptions {
  level?: string;
  /** Where lines go; stderr by default so stdout stays free for command output. */
  destination?: DestinationStream;
  name?: string;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  return pino(
    {
      level: opts.level ?? process.env.CASTELLAN_LOG_LEVEL ?? 'info',
      name: opts.name,
      redact: { paths: REDACT, censor: '[redacted]' },
      base: undefined,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    opts.destination ?? pino.destination({ dest: 2, sync: false }),
  );
}

/** A logger that drops everything (for library callers and quiet tests). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
