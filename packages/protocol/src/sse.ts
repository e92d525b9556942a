/** Helpers for the SSE watch stream of api-v1.md, shared by server and clients. */

/** The SSE `id:` of a revision: `<epoch>:<revision>`. */
export function formatEventId(epoch: string, revision: number): string {
  return `${epoch}:${revision}`;
}

/** Parses an SSE id (or Last-Event-ID); undefined when it is not `<epoch>:<revision>`. */
export function parseEventId(text: string): { epoch: string; revision: number } | undefined {
  const at = text.lastIndexOf(':');
  if (at <= 0) return undefined;
  const revText = text.slice(at + 1);
  if (!/^\d{1,15}$/.test(revText)) return undefined; // exact as a JS number
  return { epoch: text.slice(0, at), revision: Number(revText) };
}
