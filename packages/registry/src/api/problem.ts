/**
 * Turning every failure into an application/problem+json answer: errors thrown by routes,
 * Fastify's own errors (body parsing, limits, router) and, below Fastify, requests that
 * Node's HTTP parser refuses before any route sees them (answerClientError).
 */
import { STATUS_CODES, maxHeaderSize, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify';
import { ERRORS, SwitchboardError, limitExceeded, type ErrorCode } from '@switchboard/protocol';

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

const GENERIC_HINT = 'check the request against GET /v1/openapi.json';

/** The code of the contract that a bare HTTP status stands for. */
function codeOfStatus(status: number): ErrorCode {
  switch (status) {
    case 404:
      return 'NOT_FOUND';
    case 405:
      return 'METHOD_NOT_ALLOWED';
    case 413:
      return 'PAYLOAD_TOO_LARGE';
    case 415:
      return 'UNSUPPORTED_MEDIA_TYPE';
    case 429:
      return 'RATE_LIMITED';
    default:
      return 'INVALID_ARGUMENT';
  }
}

/** Maps Fastify's own errors (body parsing, limits, router) onto the contract's codes. */
export function toSwitchboardError(err: unknown, maxBodyBytes: number): SwitchboardError {
  if (err instanceof SwitchboardError) return err;
  const e = (err ?? {}) as FastifyLikeError;
  switch (e.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new SwitchboardError('PAYLOAD_TOO_LARGE', `the body is larger than ${maxBodyBytes} bytes (limit maxBodyBytes)`, {
        limit: 'maxBodyBytes',
        hint: 'send a smaller body; split large batches into several requests',
      });
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
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
    case 'FST_ERR_MAX_PARAM_LENGTH':
      // Fastify's message echoes the whole path; say what is wrong instead.
      return new SwitchboardError('INVALID_ARGUMENT', 'a name in the request path is far too long', {
        field: 'path',
        hint: 'service names are at most 63 characters, instance ids at most 128',
      });
  }
  const status = e.statusCode ?? 500;
  if (status >= 400 && status < 500) {
    // A client error Fastify raised without a code mapped above (a body stream that
    // aborted, for example): keep its message, in the contract's shape.
    const code = codeOfStatus(status);
    return new SwitchboardError(code, e.message || ERRORS[code].title, { hint: GENERIC_HINT, ...(code === 'RATE_LIMITED' && { retryAfterSec: 1 }) });
  }
  return new SwitchboardError('INTERNAL', 'the node failed to answer this request', { hint: 'the node logged the cause; retry, and report it if it persists' });
}

/** For routes that are known with other methods: 405 with Allow. */
export function methodNotAllowed(req: FastifyRequest, allowed: string[]): SwitchboardError {
  return new SwitchboardError('METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${req.url.split('?')[0]}`, {
    hint: `use one of: ${allowed.join(', ')}`,
  });
}

const BODY_FRAMING = new Set([
  'HPE_INVALID_CONTENT_LENGTH',
  'HPE_UNEXPECTED_CONTENT_LENGTH',
  'HPE_INVALID_TRANSFER_ENCODING',
  'HPE_INVALID_CHUNK_SIZE',
  'HPE_CHUNK_EXTENSIONS_OVERFLOW',
]);

/** What to answer a request that Node's HTTP parser refused (a `clientError`). */
export function clientErrorProblem(err: { code?: string }): SwitchboardError {
  const code = err.code ?? 'unknown';
  if (code === 'HPE_HEADER_OVERFLOW') {
    return limitExceeded('maxHeaderSize', 'headers', `the request line and headers are larger than ${maxHeaderSize} bytes`, 'send a shorter URL and fewer or shorter headers; data belongs in the body');
  }
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT' || code === 'ERR_HTTP_HEADERS_TIMEOUT') {
    return new SwitchboardError('INVALID_ARGUMENT', 'the request was not received completely in time', {
      field: 'request',
      hint: 'send the whole request at once, without long pauses',
    });
  }
  if (code === 'HPE_INVALID_EOF_STATE') {
    return new SwitchboardError('INVALID_ARGUMENT', 'the connection ended before the request was complete (a body shorter than its Content-Length?)', {
      field: 'body',
      hint: 'send as many body bytes as Content-Length says, or use chunked encoding',
    });
  }
  if (BODY_FRAMING.has(code)) {
    return new SwitchboardError('INVALID_ARGUMENT', `the body framing is malformed (${code})`, {
      field: 'body',
      hint: 'send one valid Content-Length, or Transfer-Encoding: chunked with well-formed chunks, not both',
    });
  }
  return new SwitchboardError('INVALID_ARGUMENT', `the request is not well-formed HTTP/1.1 (${code})`, {
    field: 'request',
    hint: 'send a valid request line (METHOD /path HTTP/1.1) and well-formed headers',
  });
}

/**
 * Fastify's clientErrorHandler: answers what Node's HTTP parser refused with problem+json
 * written on the socket (there is no request object), then closes the connection, as
 * Node does. Nothing is written when a response on that socket has already begun.
 */
export function answerClientError(err: Error & { code?: string }, socket: Duplex, log?: FastifyBaseLogger): void {
  if (err.code === 'ECONNRESET' || err.code === 'EPIPE' || socket.destroyed) {
    socket.destroy();
    return;
  }
  // Not the error itself: Node attaches the request's raw bytes to it (rawPacket), and
  // those hold its headers, an Authorization token among them.
  log?.debug({ code: err.code, reason: (err as { reason?: unknown }).reason, bytesParsed: (err as { bytesParsed?: unknown }).bytesParsed }, `client error: ${err.message}`);
  const inFlight = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
  if (socket.writable && !inFlight?.headersSent) {
    const sw = clientErrorProblem(err);
    const body = JSON.stringify(sw.toProblem());
    socket.write(
      `HTTP/1.1 ${sw.status} ${STATUS_CODES[sw.status] ?? 'Error'}\r\n` +
        `content-type: ${PROBLEM_JSON}; charset=utf-8\r\n` +
        `content-length: ${Buffer.byteLength(body)}\r\n` +
        'connection: close\r\n\r\n' +
        body,
    );
  }
  socket.destroy();
}

/**
 * Node answers an `Expect` other than 100-continue by itself, with an empty 417, unless
 * the server listens for `checkExpectation`; this listener answers it like any other bad
 * request. The connection closes, as the body was not read.
 */
export function answerExpectation(req: IncomingMessage, res: ServerResponse): void {
  const sw = new SwitchboardError('INVALID_ARGUMENT', `the expectation "Expect: ${String(req.headers.expect).slice(0, 100)}" is not supported`, {
    field: 'Expect',
    hint: 'send no Expect header, or Expect: 100-continue',
  });
  const body = JSON.stringify(sw.toProblem());
  res.writeHead(sw.status, {
    'content-type': `${PROBLEM_JSON}; charset=utf-8`,
    'content-length': Buffer.byteLength(body),
    connection: 'close',
  });
  res.end(body);
}
