/**
 * What `castellan ca` and `castellan bundle` share: the flags that find the
 * running server's admin socket, the client on it, and how its answers
 * become exit codes (3: the server cannot be reached; otherwise the
 * command's own mapping of a refusal).
 */
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { AdminService } from '../gen/castellan/v1/admin_pb.js';
import type { FlagSpec, FlagValues } from '../config/flags.ts';
import { createClient } from '../grpc/service.ts';
import { ERROR_TRAILER } from '../grpc/status.ts';

export const ADMIN_SOCKET_FLAGS: FlagSpec[] = [
  { name: 'admin-socket', type: 'string', arg: 'PATH', help: 'the server\'s admin socket (default: <data-dir>/admin.sock)' },
  { name: 'data-dir', type: 'string', arg: 'DIR', default: './.castellan', help: 'the server\'s --data-dir, to find its admin socket' },
];

const open = (socket: string) => createClient(AdminService, `unix:${socket}`, grpc.credentials.createInsecure());
export type AdminClient = ReturnType<typeof open>;

/**
 * Runs `fn` with a client on the admin socket named by `values` (a call
 * deadline of 60 s) and closes it. A failed call is printed as
 * `castellan <command>: <message>`; the exit code is 3 when no server
 * answered, else `refusalExit(status)` (the server's own refusals carry its
 * x-castellan-error trailer; a missing connection does not).
 */
export async function withAdminClient(
  command: string,
  values: FlagValues,
  fn: (client: AdminClient, deadline: number) => Promise<number>,
  refusalExit: (code: grpc.status) => number = () => 1,
): Promise<number> {
  const socket = (values['admin-socket'] as string | undefined) || join(values['data-dir'] as string, 'admin.sock');
  const client = open(socket);
  try {
    return await fn(client, Date.now() + 60_000);
  } catch (e) {
    const err = e as grpc.ServiceError;
    const answered = (err.metadata?.get(ERROR_TRAILER).length ?? 0) > 0;
    if (!answered && (err.code === grpc.status.UNAVAILABLE || err.code === grpc.status.DEADLINE_EXCEEDED)) {
      process.stderr.write(`castellan ${command}: cannot reach the CA server's admin API at ${socket} (${err.details || err.message}); is "castellan server" running with this --data-dir or --admin-socket?\n`);
      return 3;
    }
    process.stderr.write(`castellan ${command}: ${err.details || err.message}\n`);
    return answered ? refusalExit(err.code) : 1;
  } finally {
    client.close();
  }
}
