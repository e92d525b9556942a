/** Turning every failure into an application/problem+json answer. */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ERRORS, SwitchboardError, type ErrorCode } from '@switchboard/protocol';

export const PROBLEM_JSON = 'application/problem+json';

export function sendProblem(reply: FastifyReply, err: SwitchboardError): FastifyReply {
  if (err.retryAfterSec !== undefined) reply.header('retry-after', String(err.retryAfterSec));
  return reply.code(err.status).type(PROBLEM_JSON).send(JSON.stringify(err.toProblem()));
}

interface FastifyLikeError {
  code?: string;
  statusCode?: number;
  message?: string;
}

/** Maps Fastify's own errors (body parsing, limits, router) onto the contract's codes. */
export function toSwitchboardError(err: unknown, maxBodyBytes: number): SwitchboardError {
  if (err instanceof SwitchboardError) return err;
  const e = (err ?? {}) as FastifyLikeError;
  switch (e.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new SwitchboardError('PAYLOAD_TOO_LARGE', `the body is larger than ${maxBodyBytes} bytes`, {
        limit: 'maxBodyBytes',
        hint: 'send a smaller body; split large batches into several requests',
      });
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_TYPE':
      return new SwitchboardError('UNSUPPORTED_MEDIA_TYPE', 'the body is not declared as JSON', {
        hint: 'send the body as JSON with the header Content-Type: application/json',
      });
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new SwitchboardError('INVALID_ARGUMENT', 'the Content-Length header does not match the body', {
        field: 'body',
        hint: 'send a Content-Length equal to the body size, or use chunked encoding',
      });
    case 'FST_ERR_BAD_URL':
    case 'FST_ERR_ASYNC_CONSTRAINT':
      return new SwitchboardError('INVALID_ARGUMENT', 'the request path is not a valid URL', {
        field: 'path',
        hint: 'percent-encode the path correctly',
      });
  }
  const status = e.statusCode ?? 500;
  if (status >= 400 && status < 500) {
    const code: ErrorCode = status === 404 ? 'NOT_FOUND' : status === 415 ? 'UNSUPPORTED_MEDIA_TYPE' : status === 413 ? 'PAYLOAD_TOO_LARGE' : 'INVALID_ARGUMENT';
    return new SwitchboardError(code, e.message ?? ERRORS[code].title, { hint: 'check the request against GET /v1/openapi.json' });
  }
  return new SwitchboardError('INTERNAL', 'the node failed to answer this request', { hint: 'the node logged the cause; retry, and report it if it persists' });
}

/** For routes that are known with other methods: 405 with Allow. */
export function methodNotAllowed(req: FastifyRequest, allowed: string[]): SwitchboardError {
  return new SwitchboardError('METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${req.url.split('?')[0]}`, {
    hint: `use one of: ${allowed.join(', ')}`,
  });
}
